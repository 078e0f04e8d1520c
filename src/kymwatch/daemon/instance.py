"""One daemon per store: the daemon lock, and asking whether a daemon is running."""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from kymwatch.errors import DaemonRunningError
from kymwatch.store import INDEX_DIR

__all__ = ["DAEMON_LOCK", "DaemonLock", "daemon_lock", "daemon_running"]

DAEMON_LOCK = "daemon.lock"


def daemon_lock(root: Path) -> FileLock:
    """The lock a running daemon holds for its whole life (released by the OS on death)."""
    folder = root / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / DAEMON_LOCK, timeout=0)


def daemon_running(root: Path) -> bool:
    """True if some process holds the daemon lock of the store at ``root``."""
    if not (root / INDEX_DIR / DAEMON_LOCK).exists():
        return False
    lock = daemon_lock(root)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


class DaemonLock:
    """The daemon lock as held by the running daemon.

    Args:
        root: The store folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = daemon_lock(root)
        self._inode: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DaemonRunningError naming the holder's pid."""
        try:
            self._lock.acquire()
        except Timeout as e:
            pid = _status_pid(self.root)
            raise DaemonRunningError(
                f"another kymwatch daemon{f' (pid {pid})' if pid else ''} is already "
                f"watching {self.root}"
            ) from e
        self._inode = _inode(self._lock.lock_file)

    def release(self) -> None:
        """Let go of the lock."""
        self._lock.release(force=True)

    def retake(self) -> bool:
        """Take the lock again if its file was replaced (a deleted store was restored);
        False if another daemon holds the new file."""
        if _inode(self._lock.lock_file) == self._inode:
            return True
        self.release()
        self._lock = daemon_lock(self.root)
        try:
            self.acquire()
        except DaemonRunningError:
            return False
        return True


def _status_pid(root: Path) -> int | None:
    try:
        pid = json.loads((root / INDEX_DIR / "status.json").read_bytes()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
