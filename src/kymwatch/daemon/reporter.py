"""The reporter: outcomes and state changes → log lines, status file, systemd.

The daemon's loop hands every fact here (a batch indexed, a batch failed, events
lost, a state change, a heartbeat); the reporter keeps the status (lifetime
counters and the *current* problems, one per record and indexer), publishes it,
and talks to the service manager. It decides nothing about what to index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from kymwatch.daemon.changes import Batch
from kymwatch.daemon.debouncer import DUE_BY
from kymwatch.daemon.problems import SAVE_EVERY_S, SharedValues, load_problems, save_problems
from kymwatch.daemon.progress import Progress, ProgressSink
from kymwatch.daemon.sdnotify import Notifier
from kymwatch.daemon.status import DaemonState, DaemonStatus
from kymwatch.daemon.worker import BatchResult
from kymwatch.index import OutcomeStatus, RecordOutcome
from kymwatch.store import utc_now_iso

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from kymwatch.daemon.metrics import StoreMetrics

__all__ = ["RECENT_WRITE_S", "Reporter"]

log = structlog.get_logger(__name__)

RECENT_WRITE_S = 5.0
"""An unreadable file modified less than this long ago is probably still being written."""

_NOT_CURRENT = {OutcomeStatus.UNREADABLE, OutcomeStatus.INVALID}
_PROGRESS_PUBLISH_S = 1.0  # the status file shows progress at least this often


class Reporter:
    """Publishes what the daemon does.

    Args:
        root: The store folder (the status file goes to ``index/status.json``).
        status: The live status it maintains.
        notifier: systemd notifications (a no-op outside systemd).
        clock: Monotonic clock, for batch lag and progress.
        metrics: Prometheus metrics of this store (None: not exported).
        bar: Where progress is drawn (a terminal bar; None: only the status file).
    """

    def __init__(
        self,
        root: Path,
        status: DaemonStatus,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        *,
        metrics: StoreMetrics | None = None,
        bar: ProgressSink | None = None,
    ) -> None:
        self.root, self.status, self.notifier, self.clock = root, status, notifier, clock
        self.metrics, self.bar = metrics, bar
        self.watch_count: Callable[[], int] = lambda: status.watches
        self.queue_depth: Callable[[], int] = lambda: status.queue_depth
        self._reported_skips: set[str] = set()
        self._progress: Progress | None = None
        self._progress_published = 0.0
        self._problems_dirty = False
        self._problems_saved_at: float | None = None
        self._state_unpublished = False  # set_state(publish=False) not written yet
        self._shared = SharedValues()

    # -- state and liveness ---------------------------------------------------------------
    @property
    def state(self) -> DaemonState:
        """The daemon's current state."""
        return self.status.state

    def set_state(self, state: DaemonState, *, publish: bool = True) -> None:
        """Change the state; a change is published at once, unless ``publish`` is False
        (then the next publication carries it: :meth:`publish_state`, a heartbeat, or
        the next change)."""
        if state != self.status.state:
            self.status.state = state
            if publish:
                self.publish()
            else:
                self._state_unpublished = True

    def publish_state(self) -> None:
        """Publish a state change made with ``publish=False``, if any is unwritten (the
        loop's duties call this: work that lasts, e.g. a wait for the table lock, shows
        its state)."""
        if self._state_unpublished:
            self.publish()

    def publish(self) -> None:
        """Write the status file and send a systemd ``STATUS=`` line (the heartbeat)."""
        self._state_unpublished = False
        self.status.queue_depth = self.queue_depth()
        self.status.watches = self.watch_count()
        p = self._progress
        self.status.progress = None if p is None else p.to_json()
        self.status.write(self.root)
        self.notifier.status(self.status_line())
        self._feed_gauges()
        now = self.clock()
        due = self._problems_saved_at is None or now - self._problems_saved_at >= SAVE_EVERY_S
        if self._problems_dirty and due:
            self.save_problems()

    def _feed_gauges(self) -> None:
        if self.metrics is None:
            return
        p = self._progress
        self.metrics.publish(
            state=self.status.state.value,
            queue_depth=self.status.queue_depth,
            pending=self.status.queue_depth + (p.total - p.done if p else 0),
            watches=self.status.watches,
            problems=self.status.problem_counts(),
        )

    # -- progress of long work ------------------------------------------------------------
    def progress_start(self, what: str, total: int) -> None:
        """Long work begins: ``total`` records to do (shown in status and on the bar)."""
        now = self.clock()
        self._progress = Progress(what, 0, total, now, now)
        self._progress_published = now
        self.publish()

    def progress_step(self, done: int) -> None:
        """``done`` records of the work in hand are done (called after each chunk)."""
        p = self._progress
        if p is None:
            return
        now = self.clock()
        self._progress = Progress(p.what, done, p.total, p.started, now)
        if self.bar is not None:
            self.bar.update(self._progress)
        if now - self._progress_published >= _PROGRESS_PUBLISH_S:
            self._progress_published = now
            self.publish()

    def progress_end(self) -> None:
        """The long work ended (done, or interrupted by a stop)."""
        if self._progress is None:
            return
        self._progress = None
        if self.bar is not None:
            self.bar.close()
        self.publish()

    def restore_problems(self, indexers: Iterable[str]) -> None:
        """Take over the problems the last daemon saved (before the startup reconcile,
        whose outcomes replace those of the records it re-indexes)."""
        restored = load_problems(self.root, indexers, self._shared)
        if restored:
            self.status.problems.update(restored)
            log.info("problems_restored", problems=len(restored))

    def save_problems(self) -> None:
        """Save the current problems now (``index/kymwatch-problems.json``)."""
        self._problems_saved_at = self.clock()
        if save_problems(self.root, self.status.problems):
            self._problems_dirty = False

    def stale_changed(self, stale: dict[str, dict[str, str]]) -> None:
        """The stale counter's records (indexer → image_id → reason), from its thread:
        they replace the listed stale analyses at once (one assignment)."""
        before = self.status.stale
        now: dict[tuple[str, str], dict[str, Any]] = {}
        for indexer, records in stale.items():
            for image_id, reason in records.items():
                old = before.get((image_id, indexer))
                same = old is not None and old["reason"] == reason
                now[(image_id, indexer)] = {
                    "image_id": image_id,
                    "indexer": indexer,
                    "problem": "stale",
                    "reason": reason,
                    "since_utc": old["since_utc"] if same and old else utc_now_iso(),
                }
        self.status.stale = now

    def watchdog(self) -> None:
        """Tell systemd the loop is alive (``WATCHDOG=1``)."""
        self.notifier.watchdog()

    def ready(self) -> None:
        """Tell systemd the first reconcile is done (``READY=1``)."""
        self.notifier.ready(self.status_line())

    def stopping(self) -> None:
        """Tell systemd the daemon is stopping."""
        self.notifier.stopping()

    def stopped(self, pending: int) -> None:
        """Publish the final status and log ``daemon_stopped``."""
        self.status.state = DaemonState.STOPPED
        self.status.queue_depth = pending
        self.status.progress = None
        self.status.write(self.root)
        self._feed_gauges()
        if self._problems_dirty:
            self.save_problems()
        log.info("daemon_stopped", pending=pending, **self.status.counters)

    def status_line(self) -> str:
        """One line for ``systemctl status``."""
        s = self.status
        last = s.last_update_utc or "never"
        indexed = s.counters["records_indexed"]
        problems = len(s.problems) + len(s.stale)
        return f"{s.state.value}; queue {s.queue_depth}; last update {last}; indexed {indexed}" + (
            f"; {problems} problems" if problems else ""
        )

    # -- facts ----------------------------------------------------------------------------
    def events_lost(self, reason: str) -> None:
        """An event source reported lost events (a rescan follows)."""
        self.status.counters["lost_event_signals"] += 1
        self.status.error("events_lost", reason=reason)
        if self.metrics is not None:
            self.metrics.events_lost(reason)

    def reconciled(self, reason: str, *, records: int, changed: int, duration_s: float) -> None:
        """A reconcile scan (and the indexing it caused) finished: log ``reconcile_done``
        (at debug for a periodic one that found nothing) and observe its duration."""
        level = log.info if changed or reason != "periodic" else log.debug
        level(
            "reconcile_done",
            reason=reason,
            records=records,
            changed=changed,
            duration_ms=round(duration_s * 1000, 2),
        )
        if self.metrics is not None:
            self.metrics.reconciled(reason, duration_s)

    def error(self, event: str, **fields: Any) -> None:
        """Remember a recent problem of the daemon itself (shown by ``kymwatch status``)."""
        self.status.error(event, **fields)

    def batch_failed(self, error: Exception, records: int) -> None:
        """Indexing a batch raised; the daemon stays up and retries."""
        log.error("batch_failed", records=records, error=str(error), exc_info=error)
        self.status.counters["batch_failures"] += 1
        self.status.error("batch_failed", error=str(error), records=records)
        if self.metrics is not None:
            self.metrics.batch_failed()

    def batch_done(self, batch: Batch, result: BatchResult, source: str, queue_depth: int) -> None:
        """Count a batch, update the current problems and log ``batch_indexed``."""
        c = self.status.counters
        c["batches"] += 1
        c["records_indexed"] += result.records
        c["rows_written"] += result.rows_written
        c["retries"] += result.retries
        c.update(result.outcomes)
        self._track(result.settled, retrying=False)
        self._track(result.retrying, retrying=True)
        for o in result.problems:
            self.status.error(o.status.value, image_id=o.image_id, indexer=o.indexer, path=o.path)
        if result.tables:
            self.status.last_update_utc = utc_now_iso()
        self.status.queue_depth = queue_depth
        lag_s = self.clock() - batch.first_seen
        if self.metrics is not None:
            self.metrics.batch(
                source,
                records=result.records,
                rows=result.rows_written,
                outcomes=result.outcomes,
                lag_s=lag_s,
                published=bool(result.tables),
            )
        why: dict[str, Any] = {}
        if batch.due_by:  # a batch of the debouncer: which signal made its records due
            why["due_by"] = {k: batch.due_by.count(k) for k in DUE_BY}
        log.info(
            "batch_indexed",
            source=source,
            records=result.records,
            rows=result.rows_written,
            tables=result.tables,
            chunks=result.chunks,
            duration_ms=result.duration_ms,
            lag_ms=round(lag_s * 1000, 1),
            queue_depth=queue_depth,
            retries=result.retries,
            **why,
            **dict(result.outcomes),
        )

    def _track(self, outcomes: Iterable[RecordOutcome], *, retrying: bool) -> None:
        now = ""  # one string for the problems this batch found
        for o in outcomes:
            key = (o.image_id, o.indexer)
            if o.status in (OutcomeStatus.INDEXED, OutcomeStatus.REMOVED):
                if self.status.problems.pop(key, None) is not None:
                    self._problems_dirty = True
                continue
            self._problems_dirty = True
            before = self.status.problems.get(key)
            if before is None and not now:
                now = utc_now_iso()
            entry: dict[str, Any] = {
                "image_id": o.image_id,
                "indexer": o.indexer,
                "problem": o.status.value,
                "since_utc": before["since_utc"] if before else now,
            }
            if o.status is OutcomeStatus.MISSING:
                entry["looked_for"] = self._shared.looked_for(o.keys)
            else:
                entry |= {"path": o.path, "error": o.error, "retrying": retrying}
            self.status.problems[key] = entry

    def folders_skipped(self, paths: Iterable[str]) -> None:
        """Log ``record_folder_skipped`` once per entry of ``images/`` that is no record."""
        for path in paths:
            if path not in self._reported_skips:
                self._reported_skips.add(path)
                log.warning("record_folder_skipped", path=path, reason=_skip_reason(path))

    def not_current(self, pending: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The records whose rows do not reflect their artifacts now, and why.

        Unreadable or invalid artifacts (old rows kept; ``recently_modified`` when the
        file changed in the last few seconds, so it is probably still being written)
        and records still waiting to be indexed (``pending``). A missing artifact is
        not listed: the table is right to have no rows for it.
        """
        out: list[dict[str, Any]] = []
        for key in sorted(self.status.problems):
            p = self.status.problems[key]
            if p["problem"] not in {s.value for s in _NOT_CURRENT}:
                continue
            item = {k: p[k] for k in ("image_id", "indexer", "problem", "path", "error")}
            item["retrying"] = p.get("retrying", False)
            item["recently_modified"] = _recently_modified(p.get("path"))
            out.append(item)
        listed = {p["image_id"] for p in out}
        for image_id in sorted(set(pending) - listed):
            out.append({"image_id": image_id, "indexer": None, "problem": "pending"})
        return out


def _recently_modified(path: str | None) -> bool:
    if not path:
        return False
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return False
    return age < RECENT_WRITE_S


def _skip_reason(path: str) -> str:
    name = os.path.basename(path)
    if os.path.islink(path):
        return "symbolic links are not followed"
    if not os.path.isdir(path):
        return "not a folder"
    return f"{name!r} is not a valid image id (letters, digits, '.', '_', '-'; no leading '.')"
