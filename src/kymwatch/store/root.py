"""Telling a dataset root from a folder inside a dataset.

``images/`` and every record folder are Zarr groups too, so "has a ``.zgroup``"
does not make a folder a dataset. A command pointed at ``STORE/images`` or at a
record would write ``tables/`` and ``index/`` inside the dataset, where they then
look like records: refuse any folder that lies inside a dataset, and name the
root the user probably meant.
"""

from __future__ import annotations

import os
from pathlib import Path

from kymwatch.errors import NotAStoreError
from kymwatch.store.dataset import detect_zarr_format
from kymwatch.store.layout import IMAGES_DIR

__all__ = ["check_not_inside_dataset", "enclosing_dataset"]


def _is_dataset_root(path: Path) -> bool:
    return detect_zarr_format(path) is not None and (path / IMAGES_DIR).is_dir()


def enclosing_dataset(path: str | os.PathLike[str]) -> Path | None:
    """The outermost dataset folder strictly above ``path`` (symbolic links resolved),
    or None if ``path`` is not inside a dataset."""
    found = None
    for parent in Path(os.path.realpath(path)).parents:
        try:
            if _is_dataset_root(parent):
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
