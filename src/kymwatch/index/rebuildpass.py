"""Rebuild passes: several tables rebuilt from one read of every record.

:func:`rebuild_passes` groups the indexers that read a common artifact
(:func:`~kymwatch.index.batch.passes`) and reads every record once per group, in
chunks (:func:`~kymwatch.index.batch.extract_chunk`: a file both indexers read is
parsed once); then it hands each table of the group to the caller, which merges and
publishes it. Only one pass's rows are in memory at a time. Each record's
``analysis/`` is listed in the first pass only: the later passes take that listing
(equal listings held once; the symbolic-link checks are made again in each pass), so
they see the names a pass old. With a recheck, records that appeared or changed while
they were read outside the table lock (a name added between two passes too) are read
again under it (:func:`record_stamp` tells). An update of one table reads its records
in chunks too (:func:`extract_in_chunks`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence

from kymwatch.index.base import DatasetIndexer, UpdateReport
from kymwatch.index.batch import Extracted, HeldResults, extract_chunk, passes
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
    """Rebuild the tables of ``ixs`` from every record, one pass per group of indexers
    sharing an artifact, ``chunk`` records read at a time.

    Args:
        store: The dataset whose records are read.
        ixs: The indexers whose tables are rebuilt.
        publish: Merges and publishes one table (called once per indexer).
        chunk: Records read at once.
        recheck: Hold the table lock only to publish: records that appeared or
            changed while a pass read them are read again under it.
        after_chunk: Called after each chunk is read and each table is published.
        progress: ``progress(done, total)``: the records read, over every pass.

    Returns:
        Each indexer's report, by indexer name.
    """
    ids = store.list_image_ids()
    seen = {i: record_stamp(store, i) for i in ids} if recheck else None
    reports: dict[str, UpdateReport] = {}
    groups = passes(ixs)
    # analysis/ of each record as the first pass listed it, for the others (the
    # records' link checks are made again in each pass). Equal listings held once.
    names: dict[str, frozenset[str]] | None = {} if len(groups) > 1 else None
    canon: dict[frozenset[str], frozenset[str]] = {}
    for n, group in enumerate(groups):
        results = {ix.name: HeldResults() for ix in group}
        for start in range(0, len(ids), chunk):
            part_ids = ids[start : start + chunk]
            keep = names if n == 0 else None
            listed = _listings(names, part_ids) if n else None
            for part in extract_chunk(store, group, part_ids, listed=listed, keep=keep):
                results[part.indexer].add(part)
            if keep is not None:
                names = _interned(keep, part_ids, canon)
            if after_chunk is not None:
                after_chunk()
            if progress is not None:
                read_so_far = n * len(ids) + min(start + chunk, len(ids))
                progress(read_so_far, len(groups) * len(ids))
        lock = store.table_lock() if seen is not None else contextlib.nullcontext()
        with lock:  # with recheck: one rescan per pass, under the lock it publishes in
            now: list[str] = ids
            fresh: dict[str, dict[str, Extracted]] = {}
            if seen is not None:
                now, fresh = _read_changed(store, group, seen, chunk)
            for ix in group:
                done: Sequence[Extracted] = results.pop(ix.name)  # dropped once merged
                if seen is not None:
                    old, new = dict(zip(ids, done, strict=True)), fresh[ix.name]
                    done = [new[i] if i in new else old[i] for i in now]
                reports[ix.name] = publish(ix, now, done)
                del done
                if after_chunk is not None:
                    after_chunk()
    return reports


_MAX_LISTINGS = 4096
"""Distinct ``analysis/`` listings a rebuild holds for its later passes (records with
more varied folders than this are listed again in each pass)."""


def _interned(
    names: dict[str, frozenset[str]],
    ids: Sequence[str],
    canon: dict[frozenset[str], frozenset[str]],
) -> dict[str, frozenset[str]] | None:
    """``names`` with the listings of ``ids`` shared by value through ``canon`` (most
    records list the same names), or None once they are too varied to be worth holding."""
    for i in ids:
        listing = names.get(i)
        if listing is not None:
            names[i] = canon.setdefault(listing, listing)
    return names if len(canon) <= _MAX_LISTINGS else None


def _listings(
    names: dict[str, frozenset[str]] | None, ids: Sequence[str]
) -> dict[str, dict[str, frozenset[str]]] | None:
    """The listings ``names`` holds for ``ids``, as :func:`extract_chunk` takes them."""
    if names is None:
        return None
    return {i: {"": names[i]} for i in ids if i in names}


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
