"""kymflow's dataset manifest ``index/manifest.json.gz``, kept up to date per record.

kymflow (``kymflow_zarr/manifest.py``) rebuilds the manifest by opening every
record group and listing every key of the store, pixel chunks included: minutes
at 2,000 records. This module writes the same document, but re-reads only the
records that changed: per record its ``.zattrs`` / ``.zarray`` (or format-3
``zarr.json``), its metadata payload and a listing of its ``analysis/`` folder.

The document, in kymflow's key order, as indented JSON (``indent=2``) in gzip::

    {"schema_version", "format", "created_utc", "updated_utc",
     "images": [{"image_id", "shape", "dtype", "chunks", "axes", "created_utc",
                 "updated_utc", "acquired_local_epoch_ns", "analysis_keys"}, ...]}

Images are sorted by ``image_id``; a group without a ``data`` array is not
listed. ``analysis_keys`` (left out when the existing manifest was built without
them) lists every file below ``analysis/`` as a store key, except transient
partial/temporary files. A record whose group or array metadata cannot be read
keeps its previous entry; a malformed metadata payload gives
``acquired_local_epoch_ns: null`` as in kymflow.

Only a store that has a manifest gets one kept, unless ``create`` is asked for.
kymflow also bumps the root ``updated_utc`` when it saves a manifest; kymwatch
writes only below ``index/`` and does not.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from kymwatch.store import ANALYSIS_DIR, IMAGES_DIR, INDEX_DIR, Fingerprint, atomic_write_bytes
from kymwatch.store.scan import MAX_ARTIFACT_DEPTH

__all__ = [
    "MANIFEST_FILE",
    "ManifestIndexer",
    "ManifestSourceError",
    "ManifestUpdate",
    "build_manifest",
    "dump_manifest",
    "load_manifest",
    "manifest_path",
    "read_entry",
]

log = structlog.get_logger(__name__)

MANIFEST_FILE = "manifest.json.gz"
"""The manifest's file name below ``index/`` (kymflow's ``MANIFEST_KEY``)."""

Entry = dict[str, Any]
Document = dict[str, Any]

_DATA = "data"
_TRANSIENT_SUFFIXES = (".partial", ".tmp", "~", ".swp")
_METADATA_FILES = ("metadata.json", "metadata.json.gz")


class ManifestSourceError(OSError):
    """A record's group or array metadata exists but cannot be read or parsed."""

    def __init__(self, path: Path, error: str) -> None:
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


@dataclass(frozen=True, slots=True)
class ManifestUpdate:
    """What one manifest update did.

    Attributes:
        written: The file was (re)written.
        changed: Records whose entry was added, changed or removed.
        kept: Records whose metadata could not be read: their old entry was kept.
        records: Entries in the manifest afterwards.
        duration_ms: Time taken.
    """

    written: bool
    changed: tuple[str, ...]
    kept: tuple[str, ...]
    records: int
    duration_ms: float


def manifest_path(root: Path) -> Path:
    """Where the manifest of the store at ``root`` lives."""
    return Path(root) / INDEX_DIR / MANIFEST_FILE


def kymflow_now() -> str:
    """The current UTC time as kymflow writes it (``2026-11-26T07:06:34Z``)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    return now.isoformat() + "Z"


# -- reading one record -------------------------------------------------------------------
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


def _group_attrs(folder: Path) -> dict[str, Any] | None:
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


def _dtype_name(raw: Any) -> str:
    """numpy's name of a zarr dtype (``"<u2"`` → ``"uint16"``), as ``str(arr.dtype)``."""
    try:
        if isinstance(raw, list):
            return str(np.dtype([tuple(f) for f in raw]))
        return str(np.dtype(raw))
    except (TypeError, ValueError):
        return str(raw)


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
    return list(shape), _dtype_name(dtype), list(chunks) if chunks is not None else None


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
    attrs = _group_attrs(folder)
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


def _signature(root: Path, image_id: str) -> tuple[object, ...]:
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


# -- the whole document -------------------------------------------------------------------
def _root_fields(root: Path, previous: Document | None) -> tuple[int, str]:
    """(schema_version, format) from the root group's attributes."""
    try:
        attrs = _group_attrs(Path(root)) or {}
        return int(attrs.get("schema_version", 0)), str(attrs.get("format", ""))
    except (ManifestSourceError, TypeError, ValueError):
        if previous is not None:
            return int(previous.get("schema_version", 0)), str(previous.get("format", ""))
        return 0, ""


