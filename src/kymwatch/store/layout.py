"""The on-disk layout of a kymflow dataset, and parsing a path back into it.

A dataset is a Zarr directory store::

    .zgroup | zarr.json                 root group (format 2 | format 3)
    images/<image_id>/                  one record group
    images/<image_id>/data              pixel array
    images/<image_id>/analysis/<name>.<ext>          artifacts (name may contain "/")
    images/<image_id>/analysis_arrays/<name>/data    N-D array artifacts
    tables/<table>.parquet              dataset tables (owned by kymwatch)
    index/                              kymwatch state, status and logs
"""

from __future__ import annotations

import enum
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kymwatch.errors import InvalidNameError

__all__ = [
    "ANALYSIS_ARRAYS_DIR",
    "ANALYSIS_DIR",
    "IMAGES_DIR",
    "INDEX_DIR",
    "TABLES_DIR",
    "ArtifactFormat",
    "ArtifactRef",
    "PathKind",
    "StorePath",
    "artifact_file_name",
    "artifact_from_path",
    "is_temporary_name",
    "is_valid_image_id",
    "parse_store_path",
    "split_artifact_file",
    "validate_artifact_name",
    "validate_image_id",
    "validate_table_name",
]

IMAGES_DIR = "images"
ANALYSIS_DIR = "analysis"
ANALYSIS_ARRAYS_DIR = "analysis_arrays"
TABLES_DIR = "tables"
INDEX_DIR = "index"

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TABLE_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,99}")


class ArtifactFormat(enum.StrEnum):
    """File formats of per-record artifacts; the value is the file suffix."""

    JSON = "json"
    JSON_GZ = "json.gz"
    PARQUET = "parquet"
    CSV_GZ = "csv.gz"


# Longest suffix first, so "x.json.gz" is not taken for a ".gz" of "x.json".
_SUFFIXES: tuple[tuple[str, ArtifactFormat], ...] = tuple(
    sorted(((f".{f.value}", f) for f in ArtifactFormat), key=lambda s: -len(s[0]))
)


class PathKind(enum.Enum):
    """What a path inside a dataset is."""

    RECORD = "record"  # images/<id> itself
    RECORD_META = "record_meta"  # images/<id>/.zattrs, zarr.json, ... and the analysis folders
    ARTIFACT = "artifact"  # images/<id>/analysis/<name>.<ext>
    OTHER_RECORD_FILE = "other_record_file"  # pixels, array artifacts, unknown files in a record
    IMAGES_DIR = "images_dir"  # images/ itself
    OWN = "own"  # tables/, index/: written by kymwatch
    TEMPORARY = "temporary"  # partial / temp files, anywhere
    OUTSIDE = "outside"  # not below the dataset root, or root-level files


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """An artifact file named by record, artifact name and format."""

    image_id: str
    name: str
    fmt: ArtifactFormat

    @property
    def file_name(self) -> str:
        """The path relative to the record's ``analysis/`` folder."""
        return artifact_file_name(self.name, self.fmt)


@dataclass(frozen=True, slots=True)
class StorePath:
    """A path inside a dataset, classified.

    Attributes:
        kind: What the path is.
        image_id: The record it belongs to, when it belongs to one.
        artifact: The artifact, when ``kind`` is ``ARTIFACT``.
    """

    kind: PathKind
    image_id: str | None = None
    artifact: ArtifactRef | None = None


def is_valid_image_id(name: str) -> bool:
    """True if ``name`` can be a record folder name (no traversal, no hidden files)."""
    return bool(_ID_RE.fullmatch(name))


def validate_image_id(image_id: str) -> str:
    """Return ``image_id`` if it is a safe record folder name, else raise InvalidNameError."""
    if not isinstance(image_id, str) or not _ID_RE.fullmatch(image_id):
        raise InvalidNameError(f"not a valid image id: {image_id!r}")
    return image_id


