"""``KymDataset``: a dataset plus its indexers, and the table updates they drive.

The library API (kymflow's) and the daemon's reports live here; reading and saving
whole tables is :mod:`~kymwatch.index.tableaccess`'s, the tables' cache, merges and
writes :mod:`~kymwatch.index.publish`'s, the results a daemon's backlog holds back
:mod:`~kymwatch.index.held`'s, the exports of partitioned tables
:mod:`~kymwatch.index.exporter`'s, the multi-table rebuild pass and the chunked reads
:mod:`~kymwatch.index.rebuildpass`'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kymwatch.errors import TableUnreadableError
from kymwatch.index.base import DatasetIndexer, OutcomeStatus, RecordOutcome, UpdateReport
from kymwatch.index.batch import Extracted, extract_batch, extract_jobs
from kymwatch.index.exporter import Exporter
from kymwatch.index.frames import to_frame
from kymwatch.index.held import HeldTables
from kymwatch.index.indexers import default_indexers
from kymwatch.index.parted import PartedTables
from kymwatch.index.partition import PartitionPolicy
from kymwatch.index.publish import Merged, Publisher, report_of
from kymwatch.index.rebuildpass import extract_in_chunks, rebuild_passes, record_stamp
from kymwatch.index.tableaccess import TableAccess
from kymwatch.store import Fingerprint, Listing, Mode, ZarrDataset

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


class KymDataset(TableAccess):
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
        self.indexers: list[DatasetIndexer] = list(
            default_indexers() if indexers is None else indexers
        )
        self._pub = Publisher(
            self.store, self.parted, lambda: self.indexers, lambda: self.export_tables(force=True)
        )
        self._held = HeldTables(self._pub)
        self._exporter = Exporter(self._pub, self._held)
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
        """Rebuild several tables (default: every indexer's) from one pass over every
        record (:func:`~kymwatch.index.rebuildpass.rebuild_passes`: each record's
        analysis/ is listed once and a file two indexers read is parsed once), records
        read in chunks of 1,000 (:func:`~kymwatch.index.batch.extract_chunk`); then each
        table is merged and published as :meth:`rebuild_report` does (same tables, same
        outcomes; one report per table, in the order given). Every table's rows are held
        until it is merged.

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

        def publish(ix: DatasetIndexer, ids: list[str], done: Sequence[Extracted]) -> UpdateReport:
            return self._apply(
                ix,
                ids,
                replace_all=True,
                log_outcomes=log_outcomes,
                read=(done, None),
                keep=keep_tables,
            )

        reports = rebuild_passes(
            self.store,
            ixs,
            publish,
            chunk=_CHUNK,
            recheck=recheck,
            after_chunk=after_chunk,
            progress=progress,
        )
        return [reports[ix.name] for ix in ixs]

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
        """Read ``ids`` here, ``_CHUNK`` records at a time."""
        return extract_in_chunks(self.store, ix, ids, chunk=_CHUNK, progress=progress)

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
            seen = {i: record_stamp(self.store, i) for i in ids} if recheck else {}
            results = self._read(ix, ids, progress)
        else:
            results, stamps = read
            seen = stamps or {}
        with self.store.table_lock():
            if recheck:
                ids = self.store.list_image_ids()
                done = dict(zip(seen, results, strict=True))
                again = [i for i in ids if i not in done or record_stamp(self.store, i) != seen[i]]
                fresh = dict(zip(again, self._extract(ix, again), strict=True))
                results = [fresh[i] if i in fresh else done[i] for i in ids]
            merged = self._pub.merge(ix, ids, results, replace_all=replace_all, start=start)
            self._pub.finish([self._pub.start(merged)])
        if not keep:  # read again from disk if asked for
            self._pub.tables.pop(ix.table_name, None)
        return self._report(merged, log_outcomes=log_outcomes)

    def update_batch_report(
        self,
        work: Mapping[str, Sequence[str]],
        *,
        log_outcomes: bool = True,
        before_write: Callable[[], object] | None = None,
        listed: Mapping[str, Listing] | None = None,
        hold: bool = False,
    ) -> tuple[list[UpdateReport], dict[str, TableUnreadableError]]:
        """Re-index records with several indexers at once (a daemon's batch): each
        table is merged as by :meth:`update_images_report`, then every changed table
        is written on a writer thread as soon as it is merged (the Parquet encode and
        the fsync release the GIL: the next table's merge goes on meanwhile), under one
        hold of the store's table lock. Each record is read once for every indexer
        that re-indexes it (:func:`~kymwatch.index.batch.extract_jobs`: one listing of
        its folders, a file two indexers read parsed once), unless an :attr:`extractor`
        reads the records.

        Args:
            work: Indexer name → the image ids it re-indexes.
            log_outcomes: Log each record's outcome.
            before_write: Called once before the first table write starts (not at all
                if no table changes): a daemon waits there for its crash journal,
                committed meanwhile on another thread.
            listed: Records' folders as a scan just listed them (the daemon's
                fingerprint scan, taken before the reads), not listed again.
            hold: Neither merge nor write: the results are held (:meth:`held_tables`)
                until the next call without ``hold``, or :meth:`write_held`, merges them
                with its own and writes each table once (a daemon's backlog). The
                caller holds the table lock until then; the reports say
                ``table_written`` False.

        Returns:
            The report of each indexer whose table could be read, and the error of each
            whose table file cannot be parsed (nothing of theirs is written: the caller
            rebuilds them).
        """
        self.store.check_writable()
        start = time.perf_counter()
        jobs = [(self.indexer(name), list(dict.fromkeys(ids))) for name, ids in work.items()]
        if self.extractor is None:  # each record read once for every indexer naming it
            reads = extract_jobs(self.store, jobs, chunk=_CHUNK, listed=listed)
        else:
            reads = [self._read(ix, ids) for ix, ids in jobs]
        extracted = [(ix, ids, r) for (ix, ids), r in zip(jobs, reads, strict=True)]
        merged, unreadable = self._held.publish(
            extracted, start, before_write=before_write, hold=hold
        )
        if hold:  # nothing was written
            merged = [dataclasses.replace(m, changed=False) for m in merged]
        return [self._report(m, log_outcomes=log_outcomes) for m in merged], unreadable

    def has_rows(self, table_name: str, image_id: str) -> bool:
        """Whether table ``table_name`` may hold rows of record ``image_id``: True when it
        does, when results held for it (``update_batch_report(hold=True)``) name the
        record, or when that cannot be told (a table without ``image_id`` or one that
        cannot be read)."""
        if self._held.names_record(table_name, image_id):
            return True
        try:
            st = self._pub.read(table_name)
        except MemoryError:
            raise
        except Exception:
            return True
        if not st.ids:
            return len(st) > 0
        return st.range_of(image_id)[1] > 0

    def held_tables(self) -> list[str]:
        """Names of the tables merged by ``update_batch_report(hold=True)`` and not
        written yet."""
        return self._held.names()

    def held_written(self) -> list[str]:
        """Names of the held tables the last call without ``hold`` wrote (with its own)."""
        return list(self._held.written)

    def write_held(self, *, before_write: Callable[[], object] | None = None) -> list[str]:
        """Write every held table (see :meth:`update_batch_report`); returns their names.
        ``before_write`` is called once before the first write (not at all if none is
        held)."""
        if not self._held:
            return []
        self._held.write(time.perf_counter(), before_write=before_write)
        return self.held_written()

    def export_tables(self, *, force: bool = False) -> list[str]:
        """Write the single file of each partitioned table whose export is due (all of
        them with ``force``: idle, sync, stop), from the cached table; returns their names.
        An indexer's partitioned table not read yet is read first: an export older than
        its parts (a crash between the two) is due at once.
        """
        return self._exporter.export(force=force)

    def exported_stamp(self, name: str) -> Fingerprint | None:
        """The fingerprint of ``tables/<name>.parquet`` as this object's last export of
        it wrote it (None: it exported none)."""
        return self._exporter.exported.get(name)

    def start_export(
        self, *, force: bool = False, executor: Executor | None = None
    ) -> Future[list[str]] | None:
        """:meth:`export_tables` on a thread of its own (or ``executor``), so that edits
        go on while a large export is encoded; the future gives the tables written. None
        when no export is due. See :meth:`kymwatch.index.exporter.Exporter.start`.
        """
        return self._exporter.start(force=force, executor=executor)

    def _report(self, m: Merged, *, log_outcomes: bool) -> UpdateReport:
        self.last_report = report_of(m, log_outcome if log_outcomes else None)
        return self.last_report
