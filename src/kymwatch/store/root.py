"""Telling a dataset root from a folder inside a dataset, without opening it.

``images/`` and every record folder are Zarr groups too, so "has a ``.zgroup``"
does not make a folder a dataset. A command pointed at ``STORE/images`` or at a
record would write ``tables/`` and ``index/`` inside the dataset, where they then
look like records: refuse any folder that lies inside a dataset, and name the
root the user probably meant.

Only the standard library is imported here (no zarr, pandas or pyarrow), so the
quick commands (``kymwatch status``, ``sync``, ``logs``) can check a store fast.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from kymwatch.errors import NotAStoreError, StoreNotFoundError
from kymwatch.store.layout import IMAGES_DIR

__all__ = [
    "V2_MARKER",
    "V3_MARKER",
    "check_not_inside_dataset",
    "detect_zarr_format",
    "enclosing_dataset",
    "existing_store",
    "not_a_store_error",
    "store_is_whole",
    "utc_now_iso",
]

V2_MARKER = ".zgroup"
V3_MARKER = "zarr.json"


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z``-free ``+00:00`` offset."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def detect_zarr_format(path: Path) -> int | None:
    """2 or 3 if ``path`` holds a Zarr group root, else None."""
    if (path / V2_MARKER).is_file():
        return 2
    if (path / V3_MARKER).is_file():
        return 3
    return None


def store_is_whole(path: Path) -> bool:
    """True while ``path`` holds a group marker and ``images/``: what a daemon checks
    before it creates a file in the store, so that it creates none in a store being
    deleted (``rm -rf`` fails on a folder something wrote into meanwhile)."""
    return detect_zarr_format(path) is not None and (path / IMAGES_DIR).is_dir()


def not_a_store_error(path: Path) -> Exception:
    """The error for a ``path`` that holds no Zarr group (missing, or something else)."""
    if not path.exists():
        return StoreNotFoundError(f"{path} does not exist")
    return NotAStoreError(f"{path} is not a kymflow Zarr dataset (no {V2_MARKER} or {V3_MARKER})")


def existing_store(path: str | os.PathLike[str]) -> Path:
    """The absolute path of an existing dataset root, checked as ``ZarrDataset(path, "r")``
    and :func:`check_not_inside_dataset` check it, without importing zarr.

    Raises:
        StoreNotFoundError: the path does not exist.
        NotAStoreError: it is not a Zarr group, or lies inside a dataset.
    """
    check_not_inside_dataset(path)
    root = Path(path).absolute()
    if not root.is_dir() or detect_zarr_format(root) is None:
        raise not_a_store_error(root)
    return root


def enclosing_dataset(path: str | os.PathLike[str]) -> Path | None:
    """The outermost dataset folder strictly above ``path`` (symbolic links resolved),
    or None if ``path`` is not inside a dataset."""
    found = None
    for parent in Path(os.path.realpath(path)).parents:
        try:
            if store_is_whole(parent):
                found = parent
        except OSError:  # an unreadable ancestor cannot be checked: not a dataset
            continue
    return found


def check_not_inside_dataset(path: str | os.PathLike[str]) -> None:
    """Raise NotAStoreError if ``path`` lies inside a dataset (naming its root)."""
    root = enclosing_dataset(path)
    if root is not None:
        raise NotAStoreError(
            f"{os.path.abspath(path)} is inside the kymflow dataset {root}, not its root; "
            f"did you mean {root}?"
        )
