"""The loop's deadlines: a small scheduler and a backoff, pure and clock-free.

The daemon's loop waits on "next event or next deadline". Every timed duty
(heartbeat, systemd watchdog ping, periodic reconcile, a rescan after lost
events, the throttled state save, the watcher liveness check, the check that no table
was replaced behind the daemon's back) is a named
deadline here; the loop asks which are due and how long it may sleep. Nothing
in this module reads a clock or sleeps: callers pass ``now``.
"""

from __future__ import annotations

import enum

__all__ = ["Backoff", "Schedule", "Task"]


class Task(enum.Enum):
    """The loop's timed duties, in the order they run when due together."""

    WATCHDOG = "watchdog"
    HEARTBEAT = "heartbeat"
    WATCHER_CHECK = "watcher_check"
    TABLE_CHECK = "table_check"
    SAVE_STATE = "save_state"
    EXPORT = "export"
    RESCAN = "rescan"
    RECONCILE = "reconcile"


class Schedule:
    """Named deadlines on one monotonic clock."""

    def __init__(self) -> None:
        self._at: dict[Task, float] = {}

    def at(self, task: Task, when: float) -> None:
        """Make ``task`` due at ``when`` (replacing an earlier setting)."""
        self._at[task] = when

    def no_later_than(self, task: Task, when: float) -> None:
        """Make ``task`` due at ``when`` unless it is already due sooner."""
        self._at[task] = min(self._at.get(task, when), when)

    def cancel(self, task: Task) -> None:
        """Forget ``task`` until it is set again."""
        self._at.pop(task, None)

    def pending(self, task: Task) -> bool:
        """True if ``task`` has a deadline."""
        return task in self._at

    def deadline(self, task: Task) -> float | None:
        """When ``task`` is due, or None."""
        return self._at.get(task)

    def due(self, now: float, among: frozenset[Task] | None = None) -> list[Task]:
        """The tasks due at ``now`` (optionally only ``among``), in :class:`Task` order.

        A due task stays set: the caller runs it and sets its next deadline (or
        cancels it).
        """
        return [
            t
            for t in Task
            if t in self._at and self._at[t] <= now and (among is None or t in among)
        ]

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None if nothing is scheduled."""
        return min(self._at.values(), default=None)

    def wait_s(self, now: float, *others: float | None) -> float:
        """Seconds the loop may sleep at ``now``: until the earliest of the deadlines
        and ``others`` (e.g. the debouncer's), never negative; 0 when nothing is set."""
        times = [t for t in (self.next_deadline(), *others) if t is not None]
        return max(0.0, min(times) - now) if times else 0.0


class Backoff:
    """Exponential backoff for repeated rescans that calms down after a quiet spell.

    The first rescan may run at once; each one within ``2 * high`` seconds of the
    previous one doubles the wait (from ``low`` up to ``high``); after a quiet
    spell longer than that the wait is ``low`` again.

    Args:
        low: The first wait, in seconds.
        high: The longest wait, in seconds.
    """

    def __init__(self, low: float, high: float) -> None:
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low <= high")
        self.low, self.high = low, high
        self.delay = low
        self._last: float | None = None

    def ready_at(self) -> float:
        """The earliest clock time of the next rescan (``-inf`` before the first)."""
        return float("-inf") if self._last is None else self._last + self.delay

    def fired(self, now: float, *, counts: bool = True) -> None:
        """Note a rescan at ``now``; ``counts=False`` for routine ones (a poll scan)
        that must not lengthen the wait."""
        if counts:
            calm = self._last is None or now - self._last > self.high * 2
            self.delay = self.low if calm else min(self.delay * 2, self.high)
        self._last = now
