"""The values that flow through the daemon: file changes, record changes, batches."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ALL_ARTIFACTS",
    "RECORD_METADATA",
    "Batch",
    "ChangeKind",
    "FileChange",
    "RecordChange",
    "Rescan",
    "Signal",
]


class ChangeKind(enum.Enum):
    """What happened to a path."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


class Signal(enum.Enum):
    """What an event says about the write behind it.

    inotify tells when a writer is done with a file: the file was renamed onto its
    name (``IN_MOVED_TO``: zarr's and kymflow's ``<name>.<hex>.partial`` + rename), or
    a file opened for writing was closed (``IN_CLOSE_WRITE``: ``df.to_parquet(path)``
    in place). Such a change is indexed after a short settle instead of the quiet
    window. Every other event, and every event of a source that cannot tell
    (polling, scripted sources), says nothing: :attr:`NONE`.
    """

    NONE = "none"
    MOVED = "moved"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class FileChange:
    """One filesystem event, as reported by an event source.

    Attributes:
        path: Absolute path that changed.
        kind: What happened to it.
        is_dir: True if the path is (or was) a folder.
        signal: Whether the event says a write is complete (see :class:`Signal`).
    """

    path: str
    kind: ChangeKind
    is_dir: bool = False
    signal: Signal = Signal.NONE


@dataclass(frozen=True, slots=True)
class Rescan:
    """An event source's signal that events may have been lost (overflow, error)."""

    reason: str


ALL_ARTIFACTS: frozenset[str] | None = None
"""``RecordChange.artifacts`` value meaning "the whole record: run every indexer"."""

RECORD_METADATA: frozenset[str] = frozenset()
"""``RecordChange.artifacts`` value meaning "no artifact changed, only the record's
group/array metadata or a non-artifact file": no table indexer runs, the manifest
is updated."""


@dataclass(frozen=True, slots=True)
class RecordChange:
    """A change to one record.

    Attributes:
        image_id: The record.
        artifacts: Names of the artifacts that changed, or None for the whole record
            (new, deleted or rescanned record: every indexer runs); empty
            (:data:`RECORD_METADATA`) when only record metadata changed.
    """

    image_id: str
    artifacts: frozenset[str] | None = ALL_ARTIFACTS

    def merge(self, other: RecordChange) -> RecordChange:
        """The union of two changes of the same record."""
        if self.artifacts is None or other.artifacts is None:
            return RecordChange(self.image_id, None)
        return RecordChange(self.image_id, self.artifacts | other.artifacts)


@dataclass(frozen=True, slots=True)
class Batch:
    """Records due for indexing together.

    Attributes:
        changes: One merged change per record, in image-id order.
        first_seen: Clock time of the oldest change in the batch (for lag).
        due_by: For a batch from the debouncer, why each record became due, in the
            order of ``changes`` (see ``Debouncer``: ``moved``, ``closed``, ``quiet``,
            ``max_delay``, ``retry``); empty for other batches (reconcile, sync).
    """

    changes: tuple[RecordChange, ...]
    first_seen: float
    due_by: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)
