"""``KymDataset``: a dataset plus its indexers, and the table updates they drive."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
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
    table_fingerprint,
    write_table_arrow,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KymDataset", "log_outcome"]

log = structlog.get_logger(__name__)

IndexerRef = DatasetIndexer | str
_CHUNK = 1000  # records converted at once


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
    """

    def __init__(
        self,
        dataset_path: str | Path,
        mode: Mode = "a",
        *,
        indexers: Sequence[DatasetIndexer] | None = None,
    ) -> None:
        self.store = ZarrDataset(dataset_path, mode)
        self.indexers: list[DatasetIndexer] = list(
            default_indexers() if indexers is None else indexers
        )
        self._tables: dict[str, SortedTable] = {}
        self._frames: dict[str, tuple[Fingerprint | None, pd.DataFrame]] = {}
        self._stamps: dict[str, Fingerprint | None] = {}
        self._foreign: set[str] = set()  # tables read in another program's schema
        self.last_report: UpdateReport | None = None

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
        stamp = table_fingerprint(path)
        if name in self._tables and stamp == self._stamps.get(name):
            return self._tables[name]
        ix = self._indexer_for_table(name)
        self._foreign.discard(name)
        if stamp is None:
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

    def _write(self, name: str, st: SortedTable, *, keep: bool = True) -> None:
        table = with_pandas_metadata(st.table)
        path = self.store.table_path(name)
        self._stamps[name] = write_table_arrow(path, table, within=self.store.path)
        if keep:
            self._tables[name] = st
        else:  # read again from disk if asked for
            self._tables.pop(name, None)
        self._frames.pop(name, None)
        self._foreign.discard(name)

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
    ) -> UpdateReport:
        """Build the table from scratch from ``image_ids`` (default: every record).

        Records whose artifact is unreadable or invalid keep the rows the table had.
        A table file that cannot be parsed is logged (``table_unreadable``, with the
        reason) and then replaced. With ``recheck`` (a rebuild of every record while a
        daemon may publish), the table lock is held only to publish: records that
        changed or appeared while they were read outside the lock are read again under it.
        """
        ix = self.indexer(ref)
        ids = self.store.list_image_ids() if image_ids is None else list(dict.fromkeys(image_ids))
        recheck = recheck and image_ids is None
        return self._apply(ix, ids, replace_all=True, log_outcomes=log_outcomes, recheck=recheck)

    def rebuild_reports(
        self,
        refs: Iterable[IndexerRef] | None = None,
        *,
        log_outcomes: bool = True,
        recheck: bool = False,
        keep_tables: bool = True,
        after_chunk: Callable[[], object] | None = None,
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
        """
        chosen = self.indexers if refs is None else refs
        ixs = list(dict.fromkeys(self.indexer(r) for r in chosen))
        self.store.check_writable()
        ids = self.store.list_image_ids()
        seen = {i: self._stamp(i) for i in ids} if recheck else None
        reports: dict[str, UpdateReport] = {}
        for group in passes(ixs):
            results = {ix.name: HeldResults() for ix in group}
            for start in range(0, len(ids), _CHUNK):
                for chunk in extract_chunk(self.store, group, ids[start : start + _CHUNK]):
                    results[chunk.indexer].add(chunk)
                if after_chunk is not None:
                    after_chunk()
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

    def _extract(self, ix: DatasetIndexer, ids: Sequence[str]) -> list[Extracted]:
        """Each record's outcome and rows, converted in chunks of records (a rebuild of a
        large store never holds more than one chunk's raw rows)."""
        out: list[Extracted] = []
        for start in range(0, len(ids), _CHUNK):
            [chunk] = extract_chunk(self.store, [ix], ids[start : start + _CHUNK])
            out.extend(chunk.extracted)
        return out

    def _apply(
        self,
        ix: DatasetIndexer,
        ids: list[str],
        *,
        replace_all: bool,
        log_outcomes: bool,
        recheck: bool = False,
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
            results = self._extract(ix, ids)
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
            current = self._read_for_update(ix, replace_all=replace_all)
            if replace_all:
                table, changed = merge_rebuild(current, results, ix), True
            else:
                table, changed = merge_update(current, results, ix)
                # Rewrite only when the content differs: re-indexing unchanged records is a no-op.
                changed = (
                    changed
                    or self._stamps.get(ix.table_name) is None
                    or ix.table_name in self._foreign
                )
            if changed:
                self._write(ix.table_name, table, keep=keep)
            else:
                table = current
        rows_written = sum(rows.count for _, rows in results if rows is not None)
        outcomes = tuple(_with_kept_rows(o, table) if o.keeps_old_rows else o for o, _ in results)
        if log_outcomes:
            for o in outcomes:
                log_outcome(o)
        duration_ms = round((time.perf_counter() - start) * 1000, 2)
        log.debug(
            "table_updated",
            table=ix.table_name,
            indexer=ix.name,
            records=len(ids),
            rows=len(table),
            written=changed,
            duration_ms=duration_ms,
        )
        report = UpdateReport(
            ix.name, ix.table_name, outcomes, len(table), rows_written, changed, duration_ms
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


def _with_kept_rows(o: RecordOutcome, table: SortedTable) -> RecordOutcome:
    n = table.rows_of(o.image_id).num_rows
    return RecordOutcome(o.image_id, o.indexer, o.status, n, o.keys, o.path, o.error)
