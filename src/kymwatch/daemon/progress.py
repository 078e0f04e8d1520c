"""Progress of long work (a first index, a big reconcile, a rebuild): done, total, ETA.

:class:`Progress` is a pure value computed from counts and an injected clock, so
``status.json``, ``kymwatch status`` and a terminal bar all show the same numbers.
The bar itself (tqdm) lives in :mod:`kymwatch.progressbar`: the daemon only calls a
:class:`ProgressSink`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Progress", "ProgressSink", "describe"]


class ProgressSink(Protocol):
    """Shows progress somewhere (a terminal bar); the reporter feeds it."""

    def update(self, progress: Progress) -> None:
        """Show ``progress`` (called after each chunk)."""

    def close(self) -> None:
        """The work ended (done or interrupted)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a piece of long work is.

    Attributes:
        what: What is being done (``first index``, ``reconcile (periodic)``).
        done: Records done so far.
        total: Records to do.
        started: Clock reading when the work started.
        now: Clock reading of this snapshot.
    """

    what: str
    done: int
    total: int
    started: float
    now: float

    @property
    def rate(self) -> float | None:
        """Records per second so far (None before the first record or first tick)."""
        elapsed = self.now - self.started
        return self.done / elapsed if self.done and elapsed > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None until a rate is known)."""
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate else None

    def to_json(self) -> dict[str, Any]:
        """``progress`` in ``status.json``."""
        eta, rate = self.eta_s, self.rate
        return {
            "what": self.what,
            "done": self.done,
            "total": self.total,
            "elapsed_s": round(self.now - self.started, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "records_per_s": None if rate is None else round(rate, 1),
        }


def describe(doc: dict[str, Any]) -> str:
    """One line about a ``progress`` document: ``first index 4,200 / 10,000, ETA 6 s``."""
    eta = doc.get("eta_s")
    when = "ETA unknown" if eta is None else f"ETA {_duration(float(eta))}"
    return f"{doc.get('what')} {int(doc.get('done', 0)):,} / {int(doc.get('total', 0)):,}, {when}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
