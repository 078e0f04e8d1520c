"""``kymwatch init``: an empty kymflow dataset, exactly as kymflow's own code makes one.

kymflow's ``ZarrDataset(path, "a")`` (``kymflow_zarr.dataset``, zarr 2) opens a zarr
format-2 group and writes four files: the root ``.zgroup``; the root ``.zattrs``
with ``format`` ``"kymflow_zarr_v1"``, ``schema_version`` 1 and ``created_utc`` /
``updated_utc`` (ISO 8601 to the second, ``Z``); and the groups ``images/`` and
``index/`` (a ``.zgroup`` each). zarr 2 writes its JSON with ``indent=4`` and sorted
keys. The same files are written here with plain file I/O (no zarr import), each
atomically, so a store made by ``kymwatch init`` is byte-for-byte shaped like one
made by kymflow (``tests/test_init.py`` compares it with the conformance stores).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from kymwatch.errors import NotAStoreError
from kymwatch.store.atomic import atomic_write_bytes
from kymwatch.store.layout import IMAGES_DIR, INDEX_DIR
from kymwatch.store.root import V2_MARKER, V3_MARKER, check_not_inside_dataset

__all__ = ["KYMFLOW_FORMAT", "KYMFLOW_SCHEMA_VERSION", "init_store"]

KYMFLOW_FORMAT = "kymflow_zarr_v1"
"""kymflow's ``DatasetSchema.format_name`` (the root ``.zattrs`` ``format``)."""

KYMFLOW_SCHEMA_VERSION = 1
"""kymflow's ``DatasetSchema.schema_version``."""

_ATTRS = ".zattrs"


def _zarr2_json(obj: Any) -> bytes:
    """JSON as zarr 2 writes its metadata: indent 4, sorted keys, ASCII."""
    return json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=True).encode("ascii")


def _now() -> str:
    """kymflow's ``utc_now_iso``: UTC to the second with a ``Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def init_store(path: str | os.PathLike[str]) -> Path:
    """Create an empty kymflow dataset (zarr format 2) at ``path``.

    Args:
        path: A folder that does not exist yet (its parents are made) or is empty.

    Returns:
        The absolute path of the new store.

    Raises:
        NotAStoreError: ``path`` is a file, a non-empty folder (an existing dataset
            included), or lies inside a dataset.
        OSError: the folder cannot be made or written.
    """
    root = Path(path).absolute()
    check_not_inside_dataset(root)
    if root.exists() and not root.is_dir():
        raise NotAStoreError(f"{root} exists and is not a folder")
    if root.is_dir():
        if (root / V2_MARKER).is_file() or (root / V3_MARKER).is_file():
            raise NotAStoreError(f"{root} is already a Zarr dataset; nothing to do")
        if any(root.iterdir()):
            raise NotAStoreError(
                f"{root} is not empty; kymwatch init makes a store in an empty or new folder"
            )
    root.mkdir(parents=True, exist_ok=True)
    group = _zarr2_json({"zarr_format": 2})
    now = _now()
    attrs = {
        "created_utc": now,
        "format": KYMFLOW_FORMAT,
        "schema_version": KYMFLOW_SCHEMA_VERSION,
        "updated_utc": now,
    }
    for sub in (IMAGES_DIR, INDEX_DIR):
        (root / sub).mkdir(exist_ok=True)
        atomic_write_bytes(root / sub / V2_MARKER, group, within=root)
    atomic_write_bytes(root / _ATTRS, _zarr2_json(attrs), within=root)
    # The root's .zgroup last: until it exists the folder is no dataset to anyone.
    atomic_write_bytes(root / V2_MARKER, group, within=root)
    return root
