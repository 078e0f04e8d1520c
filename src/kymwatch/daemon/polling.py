"""Polling: the event source for file systems where inotify sees no remote writes.

A thread polls the store with :class:`~kymwatch.daemon.pollscan.PollScanner`
(folder stats; listings only where a folder changed; a share of the records
verified at each poll for in-place rewrites; the artifact files of records changed
in the last minutes statted at each poll) and reports what changed as
:class:`FileChange` items, as the inotify source does. The interval adapts to the
measured cost of a poll (:func:`next_interval`): a poll may take about
``budget`` (1 %) of a core, and at most a quarter of the wall time; never more
often than the minimum interval, never less often than the maximum.
``kymwatch sync`` requests are looked for every quarter second, whatever the interval.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from kymwatch.daemon.changes import ChangeKind, FileChange, Rescan
from kymwatch.daemon.classify import SYNC_DIR
from kymwatch.daemon.pollscan import PollScanner
from kymwatch.daemon.watcher import EventSink

__all__ = ["PollSettings", "PollingWatcher", "next_interval"]

log = structlog.get_logger(__name__)

SYNC_CHECK_S = 0.25
"""Seconds between looks for ``kymwatch sync`` requests."""

SUMMARY_S = 300.0
"""Seconds between ``poll_summary`` log lines."""


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How often to poll.

    Attributes:
        min_interval_s: Shortest time between polls (``--poll-interval``).
        max_interval_s: Longest time between polls, however slow a poll is.
        budget: Share of a core polling may take (0.01: a poll costing 40 ms of CPU
            time runs every 4 s).
        full_every: Every record's artifacts are fingerprinted once every this many
            polls (in-place rewrites change no folder).
        hot_s: Seconds a record stays in the hot set after a poll saw it change
            (its artifact files are statted at every poll meanwhile).
        hot_max: Most records in the hot set.
    """

    min_interval_s: float = 2.0
    max_interval_s: float = 30.0
    budget: float = 0.01
    full_every: int = 30
    hot_s: float = 300.0
    hot_max: int = 100


WALL_SHARE = 0.25
"""Largest share of wall time spent polling, however little CPU a poll takes (a share
whose server answers slowly is not polled back to back)."""


def next_interval(cpu_s: float, wall_s: float, settings: PollSettings) -> float:
    """Seconds until the next poll, for a poll costing ``cpu_s`` of this thread's CPU
    time and ``wall_s`` of wall time (smoothed figures).

    CPU time is what the budget counts: wall time also counts the waits for the
    interpreter lock while the daemon indexes, which would stretch the interval
    exactly when changes arrive.
    """
    wanted = max(cpu_s / settings.budget, wall_s / WALL_SHARE)
    top = max(settings.max_interval_s, settings.min_interval_s)
    return min(top, max(settings.min_interval_s, wanted))


