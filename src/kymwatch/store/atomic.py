"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader sees either the old file or the new one, never a torn one. Temporary
names start with ``.`` and end with ``.tmp``, so path classifiers ignore them.
Files written here never keep the others-write bit, whatever the umask.

Durability (``fsync=True``, the default): the file's data is fsynced before the
rename and its folder after it, so once the call returns the new file survives a
power cut too, not only a killed process (without the folder's fsync the rename
itself may be lost and the old file come back). A caller that replaces several files
of one folder at once may leave the folder's fsync to itself (``sync_folder=False``)
and sync the folder once after the last rename, before anything relies on them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
    "make_folder",
    "remove_stale_temporaries",
    "temporary_sibling",
]

_TMP_SUFFIX = ".tmp"


def temporary_sibling(path: Path) -> Path:
    """A fresh temporary path next to ``path`` (same folder, so same file system)."""
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}{_TMP_SUFFIX}")


def make_folder(folder: Path, within: Path | None = None) -> None:
    """Create ``folder`` and its missing parents, but never ``within`` or above it.

    With ``within`` (a store folder), a folder that vanished (moved or deleted while a
    daemon runs) is not created again under its old path: FileNotFoundError instead.
    """
    if within is None:
        folder.mkdir(parents=True, exist_ok=True)
        return
    current = within
    for part in folder.relative_to(within).parts:
        current = current / part
        current.mkdir(exist_ok=True)


@contextlib.contextmanager
def _replacing(path: Path, *, fsync: bool, sync_folder: bool = True) -> Iterator[Path]:
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _deny_others_write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        tmp.replace(path)
        if fsync and sync_folder:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename, a creation, a removal) to disk.

    Best effort where a folder cannot be opened or synced (some network and FUSE
    file systems refuse): the data of the files themselves is synced regardless.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _deny_others_write(path: Path) -> None:
    """Clear the others-write bit a permissive umask (``000``) would leave on a new file."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & stat.S_IWOTH:
        os.chmod(path, mode & ~stat.S_IWOTH)


def atomic_write(
    path: Path,
    write: Callable[[Path], None],
    *,
    fsync: bool = True,
    within: Path | None = None,
    sync_folder: bool = True,
) -> None:
    """Write ``path`` atomically: ``write`` gets a temporary path to fill.

    Args:
        path: The final file.
        write: Writes the complete content to the path it is given.
        fsync: Flush the data to disk before the rename (crash safety).
        within: A folder that must exist already (the store): missing folders are
            created below it only (see :func:`make_folder`).
        sync_folder: With ``fsync``, also flush the folder after the rename; False
            leaves that to the caller (:func:`fsync_dir`, once for several files).
    """
    make_folder(path.parent, within)
    with _replacing(path, fsync=fsync, sync_folder=sync_folder) as tmp:
        write(tmp)


def atomic_write_bytes(
    path: Path, data: bytes, *, fsync: bool = True, within: Path | None = None
) -> None:
    """Write ``data`` to ``path`` atomically (``within`` as in :func:`atomic_write`)."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write, fsync=fsync, within=within)


@contextlib.contextmanager
def staged_write(
    path: Path, write: Callable[[Path], None], *, within: Path | None = None
) -> Iterator[Callable[[], None]]:
    """Write the next content of ``path`` now, replace ``path`` with it later.

    ``write`` fills a temporary sibling, whose data is flushed; the block gets a function
    that renames it over ``path`` (and flushes the folder). If the block does not call it,
    the temporary is removed and ``path`` is left as it is: the caller can take a lock
    only around the rename, and check under it that ``path`` is still the one it saw.
    ``within`` as in :func:`atomic_write`.
    """
    make_folder(path.parent, within)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        _deny_others_write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

        def replace() -> None:
            tmp.replace(path)
            fsync_dir(path.parent)

        yield replace
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete leftover temporaries of :func:`atomic_write` in ``folder`` (after a crash).

    Only call this while holding the lock that guards writes into ``folder``.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