def validate_artifact_name(name: str) -> str:
    """Return ``name`` if it is a safe artifact name (``a`` or ``a/b``), else raise."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or any(not _ID_RE.fullmatch(p) for p in parts):
        raise InvalidNameError(f"not a valid artifact name: {name!r}")
    return name


def validate_table_name(name: str) -> str:
    """Return ``name`` if it is a valid table name (lower-case, digits, ``_``), else raise."""
    if not isinstance(name, str) or not _TABLE_RE.fullmatch(name):
        raise InvalidNameError(f"not a valid table name: {name!r}")
    return name


def artifact_file_name(name: str, fmt: ArtifactFormat) -> str:
    """The file name of artifact ``name`` in format ``fmt``, relative to ``analysis/``."""
    return f"{validate_artifact_name(name)}.{fmt.value}"


def is_temporary_name(name: str) -> bool:
    """True for temporary or partial files (ours, zarr's, editors'): never artifacts."""
    return (
        name.startswith(".")
        or name.endswith((".partial", ".tmp", "~", ".swp"))
        or ".partial." in name
    )


@functools.lru_cache(maxsize=4096)
def split_artifact_file(rel: str) -> tuple[str, ArtifactFormat] | None:
    """Split ``velocity_events/events.parquet`` into its name and format, or None.

    Cached: a store's records hold the same few file names, and every scan of a record
    and every file event asks about each of them.
    """
    for suffix, fmt in _SUFFIXES:
        if rel.endswith(suffix) and len(rel) > len(suffix):
            name = rel[: -len(suffix)]
            try:
                validate_artifact_name(name)
            except InvalidNameError:
                return None
            return name, fmt
    return None


def parse_store_path(root: Path, path: str | Path) -> StorePath:
    """Classify ``path`` (absolute, or relative to ``root``) as a part of the dataset.

    Pure string work: the filesystem is not consulted, so it works for deleted paths.
    """
    parts = _plain_parts(root, path)
    if parts is None:
        p = Path(path)
        try:
            rel = (
                PurePosixPath(p.relative_to(root).as_posix())
                if p.is_absolute()
                else PurePosixPath(p)
            )
        except ValueError:
            return StorePath(PathKind.OUTSIDE)
        parts = rel.parts
    if not parts or parts == (".",) or ".." in parts:
        return StorePath(PathKind.OUTSIDE)
    if is_temporary_name(parts[-1]) and parts[-1] not in _ZARR_META:
        return StorePath(PathKind.TEMPORARY)
    top = parts[0]
    if top in (TABLES_DIR, INDEX_DIR):
        return StorePath(PathKind.OWN)
    if top != IMAGES_DIR:
        return StorePath(PathKind.OUTSIDE)
    if len(parts) == 1:
        return StorePath(PathKind.IMAGES_DIR)
    image_id = parts[1]
    if not _ID_RE.fullmatch(image_id):
        return StorePath(PathKind.OUTSIDE)
    if len(parts) == 2:
        return StorePath(PathKind.RECORD, image_id)
    if len(parts) == 3 and (parts[2] in _ZARR_META or parts[2] == ANALYSIS_DIR):
        return StorePath(PathKind.RECORD_META, image_id)
    if parts[2] == ANALYSIS_DIR:
        split = split_artifact_file("/".join(parts[3:]))
        if split is not None:
            return StorePath(PathKind.ARTIFACT, image_id, ArtifactRef(image_id, *split))
        # A sub-folder of analysis/ (e.g. velocity_events/) or an unknown file.
        return StorePath(PathKind.RECORD_META, image_id)
    return StorePath(PathKind.OTHER_RECORD_FILE, image_id)


def _plain_parts(root: Path, path: str | Path) -> tuple[str, ...] | None:
    """The components of ``path`` below ``root``, split by hand, when ``path`` is an
    absolute string that starts with the root's and is plainly written (no empty or
    ``.`` component); None otherwise (then pathlib parses it). Every file event is
    parsed: pathlib took 3 to 6 times as long (15-20 µs a path), most of the loop's
    time in an event flood.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    prefix = f"{os.fspath(root)}/"
    if not path.startswith(prefix):
        return None
    parts = tuple(path[len(prefix) :].split("/"))
    return None if "" in parts or "." in parts else parts


def artifact_from_path(root: Path, path: str | Path) -> ArtifactRef | None:
    """Map a file path inside the store to its artifact, or None if it is not one."""
    return parse_store_path(root, path).artifact


_ZARR_META = frozenset({".zgroup", ".zattrs", ".zarray", ".zmetadata", "zarr.json"})
