"""The kymwatch error hierarchy.

Every error kymwatch raises on purpose derives from :class:`KymwatchError` and also
from the builtin that matches its meaning, so callers can catch either.
"""

from __future__ import annotations

__all__ = [
    "ArtifactInvalidError",
    "ArtifactNotFoundError",
    "ArtifactUnreadableError",
    "DaemonRunningError",
    "InvalidNameError",
    "KymwatchError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "RecordNotFoundError",
    "StoreNotFoundError",
    "SyncTimeoutError",
    "TableNotFoundError",
    "TableUnreadableError",
    "UnsafeStoreError",
]


class KymwatchError(Exception):
    """Base class of all kymwatch errors."""


class StoreNotFoundError(KymwatchError, FileNotFoundError):
    """The dataset path does not exist."""


class NotAStoreError(KymwatchError, ValueError):
    """The path exists but is not a kymflow Zarr dataset."""


class ReadOnlyStoreError(KymwatchError, PermissionError):
    """A write was attempted on a dataset opened with mode ``"r"``."""


class UnsafeStoreError(KymwatchError, ValueError):
    """The store's own folders (``tables/``, ``index/``) are symbolic links: writing
    through them would put files outside the store."""


class InvalidNameError(KymwatchError, ValueError):
    """An image id, artifact name or table name is not allowed (e.g. path traversal)."""


class RecordNotFoundError(KymwatchError, FileNotFoundError):
    """No record with this image id exists in the dataset."""


class TableNotFoundError(KymwatchError, FileNotFoundError):
    """The dataset has no table with this name."""


class TableUnreadableError(KymwatchError, ValueError):
    """A table file exists but cannot be parsed; ``rebuild`` replaces it."""


class ArtifactNotFoundError(KymwatchError, FileNotFoundError):
    """A record has no artifact under the requested name.

    Attributes:
        image_id: The record that was searched.
        key: The artifact name that was requested.
        looked_for: The file names (relative to the record's ``analysis/``) tried.
    """

    def __init__(self, image_id: str, key: str, looked_for: tuple[str, ...]) -> None:
        self.image_id = image_id
        self.key = key
        self.looked_for = looked_for
        tried = ", ".join(looked_for)
        super().__init__(f"record {image_id!r} has no artifact {key!r} (looked for {tried})")


class ArtifactUnreadableError(KymwatchError, ValueError):
    """An artifact file exists but cannot be read or parsed (truncated, corrupt, denied).

    Attributes:
        image_id: The record the artifact belongs to.
        key: The artifact name.
        path: The file that failed.
        reason: A short description of the failure.
    """

    def __init__(self, image_id: str, key: str, path: str, reason: str) -> None:
        self.image_id = image_id
        self.key = key
        self.path = path
        self.reason = reason
        super().__init__(f"artifact {key!r} of record {image_id!r} is unreadable: {reason}")


class ArtifactInvalidError(KymwatchError, ValueError):
    """An artifact parsed but its content does not fit the indexer's schema.

    Attributes:
        image_id: The record the artifact belongs to.
        key: The artifact name.
        path: The file whose content is invalid.
        reason: What is wrong with it.
    """

    def __init__(self, image_id: str, key: str, path: str, reason: str) -> None:
        self.image_id = image_id
        self.key = key
        self.path = path
        self.reason = reason
        super().__init__(f"artifact {key!r} of record {image_id!r} is invalid: {reason}")


class DaemonRunningError(KymwatchError, RuntimeError):
    """Another kymwatch daemon already watches this dataset."""


class SyncTimeoutError(KymwatchError, TimeoutError):
    """``kymwatch sync`` did not get an answer from the daemon in time."""
