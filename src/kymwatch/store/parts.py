"""Partitioned tables: ``tables/<name>/part-*.parquet`` plus the coalesced export.

A large table is kept as parts, each holding the rows of one ``image_id`` range of the
sorted table, so an edit rewrites one part instead of the whole table. The single
kymflow-compatible file ``tables/<name>.parquet`` is then an *export*: the parts
concatenated, rewritten at a bounded rate (and on idle, sync and stop).

``tables/<name>/_parts.json`` names the parts, their ranges and a ``version`` that
grows before any part is rewritten; the export records the version it was made from
in its Parquet metadata (``kymwatch.parts_version``). So after a crash between a part
write and the export, the versions differ and the export is made again from the parts
(the parts are the truth). An export without that key was written by another program
(kymflow's ``save_table``): it is the truth and the parts are dropped.
"""

from __future__ import annotations

import json
import shutil
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kymwatch.store.atomic import atomic_write_bytes, fsync_dir
from kymwatch.store.layout import TABLES_DIR, validate_table_name

__all__ = [
    "EXPORT_VERSION_KEY",
    "PartLayout",
    "drop_parts",
    "export_version",
    "parts_folder",
    "read_layout",
    "read_parts",
    "remove_unlisted_parts",
    "split_bounds",
    "write_layout",
]

EXPORT_VERSION_KEY = b"kymwatch.parts_version"
_LAYOUT = "_parts.json"  # "_": skipped by pyarrow.dataset and pandas readers
_FORMAT = 1


def parts_folder(root: Path, name: str) -> Path:
    """``tables/<name>/``: the parts of table ``name``."""
    return root / TABLES_DIR / validate_table_name(name)


@dataclass(frozen=True, slots=True)
class PartLayout:
    """Which part holds which ``image_id`` range.

    Attributes:
        layout: Grows with each repartition; part files are named after it.
        version: Grows before each part write (the export records the one it saw).
        bounds: The lowest id of each part after the first (sorted); part ``k``
            holds ids in ``[bounds[k - 1], bounds[k])``.
    """

    layout: int
    version: int
    bounds: tuple[str, ...]

    @property
    def files(self) -> list[str]:
        """The part file names, in id order."""
        return [f"part-{self.layout:06d}-{k:05d}.parquet" for k in range(len(self.bounds) + 1)]

    def part_of(self, image_id: str) -> int:
        """The index of the part holding ``image_id``."""
        return bisect_right(self.bounds, image_id)


def read_layout(folder: Path) -> PartLayout | None:
    """The layout in ``folder`` (None if there is none or it cannot be read: the
    table is then a single file)."""
    try:
        doc = json.loads((folder / _LAYOUT).read_bytes())
        if doc.get("format") != _FORMAT:
            return None
        return PartLayout(int(doc["layout"]), int(doc["version"]), tuple(doc["bounds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_layout(folder: Path, layout: PartLayout, *, within: Path) -> None:
    """Replace ``_parts.json`` durably (atomically, fsynced)."""
    doc = {
        "format": _FORMAT,
        "layout": layout.layout,
        "version": layout.version,
        "bounds": list(layout.bounds),
    }
    atomic_write_bytes(folder / _LAYOUT, json.dumps(doc).encode(), within=within)


def read_parts(folder: Path, layout: PartLayout) -> pa.Table:
    """The parts concatenated in id order (raises OSError or ArrowInvalid when one is
    missing or damaged)."""
    tables = []
    for name in layout.files:
        with pa.OSFile(str(folder / name)) as f:
            tables.append(pq.ParquetFile(f).read(use_threads=False))
    return pa.concat_tables(tables, promote_options="permissive")


def export_version(path: Path) -> int | None:
    """The parts version an export was made from; None if the file does not say (or
    is missing or unreadable): it was not made from parts."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return int(meta[EXPORT_VERSION_KEY])
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None


def remove_unlisted_parts(folder: Path, layout: PartLayout) -> list[str]:
    """Delete part files of earlier layouts (left by a repartition or a crash)."""
    keep = set(layout.files)
    removed = []
    for entry in folder.glob("part-*.parquet"):
        if entry.name not in keep:
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        fsync_dir(folder)
    return sorted(removed)


def drop_parts(folder: Path) -> None:
    """Remove a table's parts (the single file is the truth again)."""
    shutil.rmtree(folder, ignore_errors=True)


def split_bounds(ids: Sequence[str], offsets: Sequence[int], part_rows: int) -> tuple[str, ...]:
    """Part bounds for a sorted table: a new part starts at the first record whose rows
    begin ``part_rows`` or more after the start of the current part (records are never
    split)."""
    bounds: list[str] = []
    start = 0
    for image_id, first in zip(ids, offsets, strict=False):
        if first - start >= part_rows:
            bounds.append(image_id)
            start = int(first)
    return tuple(bounds)
