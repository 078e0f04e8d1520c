"""The folder watcher of ``kymwatch run ROOT``: folders of stores, each watched alone.

Like :mod:`kymwatch.daemon.watcher` (which exports it too), it imports watchdog on
first use only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from kymwatch.store import IMAGES_DIR
from kymwatch.store.root import V2_MARKER, V3_MARKER

__all__ = ["FolderWatcher"]

log = structlog.get_logger(__name__)


class FolderWatcher:
    """Watches folders of a folder of stores (``kymwatch run ROOT``), each alone (not
    recursively): plain folders for entries created, deleted or renamed (a store
    appearing or going), stores for their marker or ``images/`` going (a store
    being deleted in place).

    ``on_change`` is called on the watcher's thread for every such event, and for an
    event overflow (what changed is then unknown: the caller rescans anyway). Linux
    only (see :func:`inotify_available`); elsewhere the caller rescans periodically.

    Args:
        on_change: Called (without arguments, from another thread) after a change.
    """

    def __init__(self, on_change: Callable[[], None]) -> None:
        from watchdog.observers.inotify_c import InotifyConstants as C
        from watchdog.observers.inotify_c import InotifyFD

        self._on_change = on_change
        self._fd: Any = InotifyFD()
        self._wd_of: dict[str, int] = {}
        self._inode_of: dict[int, int | None] = {}
        self._store_wds: set[int] = set()
        self._lock = threading.Lock()
        selfs = C.IN_DELETE_SELF | C.IN_MOVE_SELF | C.IN_ONLYDIR | C.IN_DONT_FOLLOW
        self._mask = C.IN_CREATE | C.IN_MOVED_TO | C.IN_DELETE | C.IN_MOVED_FROM | selfs
        self._store_mask = C.IN_DELETE | C.IN_MOVED_FROM | selfs
        self._id = f"kymwatch-folders-{id(self)}"

    @property
    def watch_count(self) -> int:
        """Number of folders watched."""
        with self._lock:
            return len(self._wd_of)

    def start(self) -> None:
        """Start the watcher's thread (no folder is watched before :meth:`watch`)."""
        self._fd.start()

    def stop(self) -> None:
        """Stop watching and end the thread."""
        self._fd.stop()
        if self._fd.is_alive():
            self._fd.join()

    def watch(self, folders: Iterable[Path], stores: Iterable[Path] = ()) -> None:
        """Watch exactly ``folders`` and ``stores`` from now on (kept if already watched)."""
        plain = {os.fspath(f) for f in folders}
        kinds = {os.fspath(s): True for s in stores} | dict.fromkeys(plain, False)
        now = {path: _inode(path) for path in kinds}
        with self._lock:
            # A path whose folder is not the one watched any more (renamed away, another
            # renamed onto it) is watched anew: its old watch follows the other folder.
            gone = [
                (p, wd)
                for p, wd in self._wd_of.items()
                if p not in kinds or self._inode_of.get(wd) != now[p]
            ]
            for p, wd in gone:
                del self._wd_of[p]
                self._inode_of.pop(wd, None)
                self._store_wds.discard(wd)
            new = kinds.keys() - self._wd_of.keys()
        if gone:
            self._fd.remove_callbacks([(wd, self._id) for _, wd in gone])
        for path in sorted(new):
            mask = self._store_mask if kinds[path] else self._mask
            try:
                wd = self._fd.add_callback(os.fsencode(path), mask, self, self._id)
            except OSError as e:  # gone, or unreadable: the next scan says so
                log.debug("watch_failed", path=path, error=str(e))
                continue
            with self._lock:
                self._wd_of[path] = wd
                self._inode_of[wd] = now[path]
                if kinds[path]:
                    self._store_wds.add(wd)

    # -- watchdog callbacks (run on the InotifyFD thread) -------------------------------
    def on_event(self, event: Any) -> None:
        with self._lock:
            in_store = event.wd in self._store_wds
        if not in_store or not event.name or os.fsdecode(event.name) in _STORE_SHAPE:
            self._on_change()

    def on_watch_deleted(self, wd: int) -> None:
        with self._lock:
            for path, w in list(self._wd_of.items()):
                if w == wd:
                    del self._wd_of[path]
            self._inode_of.pop(wd, None)
            self._store_wds.discard(wd)
        self._on_change()

    def on_queue_overflow(self) -> None:
        log.warning("events_lost", reason="inotify_overflow", watcher="folders")
        self._on_change()


def _inode(path: str) -> int | None:
    """The device and inode of the folder at ``path`` as one integer (a tuple costs more
    than twice the memory per watch), None if there is none."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev << 64 | st.st_ino


_STORE_SHAPE = frozenset({V2_MARKER, V3_MARKER, IMAGES_DIR})
"""The entries whose removal makes a folder no store any more."""
