"""One record's entry in kymflow's manifest, read from its files on disk.

Per record: its group's ``.zattrs`` (or format-3 ``zarr.json``), its ``data`` array's
metadata, its metadata payload and a listing of its ``analysis/`` folder. A group
without a ``data`` array has no entry; a record whose group or array metadata cannot be
read raises :class:`ManifestSourceError`; a malformed metadata payload gives
``acquired_local_epoch_ns: null`` as in kymflow.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from kymwatch.index.dtypename import dtype_name
from kymwatch.store import ANALYSIS_DIR, IMAGES_DIR
from kymwatch.store.scan import MAX_ARTIFACT_DEPTH

__all__ = [
    "Entry",
    "ManifestSourceError",
    "analysis_keys",
    "entry_signature",
    "group_attrs",
    "read_entry",
]

Entry = dict[str, Any]

_DATA = "data"
_TRANSIENT_SUFFIXES = (".partial", ".tmp", "~", ".swp")
_METADATA_FILES = ("metadata.json", "metadata.json.gz")


class ManifestSourceError(OSError):
    """A record's group or array metadata exists but cannot be read or parsed."""

    def __init__(self, path: Path, error: str) -> None:
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


def _read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; None if it does not exist; ManifestSourceError if bad."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise ManifestSourceError(path, str(e)) from e
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ManifestSourceError(path, str(e)) from e


def group_attrs(folder: Path) -> dict[str, Any] | None:
    """A zarr group's attributes (format 2 or 3); None if ``folder`` is not a group."""
    v3 = _read_json(folder / "zarr.json")
    if isinstance(v3, dict):
        if v3.get("node_type") != "group":
            return None
        attrs = v3.get("attributes") or {}
    else:
        if not (folder / ".zgroup").is_file():
            return None
        attrs = _read_json(folder / ".zattrs") or {}
    if not isinstance(attrs, dict):
        raise ManifestSourceError(folder, "group attributes are not an object")
    return attrs


def _array_meta(folder: Path) -> tuple[list[Any], str, list[Any] | None] | None:
    """(shape, dtype, chunks) of the zarr array in ``folder``; None if there is none."""
    path = folder / "zarr.json"
    v3 = _read_json(path)
    if isinstance(v3, dict):
        if v3.get("node_type") != "array":
            return None
        grid = v3.get("chunk_grid") or {}
        chunks = (grid.get("configuration") or {}).get("chunk_shape")
        shape, dtype = v3.get("shape"), v3.get("data_type")
    else:
        path = folder / ".zarray"
        v2 = _read_json(path)
        if v2 is None:
            return None
        if not isinstance(v2, dict):
            raise ManifestSourceError(path, "array metadata is not an object")
        shape, dtype, chunks = v2.get("shape"), v2.get("dtype"), v2.get("chunks")
    if not isinstance(shape, list):
        raise ManifestSourceError(path, "array metadata has no shape")
    return list(shape), dtype_name(dtype), list(chunks) if chunks is not None else None


def _acquired_ns(analysis: Path) -> int | None:
    """``header.acquired_local_epoch_ns`` of the metadata payload, as kymflow reads it
    (``metadata.json``, else legacy ``metadata.json.gz``; anything malformed → None)."""
    try:
        try:
            raw = (analysis / "metadata.json").read_bytes()
        except FileNotFoundError:
            raw = gzip.decompress((analysis / "metadata.json.gz").read_bytes())
        val = json.loads(raw.decode("utf-8")).get("header", {}).get("acquired_local_epoch_ns")
        return None if val is None else int(val)
    except (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _is_transient(name: str) -> bool:
    return name.endswith(_TRANSIENT_SUFFIXES) or ".partial." in name


def _analysis_files(folder: str, prefix: str, out: list[str], depth: int = 0) -> None:
    """Store keys of the files below ``folder`` (``os.walk``'s view, as kymflow's
    ``store.keys()``: symbolic links to folders are not entered)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise ManifestSourceError(Path(folder), str(e)) from e
    for entry in entries:
        try:
            is_dir = entry.is_dir()
            real_dir = is_dir and not entry.is_symlink()
        except OSError:
            is_dir = real_dir = False
        if real_dir and depth < MAX_ARTIFACT_DEPTH:  # the artifact walker's bound
            _analysis_files(entry.path, f"{prefix}{entry.name}/", out, depth + 1)
        elif not is_dir and not _is_transient(entry.name):
            out.append(f"{prefix}{entry.name}")


def analysis_keys(root: Path, image_id: str) -> list[str]:
    """Sorted store keys of a record's ``analysis/`` files (kymflow's ``analysis_keys``)."""
    prefix = f"{IMAGES_DIR}/{image_id}/{ANALYSIS_DIR}/"
    out: list[str] = []
    _analysis_files(os.path.join(root, prefix), prefix, out)
    return sorted(out)


def _list_of(value: Any) -> list[Any] | None:
    if value is None:
        return None
    try:
        return list(value)
    except TypeError:
        return None


def read_entry(root: Path, image_id: str, *, with_analysis_keys: bool = True) -> Entry | None:
    """The manifest entry of one record, read from disk.

    Returns:
        The entry, or None when the record is gone, is not a group, or has no
        ``data`` array (kymflow does not list those).

    Raises:
        ManifestSourceError: the group or array metadata exists but is unreadable.
    """
    folder = Path(root) / IMAGES_DIR / image_id
    attrs = group_attrs(folder)
    if attrs is None:
        return None
    arr = _array_meta(folder / _DATA)
    if arr is None:
        return None
    shape, dtype, chunks = arr
    entry: Entry = {
        "image_id": image_id,
        "shape": shape,
        "dtype": dtype,
        "chunks": chunks,
        "axes": _list_of(attrs.get("axes")),
        "created_utc": attrs.get("created_utc"),
        "updated_utc": attrs.get("updated_utc"),
        "acquired_local_epoch_ns": _acquired_ns(folder / ANALYSIS_DIR),
    }
    if with_analysis_keys:
        entry["analysis_keys"] = analysis_keys(root, image_id)
    return entry


_SOURCES = (
    ".zgroup",
    ".zattrs",
    "zarr.json",
    f"{_DATA}/.zarray",
    f"{_DATA}/zarr.json",
    *(f"{ANALYSIS_DIR}/{m}" for m in _METADATA_FILES),
)


def entry_signature(root: Path, image_id: str) -> tuple[object, ...]:
    """Stat identities of everything an entry is read from (cheap change check)."""
    folder = os.path.join(root, IMAGES_DIR, image_id)
    stats: list[object] = []
    for rel in _SOURCES:
        try:
            st = os.stat(os.path.join(folder, rel))
            stats.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        except OSError:
            stats.append(None)
    try:
        stats.append(tuple(analysis_keys(root, image_id)))
    except ManifestSourceError:
        stats.append(None)
    return tuple(stats)