class PollingWatcher:
    """Polls a store in a thread and reports its changes to ``sink``.

    Args:
        root: The store folder.
        sink: Receives :class:`FileChange` items (records added or deleted,
            ``analysis/`` folders whose artifacts changed, sync requests) and
            :class:`Rescan` when ``images/`` vanished, appeared or was replaced.
        settings: Interval bounds, budget and full-verification period.
        scanner: The change finder (tests inject one over a fake file system).
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        root: Path,
        sink: EventSink,
        settings: PollSettings | None = None,
        *,
        scanner: PollScanner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root, self.sink = root, sink
        self.settings = settings or PollSettings()
        self.clock = clock
        self.scanner = scanner or PollScanner(
            root,
            full_every=self.settings.full_every,
            hot_s=self.settings.hot_s,
            hot_max=self.settings.hot_max,
            clock=clock,
        )
        self.interval_s = self.settings.min_interval_s
        self._cost: tuple[float, float] | None = None  # smoothed (cpu_s, wall_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kymwatch-poll", daemon=True)
        self._seen_requests: set[str] = set()
        self._summary = _Summary()

    ordered = False
    """A poll finds changes by comparing stats, later than a sync request may be seen:
    a sync on a polled store is answered after a full scan."""

    @property
    def watch_count(self) -> int:
        return 0

    def start(self) -> None:
        """Take the first picture of the store (before the daemon's startup reconcile,
        so nothing written in between is missed), then poll in a thread."""
        self.scanner.baseline()
        self._summary.since = self.clock()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def rewatch(self) -> None:
        """Nothing to re-establish: the daemon's reconcile finds what was missed."""

    def is_alive(self) -> bool:
        """True while the polling thread runs (False once it died or was stopped)."""
        return self._thread.is_alive()

    def poll_once(self) -> None:
        """One poll: report the changes, adapt the interval, log the cost."""
        start, cpu = time.perf_counter(), time.thread_time()
        result = self.scanner.poll()
        for change in result.changes:
            self.sink(change)
        cost = time.perf_counter() - start
        cpu = time.thread_time() - cpu
        if self._cost is None:
            self._cost = (cpu, cost)
        else:  # one outlier (a garbage collection of the whole heap) moves it 4x at most
            c0, w0 = self._cost
            self._cost = (
                0.7 * c0 + 0.3 * min(cpu, 4 * c0 + 1e-3),
                0.7 * w0 + 0.3 * min(cost, 4 * w0 + 1e-3),
            )
        self.interval_s = next_interval(*self._cost, self.settings)
        log.debug(
            "poll_cycle",
            records=result.records,
            folders=result.folders,
            listed=result.listed,
            verified=result.verified,
            hot=result.hot,
            hot_files=result.hot_files,
            changes=len(result.changes),
            duration_ms=round(cost * 1000, 2),
            cpu_ms=round(cpu * 1000, 2),
            interval_s=round(self.interval_s, 3),
        )
        now = self.clock()
        self._summary.add(cost, cpu, len(result.changes))
        if now - self._summary.since >= SUMMARY_S:
            self._summary.log(now, self.interval_s, result.records)

    def _run(self) -> None:
        next_poll = self.clock() + self.interval_s
        while not self._stop.wait(max(0.0, min(SYNC_CHECK_S, next_poll - self.clock()))):
            self._check_sync_requests()
            if self.clock() < next_poll:
                continue
            try:
                self.poll_once()
            except Exception as e:  # never let the thread die of one bad poll
                log.exception("poll_failed", error=str(e))
                self.sink(Rescan("poll_failed"))
            next_poll = self.clock() + self.interval_s

    def _check_sync_requests(self) -> None:
        folder = self.root / SYNC_DIR
        try:
            names = {e.name for e in os.scandir(folder) if e.name.endswith(".request")}
        except OSError:
            return
        for name in sorted(names - self._seen_requests):
            self.sink(FileChange(str(folder / name), ChangeKind.ADDED))
        self._seen_requests = names


@dataclass(slots=True)
class _Summary:
    """Poll costs since the last ``poll_summary`` line."""

    since: float = 0.0
    polls: int = 0
    total_s: float = 0.0
    cpu_s: float = 0.0
    max_s: float = 0.0
    changes: int = 0

    def add(self, cost_s: float, cpu_s: float, changes: int) -> None:
        self.polls += 1
        self.total_s += cost_s
        self.cpu_s += cpu_s
        self.max_s = max(self.max_s, cost_s)
        self.changes += changes

    def log(self, now: float, interval_s: float, records: int) -> None:
        wall = max(now - self.since, 1e-9)
        log.info(
            "poll_summary",
            polls=self.polls,
            records=records,
            changes=self.changes,
            mean_ms=round(self.total_s / max(self.polls, 1) * 1000, 2),
            max_ms=round(self.max_s * 1000, 2),
            busy_percent=round(self.total_s / wall * 100, 3),
            cpu_percent=round(self.cpu_s / wall * 100, 3),
            interval_s=round(interval_s, 3),
        )
        self.since, self.polls, self.total_s, self.cpu_s = now, 0, 0.0, 0.0
        self.max_s, self.changes = 0.0, 0
