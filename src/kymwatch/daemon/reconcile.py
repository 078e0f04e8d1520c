"""The reconcile: what changed on disk since kymwatch last indexed it.

Events are hints; this diff is the truth. It compares the artifact fingerprints
found on disk with the ones recorded when each record was last indexed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kymwatch.daemon.changes import RecordChange
from kymwatch.store import Fingerprint, RecordFiles, split_artifact_file

__all__ = ["artifact_name_of", "diff_fingerprints", "route", "table_check", "whole_records"]


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
    for image_id in sorted(disk.keys() | known.keys()):
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


def whole_records(changes: Iterable[RecordChange], image_ids: Iterable[str]) -> list[RecordChange]:
    """``changes`` with every record of ``image_ids`` made a whole-record change.

    For the crash journal: a journaled record may have rows from any of its
    artifacts in the tables that the state does not know about, so every indexer
    re-reads it, not only those whose artifacts' fingerprints differ.
    """
    whole = set(image_ids)
    merged = {c.image_id: RecordChange(c.image_id) if c.image_id in whole else c for c in changes}
    for image_id in whole - merged.keys():
        merged[image_id] = RecordChange(image_id)
    return [merged[i] for i in sorted(merged)]


def table_check(
    published: Fingerprint | None, now: Fingerprint | None, *, known_records: bool, migrated: bool
) -> str | None:
    """Why a table must be rebuilt whole, or None if it can be trusted.

    Args:
        published: Fingerprint of the file the daemon last published (None: unknown).
        now: Fingerprint of the file on disk (None: no file).
        known_records: The state knows records (so the table should exist).
        migrated: The state comes from an older kymwatch that did not record tables.

    Returns:
        ``"table_missing"``, ``"table_changed_externally"`` (restored from a backup,
        rewritten by another program: a fingerprint incl. ctime differs),
        ``"state_migrated"``, or None.
    """
    if now is None:
        return "table_missing" if known_records else None
    if published is None:
        return "state_migrated" if migrated and known_records else None
    return None if published == now else "table_changed_externally"


def route(change: RecordChange, indexers: Iterable[tuple[str, frozenset[str]]]) -> list[str]:
    """Names of the indexers a change affects, given (name, artifact names) pairs."""
    if change.artifacts is None:
        return [name for name, _ in indexers]
    return [name for name, reads in indexers if reads & change.artifacts]
