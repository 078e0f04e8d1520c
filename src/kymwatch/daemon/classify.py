"""From a file event to the record change it implies (or to nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kymwatch.daemon.changes import RECORD_METADATA, ChangeKind, FileChange, RecordChange
from kymwatch.store import INDEX_DIR, PathKind, is_temporary_name, parse_store_path

__all__ = ["SYNC_DIR", "SyncRequest", "classify", "is_partial_file_name"]

SYNC_DIR = f"{INDEX_DIR}/sync"
"""Folder (relative to the store) where ``kymwatch sync`` drops its request files."""
SYNC_REQUEST_SUFFIX = ".request"
_ARRAY_META = frozenset({".zarray", ".zattrs", ".zgroup", "zarr.json"})


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A ``kymwatch sync`` barrier request, named by its token."""

    token: str


def classify(root: Path, change: FileChange) -> RecordChange | SyncRequest | None:
    """What ``change`` means for the indexes.

    Returns a :class:`RecordChange` for artifact files (naming the artifact), for
    record folders and their ``analysis/`` folders (the whole record), and for
    record metadata (the group's ``.zattrs``/``.zgroup``/``zarr.json``, the ``data``
    folder and its array metadata, non-artifact files in ``analysis/``:
    :data:`RECORD_METADATA`, which only the manifest reads); a :class:`SyncRequest`
    for a sync request file; and None for everything else: kymwatch's own
    ``tables/`` and ``index/`` files, temporary and partial files, pixel chunks and
    paths outside the dataset.
    """
    sp = parse_store_path(root, change.path)
    if sp.kind is PathKind.ARTIFACT and sp.artifact is not None:
        if change.is_dir:  # a folder named like an artifact is not one
            return None
        return RecordChange(sp.artifact.image_id, frozenset({sp.artifact.name}))
    if sp.image_id is not None and sp.kind is PathKind.RECORD:
        return RecordChange(sp.image_id)
    if sp.image_id is not None and sp.kind is PathKind.RECORD_META and change.is_dir:
        # analysis/ (or a sub-folder of it) appeared or vanished: files may be inside.
        return RecordChange(sp.image_id)
    if sp.image_id is not None and sp.kind is PathKind.RECORD_META:
        return RecordChange(sp.image_id, RECORD_METADATA)
    if sp.image_id is not None and sp.kind is PathKind.OTHER_RECORD_FILE:
        # The data array replaced (its folder) or its metadata: not pixel chunks.
        p = Path(change.path)
        if (change.is_dir and p.parent.name == sp.image_id) or p.name in _ARRAY_META:
            return RecordChange(sp.image_id, RECORD_METADATA)
        return None
    if sp.kind is PathKind.OWN and change.kind is not ChangeKind.DELETED:
        return _sync_request(root, change.path)
    return None


def is_partial_file_name(name: str) -> bool:
    """True for the name of a partial or temporary file that is not hidden: zarr's and
    kymflow's ``<name>.<hex>.partial``, ``*.tmp``, editors' ``name~`` and ``*.swp``.

    :func:`classify` drops every file so named, wherever it is (it is never an
    artifact, record metadata nor a sync request: only the rename onto its final name
    is), so an event source may drop such a file's events before they reach the
    daemon's loop. Hidden names (``.zattrs``, ``.name.partial``) are left to
    :func:`classify`: some of them are record metadata.
    """
    return not name.startswith(".") and is_temporary_name(name)


def _sync_request(root: Path, path: str) -> SyncRequest | None:
    p = Path(path)
    if p.parent == root / SYNC_DIR and p.name.endswith(SYNC_REQUEST_SUFFIX):
        return SyncRequest(p.name[: -len(SYNC_REQUEST_SUFFIX)])
    return None
