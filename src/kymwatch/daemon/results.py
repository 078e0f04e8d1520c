"""What the worker's batches give back: :class:`BatchResult`, :class:`Retry`, and the
chunks whose tables are held in memory (:class:`HeldChunk`) until a later chunk writes them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kymwatch.daemon.changes import RecordChange
from kymwatch.index import RecordOutcome
from kymwatch.store import RecordFiles

__all__ = ["BatchResult", "HeldChunk", "Retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """A record change to index again after ``delay_s`` (an unreadable artifact)."""

    change: RecordChange
    delay_s: float


@dataclass
class BatchResult:
    """What one batch did.

    Attributes:
        outcomes: Final outcomes per status (retried attempts are not counted).
        settled: Every final outcome (one per record and indexer that ran).
        retrying: Outcomes handed back for a retry instead of being final.
        retry: The changes to push back, with their delay.
        problems: Final unreadable/invalid outcomes.
        artifacts: Names of the artifacts the batch's records hold (as scanned).
        chunks: Chunks of work whose records this result covers (several when
            held chunks were written with this one, see :meth:`Worker.process`).
        held: The rows read are held, the tables not written yet: the records are settled and
            reported with the chunk that writes them.
    """

    records: int = 0
    rows_written: int = 0
    tables: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    duration_ms: float = 0.0
    problems: list[RecordOutcome] = field(default_factory=list)
    settled: list[RecordOutcome] = field(default_factory=list)
    retrying: list[RecordOutcome] = field(default_factory=list)
    retry: list[Retry] = field(default_factory=list)
    artifacts: set[str] = field(default_factory=set)
    chunks: int = 1
    held: bool = False

    def absorb(self, earlier: BatchResult) -> None:
        """Count a held chunk's result in this one (which wrote its tables): its
        retries were pushed back with it already."""
        self.records += earlier.records
        self.rows_written += earlier.rows_written
        self.tables = list(dict.fromkeys([*earlier.tables, *self.tables]))
        self.outcomes.update(earlier.outcomes)
        self.retries += earlier.retries
        self.duration_ms = round(self.duration_ms + earlier.duration_ms, 2)
        self.problems = [*earlier.problems, *self.problems]
        self.settled = [*earlier.settled, *self.settled]
        self.retrying = [*earlier.retrying, *self.retrying]
        self.chunks += earlier.chunks


@dataclass(frozen=True, slots=True)
class HeldChunk:
    """A chunk whose rows are held, its tables not written: what to record once they are."""

    image_ids: tuple[str, ...]
    fresh: dict[str, RecordFiles | None]
    done: dict[str, set[str]]
    result: BatchResult
