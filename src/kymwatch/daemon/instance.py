"""One daemon per store: the daemon lock, and asking whether a daemon is running.

The daemon holds an exclusive ``flock`` on the **store folder itself** (a read-only
descriptor of the directory), not on a file under ``index/``: deleting ``index/``
(or anything else inside the store) cannot remove it, so a second daemon can never
start beside a running one. Only replacing the store folder (deleted and restored
from a copy) creates a new, unlocked folder; the daemon notices that at its next
reconcile and locks the new folder too (:meth:`DaemonLock.retake`).

Asking whether a daemon runs never takes the lock: on Linux it reads
``/proc/locks`` (which also names the holder's pid); elsewhere it checks the pid
of the status file for a live process. A probe therefore cannot make a starting
daemon fail, and needs no write access to the store (a read-only monitoring
account can run ``kymwatch status``).

On a file system where a directory cannot be ``flock``-ed (some network file
systems emulate ``flock`` with byte-range locks, which need a writable file), the
daemon falls back to a lock file, ``index/daemon.lock``, whose identity it checks
at every reconcile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path

from kymwatch._lazy import lazy_logger
from kymwatch.errors import DaemonRunningError
from kymwatch.store import INDEX_DIR

__all__ = ["FALLBACK_LOCK_FILE", "DaemonLock", "daemon_pid", "daemon_running"]

log = lazy_logger(__name__)

FALLBACK_LOCK_FILE = "daemon.lock"
"""Lock file under ``index/`` used only where the store folder cannot be locked."""

_PROC_LOCKS = "/proc/locks"
_NO_DIR_FLOCK = (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _lock_holders(identity: tuple[int, int], locks_file: str | None = None) -> list[int] | None:
    """Pids holding a granted write lock on the file ``identity`` (device, inode);
    None if the kernel's lock table cannot be read (not Linux)."""
    dev, ino = identity
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    # btrfs subvolumes and some overlay set-ups report an anonymous device (major 0)
    # to stat() but the file system's own device in /proc/locks: match the inode.
    anonymous = os.major(dev) == 0
    try:
        with open(locks_file or _PROC_LOCKS, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 5587 fe:00:2154545 0 EOF"; waiters have "->".
        if len(fields) < 6 or fields[1] == "->" or fields[3] != "WRITE":
            continue
        where = fields[5]
        same = where == wanted or (anonymous and where.rsplit(":", 1)[-1] == str(ino))
        if same and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


def _status_pid(root: Path) -> int | None:
    try:
        doc = json.loads((root / INDEX_DIR / "status.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("state") == "stopped":
        return None
    pid = doc.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def daemon_pid(root: Path) -> int | None:
    """The pid of the daemon watching the store at ``root``, or None if none runs.

    Read-only and lock-free: it never takes (or creates) a lock, so it is safe to
    call at any moment, from any account that can read the store.
    """
    for target in (root, root / INDEX_DIR / FALLBACK_LOCK_FILE):
        identity = _identity(target)
        if identity is None:
            continue
        holders = _lock_holders(identity)
        if holders is None:  # no /proc/locks (macOS): trust a live status pid
            pid = _status_pid(root)
            return pid if pid is not None and _alive(pid) else None
        if holders:
            return holders[0]
    return None


def daemon_running(root: Path) -> bool:
    """True if a daemon watches the store at ``root`` (see :func:`daemon_pid`)."""
    return daemon_pid(root) is not None


class DaemonLock:
    """The daemon lock as held by the running daemon.

    Args:
        root: The store folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._path: Path = root

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise DaemonRunningError naming the holder's pid."""
        try:
            self._take(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            if e.errno not in _NO_DIR_FLOCK:
                raise
            folder = self.root / INDEX_DIR
            folder.mkdir(parents=True, exist_ok=True)
            log.info("daemon_lock_fallback", path=str(folder / FALLBACK_LOCK_FILE), error=str(e))
            self._take(folder / FALLBACK_LOCK_FILE, os.O_RDWR | os.O_CREAT)

    def _take(self, path: Path, flags: int) -> None:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            pid = daemon_pid(self.root)
            raise DaemonRunningError(
                f"another kymwatch daemon{f' (pid {pid})' if pid else ''} is already "
                f"watching {self.root}"
            ) from e
        except OSError:
            os.close(fd)
            raise
        st = os.fstat(fd)
        self._fd, self._identity, self._path = fd, (st.st_dev, st.st_ino), path

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def intact(self) -> bool:
        """True if the locked folder (or file) is still the one at its path."""
        return self._fd is not None and _identity(self._path) == self._identity

    def retake(self) -> bool:
        """Lock the store again if its folder (or lock file) was replaced, e.g. a
        deleted store restored from a copy; False if another daemon holds the new one."""
        if self.intact():
            return True
        self.release()
        try:
            self.acquire()
        except DaemonRunningError:
            return False
        except OSError as e:  # the store is not back yet: try again at the next reconcile
            log.debug("daemon_lock_retake_failed", error=str(e))
            return True
        return True
