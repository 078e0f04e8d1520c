"""The daemon's side of ``kymwatch sync``: doing the work a request needs, then answering.

:class:`SyncAnswerer` takes the pending requests, asks
:func:`~kymwatch.daemon.sync.choose_sync_path` which work proves every earlier write was
seen (the events received, or a full reconcile), indexes everything the debouncer held,
exports the partitioned tables and saves the state, then answers each request with the
outcome (``sync_answered``). The request and answer files are
:mod:`~kymwatch.daemon.sync`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.duties import Duties
from kymwatch.daemon.indexing import ChunkedIndexing
from kymwatch.daemon.intake import Intake
from kymwatch.daemon.reconciler import Reconciler
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.schedule import Schedule, Task
from kymwatch.daemon.sources import SourceKeeper
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonState, DaemonStatus
from kymwatch.daemon.sync import answer_sync, choose_sync_path
from kymwatch.daemon.tables import TableKeeper
from kymwatch.store import IMAGES_DIR

__all__ = ["SyncAnswerer"]

log = structlog.get_logger(__name__)


class SyncAnswerer:
    """Answers the pending ``kymwatch sync`` requests once the tables reflect them.

    Args:
        root: The store folder.
        clock: Monotonic clock.
        intake: Holds the pending requests.
        source: The event source (whether it delivers events in order).
        state: What the daemon indexed (a journal of a crashed run).
        tables: Whether a table was replaced behind the daemon's back.
        debouncer: The changes held back, indexed before the answer.
        reporter: Publishes the status the answer reflects.
        status: The last errors (what a failed answer names).
        schedule: Whether a reconcile became due (new tables to grow).
        indexing: Indexes the held changes; takes back what stays pending.
        duties: Exports the partitioned tables and saves the state.
        reconciler: Runs a full reconcile; knows of a rescan asked for and not yet
            done (a sign of loss).
    """

    def __init__(
        self,
        root: Path,
        clock: Callable[[], float],
        intake: Intake,
        source: SourceKeeper,
        state: IndexState,
        tables: TableKeeper,
        debouncer: Debouncer,
        reporter: Reporter,
        status: DaemonStatus,
        schedule: Schedule,
        indexing: ChunkedIndexing,
        duties: Duties,
        reconciler: Reconciler,
    ) -> None:
        self.root, self.clock, self.intake, self.source = root, clock, intake, source
        self.state, self.tables, self.debouncer = state, tables, debouncer
        self.reporter, self.status, self.schedule = reporter, status, schedule
        self.indexing, self.duties = indexing, duties
        self.reconciler = reconciler

    def answer(self) -> None:
        """Answer the pending ``kymwatch sync`` requests (see :mod:`kymwatch.daemon.sync`):
        from the events received when they prove every earlier write was seen, else
        after a full reconcile; everything the debouncer held is indexed first."""
        start = time.perf_counter()
        tokens = self.intake.take_syncs()
        path, why = choose_sync_path(
            ordered_source=self.source.ordered,
            loss_pending=self.reconciler.rescan_reason,
            tables_changed=self.tables.regrow(),
            journaled=bool(self.state.suspects),
            store_available=(self.root / IMAGES_DIR).is_dir()
            and self.reporter.state is not DaemonState.STORE_UNAVAILABLE,
        )
        if path == "events":
            held = self.debouncer.flush()
            ok = self.indexing.index(held.changes, held.first_seen, source="sync", final=True)
        else:
            ok = self.reconciler.reconcile("sync", pending=self.debouncer.flush())
        if ok and Task.RECONCILE in self.schedule.due(self.clock()):
            # The data revealed another generation (or a table vanished): the new
            # tables are grown from every record before the answer, not after it.
            path, why = "full", "new_tables"
            ok = self.reconciler.reconcile("sync")
        self.duties.export(force=True)  # tables/<name>.parquet reflects every earlier write
        self.duties.save_state(force=True)
        errors = self.status.last_errors
        error = None if ok else (errors[-1]["event"] if errors else "failed")
        pending = self.debouncer.flush()
        not_current = self.reporter.not_current(c.image_id for c in pending.changes)
        self.indexing.push_back(pending.changes, pending.first_seen)
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
