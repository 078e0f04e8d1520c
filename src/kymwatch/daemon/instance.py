"""One daemon per store: the daemon lock, and asking whether a daemon is running.

The daemon holds an exclusive ``flock`` on the **store folder itself** (a read-only
descriptor of the directory), not on a file under ``index/``: deleting ``index/``
(or anything else inside the store) cannot remove it, so a second daemon can never
start beside a running one. Only replacing the store folder (deleted and restored
from a copy) creates a new, unlocked folder; the daemon notices that at its next
reconcile and locks the new folder too (:meth:`DaemonLock.retake`).

Asking whether a daemon runs never takes the lock. On Linux it first asks the process
the status file names: ``/proc/<pid>/fdinfo/<lock_fd>`` lists the locks of the
descriptor the status file says holds the lock (a tenth of a millisecond); when that
does not prove a daemon holds this store's lock (no status file, another account's
process, a descriptor since closed), it reads ``/proc/locks``, which names every
holder's pid (its first read in a process took 6-19 ms on the benchmark machine).
Elsewhere it checks the pid of the status file for a live process. A probe therefore
cannot make a starting daemon fail, and needs no write access to the store (a read-only
monitoring account can run ``kymwatch status``).

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


def _lock_line_matches(line: str, identity: tuple[int, int]) -> bool:
    """Whether a lock line of ``/proc/locks`` (or of a descriptor's ``fdinfo``, after
    its ``lock:`` tag) is a granted write lock on the file ``identity``."""
    dev, ino = identity
    fields = line.split()
    # "1: FLOCK  ADVISORY  WRITE 5587 fe:00:2154545 0 EOF"; waiters have "->".
    if len(fields) < 6 or fields[1] == "->" or fields[3] != "WRITE":
        return False
    where = fields[5]
    if where == f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}":
        return True
    # btrfs subvolumes and some overlay set-ups report an anonymous device (major 0)
    # to stat() but the file system's own device in the lock table: match the inode.
    return os.major(dev) == 0 and where.rsplit(":", 1)[-1] == str(ino)


def _lock_holders(identity: tuple[int, int], locks_file: str | None = None) -> list[int] | None:
    """Pids holding a granted write lock on the file ``identity`` (device, inode);
    None if the kernel's lock table cannot be read (not Linux)."""
    try:
        with open(locks_file or _PROC_LOCKS, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        fields = line.split()
        if _lock_line_matches(line, identity) and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


def _holds(pid: int, fd: int, identity: tuple[int, int]) -> bool:
    """Whether descriptor ``fd`` of process ``pid`` holds a write lock on the file
    ``identity`` (False when that cannot be read: another account's process, not Linux)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    tag = "lock:"
    return any(
        _lock_line_matches(line[len(tag) :], identity) for line in lines if line.startswith(tag)
    )


def _status_claim(root: Path) -> tuple[int, int | None] | None:
    """The pid of the status file, and the descriptor it says holds the lock (None when
    it names none); None when there is no such file, or it says stopped."""
    try:
        doc = json.loads((root / INDEX_DIR / "status.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("state") == "stopped":
        return None
    pid, fd = doc.get("pid"), doc.get("lock_fd")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
        return None
    return pid, fd if isinstance(fd, int) and not isinstance(fd, bool) and fd >= 0 else None


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
    claim = _status_claim(root)
    claimed_pid, claimed_fd = claim if claim is not None else (None, None)
    identities = [_identity(t) for t in (root, root / INDEX_DIR / FALLBACK_LOCK_FILE)]
    if (
        claimed_pid is not None
        and claimed_fd is not None
        and any(i is not None and _holds(claimed_pid, claimed_fd, i) for i in identities)
    ):
        return claimed_pid
    for identity in identities:
        if identity is None:
            continue
        holders = _lock_holders(identity)
        if holders is None:  # no /proc/locks (macOS): trust a live status pid
            return claimed_pid if claimed_pid is not None and _alive(claimed_pid) else None
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

    @property
    def fd(self) -> int | None:
        """The descriptor holding the lock (None while not held); the status file names
        it so that probes find the lock without reading ``/proc/locks``."""
        return self._fd

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
