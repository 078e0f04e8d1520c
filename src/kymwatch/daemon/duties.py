"""The loop's timed duties: what runs when :mod:`~kymwatch.daemon.schedule` says it is due.

:class:`Duties` runs the housekeeping deadlines that are due (systemd watchdog ping,
heartbeat, event-source check, table check, throttled state save, export of
partitioned tables) and sets their next deadlines. It also plans the export of
partitioned tables: once the loop has been idle for ``export_idle_s``, else when the
oldest unexported part write is ``export_interval_s`` old. It never indexes: the loop
calls it between two batches and between two chunks of one piece of work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.schedule import Schedule, Task
from kymwatch.daemon.sdnotify import Notifier
from kymwatch.daemon.sources import SourceKeeper
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonStatus
from kymwatch.daemon.tables import TableKeeper
from kymwatch.daemon.worker import Worker

__all__ = ["Duties"]

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
_SAVE = frozenset({Task.SAVE_STATE})
_EXPORT_CHECK_S = 0.05  # how often the loop looks whether the exporter thread is done
_TABLE_CHECK_S = 2.0  # how often the tables' fingerprints are compared with the state's


class Duties:
    """Runs the loop's due housekeeping and plans the export of partitioned tables.

    Args:
        root: The store folder.
        config: The daemon's settings (intervals).
        clock: Monotonic clock.
        schedule: The loop's deadlines.
        notifier: systemd notifications (its watchdog interval).
        reporter: Publishes the status, pings the watchdog, records errors.
        status: The status the reporter publishes (counters, watch decision).
        state: What the daemon indexed (saved when dirty).
        tables: Checks the tables for replacement or deletion.
        worker: Exports the partitioned tables.
        source: The event source (checked for liveness).
        debouncer: Pending changes (the loop is not idle while it holds any).
        table_lock: Takes the store's table lock; yields False if it was not
            obtained (the daemon is stopping).
        request_rescan: Asks for a rescan (after a dead event source).
    """

    def __init__(
        self,
        root: Path,
        config: DaemonConfig,
        clock: Callable[[], float],
        schedule: Schedule,
        notifier: Notifier,
        reporter: Reporter,
        status: DaemonStatus,
        state: IndexState,
        tables: TableKeeper,
        worker: Worker,
        source: SourceKeeper,
        debouncer: Debouncer,
        *,
        table_lock: Callable[[], contextlib.AbstractContextManager[bool]],
        request_rescan: Callable[[str], None],
    ) -> None:
        self.root, self.config, self.clock, self.schedule = root, config, clock, schedule
        self.notifier, self.reporter, self.status = notifier, reporter, status
        self.state, self.tables, self.worker = state, tables, worker
        self.source, self.debouncer = source, debouncer
        self._table_lock, self._request_rescan = table_lock, request_rescan
        self._more_chunks = False  # the loop is between two chunks of one piece of work
        self._worked_at = float("-inf")  # when the last chunk of work ended

    def start(self, now: float) -> None:
        """Set the first deadlines of the periodic duties."""
        self.schedule.at(Task.HEARTBEAT, now)
        self.schedule.at(Task.WATCHER_CHECK, now + self.config.watcher_check_s)
        self.schedule.at(Task.TABLE_CHECK, now + _TABLE_CHECK_S)
        if self.notifier.watchdog_interval() is not None:
            self.schedule.at(Task.WATCHDOG, now)

    def run(self) -> None:
        """Run every housekeeping duty that is due and set its next deadline (and
        publish a state change left unwritten, see ``Reporter.publish_state``)."""
        self.reporter.publish_state()
        now = self.clock()
        for task in self.schedule.due(now, _HOUSEKEEPING):
            if task is Task.WATCHDOG:
                self.reporter.watchdog()
                self.schedule.at(task, now + (self.notifier.watchdog_interval() or 1.0))
            elif task is Task.HEARTBEAT:
                self.reporter.publish()
                self.schedule.at(task, now + self.status.heartbeat_s)
            elif task is Task.WATCHER_CHECK:
                self.check_source()
                self.schedule.at(task, now + self.config.watcher_check_s)
            elif task is Task.TABLE_CHECK:
                self.schedule.at(task, now + _TABLE_CHECK_S)
                if self.tables.regrow():  # replaced or deleted behind our back
                    self.schedule.at(Task.RECONCILE, now)
            elif task is Task.SAVE_STATE:
                self.save_state()
            elif task is Task.EXPORT:
                self.export(force=self.idle_for_export(now), wait=False)
        if self.state.dirty and not self.schedule.pending(Task.SAVE_STATE):
            self.schedule.at(Task.SAVE_STATE, now + self.config.state_save_interval_s)

    def between_chunks(self, more: bool) -> None:
        """The duties between two chunks of work; ``more``: chunks of it are left (the
        loop is not idle: no export is forced meanwhile)."""
        self._more_chunks = more
        self._worked_at = self.clock()
        self.plan_export()
        self.run()
        self._more_chunks = False

    def idle(self) -> bool:
        """No change pending and no chunk of work left."""
        return not (len(self.debouncer) or self._more_chunks)

    def idle_for_export(self, now: float) -> bool:
        """The loop is idle and has done no work for ``export_idle_s``: every
        unexported partitioned table may be exported."""
        return self.idle() and now >= self._worked_at + self.config.export_idle_s

    def plan_export(self) -> None:
        """Schedule the export of partitioned tables: once the loop has been idle for
        ``export_idle_s``, else when the oldest unexported part write is
        ``export_interval_s`` old (the next batch plans again, so an export waits for
        the end of the work, never spins; a steady stream of edits gets one export per
        ``export_interval_s``, not one after each edit)."""
        due = self.worker.next_export()
        if due is not None:
            if self.idle():
                quiet = max(self.clock(), self._worked_at + self.config.export_idle_s)
                due = min(due, quiet)
            self.schedule.no_later_than(Task.EXPORT, due)

    def export(self, *, force: bool, wait: bool = True) -> None:
        """Export the partitioned tables that are due (all of them with ``force``); after
        a failure, try again ``export_interval_s`` later.

        Without ``wait`` the export is written on the exporter thread while the loop goes
        on (the encode of a 500k-row table is ~150 ms: edits meanwhile would wait for it);
        the loop looks every ``_EXPORT_CHECK_S`` whether it ended. With ``wait`` (sync,
        start) it is written now, after the one on the exporter thread ended.
        """
        self.schedule.cancel(Task.EXPORT)
        retry = self.clock() + self.config.export_interval_s
        if not wait:
            ended = self.worker.export_ended()
            if ended and self.worker.next_export() is not None:
                ended = (
                    self.worker.export_ended() if self.worker.start_export(force=force) else False
                )
            if ended is None:  # writing on the exporter thread: look again soon
                self.schedule.at(Task.EXPORT, self.clock() + _EXPORT_CHECK_S)
            elif ended is False:
                self.schedule.at(Task.EXPORT, retry)
            else:
                self.plan_export()
            return
        # Before the table lock: the exporter thread takes it to replace its file.
        self.worker.export_ended(wait=True)
        with self._table_lock() as locked:
            if locked and self.worker.export_tables(force=force) is None:
                self.schedule.at(Task.EXPORT, retry)
                return
        self.plan_export()

    def save_state(self, *, force: bool = False) -> None:
        """Save the state if it changed and its save is due (or ``force``)."""
        if self.state.dirty and (force or self.schedule.due(self.clock(), _SAVE)):
            self.state.save(self.root)
        self.schedule.cancel(Task.SAVE_STATE)

    def check_source(self) -> None:
        """Replace a dead event source; rescan for what it may have missed."""
        restarts = self.source.restarts
        if self.source.check():
            if self.source.restarts > restarts:
                self.reporter.error("watcher_died", watch_mode=self.source.mode)
                self.status.counters["watcher_restarts"] += 1
            self.status.set_watch(self.source.decision)
            self._request_rescan("watcher_died")
