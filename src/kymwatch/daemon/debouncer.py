"""Per-record debouncing: a pure state machine driven by an injected clock.

A record becomes due in one of three ways, whichever comes first:

- **settle** — its writer said it is done (a completion signal: a file renamed onto
  its name, or closed after writing; see :class:`~kymwatch.daemon.changes.Signal`)
  and no other file of the record is still being written: ``settle`` seconds after
  its last change, so the sibling files and ``.zattrs`` updates of one save coalesce;
- **quiet** — otherwise (an in-place write not closed yet, a change whose source
  cannot tell: polling, a deletion): ``quiet`` seconds after its last change;
- **max delay** — ``max_delay`` seconds after its first pending change, so a record
  written without pause is still indexed.

A plain modification after a completion signal (a writer that reopened the file,
or another file of the record written in place) puts the record back on the quiet
window until that file, too, is completed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kymwatch.daemon.changes import Batch, ChangeKind, FileChange, RecordChange, Signal

__all__ = ["DUE_BY", "Debouncer"]

DUE_BY = ("moved", "closed", "quiet", "max_delay", "retry")
"""Why a record became due (``Batch.due_by``; the ``due_by`` field of ``batch_indexed``):
settled after a rename (``moved``) or a close after writing (``closed``), the quiet
window, the maximum delay, or a retry's backoff (``Debouncer.defer``)."""

_UNKNOWN_PATH = ""  # a change fed without its file event: treated as an open write


@dataclass(slots=True)
class _Pending:
    change: RecordChange
    first: float
    last: float
    not_before: float = 0.0
    completed: Signal = Signal.NONE  # the latest completion signal seen
    writing: set[str] = field(default_factory=set)  # files written in place, not closed


class Debouncer:
    """Coalesces record changes and releases each record once it is due.

    Args:
        quiet: Seconds without a new change after which a record is due, when no
            completion signal says its writes are done.
        max_delay: Upper bound, from a record's first pending change, on its wait.
        settle: Seconds after the last change of a record whose writes are all
            complete (renamed into place or closed after writing).
    """

    def __init__(self, quiet: float = 0.3, max_delay: float = 5.0, settle: float = 0.02) -> None:
        if quiet < 0 or settle < 0 or max_delay < quiet:
            raise ValueError("need 0 <= quiet <= max_delay and 0 <= settle")
        self.quiet = quiet
        self.max_delay = max_delay
        self.settle = settle
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def feed(self, change: RecordChange, now: float, event: FileChange | None = None) -> None:
        """Record a change seen at clock time ``now``.

        Args:
            change: What changed in the record.
            now: Clock time.
            event: The file event behind it; its :class:`Signal` and path decide
                between settle and quiet. None counts as a plain modification.
        """
        p = self._pend(change, now)
        if event is None:
            p.writing.add(_UNKNOWN_PATH)
        elif event.signal is not Signal.NONE:
            p.writing.discard(event.path)
            p.completed = event.signal
        elif event.kind is ChangeKind.DELETED:
            p.writing.discard(event.path)  # gone: no close will come under this name
        elif not event.is_dir:  # created or modified in place: a writer may be at it
            p.writing.add(event.path)

    def _pend(self, change: RecordChange, now: float) -> _Pending:
        """The record's pending entry, created or with ``change`` merged in."""
        p = self._pending.get(change.image_id)
        if p is None:
            p = self._pending[change.image_id] = _Pending(change, now, now)
        else:
            p.change = p.change.merge(change)
            p.last = max(p.last, now)
        return p

    def defer(self, change: RecordChange, now: float, until: float) -> None:
        """Queue ``change`` to be due no earlier than ``until`` (a retry with backoff).

        A later ordinary change of the record does not make it due sooner.
        """
        p = self._pend(change, now)
        p.not_before = max(p.not_before, until)

    def _window(self, p: _Pending) -> float:
        settled = p.completed is not Signal.NONE and not p.writing
        return self.settle if settled else self.quiet

    def _due_at(self, p: _Pending) -> float:
        return max(min(p.last + self._window(p), p.first + self.max_delay), p.not_before)

    def _due_by(self, p: _Pending) -> str:
        ready = p.last + self._window(p)
        bound = p.first + self.max_delay
        if p.not_before > min(ready, bound):
            return "retry"
        if bound < ready:
            return "max_delay"
        if p.completed is not Signal.NONE and not p.writing:
            return "moved" if p.completed is Signal.MOVED else "closed"
        return "quiet"

    def next_deadline(self) -> float | None:
        """The earliest clock time at which some record becomes due, or None if idle."""
        return min((self._due_at(p) for p in self._pending.values()), default=None)

    def due(self, now: float) -> Batch:
        """Remove and return every record due at ``now``."""
        ready = [i for i, p in self._pending.items() if self._due_at(p) <= now]
        return self._take(ready)

    def flush(self) -> Batch:
        """Remove and return every pending record, due or not (no ``due_by``: a sync or
        a shutdown takes them, not a window)."""
        return self._take(list(self._pending), reasons=False)

    def _take(self, ids: list[str], *, reasons: bool = True) -> Batch:
        if not ids:
            return Batch((), 0.0)
        taken = [self._pending.pop(i) for i in sorted(ids)]
        why = tuple(self._due_by(p) for p in taken) if reasons else ()
        return Batch(tuple(p.change for p in taken), min(p.first for p in taken), why)