def _record_ids(root: Path) -> list[str]:
    try:
        entries = list(os.scandir(Path(root) / IMAGES_DIR))
    except OSError:
        return []
    return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))


def _uses_analysis_keys(doc: Document | None) -> bool:
    images = (doc or {}).get("images") or []
    return not images or "analysis_keys" in images[0]


def _document(
    root: Path, previous: Document | None, entries: dict[str, Entry], now: str
) -> Document:
    schema_version, fmt = _root_fields(root, previous)
    return {
        "schema_version": schema_version,
        "format": fmt,
        "created_utc": str(previous.get("created_utc", now)) if previous else now,
        "updated_utc": now,
        "images": [entries[i] for i in sorted(entries)],
    }


def build_manifest(root: Path, previous: Document | None = None) -> Document:
    """A full manifest of the store at ``root``, as kymflow's ``rebuild_manifest``.

    Args:
        root: The store folder.
        previous: The manifest it replaces: its ``created_utc`` is kept, a record
            whose metadata is unreadable keeps its entry from it, and
            ``analysis_keys`` are listed only if it lists them.
    """
    with_keys = _uses_analysis_keys(previous)
    old = {str(e.get("image_id")): e for e in (previous or {}).get("images", [])}
    entries: dict[str, Entry] = {}
    for image_id in _record_ids(root):
        try:
            entry = read_entry(root, image_id, with_analysis_keys=with_keys)
        except ManifestSourceError:
            entry = old.get(image_id)
        if entry is not None:
            entries[image_id] = entry
    return _document(root, previous, entries, kymflow_now())


TextCache = dict[str, tuple[Entry, str]]
"""image_id → (entry, its indented JSON text): entries that did not change are not
serialised again (``json.dumps`` with ``indent`` runs in pure Python: ~80 ms at 2,000
records)."""


def _nested(value: Any, indent: str) -> str:
    return json.dumps(value, indent=2).replace("\n", "\n" + indent)


def dump_manifest(doc: Document, cache: TextCache | None = None) -> bytes:
    """The file content: kymflow's JSON text (``json.dumps(doc, indent=2)``, key order
    kept, ASCII escapes), gzipped.

    Args:
        doc: The manifest document.
        cache: Indented texts of entries already serialised; updated in place.
    """
    parts = []
    for key, value in doc.items():
        if key == "images" and isinstance(value, list) and value:
            texts = []
            for entry in value:
                image_id = str(entry.get("image_id"))
                hit = cache.get(image_id) if cache is not None else None
                if hit is not None and hit[0] is entry:
                    texts.append(hit[1])
                    continue
                text = "    " + _nested(entry, "    ")
                if cache is not None:
                    cache[image_id] = (entry, text)
                texts.append(text)
            rendered = "[\n" + ",\n".join(texts) + "\n  ]"
        else:
            rendered = _nested(value, "  ")
        parts.append(f"  {json.dumps(key)}: {rendered}")
    text = "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"
    # Level 1: a third of level 9's time at 2,000 records, ~13 % larger; any gzip reads it.
    return gzip.compress(text.encode("utf-8"), compresslevel=1)


def load_manifest(root: Path) -> Document | None:
    """The store's manifest, or None if it has none.

    Raises:
        ManifestSourceError: the file exists but is not a readable manifest.
    """
    path = manifest_path(root)
    try:
        raw = gzip.decompress(path.read_bytes())
        doc = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError) as e:
        raise ManifestSourceError(path, str(e)) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images", []), list):
        raise ManifestSourceError(path, "not a manifest document")
    return doc


