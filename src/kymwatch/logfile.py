"""The daemon's log file handler: size rotation plus logrotate-friendly reopening.

:class:`LogFileHandler` is a :class:`logging.Handler` that appends one formatted
record per line to a file and

- rotates it when the next record would push it past ``max_bytes``
  (``kymwatch.log`` → ``kymwatch.log.1`` → ... → ``kymwatch.log.<backup_count>``,
  the oldest dropped), like :class:`logging.handlers.RotatingFileHandler`;
- reopens the path when someone else moved or removed the file (an external
  ``logrotate`` without ``copytruncate``), like
  :class:`logging.handlers.WatchedFileHandler`: before each record it compares
  the device and inode of the path with those of the open file.

The file is created with ``os.open`` and mode ``0o640`` by default (the umask
may remove more bits); a mode that would let others write is refused, and an
existing file with more permissions than the mode is narrowed to it.

It assumes one writing process per file (the daemon holds the store lock);
threads of that process are serialized by the handler's lock.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEFAULT_BACKUP_COUNT",
    "DEFAULT_FILE_MODE",
    "DEFAULT_MAX_BYTES",
    "LogFileHandler",
]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
"""Rotate once the file would exceed 10 MiB."""

DEFAULT_BACKUP_COUNT = 5
"""Keep ``.1`` ... ``.5``."""

DEFAULT_FILE_MODE = 0o640
"""Owner read/write, group read, nothing for others."""

# Python opens descriptors non-inheritable (PEP 446): no O_CLOEXEC needed.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


class LogFileHandler(logging.Handler):
    """Append log lines to a file; rotate by size; reopen after external rotation.

    Args:
        path: The log file.
        max_bytes: Rotate before a record would make the file larger than this.
            0 disables size rotation.
        backup_count: How many rotated files to keep. 0 disables size rotation
            (as in the standard library), the file then grows until moved away.
        mode: Permission bits for a newly created file. Must not grant write
            access to others.
        encoding: Text encoding of the lines.
        delay: Open the file at the first record instead of now.
        reopen_if: Asked before the path is opened again after someone moved or
            removed the file; while it says False the open file keeps the lines (a
            log inside a store: nothing is created in a store being deleted).

    Raises:
        ValueError: ``mode`` is world-writable, or a size/count is negative.
        OSError: The file cannot be opened (only when ``delay`` is False).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        mode: int = DEFAULT_FILE_MODE,
        encoding: str = "utf-8",
        delay: bool = False,
        reopen_if: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        if mode & stat.S_IWOTH:
            raise ValueError(f"log file mode {mode:#o} would be world-writable")
        if max_bytes < 0 or backup_count < 0:
            raise ValueError("max_bytes and backup_count must not be negative")
        self._path = Path(os.path.abspath(path))
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._mode = mode
        self._encoding = encoding
        self._fd: int | None = None
        self._dev_ino: tuple[int, int] | None = None
        self._reopen_if = reopen_if
        if not delay:
            self._open(parents=True)

    @property
    def path(self) -> Path:
        """The absolute path of the log file."""
        return self._path

    @property
    def rotates(self) -> bool:
        """True when size rotation is active."""
        return self._max_bytes > 0 and self._backup_count > 0

    def backup_path(self, index: int) -> Path:
        """The path of the ``index``-th rotated file (1 is the most recent)."""
        return self._path.with_name(f"{self._path.name}.{index}")

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record (called by :meth:`logging.Handler.handle` under the lock)."""
        try:
            data = (self.format(record) + "\n").encode(self._encoding, "backslashreplace")
            self._reopen_if_moved()
            if self._should_rotate(len(data)):
                self._rotate()
            self._write(data)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def reopen(self) -> None:
        """Close the file now; the next record opens the path afresh (after SIGHUP)."""
        self.acquire()
        try:
            self._close_fd()
        finally:
            self.release()

    def close(self) -> None:
        """Close the file; a later record reopens it."""
        self.acquire()
        try:
            self._close_fd()
        finally:
            self.release()
        super().close()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self._path} ({level})>"

    def _open(self, *, parents: bool = False) -> int:
        """Open the path (creating its folder; its parents only at the first open: a log
        inside a store must not recreate a store deleted meanwhile)."""
        self._path.parent.mkdir(parents=parents, exist_ok=True)
        fd = os.open(self._path, _OPEN_FLAGS, self._mode)
        try:
            st = os.fstat(fd)
            extra = stat.S_IMODE(st.st_mode) & ~self._mode
            if extra:
                # A pre-existing file may be wider than we allow: narrow it.
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & self._mode)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._dev_ino = (st.st_dev, st.st_ino)
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._dev_ino = None
            os.close(fd)

    def _reopen_if_moved(self) -> None:
        if self._fd is None:
            self._open()
            return
        try:
            st = os.stat(self._path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            if not self._path.parent.is_dir():
                # The folder went away too (its store was moved or deleted): keep writing
                # to the open file rather than recreate folders under the old path.
                return
            current = None
        if current != self._dev_ino:
            if self._reopen_if is not None and not self._reopen_if():
                return
            old = self._fd
            try:
                self._open()
            except FileNotFoundError:
                return  # the folder's parent vanished meanwhile: keep the open file
            os.close(old)

    def _should_rotate(self, incoming: int) -> bool:
        if not self.rotates or self._fd is None:
            return False
        size = os.fstat(self._fd).st_size
        # Never rotate an empty file: a single huge record still gets written.
        return size > 0 and size + incoming > self._max_bytes

    def _rotate(self) -> None:
        self._close_fd()
        for index in range(self._backup_count - 1, 0, -1):
            source = self.backup_path(index)
            if source.exists():
                source.replace(self.backup_path(index + 1))
        if self._path.exists():
            self._path.replace(self.backup_path(1))
        self._open()

    def _write(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None else self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
