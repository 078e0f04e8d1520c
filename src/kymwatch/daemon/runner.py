"""The daemon: event source → classify → debounce → worker, with reconcile as the truth.

:class:`Daemon` wires the parts and runs the loop; it decides nothing itself:

- :mod:`~kymwatch.daemon.schedule` says when each timed duty is due,
  :mod:`~kymwatch.daemon.duties` runs the due ones (heartbeat, checks, save, export),
- :mod:`~kymwatch.daemon.planner` says what to index (and which tables to rebuild),
  :mod:`~kymwatch.daemon.reconciler` runs the reconciles and rescans it plans,
- :mod:`~kymwatch.daemon.worker` indexes it, in chunks cut by
  :mod:`~kymwatch.daemon.indexing`,
- :mod:`~kymwatch.daemon.answer` answers ``kymwatch sync`` requests,
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kymwatch.daemon import memory
from kymwatch.daemon.answer import SyncAnswerer
from kymwatch.daemon.choice import IndexerChoice, initial_indexers
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.duties import Duties
from kymwatch.daemon.indexing import ChunkedIndexing
from kymwatch.daemon.instance import DaemonLock
from kymwatch.daemon.intake import Intake
from kymwatch.daemon.progress import ProgressSink
from kymwatch.daemon.reconciler import Reconciler
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.schedule import Schedule, Task
from kymwatch.daemon.sdnotify import Notifier, SystemdNotifier
from kymwatch.daemon.signals import handle_signals
from kymwatch.daemon.sources import SourceFactory, SourceKeeper
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonState, DaemonStatus
from kymwatch.daemon.tablelock import hold_table_lock
from kymwatch.daemon.tables import TableKeeper
from kymwatch.daemon.worker import Worker
from kymwatch.errors import UnsafeStoreError
from kymwatch.index import DatasetIndexer, KymDataset, ManifestIndexer, PartitionPolicy
from kymwatch.store import INDEX_DIR, TABLES_DIR, remove_stale_temporaries

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from kymwatch.daemon.metrics import StoreMetrics

__all__ = ["Daemon", "SourceFactory"]

log = structlog.get_logger(__name__)

_ACCEPT_SLICE = 5_000  # events classified between two looks at the loop's duties


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
        self._working = False  # the loop is indexing, reconciling or answering a sync
        self.stale = StaleCounter(
            self.root, self._publish_stale, busy=self._busy, cached=self.kd.current_cached
        )
        self.duties = Duties(
            self.root,
            config,
            clock,
            self.schedule,
            self.notifier,
            self.reporter,
            self.status,
            self.state,
            self.tables,
            self.worker,
            self.source,
            self.debouncer,
            table_lock=self._table_lock,
            request_rescan=self._request_rescan,
        )
        self.indexing = ChunkedIndexing(
            self.root,
            config,
            clock,
            self.debouncer,
            self.worker,
            self.reporter,
            self.choice,
            self.tables,
            self.schedule,
            self.stale,
            self._stop,
            table_lock=self._table_lock,
            between=self.duties.between_chunks,
            request_rescan=self._request_rescan,
        )
        self.reconciler = Reconciler(
            self.root,
            config,
            clock,
            self.kd,
            self.schedule,
            self.state,
            self.status,
            self.tables,
            self.worker,
            self.reporter,
            self.stale,
            self.source,
            self.indexing,
            self.duties,
            self._stop,
            relock=self._relock,
        )
        self.answers = SyncAnswerer(
            self.root,
            clock,
            self.intake,
            self.source,
            self.state,
            self.tables,
            self.debouncer,
            self.reporter,
            self.status,
            self.schedule,
            self.indexing,
            self.duties,
            self.reconciler,
        )

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
        self.status.lock_fd = self._lock.fd
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
        self.duties.start(now)
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
            self.reconciler.reconcile("startup")
            self.duties.export(force=False)  # an export a crash left older than its parts
            frozen = memory.daemon_up()  # kymwatch run: start-up objects out of the GC's scans
            if frozen is not None:
                log.info("gc_frozen", **frozen)
            if self.reporter.state is DaemonState.RECONCILING:
                self.reporter.set_state(DaemonState.WATCHING)
            self.reporter.ready()
            self.stale.start()
            self._loop()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.reporter.set_state(DaemonState.STOPPING)
        self.indexing.flush()  # tables merged for a backlog are written before the exit
        self.reporter.stopping()
        self.stale.stop()
        self.source.stop()
        self.worker.export_tables(force=True)
        self.duties.save_state(force=True)
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
                    self.duties.run()
            if self._stop.is_set():
                break
            self._working = True
            if self._hangup.is_set():
                self._reopen_logs()
            now = self.clock()
            due = self.schedule.due(now)
            if self.intake.syncs or Task.RESCAN in due or Task.RECONCILE in due:
                self.indexing.flush()  # tables held for a backlog: written first
            if self.intake.syncs:
                self.answers.answer()
            elif Task.RESCAN in due:
                self.reconciler.rescan(now)
            elif Task.RECONCILE in due:
                self.reconciler.reconcile("periodic")
            batch = self.debouncer.due(self.clock())
            # A backlog's rows stay held while records are due (merged and written
            # once it is drained or after config.backlog_write_s).
            self.indexing.index(
                batch.changes,
                batch.first_seen,
                source="events",
                due_by=batch.due_by,
                keep_held=True,
            )
            self.duties.run()
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
        self.reconciler.request_rescan(reason)

    def _relock(self) -> None:
        """Lock the store folder again if it was replaced (deleted, then restored):
        otherwise a second daemon could start on it."""
        held = self._lock.retake()
        self.status.lock_fd = self._lock.fd
        if not held:
            log.error("daemon_lock_lost", store=str(self.root))
            self.reporter.error("daemon_lock_lost")
            self.stop()

    def _table_lock(self) -> contextlib.AbstractContextManager[bool]:
        return hold_table_lock(
            self.kd.store,
            slice_s=self.config.table_lock_wait_s,
            stopping=self._stop,
            between=self.duties.run,
        )