class ManifestIndexer:
    """Keeps ``index/manifest.json.gz`` equal to a full kymflow rebuild, per record.

    The document is cached and re-read only when the file changed on disk (kymflow
    rewrote it); each update re-reads the named records only and writes the file
    atomically, and only when an entry changed.

    Args:
        root: The store folder.
        create: Write a manifest even if the store has none (default: keep one
            only where the store already has it).
    """

    name = "manifest"

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.path = manifest_path(self.root)
        self.create = create
        self._doc: Document | None = None
        self._entries: dict[str, Entry] = {}
        self._file: tuple[Fingerprint, int] | None = None
        self._sigs: dict[str, tuple[object, ...]] = {}
        self._texts: TextCache = {}

    def active(self) -> bool:
        """True if the manifest is kept: the store has one, or ``create`` was asked."""
        return self.create or self.path.is_file()

    def update(self, image_ids: Iterable[str]) -> ManifestUpdate | None:
        """Re-read the entries of ``image_ids`` and publish them (None if not active)."""
        if not self.active():
            return None
        start = time.perf_counter()
        doc = self._current()
        with_keys = _uses_analysis_keys(doc)
        entries = dict(self._entries)
        changed, kept = [], []
        for image_id in sorted(set(image_ids)):
            # Taken before reading: a change during the read is seen by the next check.
            # Kept for an unreadable record too, so a reconcile does not report it again
            # until one of its files changes (an event re-reads it at once).
            self._sigs[image_id] = _signature(self.root, image_id)
            try:
                entry = read_entry(self.root, image_id, with_analysis_keys=with_keys)
            except ManifestSourceError as e:
                kept.append(image_id)
                log.warning(
                    "manifest_record_unreadable", image_id=image_id, path=str(e.path), error=e.error
                )
                continue
            if entry is None:
                if entries.pop(image_id, None) is not None:
                    changed.append(image_id)
            elif entries.get(image_id) != entry:
                entries[image_id] = entry
                changed.append(image_id)
        return self._publish(doc, entries, changed, kept, start)

    def reconcile(self) -> ManifestUpdate | None:
        """Check every record against the disk (stat only for records whose sources
        did not change) and publish the difference; None if not active."""
        if not self.active():
            return None
        self._current()
        on_disk = set(_record_ids(self.root))
        suspects = {i for i in on_disk if self._sigs.get(i) != _signature(self.root, i)}
        gone = set(self._entries) - on_disk
        for i in set(self._sigs) - on_disk:
            del self._sigs[i]
        return self.update(suspects | gone)

    def rebuild(self) -> ManifestUpdate:
        """Build the whole manifest from disk and write it."""
        start = time.perf_counter()
        try:
            previous = load_manifest(self.root)
        except ManifestSourceError:
            previous = None
        doc = build_manifest(self.root, previous)
        self._sigs = {i: _signature(self.root, i) for i in _record_ids(self.root)}
        self._write(doc)
        ids = tuple(e["image_id"] for e in doc["images"])
        return ManifestUpdate(True, ids, (), len(ids), _ms(start))

    # -- internals ------------------------------------------------------------------------
    def _stat(self) -> tuple[Fingerprint, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return Fingerprint.of(st), st.st_ctime_ns

    def _current(self) -> Document | None:
        """The manifest on disk (cached while the file is unchanged)."""
        fp = self._stat()
        if fp is not None and fp == self._file:
            return self._doc
        try:
            doc = load_manifest(self.root)
        except ManifestSourceError as e:
            log.warning("manifest_unreadable", path=str(e.path), error=e.error)
            doc = None
        if doc is None:  # none, or unreadable: start from a full build
            doc = build_manifest(self.root, None)
            self._sigs = {i: _signature(self.root, i) for i in _record_ids(self.root)}
            self._file = None
        else:
            self._file = fp
            self._sigs = {}
        self._doc = doc
        self._entries = {str(e.get("image_id")): e for e in doc.get("images", [])}
        return doc

    def _publish(
        self,
        doc: Document | None,
        entries: dict[str, Entry],
        changed: list[str],
        kept: list[str],
        start: float,
    ) -> ManifestUpdate:
        fresh = _document(self.root, doc, entries, kymflow_now())
        same_top = doc is not None and all(
            doc.get(k) == fresh[k] for k in ("schema_version", "format")
        )
        written = bool(changed) or not same_top or self._file is None
        if written:
            self._write(fresh)
            self._entries = entries
        return ManifestUpdate(written, tuple(changed), tuple(kept), len(entries), _ms(start))

    def _write(self, doc: Document) -> None:
        atomic_write_bytes(self.path, dump_manifest(doc, self._texts), within=self.root)
        self._doc = doc
        self._entries = {str(e["image_id"]): e for e in doc["images"]}
        for gone in self._texts.keys() - self._entries.keys():
            del self._texts[gone]
        self._file = self._stat()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
