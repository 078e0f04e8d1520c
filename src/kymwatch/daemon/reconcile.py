"""The reconcile: what changed on disk since kymwatch last indexed it.

Events are hints; this diff is the truth. It compares the artifact fingerprints
found on disk with the ones recorded when each record was last indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from kymwatch.daemon.changes import RecordChange
from kymwatch.daemon.fingerprints import RecordFingerprints
from kymwatch.store import ArtifactFormat, Fingerprint, RecordFiles, split_artifact_file

__all__ = ["artifact_name_of", "diff_fingerprints", "nothing_to_read", "route"]


def artifact_name_of(file_name: str) -> str | None:
    """``velocity_events/events.csv.gz`` → ``velocity_events/events``."""
    split = split_artifact_file(file_name)
    return split[0] if split else None


def diff_fingerprints(
    disk: Mapping[str, RecordFiles], known: Mapping[str, RecordFiles]
) -> list[RecordChange]:
    """The record changes that turn ``known`` into ``disk``, in image-id order.

    A record on disk but not known (new) or known but not on disk (deleted) is a
    whole-record change; otherwise the change names the artifacts whose files were
    added, removed or changed. A file whose known fingerprint is racily clean (it
    changed within the timestamp granularity of the scan that took it) counts as
    changed: see :meth:`Fingerprint.same_as`. Unchanged records are not listed.
    """
    changes: list[RecordChange] = []
    scan = disk if isinstance(disk, RecordFingerprints) else None
    held = known if isinstance(known, RecordFingerprints) else None
    for image_id in sorted(disk.keys() | known.keys()):
        if scan is not None and held is not None and held.unchanged(image_id, scan):
            continue  # the same files, compared without building their fingerprints
        now, before = disk.get(image_id), known.get(image_id)
        if now is None or before is None:
            changes.append(RecordChange(image_id))
            continue
        names = {
            name
            for f in now.keys() | before.keys()
            if not _same(before.get(f), now.get(f)) and (name := artifact_name_of(f)) is not None
        }
        if names:
            changes.append(RecordChange(image_id, frozenset(names)))
    return changes


def _same(before: Fingerprint | None, now: Fingerprint | None) -> bool:
    if before is None or now is None:
        return before is now
    return before.same_as(now)


def route(change: RecordChange, indexers: Iterable[tuple[str, frozenset[str]]]) -> list[str]:
    """Names of the indexers a change affects, given (name, artifact names) pairs."""
    if change.artifacts is None:
        return [name for name, _ in indexers]
    return [name for name, reads in indexers if reads & change.artifacts]


def nothing_to_read(
    changes: Iterable[RecordChange],
    routed: Mapping[str, Sequence[str]],
    files: Mapping[str, RecordFiles | None],
    rows_from: Mapping[str, tuple[str, frozenset[tuple[str, ArtifactFormat]] | None]],
    has_rows: Callable[[str, str], bool],
) -> dict[str, set[str]]:
    """Per indexer, the records :func:`route` sent it by an artifact's name that hold no
    file it reads rows from and have no rows in its table: it would find nothing to read
    and nothing to remove. A generation-1 ``radon_report.json`` edit is routed to
    ``kym_radon`` by its name, but ``kym_radon`` reads a ``radon_report`` *parquet*.
    A whole-record change is always read (every indexer's outcome is wanted).

    Args:
        changes: The batch's changes.
        routed: Indexer name → the records routed to it.
        files: The records' artifact files as just scanned (None: record gone).
        rows_from: Indexer name → its table and the ``(name, format)`` files it reads
            rows from (None: unknown, e.g. a plugin: never skipped).
        has_rows: ``(table, image_id)`` → whether the table may hold rows of the record.
    """
    named = {c.image_id for c in changes if c.artifacts is not None}
    out: dict[str, set[str]] = {}
    for name, ids in routed.items():
        table, readable = rows_from.get(name, ("", None))
        if readable is None:
            continue
        for image_id in ids:
            present = files.get(image_id)
            if image_id not in named or present is None:
                continue
            if any(split_artifact_file(f) in readable for f in present):
                continue
            if not has_rows(table, image_id):
                out.setdefault(name, set()).add(image_id)
    return out
