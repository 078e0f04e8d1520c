"""One daemon per store: the daemon lock, and asking whether a daemon is running."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from kymwatch.store import INDEX_DIR

__all__ = ["DAEMON_LOCK", "daemon_lock", "daemon_running"]

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
