"""Finding the kymflow stores in a folder of stores (``kymwatch run ROOT``).

A lab keeps one store per day or session in one folder, sometimes grouped by
month: ``ROOT/exp42.zarr``, ``ROOT/2026-11/exp43.zarr``. :func:`scan_root` finds
the stores **directly in ROOT and one level below** (:data:`ROOT_DEPTH`), never
deeper, and never inside a store: a folder that holds a Zarr group marker
(``.zgroup`` or ``zarr.json``) is a store, or one being created, and is not
entered.

A folder is a **store** when it holds a marker and an ``images/`` folder (as
:func:`kymwatch.store.root.enclosing_dataset` recognises one). A folder with a
marker but no ``images/`` yet is **incomplete** (an acquisition program creating
it right now): it is looked at again later, not watched. Hidden entries (names
starting with ``.``) and symbolic links are skipped, so a store reached by two
names is watched once. A folder that cannot be read is listed as **unreadable**
and skipped.

Only the standard library is used (``kymwatch status ROOT`` scans fast).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kymwatch.errors import NotAStoreError, StoreNotFoundError
from kymwatch.store.layout import IMAGES_DIR
from kymwatch.store.root import V2_MARKER, V3_MARKER, check_not_inside_dataset

__all__ = ["ROOT_DEPTH", "RootScan", "existing_root", "scan_root"]

ROOT_DEPTH = 2
"""Stores are looked for directly in ROOT (depth 1) and one folder below (depth 2)."""


@dataclass(frozen=True, slots=True)
class RootScan:
    """What a folder of stores holds now.

    Attributes:
        root: The folder scanned.
        stores: The stores, sorted by path.
        incomplete: Folders with a Zarr marker but no ``images/`` yet.
        folders: Plain folders that may hold or become stores: ``root`` itself
            first, then every folder at a depth where a store is looked for that
            is neither a store nor incomplete. With ``incomplete``, what a watcher
            watches (each folder alone, not recursively).
        unreadable: Folders that could not be listed or checked, with the error.
    """

    root: Path
    stores: tuple[Path, ...]
    incomplete: tuple[Path, ...]
    folders: tuple[Path, ...]
    unreadable: tuple[tuple[Path, str], ...]


def _kind(path: Path) -> str:
    """``store``, ``incomplete`` or ``folder`` (raises OSError if it cannot be checked)."""
    names = set(os.listdir(path))
    if V2_MARKER not in names and V3_MARKER not in names:
        return "folder"
    return "store" if (path / IMAGES_DIR).is_dir() else "incomplete"


def scan_root(root: Path) -> RootScan:
    """Find the stores in ``root`` and one level below (see the module doc).

    Never raises for what is inside ``root``: an entry that cannot be read is
    listed in ``unreadable``; ``root`` itself unreadable is listed there too.
    """
    stores: list[Path] = []
    incomplete: list[Path] = []
    folders: list[Path] = [root]
    unreadable: list[tuple[Path, str]] = []
    level = [root]
    for _depth in range(ROOT_DEPTH):
        below: list[Path] = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as e:
                unreadable.append((folder, e.strerror or str(e)))
                continue
            for entry in entries:
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                path = Path(entry.path)
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    kind = _kind(path)
                except OSError as e:
                    unreadable.append((path, e.strerror or str(e)))
                    continue
                if kind == "store":
                    stores.append(path)
                elif kind == "incomplete":
                    incomplete.append(path)
                else:
                    below.append(path)
        folders.extend(below)
        level = below
    return RootScan(
        root=root,
        stores=tuple(sorted(stores)),
        incomplete=tuple(sorted(incomplete)),
        folders=tuple(folders),
        unreadable=tuple(unreadable),
    )


def existing_root(path: str | os.PathLike[str]) -> Path:
    """The absolute path of an existing folder of stores (one that holds a store now).

    Raises:
        StoreNotFoundError: the path does not exist.
        NotAStoreError: it is not a folder, lies inside a dataset, or holds no store
            (in it or one level below).
    """
    check_not_inside_dataset(path)
    root = Path(path).absolute()
    if not root.exists():
        raise StoreNotFoundError(f"{root} does not exist")
    if not root.is_dir() or not scan_root(root).stores:
        raise NotAStoreError(
            f"{root} is not a kymflow Zarr dataset (no {V2_MARKER} or {V3_MARKER}), "
            f"nor a folder holding one (looked {ROOT_DEPTH} levels deep)"
        )
    return root
