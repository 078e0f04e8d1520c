"""``KymDataset``: a dataset plus its indexers, and the table updates they drive."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import structlog

from kymwatch.errors import TableNotFoundError, TableUnreadableError
from kymwatch.index.arrow_schema import empty_arrow
from kymwatch.index.base import (
    DatasetIndexer,
    OutcomeStatus,
    RecordOutcome,
    UpdateReport,
)
from kymwatch.index.batch import (
    Extracted,
    HeldResults,
    extract_batch,
    extract_chunk,
    passes,
)
from kymwatch.index.frames import to_frame, with_pandas_metadata
from kymwatch.index.indexers import default_indexers
from kymwatch.index.parted import PartedTables
from kymwatch.index.partition import PartitionPolicy, PartPlan, plan_parts
from kymwatch.index.schema import Coercions
from kymwatch.index.tablework import adopt, merge_rebuild, merge_update
from kymwatch.store import (
    Fingerprint,
    Mode,
    SortedTable,
    ZarrDataset,
    ZarrImageRecord,
    read_table_arrow,
    scan_record,
    start_table_writes,
    table_fingerprint,
    write_table_arrow,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KymDataset", "log_outcome"]

log = structlog.get_logger(__name__)

IndexerRef = DatasetIndexer | str
Extractor = Callable[[DatasetIndexer, Sequence[str]], list[Extracted]]
_CHUNK = 1000  # records converted at once
_LIBRARY_POLICY = PartitionPolicy(partition_rows=0, export_interval_s=0.0)


def log_outcome(outcome: RecordOutcome) -> None:
    """Log one record outcome under its stable event name."""
    fields: dict[str, object] = {"image_id": outcome.image_id, "indexer": outcome.indexer}
    if outcome.status is OutcomeStatus.INDEXED:
        log.debug(outcome.status.value, rows=outcome.rows, **fields)
    elif outcome.status is OutcomeStatus.MISSING:
        log.info(outcome.status.value, looked_for=list(outcome.keys), **fields)
    elif outcome.status is OutcomeStatus.REMOVED:
        log.info(outcome.status.value, **fields)
    else:
        log.warning(
            outcome.status.value,
            path=outcome.path,
            error=outcome.error,
            kept_rows=outcome.rows,
            **fields,
        )


class KymDataset:
    """A kymflow dataset with its indexers and dataset-level tables.

    kymflow's API: :meth:`rebuild`, :meth:`update_image` and :meth:`update_images`
    return the table as a DataFrame; what happened to each record is in
    :attr:`last_report`. A daemon calls :meth:`update_images_report` and
    :meth:`rebuild_report`, which return the :class:`UpdateReport` itself.

    Tables are cached in memory and re-read only when the file changed on disk
    (another process wrote it). Each update reads the table at most once and writes
    it at most once, under the store's table lock. A table written by kymflow
    (pandas object columns, float ``n_valid``) is adopted: its columns are converted
    by the schema policy, never rejected.

    Args:
        dataset_path: The Zarr store folder.
        mode: ``"a"`` (default) or ``"r"``; see :class:`ZarrDataset`.
        indexers: The indexers to run (default: velocity events and radon report).
        partitions: When large tables are kept as parts (``tables/<name>/``) and how
            often their single file is exported (default: never partitioned; a table a
            daemon partitioned is exported at the end of each call).
    """

    def __init__(
        self,
        dataset_path: str | Path,
        mode: Mode = "a",
        *,
        indexers: Sequence[DatasetIndexer] | None = None,
        partitions: PartitionPolicy | None = None,
    ) -> None:
        self.store = ZarrDataset(dataset_path, mode)
        self.parted = PartedTables(self.store, partitions or _LIBRARY_POLICY)
        self._part_stamps: dict[str, Fingerprint | None] = {}
        self.indexers: list[DatasetIndexer] = list(
            default_indexers() if indexers is None else indexers
        )
        self._tables: dict[str, SortedTable] = {}
        self._frames: dict[str, tuple[Fingerprint | None, pd.DataFrame]] = {}
        self._stamps: dict[str, Fingerprint | None] = {}
        self._foreign: set[str] = set()  # tables read in another program's schema
        self.last_report: UpdateReport | None = None
        self.extractor: Extractor | None = None
        """Where an update or rebuild first reads its records (None: here, in chunks;
        :mod:`kymwatch.index.distributed` reads them on a Dask cluster). Records read
        again under the lock (``recheck``) are always read here."""

    @property
    def path(self) -> Path:
        """The store folder."""
        return self.store.path

    def indexer(self, ref: IndexerRef) -> DatasetIndexer:
        """The indexer object for ``ref`` (an indexer, or its name or table name)."""
        if not isinstance(ref, str):
            return ref
        for ix in self.indexers:
            if ref in (ix.name, ix.table_name):
                return ix
        known = ", ".join(ix.name for ix in self.indexers)
        raise KeyError(f"no indexer named {ref!r} (known: {known})")

    def _indexer_for_table(self, name: str) -> DatasetIndexer | None:
        return next((ix for ix in self.indexers if ix.table_name == name), None)

    # -- tables ---------------------------------------------------------------------------
    def _read_current(self, name: str) -> SortedTable:
        """The table as on disk now (typed and sorted), from cache when the file did not
        change."""
        path = self.store.table_path(name)
        stamp, parts = table_fingerprint(path), self.parted.stamp(name)
        if (
            name in self._tables
            and stamp == self._stamps.get(name)
            and parts == self._part_stamps.get(name)
        ):
            return self._tables[name]
        ix = self._indexer_for_table(name)
        self._foreign.discard(name)
        self._frames.pop(name, None)
        raw = self.parted.read(name)
        self._part_stamps[name] = self.parted.stamp(name)
        if raw is not None:
            st, _ = adopt(raw, ix, Coercions())
        elif stamp is None:
            if ix is None:
                raise TableNotFoundError(f"no table {name!r} in {self.path}")
            st = SortedTable.of(empty_arrow(ix.columns), (), (0,))
        else:
            coerced = Coercions()
            st, foreign = adopt(read_table_arrow(path), ix, coerced)
            coerced.log(table=name, path=str(path))
            if foreign:
                # e.g. kymflow's object columns or appended rows: adopted (typed, sorted
                # once), rewritten in our schema by the next update even if no row changes.
                self._foreign.add(name)
        self._tables[name], self._stamps[name] = st, stamp
        return st

    def load_tables(self, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Load (or refresh) tables; default: every indexer's table and every table on disk."""
        if names is None:
            names = {ix.table_name for ix in self.indexers} | set(self.store.list_table_names())
        return {name: self.get_table(name) for name in sorted(names)}

    def get_table(self, name: str) -> pd.DataFrame:
        """Table ``name`` (empty with its schema if an indexer owns it but it is not built)."""
        st = self._read_current(name)
        stamp = self._stamps.get(name)
        cached = self._frames.get(name)
        if cached is None or cached[0] != stamp or stamp is None:
            cached = (stamp, to_frame(st.table))
            self._frames[name] = cached
        return cached[1].copy(deep=False)

    def get_arrow(self, name: str) -> pa.Table:
        """Table ``name`` as Arrow (sorted by ``image_id``; no pandas conversion)."""
        return self._read_current(name).table

    def table_image_ids(self, name: str) -> set[str]:
        """The image ids that have rows in table ``name``."""
        st = self._read_current(name)
        if st.ids or "image_id" not in st.table.column_names:
            return set(st.ids)
        return {str(v) for v in st.table.column("image_id").drop_null().to_pylist()}

    def save_table(self, name: str, df: pd.DataFrame | None = None) -> None:
        """Write table ``name`` atomically under the store lock, and cache it.

        Without ``df`` the cached table is written (kymflow's ``save_table(name)``;
        KeyError if it was never loaded). A frame is written as given; it is adopted
        (typed, sorted) when read back.
        """
        self.store.check_writable()
        if df is None:
            if name not in self._tables:
                raise KeyError(f"table not loaded in cache: {name}")
            table = self._tables[name].table
            if self._indexer_for_table(name) is not None:
                table = with_pandas_metadata(table)
        else:
            table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        with self.store.table_lock():
            path = self.store.table_path(name)
            self._stamps[name] = write_table_arrow(path, table, within=self.store.path)
            self._tables.pop(name, None)
            self._frames.pop(name, None)

    def save_all_tables(self) -> None:
        """Write every cached table."""
        for name in list(self._tables):
            self.save_table(name)

    # -- indexing -------------------------------------------------------------------------
    def extract(self, ref: IndexerRef, image_id: str) -> tuple[RecordOutcome, pd.DataFrame | None]:
        """Run one indexer on one record without touching the table.

        Returns the outcome and, for INDEXED, the rows (MISSING/REMOVED: no rows).
        """
        [(outcome, rows)] = extract_batch(self.indexer(ref), self.store, [image_id])
        return outcome, None if rows is None else to_frame(rows.table())

    def update_images_report(
        self, ref: IndexerRef, image_ids: Iterable[str], *, log_outcomes: bool = True
    ) -> UpdateReport:
        """Re-index ``image_ids`` with one indexer: one table read, one table write.

        Indexed records get their new rows; missing artifacts and removed records
        lose their rows; unreadable or invalid artifacts keep the rows the table had.
        One bad record never stops the others: any exception while reading or
        converting a record becomes its outcome.

        Raises:
            TableUnreadableError: the table file exists but cannot be parsed.
        """
        ix = self.indexer(ref)
        ids = list(dict.fromkeys(image_ids))
        return self._apply(ix, ids, replace_all=False, log_outcomes=log_outcomes)

    def rebuild_report(
        self,
        ref: IndexerRef,
        image_ids: Iterable[str] | None = None,
        *,
        log_outcomes: bool = True,
        recheck: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> UpdateReport:
        """Build the table from scratch from ``image_ids`` (default: every record).

        Records whose artifact is unreadable or invalid keep the rows the table had.
        A table file that cannot be parsed is logged (``table_unreadable``, with the
        reason) and then replaced. With ``recheck`` (a rebuild of every record while a
        daemon may publish), the table lock is held only to publish: records that
        changed or appeared while they were read outside the lock are read again under it.
        ``progress(done, total)`` is called after each chunk of records read.
        """
        ix = self.indexer(ref)
        ids = self.store.list_image_ids() if image_ids is None else list(dict.fromkeys(image_ids))
        recheck = recheck and image_ids is None
        return self._apply(
            ix, ids, replace_all=True, log_outcomes=log_outcomes, recheck=recheck, progress=progress
        )

    def rebuild_reports(
        self,
        refs: Iterable[IndexerRef] | None = None,
        *,
        log_outcomes: bool = True,
        recheck: bool = False,
        keep_tables: bool = True,
        after_chunk: Callable[[], object] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[UpdateReport]:
        """Rebuild several tables (default: every indexer's), the indexers that read a
        common artifact in one pass over every record (:func:`~kymwatch.index.batch.passes`:
        each record's folders are listed and a file both read is parsed once), records
        read in chunks of 1,000 (:func:`~kymwatch.index.batch.extract_chunk`); then each
        table of the pass is merged and published as :meth:`rebuild_report` does (same
        tables, same outcomes; one report per table, in the order given). Only one
        pass's rows are in memory at a time.

        With ``keep_tables=False`` a table is not kept in memory once written (a one-off
        rebuild: :meth:`get_table` reads it again from disk). ``after_chunk`` is called
        after each chunk is read and after each table is published (``kymwatch rebuild``
        hands back freed heap pages there: ``kymwatch.daemon.memory.trim``).
        ``progress(done, total)`` counts the records read, over every pass.
        """
        chosen = self.indexers if refs is None else refs
        ixs = list(dict.fromkeys(self.indexer(r) for r in chosen))
        if self.extractor is not None:  # a cluster reads the records: table by table
            return [
                self.rebuild_report(ix, log_outcomes=log_outcomes, recheck=recheck) for ix in ixs
            ]
        self.store.check_writable()
        ids = self.store.list_image_ids()
        seen = {i: self._stamp(i) for i in ids} if recheck else None
        reports: dict[str, UpdateReport] = {}
        groups = passes(ixs)
        for n, group in enumerate(groups):
            results = {ix.name: HeldResults() for ix in group}
            for start in range(0, len(ids), _CHUNK):
                for chunk in extract_chunk(self.store, group, ids[start : start + _CHUNK]):
                    results[chunk.indexer].add(chunk)
                if after_chunk is not None:
                    after_chunk()
                if progress is not None:
                    read_so_far = n * len(ids) + min(start + _CHUNK, len(ids))
                    progress(read_so_far, len(groups) * len(ids))
            lock = self.store.table_lock() if seen is not None else contextlib.nullcontext()
            with lock:  # with recheck: one rescan per pass, under the lock it publishes in
                now: list[str] = ids
                fresh: dict[str, dict[str, Extracted]] = {}
                if seen is not None:
                    now, fresh = self._read_changed(group, seen)
                for ix in group:
                    done: Sequence[Extracted] = results.pop(ix.name)  # dropped once merged
                    if seen is not None:
                        old, new = dict(zip(ids, done, strict=True)), fresh[ix.name]
                        done = [new[i] if i in new else old[i] for i in now]
                    reports[ix.name] = self._apply(
                        ix,
                        now,
                        replace_all=True,
                        log_outcomes=log_outcomes,
                        read=(done, None),
                        keep=keep_tables,
                    )
                    del done
                    if after_chunk is not None:
                        after_chunk()
        return [reports[ix.name] for ix in ixs]

    def _read_changed(
        self, group: Sequence[DatasetIndexer], seen: dict[str, bytes | None]
    ) -> tuple[list[str], dict[str, dict[str, Extracted]]]:
        """The records now, and the results of ``group`` for those that appeared or
        changed since ``seen`` was taken (read again now)."""
        now = self.store.list_image_ids()
        again = [i for i in now if i not in seen or self._stamp(i) != seen[i]]
        fresh: dict[str, dict[str, Extracted]] = {ix.name: {} for ix in group}
        for start in range(0, len(again), _CHUNK):
            part = again[start : start + _CHUNK]
            for chunk in extract_chunk(self.store, group, part):
                fresh[chunk.indexer].update(zip(part, chunk.extracted, strict=True))
        return now, fresh

    def update_images(
        self, ref: IndexerRef, image_ids: Iterable[str], *, log_outcomes: bool = True
    ) -> pd.DataFrame:
        """Re-index ``image_ids`` (see :meth:`update_images_report`); returns the table.

        The per-record outcomes are in :attr:`last_report`.
        """
        self.update_images_report(ref, image_ids, log_outcomes=log_outcomes)
        return self.get_table(self.indexer(ref).table_name)

    def update_image(self, ref: IndexerRef, image_id: str) -> pd.DataFrame:
        """Re-index one record; returns the whole table (outcome in :attr:`last_report`)."""
        return self.update_images(ref, [image_id])

    def rebuild(
        self, ref: IndexerRef, image_ids: Iterable[str] | None = None, *, log_outcomes: bool = True
    ) -> pd.DataFrame:
        """Rebuild the table from the artifacts (see :meth:`rebuild_report`); returns it.

        The per-record outcomes are in :attr:`last_report`.
        """
        self.rebuild_report(ref, image_ids, log_outcomes=log_outcomes)
        return self.get_table(self.indexer(ref).table_name)

    def _read_for_update(self, ix: DatasetIndexer, *, replace_all: bool) -> SortedTable:
        """The current table; for a rebuild, an unparseable table file counts as empty."""
        try:
            return self._read_current(ix.table_name)
        except MemoryError:
            raise
        except Exception as e:  # any parse failure: the file is not a table we can read
            path = str(self.store.table_path(ix.table_name))
            if not replace_all:
                raise TableUnreadableError(f"table file {path} cannot be read: {e}") from e
            log.warning("table_unreadable", table=ix.table_name, path=path, error=str(e))
            return SortedTable.of(empty_arrow(ix.columns), (), (0,))

    def _read(
        self,
        ix: DatasetIndexer,
        ids: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Extracted]:
        """The first read of ``ids``: the :attr:`extractor` (a cluster read, no progress
        of its own) when one is set, else :meth:`_extract` here."""
        if self.extractor is not None:
            return self.extractor(ix, ids)
        return self._extract(ix, ids, progress)

    def extract_here(self, ix: DatasetIndexer, ids: Sequence[str]) -> list[Extracted]:
        """Read ``ids`` with ``ix`` in this process (what :attr:`extractor` replaces)."""
        return self._extract(ix, ids)

    def _extract(
        self,
        ix: DatasetIndexer,
        ids: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Extracted]:
        """Each record's outcome and rows, converted in chunks of records (a rebuild of a
        large store never holds more than one chunk's raw rows)."""
        out: list[Extracted] = []
        for start in range(0, len(ids), _CHUNK):
            [chunk] = extract_chunk(self.store, [ix], ids[start : start + _CHUNK])
            out.extend(chunk.extracted)
            if progress is not None:
                progress(len(out), len(ids))
        return out

    def _apply(
        self,
        ix: DatasetIndexer,
        ids: list[str],
        *,
        replace_all: bool,
        log_outcomes: bool,
        recheck: bool = False,
        progress: Callable[[int, int], None] | None = None,
        read: tuple[Sequence[Extracted], dict[str, bytes | None] | None] | None = None,
        keep: bool = True,
    ) -> UpdateReport:
        """Merge ``ids``' rows into the table and publish it. ``read``: the records
        already read (in ``ids`` order) and, for ``recheck``, their stamps before."""
        self.store.check_writable()
        start = time.perf_counter()
        results: Sequence[Extracted]
        if read is None:
            seen = {i: self._stamp(i) for i in ids} if recheck else {}
            results = self._read(ix, ids, progress)
        else:
            results, stamps = read
            seen = stamps or {}
        with self.store.table_lock():
            if recheck:
                ids = self.store.list_image_ids()
                done = dict(zip(seen, results, strict=True))
                again = [i for i in ids if i not in done or self._stamp(i) != seen[i]]
                fresh = dict(zip(again, self._extract(ix, again), strict=True))
                results = [fresh[i] if i in fresh else done[i] for i in ids]
            merged = self._merge(ix, ids, results, replace_all=replace_all, start=start)
            self._finish([self._start(merged)])
        if not keep:  # read again from disk if asked for
            self._tables.pop(ix.table_name, None)
        return self._report(merged, log_outcomes=log_outcomes)

    def update_batch_report(
        self, work: Mapping[str, Sequence[str]], *, log_outcomes: bool = True
    ) -> tuple[list[UpdateReport], dict[str, TableUnreadableError]]:
        """Re-index records with several indexers at once (a daemon's batch): each
        table is merged as by :meth:`update_images_report`, then every changed table
        is written on a writer thread as soon as it is merged (the Parquet encode and
        the fsync release the GIL: the next table's merge goes on meanwhile), under one
        hold of the store's table lock.

        Args:
            work: Indexer name → the image ids it re-indexes.
            log_outcomes: Log each record's outcome.

        Returns:
            The report of each indexer whose table could be read, and the error of each
            whose table file cannot be parsed (nothing of theirs is written: the caller
            rebuilds them).
        """
        self.store.check_writable()
        start = time.perf_counter()
        jobs = [(self.indexer(name), list(dict.fromkeys(ids))) for name, ids in work.items()]
        extracted = [(ix, ids, self._read(ix, ids)) for ix, ids in jobs]
        merged: list[_Merged] = []
        unreadable: dict[str, TableUnreadableError] = {}
        writing: list[_Writing | None] = []
        with self.store.table_lock():
            try:  # each table's write starts as soon as it is merged
                for ix, ids, results in extracted:
                    try:
                        m = self._merge(ix, ids, results, replace_all=False, start=start)
                    except TableUnreadableError as e:
                        unreadable[ix.name] = e
                        continue
                    merged.append(m)
                    writing.append(self._start(m))
            finally:
                self._finish(writing)
        return [self._report(m, log_outcomes=log_outcomes) for m in merged], unreadable

    def _merge(
        self,
        ix: DatasetIndexer,
        ids: list[str],
        results: Sequence[Extracted],
        *,
        replace_all: bool,
        start: float,
    ) -> _Merged:
        """The new table of ``ix`` (under the table lock) and whether to write it."""
        current = self._read_for_update(ix, replace_all=replace_all)
        if replace_all:
            table = merge_rebuild(current, results, ix)
            return _Merged(ix, ids, results, table, True, start, current, None)
        table, changed = merge_update(current, results, ix)
        # Rewrite only when the content differs: re-indexing unchanged records is a no-op.
        name = ix.table_name
        changed = changed or ix.table_name in self._foreign
        changed = changed or (
            self._stamps.get(name) is None and self._part_stamps.get(name) is None
        )
        touched = frozenset(o.image_id for o, _ in results if not o.keeps_old_rows)
        table = table if changed else current
        return _Merged(ix, ids, results, table, changed, start, current, touched)

    def _start(self, m: _Merged) -> _Writing | None:
        """Start writing a changed table on the writer threads (a partitioned one: the
        parts the merge touched, after raising its layout version)."""
        if not m.changed:
            return None
        name = m.ix.table_name
        layout = self.parted.layout(name)
        plan = None
        if self.parted.policy.wants_parts(len(m.table), layout):
            schema_changed = not m.table.table.schema.equals(m.previous.table.schema)
            plan = plan_parts(
                m.table, layout, m.touched, schema_changed=schema_changed,
                policy=self.parted.policy,
            )  # fmt: skip
            self.parted.begin(name, plan)
            files = self.parted.files(name, plan)
        else:
            files = [(self.store.table_path(name), with_pandas_metadata(m.table.table))]
        return _Writing(m, plan, start_table_writes(files, within=self.store.path))

    def _finish(self, writing: Sequence[_Writing | None]) -> None:
        """Wait for every write; the caches follow each table whose files were all
        written, then the first failure is raised."""
        error: Exception | None = None
        for w in writing:
            if w is None:
                continue
            name = w.merged.ix.table_name
            try:
                stamps = [f.result() for f in w.futures]
            except Exception as e:
                for f in w.futures:  # every write of the table has ended
                    f.exception()
                error = error or e
                continue
            if w.plan is not None:
                self.parted.commit(name, w.plan)
                if not self.store.table_path(name).exists():
                    self.parted.unexported[name] = float("-inf")  # no single file yet
            else:
                self._stamps[name] = stamps[0]
            self._part_stamps[name] = self.parted.stamp(name)
            self._tables[name] = w.merged.table
            self._frames.pop(name, None)
            self._foreign.discard(name)
        if error is not None:
            raise error
        if self.parted.policy.export_interval_s <= 0:
            self.export_tables(force=True)

    def export_tables(self, *, force: bool = False) -> list[str]:
        """Write the single file of each partitioned table whose export is due (all of
        them with ``force``: idle, sync, stop), from the cached table; returns their names.
        An indexer's partitioned table not read yet is read first: an export older than
        its parts (a crash between the two) is due at once.
        """
        for ix in self.indexers:  # parts on disk not read yet: is their export stale?
            if ix.table_name not in self._tables and self.parted.layout(ix.table_name):
                self._read_current(ix.table_name)
        names = self.parted.due(force=force)
        if not names:
            return []
        self.store.check_writable()
        with self.store.table_lock():
            for name in names:
                st = self._read_current(name)
                self._stamps[name] = self.parted.export(name, st.table)
                self._frames.pop(name, None)
        return names

    def _report(self, m: _Merged, *, log_outcomes: bool) -> UpdateReport:
        ix, table = m.ix, m.table
        rows_written = sum(rows.count for _, rows in m.results if rows is not None)
        outcomes = tuple(_with_kept_rows(o, table) if o.keeps_old_rows else o for o, _ in m.results)
        if log_outcomes:
            for o in outcomes:
                log_outcome(o)
        duration_ms = round((time.perf_counter() - m.start) * 1000, 2)
        log.debug(
            "table_updated",
            table=ix.table_name,
            indexer=ix.name,
            records=len(m.ids),
            rows=len(table),
            written=m.changed,
            duration_ms=duration_ms,
        )
        report = UpdateReport(
            ix.name, ix.table_name, outcomes, len(table), rows_written, m.changed, duration_ms
        )
        self.last_report = report
        return report

    def _stamp(self, image_id: str) -> bytes | None:
        """A digest of the fingerprints of a record's artifact files (None if the record
        is gone): 16 bytes per record held while a rebuild reads, not every file's
        fingerprint (~2 KiB per record)."""
        rec = ZarrImageRecord(self.store, image_id)
        if not rec.exists():
            return None
        files = scan_record(rec.path)
        key = sorted((r, f.size, f.mtime_ns, f.ctime_ns, f.inode) for r, f in files.items())
        return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class _Merged:
    """One indexer's merged table, before it is published."""

    ix: DatasetIndexer
    ids: list[str]
    results: Sequence[Extracted]
    table: SortedTable
    changed: bool
    start: float
    previous: SortedTable
    touched: frozenset[str] | None  # records whose rows were replaced (None: all)


@dataclass(frozen=True, slots=True)
class _Writing:
    """A merged table whose files are being written."""

    merged: _Merged
    plan: PartPlan | None
    futures: list[Future[Fingerprint]]


def _with_kept_rows(o: RecordOutcome, table: SortedTable) -> RecordOutcome:
    n = table.rows_of(o.image_id).num_rows
    return RecordOutcome(o.image_id, o.indexer, o.status, n, o.keys, o.path, o.error)
