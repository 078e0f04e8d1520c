"""watchdog's inotify reader without its bookkeeping per watch.

watchdog's ``InotifyFD`` keeps, for every watch, a ``Watch`` object holding the
watched path's bytes and a dict of callbacks, so that many callers can share one
watch. kymwatch's :class:`~kymwatch.daemon.watcher.InotifyWatcher` is the only caller
of its instance and keeps its own map of watch descriptors to paths, which is all it
needs: at 30,000 watches (a store of 10,000 records) watchdog's copy cost the daemon
~10 MiB for its whole life (``bench/ANALYSIS.md``, session 6). :class:`LeanInotifyFD`
is the same reader (watchdog's thread, read loop, event parsing, wake-up and close)
with one callback for every watch and nothing kept per watch.

Imported on first use only (it imports watchdog), by :mod:`kymwatch.daemon.watcher`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from typing import Any

from watchdog.observers.inotify_c import (
    InotifyFD,
    Mask,
    WatchDescriptor,
    inotify_add_watch,
    inotify_rm_watch,
)

__all__ = ["LeanInotifyFD"]


class LeanInotifyFD(InotifyFD):
    """One inotify instance read on its own thread, reporting to one callback.

    The callback has watchdog's ``WatchCallback`` methods: ``on_event(event)`` for
    every event of every watch, ``on_watch_deleted(wd)`` when the kernel drops a
    watch (its folder deleted, or :meth:`remove_watches`), ``on_queue_overflow()``.
    Which watches exist is the callback's business: it gets events of watch
    descriptors it may have forgotten already, and ignores them.

    Args:
        callback: Receives the events (called on the reader thread).
    """

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self._callback = callback

    def add_watch(self, path: bytes, mask: int) -> int:
        """Watch ``path`` with ``mask`` (replacing the mask of a watch it has already).

        Returns:
            The watch descriptor: the same one for the same folder, under any name.

        Raises:
            OSError: with the kernel's errno (``EACCES`` too: an unreadable folder).
        """
        with self._lock:
            if self._closed:
                raise OSError(9, "inotify instance closed", os.fsdecode(path))
            wd = int(inotify_add_watch(self._inotify_fd, path, Mask(mask)))
            err = ctypes.get_errno()
        if wd == -1:
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return wd

    def remove_watches(self, wds: Iterable[int]) -> None:
        """Stop the watches ``wds`` (those gone already are skipped)."""
        with self._lock:
            if self._closed:
                return
            for wd in wds:
                inotify_rm_watch(self._inotify_fd, WatchDescriptor(wd))  # -1 (EINVAL): gone already

    def handle_event(self, event: Any) -> None:
        """Hand one event read by watchdog's loop to the callback (reader thread)."""
        if event.is_queue_overflow:
            self._callback.on_queue_overflow()
        elif event.is_ignored:
            self._callback.on_watch_deleted(event.wd)
        else:
            self._callback.on_event(event)
