"""The reconcile planner: disk scan + state + tables → the work to do. Pure.

Everything the daemon decides about *what* to index lives here, as functions of
plain values, so it is tested without threads, files or clocks:

- which records a reconcile queues (:func:`plan_reconcile`),
- which tables are re-grown from every record, and why (:func:`tables_to_rebuild`):
  the only place that decides "table missing, replaced behind our back or of
  another schema → rebuild"; :func:`forget_artifacts` turns that into ordinary,
  chunked work,
- how big the next chunk of work is (:func:`chunk_size`, from the measured costs of
  the last chunks, :class:`ChunkCosts`), so the loop gets its turn (heartbeat,
  watchdog, stop) between chunks of a long piece of work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kymwatch.daemon.changes import RecordChange
from kymwatch.daemon.reconcile import artifact_name_of, diff_fingerprints
from kymwatch.store import Fingerprint, RecordFiles

__all__ = [
    "ChunkCosts",
    "TableInfo",
    "chunk_size",
    "forget_artifacts",
    "plan_reconcile",
    "tables_to_rebuild",
]


def plan_reconcile(
    disk: Mapping[str, RecordFiles],
    known: Mapping[str, RecordFiles],
    *,
    table_ids: Collection[str] = (),
    suspects: Collection[str] = (),
    pending: Iterable[RecordChange] = (),
) -> list[RecordChange]:
    """The record changes a reconcile must index, one per record, in image-id order.

    Args:
        disk: Fingerprints of the artifacts on disk now.
        known: Fingerprints of what was last indexed (the state).
        table_ids: Image ids present in any table.
        suspects: Records a crashed daemon may have published without saving their
            fingerprints (its journal): re-indexed whole.
        pending: Changes already waiting (e.g. taken from the debouncer for a sync),
            merged in so each record is indexed once.

    Rows of records that exist neither on disk nor in the state (the state was lost
    while they were deleted) are stale, so those records are queued too.
    """
    merged: dict[str, RecordChange] = {}

    def add(change: RecordChange) -> None:
        have = merged.get(change.image_id)
        merged[change.image_id] = change if have is None else have.merge(change)

    for change in diff_fingerprints(disk, known):
        add(change)
    for image_id in set(table_ids) - disk.keys() - known.keys():
        add(RecordChange(image_id))
    # A journaled record may have rows from any of its artifacts that the state does
    # not know about: every indexer re-reads it, not only those whose files differ.
    for image_id in suspects:
        add(RecordChange(image_id))
    for change in pending:
        add(change)
    return [merged[i] for i in sorted(merged)]


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the planner needs to know about one indexer's table.

    Attributes:
        indexer: The indexer's name.
        schema_version: The indexer's current schema version.
        published: Fingerprint of the table file the daemon last published (None:
            unknown to the state).
        current: Fingerprint of the table file on disk now (None: no file).
    """

    indexer: str
    schema_version: int
    published: Fingerprint | None
    current: Fingerprint | None


def tables_to_rebuild(
    tables: Sequence[TableInfo],
    known_versions: Mapping[str, int],
    *,
    has_state: bool,
    migrated: bool = False,
) -> list[tuple[str, str]]:
    """The indexers whose table must be re-grown from every record, with the reason.

    Without a state (a store never indexed) nothing is rebuilt: the first reconcile
    indexes every record anyway. Otherwise a table whose file is missing (deleted
    behind the daemon's back) is rebuilt from every record rather than re-grown from
    one batch; so is a table written with another schema version, a table file that
    differs from the one the daemon published (restored from a backup, copied over,
    rewritten by another program: ``table_changed_externally``), and a table the
    state of an older kymwatch did not record (``state_migrated``).
    """
    if not has_state:
        return []
    out = []
    for t in tables:
        if t.current is None:
            out.append((t.indexer, "table_missing"))
        elif known_versions.get(t.indexer) != t.schema_version:
            out.append((t.indexer, "schema_changed"))
        elif t.published is None:
            if migrated:
                out.append((t.indexer, "state_migrated"))
        elif t.published != t.current:
            out.append((t.indexer, "table_changed_externally"))
    return out


