"""The reconcile planner: disk scan + state + tables → the work to do. Pure.

Everything the daemon decides about *what* to index lives here, as functions of
plain values, so it is tested without threads, files or clocks:

- which records a reconcile queues (:func:`plan_reconcile`),
- which tables are re-grown from every record, and why (:func:`tables_to_rebuild`):
  the only place that decides "table missing, replaced behind our back or of
  another schema → rebuild"; :func:`forget_artifacts` turns that into ordinary,
  chunked work,
- how big the next chunk of work is (:func:`chunk_size`), so the loop gets its
  turn (heartbeat, watchdog, stop) between chunks of a long piece of work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from kymwatch.daemon.changes import RecordChange
from kymwatch.daemon.reconcile import artifact_name_of, diff_fingerprints
from kymwatch.store import Fingerprint, RecordFiles

__all__ = ["TableInfo", "chunk_size", "forget_artifacts", "plan_reconcile", "tables_to_rebuild"]


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


def chunk_size(
    seconds_per_record: float | None, *, target_s: float, smallest: int, largest: int
) -> int:
    """How many records to index in the next chunk so it takes about ``target_s``.

    Args:
        seconds_per_record: Recent average cost of one record (None before any).
        target_s: Wanted duration of one chunk.
        smallest: Lower bound (a table write per chunk has a fixed cost).
        largest: Upper bound.
    """
    if seconds_per_record is None or seconds_per_record <= 0:
        return smallest
    return max(smallest, min(largest, int(target_s / seconds_per_record)))
