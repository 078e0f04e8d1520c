"""The indexing worker: applies a batch of record changes to the tables.

For each batch it runs only the affected indexers, writes each affected table once
(``KymDataset.update_images_report``), and records in the state the fingerprints of what
it indexed. An unreadable artifact (often one still being written) is handed back
for a retry with backoff before it is reported; its old rows stay meanwhile.
The worker decides nothing about *when* work happens: the daemon's loop pushes
retries back into its debouncer.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from kymwatch.daemon.changes import Batch, RecordChange
from kymwatch.daemon.reconcile import artifact_name_of, nothing_to_read, route
from kymwatch.daemon.results import BatchResult, HeldChunk, Retry
from kymwatch.daemon.state import IndexState
from kymwatch.index import (
    KymDataset,
    ManifestIndexer,
    OutcomeStatus,
    RecordOutcome,
    UpdateReport,
    log_outcome,
    rows_files,
)
from kymwatch.store import (
    Listing,
    RecordFiles,
    ZarrImageRecord,
    scan_records_settled,
    table_fingerprint,
)

__all__ = ["DEFAULT_RETRY_DELAYS", "BatchResult", "Retry", "Worker"]

log = structlog.get_logger(__name__)

DEFAULT_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)


class Worker:
    """Indexes batches of record changes into a dataset's tables.

    Args:
        kd: The dataset and its indexers.
        state: Fingerprints of what is indexed; updated after each table write.
        clock: Monotonic clock (injected for tests).
        retry_delays: Backoff before each retry of an unreadable artifact; once they
            are used up the artifact is reported ``artifact_unreadable``.
        manifest: kymflow's manifest, updated for every record of every batch
            while it is active (None: no manifest).
    """

    def __init__(
        self,
        kd: KymDataset,
        state: IndexState,
        clock: Callable[[], float] = time.monotonic,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        manifest: ManifestIndexer | None = None,
    ) -> None:
        self.kd, self.state, self.clock = kd, state, clock
        self.manifest = manifest
        self.retry_delays = tuple(retry_delays)
        self._attempts: dict[tuple[str, str], int] = {}
        self._reads = [(ix.name, ix.artifact_names) for ix in kd.indexers]
        self._rows_from = {ix.name: (ix.table_name, rows_files(ix)) for ix in kd.indexers}
        self._exporting: Future[list[str]] | None = None  # the exporter thread's work
        kd.parted.clock = clock  # export deadlines on the daemon's clock
        self._journal_thread: ThreadPoolExecutor | None = None
        self._held: list[HeldChunk] = []  # chunks read, their tables not written (oldest first)

    def _journal(self) -> ThreadPoolExecutor:
        """The thread that commits each batch's crash journal (created on first use)."""
        if self._journal_thread is None:
            self._journal_thread = ThreadPoolExecutor(1, thread_name_prefix="kymwatch-journal")
        return self._journal_thread

    def refresh_indexers(self) -> None:
        """Follow a change of ``kd.indexers`` (the daemon narrowed its selection)."""
        self._reads = [(ix.name, ix.artifact_names) for ix in self.kd.indexers]
        self._rows_from = {ix.name: (ix.table_name, rows_files(ix)) for ix in self.kd.indexers}

    def readers_of(self, artifact: str) -> set[str]:
        """Names of the indexers that read ``artifact``."""
        return {name for name, reads in self._reads if artifact in reads}

    def wants_record_metadata(self) -> bool:
        """True if record metadata changes matter (the manifest is kept)."""
        return self.manifest is not None and self.manifest.active()

    @property
    def holding(self) -> bool:
        """Chunks were read whose tables are not written yet (see :meth:`process`)."""
        return bool(self._held)

    def process(self, batch: Batch, *, final: bool = False, hold: bool = False) -> BatchResult:
        """Index ``batch``; with ``final`` no retry is scheduled (sync, shutdown).

        With ``hold`` the rows read are held, not merged nor written (a backlog: the
        caller holds the table lock and will index more at once). The result says
        ``held``; the records are not recorded as indexed (state) and their outcomes
        not logged until a later call without ``hold``, or :meth:`flush`, writes the
        tables: that call's result covers the held chunks too. The crash journal
        names each chunk's records before any write that can hold their rows.
        """
        start = time.perf_counter()
        result = BatchResult(records=len(batch))
        by_indexer: dict[str, list[str]] = {name: [] for name, _ in self._reads}
        for change in batch.changes:
            for name in route(change, self._reads):
                by_indexer[name].append(change.image_id)
        # Fingerprints are taken before reading: a write after this point is seen
        # as a change by the next reconcile even if we already read its content.
        # The scan's start is remembered with each fingerprint: a file changed within the
        # timestamp granularity of it is "racily clean" and re-read by the next reconcile.
        # Files changed in that very tick are waited out and scanned again.
        done: dict[str, set[str]] = {c.image_id: set() for c in batch.changes}
        # The crash journal is committed (an fsync) on its own thread meanwhile; the
        # tables wait for it before their first write (see ``_update``).
        journal = self._journal().submit(self.state.note_publishing, self.kd.path, list(done))
        try:
            fresh: dict[str, RecordFiles | None] = {c.image_id: None for c in batch.changes}
            recs = [ZarrImageRecord(self.kd.store, c.image_id) for c in batch.changes]
            present = {r.image_id: r.path for r in recs if r.exists()}
            listed: dict[str, Listing] = {}  # the scan's listings: the reads list nothing again
            fresh.update(scan_records_settled(self.kd.path, present, listings=listed))
            skip = nothing_to_read(
                batch.changes, by_indexer, fresh, self._rows_from, self.kd.has_rows
            )
            for name, ids in skip.items():
                by_indexer[name] = [i for i in by_indexer[name] if i not in ids]
                for image_id in ids:  # settled: the state takes its files' fingerprints
                    done[image_id].add(name)
            work = {name: ids for name, ids in by_indexer.items() if ids}
            reports = self._update(work, journal.result, listed, hold=hold)
            if hold:
                held_written = []
            elif work:
                held_written = self.kd.held_written()
            else:
                held_written = self.kd.write_held(before_write=journal.result)
        except BaseException:
            if not self.kd.held_tables():  # held rows lost: the records stay due (a rescan)
                self._held.clear()
            raise
        finally:  # nothing else uses the state's database while the journal commits
            journal.result()
        names = (artifact_name_of(f) for files in fresh.values() for f in files or ())
        result.artifacts = {name for name in names if name is not None}
        for report in reports:
            name = report.indexer
            if report.table_written:
                result.tables.append(report.table_name)
            result.rows_written += report.rows_written
            for outcome in report.outcomes:
                retry = self._retry(outcome, final)
                if retry is not None:
                    result.retries += 1
                    result.retrying.append(outcome)
                    result.retry.append(retry)
                    continue
                done[outcome.image_id].add(name)
                result.settled.append(outcome)
                result.outcomes[outcome.status.value] += 1
                if outcome.status in (OutcomeStatus.UNREADABLE, OutcomeStatus.INVALID):
                    result.problems.append(outcome)
        if self.manifest is not None and self._update_manifest(batch):
            result.tables.append(ManifestIndexer.name)
        result.duration_ms = round((time.perf_counter() - start) * 1000, 2)
        chunk = HeldChunk(tuple(done), fresh, done, result)
        if hold:
            result.held = True
            self._held.append(chunk)
            return result
        for table in held_written:
            if table not in result.tables:
                result.tables.append(table)
        self._settle(self._held, chunk, written=result.tables)
        for h in self._held:
            result.absorb(h.result)
        self._held.clear()
        return result

    def flush(self) -> BatchResult | None:
        """Write the tables of the held chunks (see :meth:`process`) and record their
        records as indexed; their combined result, or None if none is held.

        Raises:
            Exception: a write failed; the held records are not recorded (they stay
                due: a rescan finds them).
        """
        if not self._held:
            return None
        start = time.perf_counter()
        try:
            written = self.kd.write_held()
        except BaseException:
            self._held.clear()
            raise
        held, self._held = self._held, []
        result = held[-1].result
        result.held = False
        result.tables = list(dict.fromkeys([*result.tables, *written]))
        result.duration_ms = round(result.duration_ms + (time.perf_counter() - start) * 1000, 2)
        self._settle(held, None, written=written)
        for h in held[-2::-1]:
            result.absorb(h.result)
        return result

    def _settle(
        self, held: Sequence[HeldChunk], current: HeldChunk | None, *, written: Sequence[str]
    ) -> None:
        """The tables of the ``held`` chunks and the ``current`` one are written: note the
        tables, record the chunks' records (oldest chunk first), log their outcomes."""
        for table in dict.fromkeys(written):
            if table != ManifestIndexer.name:
                self.note_published(table)
        for h in [*held, current] if current is not None else held:
            for image_id in h.image_ids:
                self.state.update_record(
                    image_id, h.fresh[image_id], h.done[image_id], self.readers_of
                )
            for outcome in h.result.settled:
                log_outcome(outcome)

    def export_tables(self, *, force: bool = False) -> list[str] | None:
        """Write the single file of each partitioned table whose export is due (every
        one with ``force``), after the export running on the exporter thread (if any)
        ended; returns their names, or None after a failure, which is logged
        (``table_export_failed``; the parts keep the rows, the caller retries).
        """
        self.export_ended(wait=True)
        try:
            names = self.kd.export_tables(force=force)
        except Exception as e:
            log.exception("table_export_failed", error=str(e))
            return None
        for name in names:
            self.note_published(name)
        return names

    def start_export(self, *, force: bool = False) -> bool:
        """Start the due exports on the exporter thread (the loop goes on indexing);
        False if that failed (logged as ``table_export_failed``). One runs at a time."""
        if self._exporting is not None:
            return True
        try:
            self._exporting = self.kd.start_export(force=force)
        except Exception as e:
            log.exception("table_export_failed", error=str(e))
            return False
        return True

    def export_ended(self, *, wait: bool = False) -> bool | None:
        """Whether the export on the exporter thread ended: None while it runs (only
        without ``wait``), True when it ended well (or none ran), False when it failed
        (logged as ``table_export_failed``). The tables it wrote are noted as published."""
        future = self._exporting
        if future is None:
            return True
        if not wait and not future.done():
            return None
        self._exporting = None
        try:
            names = future.result()
        except Exception as e:
            log.error("table_export_failed", error=str(e), exception=repr(e))
            return False
        for name in names:
            self.note_published(name)
        return True

    def next_export(self) -> float | None:
        """Clock time at which a partitioned table's export falls due (None: none is)."""
        return self.kd.parted.next_due()

    def note_published(self, table_name: str) -> None:
        """Remember in the state the fingerprint of a table the daemon just wrote, so a
        table replaced behind its back is noticed (see ``Daemon._regrow_tables``)."""
        path = self.kd.store.table_path(table_name)
        self.state.note_table(self.kd.path, table_name, table_fingerprint(path))

    def _update_manifest(self, batch: Batch) -> bool:
        """Update the manifest entries of the batch's records; True if it was written.

        A failure is logged and never fails the batch: the next reconcile retries.
        """
        assert self.manifest is not None
        try:
            update = self.manifest.update(c.image_id for c in batch.changes)
        except Exception as e:
            log.exception("manifest_failed", path=str(self.manifest.path), error=str(e))
            return False
        return update is not None and update.written

    def reconcile_manifest(self) -> None:
        """Check every record's manifest entry against the disk (after a reconcile
        scan: metadata changed while the daemon was down or events were lost)."""
        if self.manifest is None:
            return
        try:
            update = self.manifest.reconcile()
        except Exception as e:
            log.exception("manifest_failed", path=str(self.manifest.path), error=str(e))
            return
        if update is not None and update.changed:
            log.info(
                "manifest_reconciled",
                changed=len(update.changed),
                records=update.records,
                duration_ms=update.duration_ms,
            )

    def _update(
        self,
        work: dict[str, list[str]],
        journaled: Callable[[], object],
        listed: dict[str, Listing] | None = None,
        *,
        hold: bool = False,
    ) -> list[UpdateReport]:
        """``update_batch_report`` (the batch's tables written at the same time), and a
        whole rebuild of each table whose file turns out to be damaged (merging into it
        would lose every other record). ``journaled`` returns once the batch's records
        are in the crash journal: no table is written before."""
        if not work:
            return []
        reports, unreadable = self.kd.update_batch_report(
            work, log_outcomes=False, before_write=journaled, listed=listed, hold=hold
        )
        if unreadable:
            journaled()
        for name, e in unreadable.items():
            report = self.kd.rebuild_report(name, log_outcomes=False)
            log.warning(
                "table_rebuilt",
                table=report.table_name,
                indexer=name,
                reason="table_unreadable",
                rows=report.table_rows,
                error=str(e),
            )
            wanted = set(work[name])
            outcomes = tuple(o for o in report.outcomes if o.image_id in wanted)
            reports.append(dataclasses.replace(report, outcomes=outcomes))
        return reports

    def _retry(self, outcome: RecordOutcome, final: bool) -> Retry | None:
        """The retry that replaces an outcome, or None for a final one (logged once its
        tables are written)."""
        key = (outcome.image_id, outcome.indexer)
        if outcome.status is OutcomeStatus.UNREADABLE and not final:
            attempt = self._attempts.get(key, 0)
            if attempt < len(self.retry_delays):
                self._attempts[key] = attempt + 1
                delay = self.retry_delays[attempt]
                readers = next(r for n, r in self._reads if n == outcome.indexer)
                log.info(
                    "artifact_retry",
                    image_id=outcome.image_id,
                    indexer=outcome.indexer,
                    path=outcome.path,
                    attempt=attempt + 1,
                    delay_s=delay,
                    error=outcome.error,
                )
                return Retry(RecordChange(outcome.image_id, readers), delay)
        self._attempts.pop(key, None)
        return None
