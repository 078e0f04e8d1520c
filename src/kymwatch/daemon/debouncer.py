"""Per-record debouncing: a pure state machine driven by an injected clock.

A record becomes due when no change arrived for ``quiet`` seconds, or when
``max_delay`` seconds passed since its first pending change, whichever comes
first, so a record written without pause is still indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

from kymwatch.daemon.changes import Batch, RecordChange

__all__ = ["Debouncer"]


@dataclass(slots=True)
class _Pending:
    change: RecordChange
    first: float
    last: float
    not_before: float = 0.0


class Debouncer:
    """Coalesces record changes and releases each record once it is due.

    Args:
        quiet: Seconds without a new change after which a record is due.
        max_delay: Upper bound, from a record's first pending change, on its wait.
    """

    def __init__(self, quiet: float = 0.3, max_delay: float = 5.0) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError("need 0 <= quiet <= max_delay")
        self.quiet = quiet
        self.max_delay = max_delay
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def feed(self, change: RecordChange, now: float) -> None:
        """Record a change seen at clock time ``now``."""
        p = self._pending.get(change.image_id)
        if p is None:
            self._pending[change.image_id] = _Pending(change, now, now)
        else:
            p.change = p.change.merge(change)
            p.last = max(p.last, now)

    def defer(self, change: RecordChange, now: float, until: float) -> None:
        """Queue ``change`` to be due no earlier than ``until`` (a retry with backoff).

        A later ordinary change of the record does not make it due sooner.
        """
        self.feed(change, now)
        p = self._pending[change.image_id]
        p.not_before = max(p.not_before, until)

    def _due_at(self, p: _Pending) -> float:
        return max(min(p.last + self.quiet, p.first + self.max_delay), p.not_before)

    def next_deadline(self) -> float | None:
        """The earliest clock time at which some record becomes due, or None if idle."""
        return min((self._due_at(p) for p in self._pending.values()), default=None)

    def due(self, now: float) -> Batch:
        """Remove and return every record due at ``now``."""
        ready = [i for i, p in self._pending.items() if self._due_at(p) <= now]
        return self._take(ready)

    def flush(self) -> Batch:
        """Remove and return every pending record, due or not."""
        return self._take(list(self._pending))

    def _take(self, ids: list[str]) -> Batch:
        if not ids:
            return Batch((), 0.0)
        taken = [self._pending.pop(i) for i in sorted(ids)]
        return Batch(tuple(p.change for p in taken), min(p.first for p in taken))
