"""The daemon: event source → classify → debounce → worker, with reconcile as the truth.

:class:`Daemon` wires the parts and runs the loop; it decides nothing itself:

- :mod:`~kymwatch.daemon.schedule` says when each timed duty is due,
- :mod:`~kymwatch.daemon.planner` says what to index (and which tables to rebuild),
- :mod:`~kymwatch.daemon.worker` indexes it,
- :mod:`~kymwatch.daemon.intake` routes the event source's items,
- :mod:`~kymwatch.daemon.tables` checks the tables (missing, replaced, other schema),
- :mod:`~kymwatch.daemon.choice` picks the indexers as the store reveals its data,
- :mod:`~kymwatch.daemon.reporter` logs it, publishes the status and notifies systemd.

One thread owns the loop. It never blocks without a deadline: it waits on "next
event or next deadline", and long work (a first index, a big reconcile, a burst,
a table lock held by a ``kymwatch rebuild``) is cut into chunks between which the
heartbeat, the watchdog ping and a stop request get their turn.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kymwatch.daemon import memory, planner
from kymwatch.daemon.changes import Batch, RecordChange
from kymwatch.daemon.choice import IndexerChoice, initial_indexers
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.instance import DaemonLock
from kymwatch.daemon.intake import Intake
from kymwatch.daemon.progress import ProgressSink
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.scaleout import cluster_reads
from kymwatch.daemon.schedule import Backoff, Schedule, Task
from kymwatch.daemon.sdnotify import Notifier, SystemdNotifier
from kymwatch.daemon.signals import handle_signals
from kymwatch.daemon.sources import SourceFactory, SourceKeeper
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonState, DaemonStatus
from kymwatch.daemon.sync import answer_sync, choose_sync_path
from kymwatch.daemon.tablelock import hold_table_lock
from kymwatch.daemon.tables import TableKeeper
from kymwatch.daemon.worker import Worker
from kymwatch.errors import UnsafeStoreError
from kymwatch.index import DatasetIndexer, KymDataset, ManifestIndexer, PartitionPolicy
from kymwatch.store import IMAGES_DIR, INDEX_DIR, TABLES_DIR, remove_stale_temporaries, scan_dataset

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from kymwatch.daemon.metrics import StoreMetrics

__all__ = ["Daemon", "SourceFactory"]

log = structlog.get_logger(__name__)

_HOUSEKEEPING = frozenset(
    {
        Task.WATCHDOG,
        Task.HEARTBEAT,
        Task.WATCHER_CHECK,
        Task.TABLE_CHECK,
        Task.SAVE_STATE,
        Task.EXPORT,
    }
)
_EXPORT_IDLE_S = 0.0  # a partitioned table is exported as soon as no change is pending
_TABLE_CHECK_S = 2.0  # how often the tables' fingerprints are compared with the state's
_ACCEPT_SLICE = 5_000  # events classified between two looks at the loop's duties
_SMALLEST_CHUNK = 20
_TRIM_AFTER = 50  # records in a chunk after which freed heap memory is returned
_PROGRESS_AFTER = 100  # reconcile work of at least this many records shows progress


class Daemon:
    """Keeps one store's tables equal to a fresh rebuild while writers change it.

    Args:
        config: What to watch and how.
        source_factory: Builds the event source (default: inotify, or polling when
            asked or when the store is on a network file system). Tests pass a
            scripted source here.
        clock: Monotonic clock.
        notifier: systemd notifications (default: from the environment; no-op
            outside systemd).
        indexers: Indexers to run (default: ``config.indexers``, else chosen from what
            the store holds).
        on_hangup: Called on the loop thread after SIGHUP (the CLI reopens its log
            files there); the daemon stays up.
        metrics: Prometheus metrics of this store, fed by the reporter (None: none).
        progress: Where the progress of long work is drawn (a terminal bar); the
            status file shows it in any case.
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        source_factory: SourceFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
        indexers: list[DatasetIndexer] | None = None,
        on_hangup: Callable[[], None] | None = None,
        metrics: StoreMetrics | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.config = config
        self.root = Path(config.store).resolve()
        self.clock = clock
        for own in (TABLES_DIR, INDEX_DIR):
            if (self.root / own).is_symlink():
                raise UnsafeStoreError(
                    f"{self.root / own} is a symbolic link; kymwatch writes only inside "
                    "the store and will not follow it"
                )
        self.notifier: Notifier = notifier or SystemdNotifier.from_env()
        auto = indexers is None and config.indexers is None  # widened by new data
        indexers, reason = initial_indexers(self.root, config.indexers, indexers)
        partitions = PartitionPolicy(
            config.partition_rows, config.part_rows, config.export_interval_s
        )
        self.kd = KymDataset(self.root, "a", indexers=indexers, partitions=partitions)
        self.status = DaemonStatus(store=str(self.root))
        self.reporter = Reporter(
            self.root, self.status, self.notifier, clock, metrics=metrics, bar=progress
        )
        self.reporter.queue_depth = lambda: len(self.debouncer)
        self.reporter.watch_count = lambda: self.source.watch_count
        self.debouncer = Debouncer(config.quiet_s, config.max_delay_s, config.settle_s)
        self.state = IndexState()
        self.worker = Worker(
            self.kd,
            self.state,
            clock,
            retry_delays=config.retry_delays_s,
            manifest=ManifestIndexer(self.root, create=config.manifest),
        )
        self.schedule = Schedule()
        self._rescans = Backoff(*config.rescan_backoff_s)
        self._rescan_reason: str | None = None
        self.choice = IndexerChoice(
            self.root,
            self.kd,
            self.state,
            self.worker,
            self.status,
            self.reporter,
            auto=auto,
            reason=reason,
        )
        self.tables = TableKeeper(
            self.root, self.kd, self.state, self.worker, self.reporter, self._table_lock
        )
        self.intake = Intake(
            self.root,
            self.debouncer,
            self.reporter,
            self.worker.wants_record_metadata,
            self._request_rescan,
        )
        self._stop = threading.Event()
        self._hangup = threading.Event()
        self._on_hangup = on_hangup
        self.source = SourceKeeper(self.root, self.intake.put, config, source_factory)
        self._lock = DaemonLock(self.root)
        self._seconds_per_record: float | None = None
        self._working = False  # the loop is indexing, reconciling or answering a sync
        self._more_chunks = False  # the loop is between two chunks of one piece of work
        self.stale = StaleCounter(self.root, self._publish_stale, busy=self._busy)

    # -- public ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to exit after the chunk in hand (thread- and signal-safe)."""
        self._stop.set()
        self.intake.wake()

    def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when on the main thread).

        Raises:
            DaemonRunningError: another daemon already watches this store.
        """
        self._lock.acquire()
        try:
            with self._signals():
                self._run_locked()
        finally:
            self._lock.release()

    # -- lifecycle ------------------------------------------------------------------------
    def _signals(self) -> contextlib.AbstractContextManager[None]:
        def hangup() -> None:
            self._hangup.set()
            self.intake.wake()

        return handle_signals(self._stop, self.stop, hangup)

    def _run_locked(self) -> None:
        self.reporter.set_state(DaemonState.STARTING)
        now = self.clock()
        self.schedule.at(Task.HEARTBEAT, now)
        self.schedule.at(Task.WATCHER_CHECK, now + self.config.watcher_check_s)
        self.schedule.at(Task.TABLE_CHECK, now + _TABLE_CHECK_S)
        if self.notifier.watchdog_interval() is not None:
            self.schedule.at(Task.WATCHDOG, now)
        with self._table_lock() as locked:
            if locked:
                tables = self.kd.store.tables_path
                parts = [p for p in tables.glob("*") if p.is_dir()] if tables.is_dir() else []
                for folder in (tables, *parts):  # parts of partitioned tables too
                    for tmp in remove_stale_temporaries(folder):
                        log.info("stale_temporary_removed", path=str(tmp))
        self._load_state()
        self.source.start()
        self.status.set_watch(self.source.decision)
        try:
            log.info(
                "daemon_started",
                store=str(self.root),
                pid=os.getpid(),
                watch_mode=self.source.mode,
                watch_reason=self.source.decision.reason,
                watches=self.source.watch_count,
                indexers=self.status.indexers,
                indexers_reason=self.status.indexers_reason,
                quiet_ms=round(self.config.quiet_s * 1000),
                settle_ms=round(self.config.settle_s * 1000),
                max_delay_ms=round(self.config.max_delay_s * 1000),
                memory=memory.settings(),
            )
            self.reporter.set_state(DaemonState.RECONCILING)
            self._reconcile("startup")
            self._export(force=False)  # an export a crash left older than its parts
            if self.reporter.state is DaemonState.RECONCILING:
                self.reporter.set_state(DaemonState.WATCHING)
            self.reporter.ready()
            self.stale.start()
            self._loop()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.reporter.set_state(DaemonState.STOPPING)
        self.reporter.stopping()
        self.stale.stop()
        self.source.stop()
        self.worker.export_tables(force=True)
        self._save_state(force=True)
        pending = self.debouncer.flush()
        if pending:  # not published: the next start re-indexes them (whatever their stats)
            self.state.note_publishing(self.root, (c.image_id for c in pending.changes))
        self.state.close()
        self.reporter.stopped(len(pending))

    def _load_state(self) -> None:
        self.state.adopt(IndexState.load(self.root))
        if self.state.records:  # a reset state re-reads (and re-judges) every record
            self.reporter.restore_problems(ix.name for ix in self.kd.indexers)
        if not self.state.records:  # nothing indexed yet: no table to rebuild for a schema
            for ix in self.kd.indexers:
                self.state.schema_versions[ix.name] = ix.schema_version

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            wait = self.schedule.wait_s(now, self.debouncer.next_deadline())
            for n, item in enumerate(self.intake.wait(wait), 1):
                self.intake.accept(item, self.clock())
                if n % _ACCEPT_SLICE == 0:  # a flood of events: keep the heartbeat going
                    self._housekeeping()
            if self._stop.is_set():
                break
            self._working = True
            if self._hangup.is_set():
                self._reopen_logs()
            now = self.clock()
            if self.intake.syncs:
                self._answer_syncs()
            elif Task.RESCAN in self.schedule.due(now):
                self._rescan(now)
            elif Task.RECONCILE in self.schedule.due(now):
                self._reconcile("periodic")
            batch = self.debouncer.due(self.clock())
            if batch:
                self._index(batch.changes, batch.first_seen, source="events", due_by=batch.due_by)
            self._housekeeping()
            self._working = False

    def _busy(self) -> bool:
        """Whether the loop has work in hand or waiting (read by the stale counter's
        thread, which steps aside meanwhile)."""
        return self._working or len(self.debouncer) > 0 or bool(self.intake.syncs)

    def _publish_stale(self, counts: dict[str, int]) -> None:
        """The stale counter's result (from its thread): the next publish carries it."""
        self.reporter.stale_changed(self.stale.stale_records())
        self.status.stale_records = counts

    def _reopen_logs(self) -> None:
        self._hangup.clear()
        if self._on_hangup is not None:
            self._on_hangup()
        log.info("log_reopened", signal="SIGHUP")

    # -- reconcile ------------------------------------------------------------------------
    def _request_rescan(self, reason: str) -> None:
        self._rescan_reason = self._rescan_reason or reason
        self.schedule.no_later_than(Task.RESCAN, self._rescans.ready_at())

    def _rescan(self, now: float) -> None:
        reason, self._rescan_reason = self._rescan_reason or "rescan", None
        self.schedule.cancel(Task.RESCAN)
        self._rescans.fired(now)
        self.source.rewatch()
        self._reconcile(reason)

    def _reconcile(self, reason: str, *, pending: Batch | None = None) -> bool:
        """Scan the disk, diff with the state and index the difference.

        ``pending`` (debounced changes taken out for a sync) is merged in, so each
        record is indexed once, and makes the pass final (no retries). Returns False
        if the store was unavailable or a chunk failed.
        """
        start = time.perf_counter()
        now = self.clock()
        self.schedule.at(Task.RECONCILE, now + self.config.reconcile_interval_s)
        first_seen = pending.first_seen if pending else now
        if not (self.root / IMAGES_DIR).is_dir():
            self._store_unavailable(pending.changes if pending else (), first_seen)
            return False
        self._relock()
        self.tables.regrow()
        skipped: list[str] = []
        disk = scan_dataset(self.root, skipped)
        changes = planner.plan_reconcile(
            disk,
            self.state.records,
            table_ids=self.tables.image_ids(),
            suspects=self.state.suspects,
            pending=pending.changes if pending else (),
        )
        self.state.suspects = set()
        self.status.counters["reconciles"] += 1
        what = "first index" if not self.state.records else f"reconcile ({reason})"
        with cluster_reads(
            self.kd,
            self.config.dask,
            [c.image_id for c in changes],
            threshold=self.config.dask_threshold,
            slice_s=self.config.chunk_target_s,
            between=self._housekeeping,
            stopping=self._stop,
        ):
            ok = self._index(
                changes, first_seen, source=reason, final=pending is not None, progress=what
            )
        self.worker.reconcile_manifest()
        if reason in ("startup", "periodic"):  # (the changes of others are marked per batch)
            self.stale.mark_all()
        if self.reporter.state is DaemonState.STORE_UNAVAILABLE and ok:
            self.reporter.set_state(DaemonState.WATCHING)
        self.reporter.folders_skipped(skipped)
        self.reporter.reconciled(
            reason,
            records=len(disk),
            changed=len(changes),
            duration_s=time.perf_counter() - start,
        )
        return ok

    def _store_unavailable(self, changes: Sequence[RecordChange], first_seen: float) -> None:
        """images/ is gone (store moved, deleted, unmounted): absent records are not
        deleted ones. Keep the changes and the tables as they are; rescan with backoff."""
        log.error("store_unavailable", store=str(self.root), reason="images/ is missing")
        self.reporter.error("store_unavailable", store=str(self.root))
        self.reporter.set_state(DaemonState.STORE_UNAVAILABLE)
        self._push_back(changes, first_seen, delay_s=1.0)
        self._request_rescan("store_unavailable")

    def _relock(self) -> None:
        """Lock the store folder again if it was replaced (deleted, then restored):
        otherwise a second daemon could start on it."""
        if not self._lock.retake():
            log.error("daemon_lock_lost", store=str(self.root))
            self.reporter.error("daemon_lock_lost")
            self.stop()

    # -- indexing -------------------------------------------------------------------------
    def _index(
        self,
        changes: Sequence[RecordChange],
        first_seen: float,
        *,
        source: str,
        final: bool = False,
        due_by: Sequence[str] = (),
        progress: str | None = None,
    ) -> bool:
        """Index ``changes`` in chunks, with the loop's duties between chunks.

        ``due_by`` (from the debouncer: why each change became due, in their order) is
        reported on each chunk's ``batch_indexed`` line. Work of at least
        ``_PROGRESS_AFTER`` records named by ``progress`` (a first index, a reconcile)
        reports its progress after each chunk (status file, metrics, terminal bar).

        A stop request ends the work after the chunk in hand; the rest goes back to
        the debouncer, whose content is journaled at shutdown and re-indexed at the
        next start. Returns False if a chunk failed or the store vanished.
        """
        if not changes:
            return True
        track = progress is not None and len(changes) >= _PROGRESS_AFTER
        if track:
            self.reporter.progress_start(str(progress), len(changes))
        try:
            return self._index_chunks(changes, first_seen, source, final, due_by, track)
        finally:
            if track:
                self.reporter.progress_end()

    def _index_chunks(
        self,
        changes: Sequence[RecordChange],
        first_seen: float,
        source: str,
        final: bool,
        due_by: Sequence[str],
        track: bool,
    ) -> bool:
        ok, i = True, 0
        while True:
            size = planner.chunk_size(
                self._seconds_per_record,
                target_s=self.config.chunk_target_s,
                smallest=min(_SMALLEST_CHUNK, self.config.batch_records),
                largest=self.config.batch_records,
            )
            chunk = tuple(changes[i : i + size])
            if self._stop.is_set():
                self._push_back(changes[i:], first_seen)
                return False
            why = tuple(due_by[i : i + len(chunk)])
            ok &= self._index_chunk(Batch(chunk, first_seen, why), source=source, final=final)
            i += len(chunk)
            if track:
                self.reporter.progress_step(i)
            if len(chunk) >= _TRIM_AFTER:  # hand back what a big chunk freed (a few ms)
                memory.trim()
            self._more_chunks = i < len(changes)  # not idle: no export forced meanwhile
            self._plan_export()
            self._housekeeping()
            self._more_chunks = False
            if i >= len(changes):
                return ok

    def _index_chunk(self, batch: Batch, *, source: str, final: bool) -> bool:
        if not (self.root / IMAGES_DIR).is_dir():
            self._store_unavailable(batch.changes, batch.first_seen)
            return False
        self.choice.decide(batch.changes)
        if self.tables.regrow():  # a table vanished between two reconciles
            self.schedule.at(Task.RECONCILE, self.clock())
        prev = self.reporter.state
        if prev is DaemonState.WATCHING:
            self.reporter.set_state(DaemonState.INDEXING)
        try:
            return self._work_on(batch, source=source, final=final)
        finally:  # back to watching: publishes the status with this chunk's outcomes
            if prev is DaemonState.WATCHING:
                self.reporter.set_state(DaemonState.WATCHING)

    def _work_on(self, batch: Batch, *, source: str, final: bool) -> bool:
        try:
            with self._table_lock() as locked:
                if not locked:  # stopping while a rebuild held the lock
                    self._push_back(batch.changes, batch.first_seen)
                    return False
                start = time.perf_counter()
                result = self.worker.process(batch, final=final)
        except Exception as e:  # one failed batch must not take the daemon down
            self.reporter.batch_failed(e, len(batch))
            self._request_rescan("batch_failed")
            return False
        if batch:
            per = (time.perf_counter() - start) / len(batch)
            old = self._seconds_per_record
            self._seconds_per_record = per if old is None else 0.7 * old + 0.3 * per
        now = self.clock()
        for retry in result.retry:
            self._push_back((retry.change,), now, delay_s=retry.delay_s)
        self.reporter.batch_done(batch, result, source, len(self.debouncer))
        self.stale.mark(c.image_id for c in batch.changes)
        if self.choice.widen(result.artifacts) and self.tables.regrow():
            self.schedule.at(Task.RECONCILE, self.clock())  # grow the new tables
        return True

    def _push_back(
        self, changes: Sequence[RecordChange], first_seen: float, *, delay_s: float = 0.0
    ) -> None:
        """The one place where work goes back into the debouncer: retries, a chunk
        interrupted by a stop, a store that vanished, a lock never obtained."""
        until = self.clock() + delay_s
        for change in changes:
            self.debouncer.defer(change, first_seen, until)

    def _table_lock(self) -> contextlib.AbstractContextManager[bool]:
        return hold_table_lock(
            self.kd.store,
            slice_s=self.config.table_lock_wait_s,
            stopping=self._stop,
            between=self._housekeeping,
        )

    def _answer_syncs(self) -> None:
        """Answer the pending ``kymwatch sync`` requests (see :mod:`kymwatch.daemon.sync`):
        from the events received when they prove every earlier write was seen, else
        after a full reconcile; everything the debouncer held is indexed first."""
        start = time.perf_counter()
        tokens = self.intake.take_syncs()
        path, why = choose_sync_path(
            ordered_source=self.source.ordered,
            loss_pending=self._rescan_reason,
            tables_changed=self.tables.regrow(),
            journaled=bool(self.state.suspects),
            store_available=(self.root / IMAGES_DIR).is_dir()
            and self.reporter.state is not DaemonState.STORE_UNAVAILABLE,
        )
        if path == "events":
            held = self.debouncer.flush()
            ok = self._index(held.changes, held.first_seen, source="sync", final=True)
        else:
            ok = self._reconcile("sync", pending=self.debouncer.flush())
        if ok and Task.RECONCILE in self.schedule.due(self.clock()):
            # The data revealed another generation (or a table vanished): the new
            # tables are grown from every record before the answer, not after it.
            path, why = "full", "new_tables"
            ok = self._reconcile("sync")
        self._export(force=True)  # tables/<name>.parquet reflects every earlier write
        self._save_state(force=True)
        errors = self.status.last_errors
        error = None if ok else (errors[-1]["event"] if errors else "failed")
        pending = self.debouncer.flush()
        not_current = self.reporter.not_current(c.image_id for c in pending.changes)
        self._push_back(pending.changes, pending.first_seen)
        self.reporter.publish()  # status shows what the answer says
        for token in tokens:
            answer_sync(self.root, token, ok=ok, error=error, not_current=not_current)
        log.info(
            "sync_answered",
            requests=len(tokens),
            ok=ok,
            not_current=len(not_current),
            path=path,
            reason=why,
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
        )

    # -- the loop's duties ----------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = self.clock()
        for task in self.schedule.due(now, _HOUSEKEEPING):
            if task is Task.WATCHDOG:
                self.reporter.watchdog()
                self.schedule.at(task, now + (self.notifier.watchdog_interval() or 1.0))
            elif task is Task.HEARTBEAT:
                self.reporter.publish()
                self.schedule.at(task, now + self.status.heartbeat_s)
            elif task is Task.WATCHER_CHECK:
                self._check_source()
                self.schedule.at(task, now + self.config.watcher_check_s)
            elif task is Task.TABLE_CHECK:
                self.schedule.at(task, now + _TABLE_CHECK_S)
                if self.tables.regrow():  # replaced or deleted behind our back
                    self.schedule.at(Task.RECONCILE, now)
            elif task is Task.SAVE_STATE:
                self._save_state()
            elif task is Task.EXPORT:
                self._export(force=self._idle())
        if self.state.dirty and not self.schedule.pending(Task.SAVE_STATE):
            self.schedule.at(Task.SAVE_STATE, now + self.config.state_save_interval_s)

    def _idle(self) -> bool:
        """No change pending and no chunk of work left."""
        return not (len(self.debouncer) or self._more_chunks)

    def _plan_export(self) -> None:
        """Schedule the export of partitioned tables: now if the loop is idle, else when
        the oldest unexported part write is ``export_interval_s`` old (the next batch
        plans again, so an export waits for the end of the work, never spins)."""
        due = self.worker.next_export()
        if due is not None:
            self.schedule.no_later_than(Task.EXPORT, self.clock() if self._idle() else due)

    def _export(self, *, force: bool) -> None:
        """Export the partitioned tables that are due (all of them with ``force``); after
        a failure, try again ``export_interval_s`` later."""
        self.schedule.cancel(Task.EXPORT)
        with self._table_lock() as locked:
            if locked and self.worker.export_tables(force=force) is None:
                self.schedule.at(Task.EXPORT, self.clock() + self.config.export_interval_s)
                return
        self._plan_export()

    def _save_state(self, *, force: bool = False) -> None:
        if self.state.dirty and (force or self.schedule.due(self.clock(), _SAVE)):
            self.state.save(self.root)
        self.schedule.cancel(Task.SAVE_STATE)

    def _check_source(self) -> None:
        """Replace a dead event source; rescan for what it may have missed."""
        restarts = self.source.restarts
        if self.source.check():
            if self.source.restarts > restarts:
                self.reporter.error("watcher_died", watch_mode=self.source.mode)
                self.status.counters["watcher_restarts"] += 1
            self.status.set_watch(self.source.decision)
            self._request_rescan("watcher_died")


_SAVE = frozenset({Task.SAVE_STATE})
