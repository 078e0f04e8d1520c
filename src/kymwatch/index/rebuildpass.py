"""A rebuild: every table rebuilt from one read of every record.

:func:`rebuild_passes` reads every record once for all the indexers, in chunks
(:func:`~kymwatch.index.batch.extract_chunk`: one snapshot per record, so each
record's ``analysis/`` is listed once, each folder's symbolic-link checks are made
once and a file two indexers read is parsed once); then it hands each table to the
caller, which merges and publishes it. The rows and outcomes of every table are held
until it is merged (a chunk's rows in one table per indexer); peak RSS of a rebuild of
both generations' records: 155 MiB at 10k and 290 at 50k, against 149 and 275 with one
pass per group of indexers sharing an artifact (which read each record's folders once
per pass and held one group's results at a time). With
a recheck, records that appeared or changed while they were read outside the table
lock are read again under it (:func:`record_stamp` tells). An update of one table
reads its records in chunks too (:func:`extract_in_chunks`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence

from kymwatch.index.base import DatasetIndexer, UpdateReport
from kymwatch.index.batch import Extracted, HeldResults, extract_chunk
from kymwatch.store import ZarrDataset, ZarrImageRecord, scan_record

__all__ = ["Publish", "extract_in_chunks", "rebuild_passes", "record_stamp"]

Publish = Callable[[DatasetIndexer, list[str], Sequence[Extracted]], UpdateReport]
"""Merges one indexer's results (in the order of the ids given) into a new table and
publishes it."""


def record_stamp(store: ZarrDataset, image_id: str) -> bytes | None:
    """A digest of the fingerprints of a record's artifact files (None if the record
    is gone): 16 bytes per record held while a rebuild reads, not every file's
    fingerprint (~2 KiB per record)."""
    rec = ZarrImageRecord(store, image_id)
    if not rec.exists():
        return None
    files = scan_record(rec.path)
    key = sorted((r, f.size, f.mtime_ns, f.ctime_ns, f.inode) for r, f in files.items())
    return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()


def extract_in_chunks(
    store: ZarrDataset,
    ix: DatasetIndexer,
    ids: Sequence[str],
    *,
    chunk: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[Extracted]:
    """Each record's outcome and rows, converted ``chunk`` records at a time (a rebuild
    of a large store never holds more than one chunk's raw rows); ``progress(done,
    total)`` after each chunk."""
    out: list[Extracted] = []
    for start in range(0, len(ids), chunk):
        [part] = extract_chunk(store, [ix], ids[start : start + chunk])
        out.extend(part.extracted)
        if progress is not None:
            progress(len(out), len(ids))
    return out


def rebuild_passes(
    store: ZarrDataset,
    ixs: Sequence[DatasetIndexer],
    publish: Publish,
    *,
    chunk: int,
    recheck: bool = False,
    after_chunk: Callable[[], object] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, UpdateReport]:
    """Rebuild the tables of ``ixs`` from every record, read once for all of them,
    ``chunk`` records at a time.

    Args:
        store: The dataset whose records are read.
        ixs: The indexers whose tables are rebuilt.
        publish: Merges and publishes one table (called once per indexer).
        chunk: Records read at once.
        recheck: Hold the table lock only to publish: records that appeared or
            changed while they were read are read again under it.
        after_chunk: Called after each chunk is read and each table is published.
        progress: ``progress(done, total)``: the records read.

    Returns:
        Each indexer's report, by indexer name.
    """
    ids = store.list_image_ids()
    seen = {i: record_stamp(store, i) for i in ids} if recheck else None
    reports: dict[str, UpdateReport] = {}
    results = {ix.name: HeldResults() for ix in ixs}
    for start in range(0, len(ids), chunk):
        for part in extract_chunk(store, ixs, ids[start : start + chunk]):
            results[part.indexer].add(part)
        if after_chunk is not None:
            after_chunk()
        if progress is not None:
            progress(min(start + chunk, len(ids)), len(ids))
    lock = store.table_lock() if seen is not None else contextlib.nullcontext()
    with lock:  # with recheck: one rescan, under the lock the tables are published in
        now: list[str] = ids
        fresh: dict[str, dict[str, Extracted]] = {}
        if seen is not None:
            now, fresh = _read_changed(store, ixs, seen, chunk)
        for ix in ixs:
            done: Sequence[Extracted] = results.pop(ix.name)  # dropped once merged
            if seen is not None and (fresh[ix.name] or now != ids):
                old, new = dict(zip(ids, done, strict=True)), fresh[ix.name]
                done = [new[i] if i in new else old[i] for i in now]
            reports[ix.name] = publish(ix, now, done)
            del done
            if after_chunk is not None:
                after_chunk()
    return reports


def _read_changed(
    store: ZarrDataset,
    group: Sequence[DatasetIndexer],
    seen: dict[str, bytes | None],
    chunk: int,
) -> tuple[list[str], dict[str, dict[str, Extracted]]]:
    """The records now, and the results of ``group`` for those that appeared or
    changed since ``seen`` was taken (read again now)."""
    now = store.list_image_ids()
    again = [i for i in now if i not in seen or record_stamp(store, i) != seen[i]]
    fresh: dict[str, dict[str, Extracted]] = {ix.name: {} for ix in group}
    for start in range(0, len(again), chunk):
        part = again[start : start + chunk]
        for extracted in extract_chunk(store, group, part):
            fresh[extracted.indexer].update(zip(part, extracted.extracted, strict=True))
    return now, fresh