def forget_artifacts(
    known: Mapping[str, RecordFiles], names: Collection[str]
) -> dict[str, RecordFiles]:
    """The state's fingerprints without the files of the artifacts ``names``.

    This is how a table is rebuilt without one long piece of work: once the state
    forgets what it indexed for a table's artifacts, the next reconcile plans every
    record that has them, and the loop indexes them in chunks (heartbeat, watchdog
    and stop requests in between). If the daemon stops half-way, the state still
    lacks the fingerprints of what is left, so the next start finishes the job.
    """
    return {
        image_id: {f: fp for f, fp in files.items() if artifact_name_of(f) not in names}
        for image_id, files in known.items()
    }


_COSTS_KEPT = 8  # recent chunks the cost model is fitted to
_GROWTH = 4  # a chunk is at most this many times the largest one measured


@dataclass(frozen=True, slots=True)
class ChunkCosts:
    """The sizes and durations of the last chunks of work, and the cost model fitted to
    them: a chunk takes a fixed time (its table writes: merge, encode, fsync, whatever
    its size) plus a time per record (reading and typing its artifacts).

    Attributes:
        observed: ``(records, seconds)`` of the last chunks, oldest first.
    """

    observed: tuple[tuple[int, float], ...] = ()

    def add(self, records: int, seconds: float) -> ChunkCosts:
        """These costs with one more chunk measured (the oldest one dropped)."""
        if records <= 0 or not seconds >= 0:
            return self
        return ChunkCosts((*self.observed, (records, seconds))[-_COSTS_KEPT:])

    def model(self) -> tuple[float, float] | None:
        """``(fixed seconds per chunk, seconds per record)``; None before any chunk.

        A least-squares line through the chunks measured, when they differ in size; a
        fixed time is never negative nor above the shortest chunk's time. Without two
        sizes, or when the line says that more records cost less (noise), every second
        is put on the records: the cautious reading (smaller chunks).
        """
        obs = self.observed
        if not obs:
            return None
        n = len(obs)
        mean_k = sum(k for k, _ in obs) / n
        mean_t = sum(t for _, t in obs) / n
        var = sum((k - mean_k) ** 2 for k, _ in obs)
        slope = sum((k - mean_k) * (t - mean_t) for k, t in obs) / var if var else 0.0
        if slope <= 0:
            return 0.0, sum(t for _, t in obs) / sum(k for k, _ in obs)
        fixed = min(max(mean_t - slope * mean_k, 0.0), min(t for _, t in obs))
        return fixed, slope


def chunk_size(costs: ChunkCosts, *, target_s: float, smallest: int, largest: int) -> int:
    """How many records to index in the next chunk so it takes about ``target_s``.

    The fixed time of a chunk (its table writes) is paid once whatever its size, so
    the records fill what the target leaves of it: a chunk of records that take 2 ms
    each, and 150 ms of writes, holds 175 records, not the 52 that 0.5 s divided by
    the average per record of a 20-record chunk (9.5 ms) would give. When the fixed
    time alone nears the target (a very large table), a chunk gets records worth at
    least half of it, so at most two thirds of its time go to the writes. A chunk is
    at most ``_GROWTH`` times the largest one measured (the model is not trusted far
    beyond what it saw).

    Args:
        costs: The recent chunks (their cost model).
        target_s: Wanted duration of one chunk.
        smallest: Lower bound.
        largest: Upper bound.
    """
    model = costs.model()
    if model is None:
        return smallest
    fixed, per_record = model
    budget = max(target_s - fixed, fixed / 2)
    wanted = int(budget / per_record) if per_record > 0 else largest
    seen = max(k for k, _ in costs.observed)
    return max(smallest, min(largest, _GROWTH * seen, wanted))
