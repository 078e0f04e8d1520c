"""The event source built on watchdog's public observer interface: FSEvents on macOS.

macOS has no inotify. watchdog's ``FSEventsObserver`` watches a whole tree with one
kernel stream at no per-folder cost, so on macOS the daemon schedules one recursive
watch on the store and turns watchdog's events into :class:`FileChange`\\s, as
:class:`kymwatch.daemon.watcher.InotifyWatcher` does on Linux (pixel chunks and
kymwatch's own files are dropped by :func:`kymwatch.daemon.classify.classify`).
The source depends only on the observer interface (``schedule``, ``start``,
``stop``, ``join``, ``is_alive``, ``unschedule_all``), so CI, which runs Linux,
drives the very same code with watchdog's ``InotifyObserver``
(``tests/test_observer_source.py``).

This is one of the daemon's three modules that import watchdog (with
:mod:`kymwatch.daemon.watcher` and :mod:`kymwatch.daemon.inotify`), as uvicorn keeps
each reload backend in its own file; like them it imports it on first use only.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

from kymwatch.daemon.changes import ChangeKind, FileChange, Rescan, Signal
from kymwatch.daemon.classify import SYNC_DIR, SYNC_REQUEST_SUFFIX
from kymwatch.daemon.watcher import EventSink
from kymwatch.store import IMAGES_DIR, store_is_whole
from kymwatch.store.atomic import make_folder

__all__ = ["OBSERVERS", "ObserverWatcher", "observer_class"]

log = structlog.get_logger(__name__)

OBSERVERS = {
    "darwin": ("watchdog.observers.fsevents", "FSEventsObserver"),
    "linux": ("watchdog.observers.inotify", "InotifyObserver"),
}
"""Per platform, watchdog's native observer (module, class)."""


def observer_class(platform: str = sys.platform) -> Any:
    """watchdog's native observer class for ``platform`` (``sys.platform``):
    ``FSEventsObserver`` on macOS, ``InotifyObserver`` on Linux.

    Raises:
        ImportError: no native observer for the platform, or it cannot be loaded.
    """
    key = "linux" if platform.startswith("linux") else platform
    if key not in OBSERVERS:
        raise ImportError(f"watchdog has no native observer kymwatch uses on {platform}")
    module, name = OBSERVERS[key]
    return getattr(importlib.import_module(module), name)


def fsevents_available() -> bool:
    """True where watchdog's FSEvents observer can be loaded (macOS)."""
    if sys.platform != "darwin":
        return False
    try:
        observer_class("darwin")
    except (ImportError, OSError):
        return False
    return True


_KINDS = {
    "created": ChangeKind.ADDED,
    "modified": ChangeKind.MODIFIED,
    "deleted": ChangeKind.DELETED,
    "closed": ChangeKind.MODIFIED,
}


class ObserverWatcher:
    """One recursive watch on the store through a watchdog observer.

    Args:
        root: The store folder.
        sink: Where changes and lost-event signals go.
        observer: The observer class (``FSEventsObserver`` on macOS; any
            ``BaseObserver`` works).
    """

    def __init__(self, root: Path, sink: EventSink, observer: Any) -> None:
        self.root, self.sink = root, sink
        self._root = os.fspath(root)
        # FSEvents reports real paths (/private/tmp/... for /tmp/...): watch the real
        # folder and report every path under the store's name the daemon knows.
        self._real = os.path.realpath(root)
        self._observer_class = observer
        self._observer: Any = None
        self._lock = threading.Lock()
        self._watching = False

    @property
    def watch_count(self) -> int:
        """1 while the store is watched (one stream for the whole tree)."""
        return 1 if self._watching else 0

    def start(self) -> None:
        self._observer = self._observer_class()
        self._observer.start()
        self.rewatch()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watching = False
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join()

    def is_alive(self) -> bool:
        """True while the observer's thread runs (checked by the daemon)."""
        return self._observer is not None and bool(self._observer.is_alive())

    def rewatch(self) -> None:
        """(Re)schedule the watch on the store and report waiting sync requests."""
        root = os.fspath(self.root)
        observer = self._observer
        if observer is None or not os.path.isdir(root):
            return  # store gone: nothing to watch (and nothing to create) until it is back
        if store_is_whole(Path(root)):  # never create index/ in a store being deleted
            try:
                make_folder(Path(root, SYNC_DIR), within=Path(root))
            except OSError:
                return  # the store vanished since the check above: a rescan follows
        with self._lock:
            observer.unschedule_all()
            try:
                observer.schedule(self, self._real, recursive=True, event_filter=_event_filter())
            except OSError as e:
                log.error("watch_failed", path=root, error=str(e))
                self._watching = False
                self.sink(Rescan("watch_failed"))
                return
            self._watching = True
        self._report_sync_requests(os.path.join(root, SYNC_DIR))

    def _report_sync_requests(self, folder: str) -> None:
        """Requests written before the watch existed would otherwise wait for a timeout."""
        try:
            names = sorted(
                e.name for e in os.scandir(folder) if e.name.endswith(SYNC_REQUEST_SUFFIX)
            )
        except OSError:
            return
        for name in names:
            self.sink(FileChange(os.path.join(folder, name), ChangeKind.ADDED))

    # -- watchdog's handler interface (runs on the observer's thread) -----------------
    def dispatch(self, event: Any) -> None:
        """Turn one watchdog event into changes; never let the observer thread die."""
        try:
            self._handle(event)
        except Exception as e:
            log.exception("watcher_error", error=str(e))
            self.sink(Rescan("watcher_error"))

    def _local(self, path: str | bytes) -> str:
        """``path`` under the store's own name (not the real path watched)."""
        text = os.fsdecode(path)
        real = self._real
        if real != self._root and (text == real or text.startswith(real + os.sep)):
            return self._root + text[len(real) :]
        return text

    def _handle(self, event: Any) -> None:
        src = self._local(event.src_path)
        is_dir = bool(event.is_directory)
        if event.event_type == "moved":
            dest = self._local(event.dest_path)
            self._gone(src, is_dir)
            self.sink(FileChange(dest, ChangeKind.ADDED, is_dir, Signal.MOVED))
            return
        kind = _KINDS.get(event.event_type)
        if kind is None:
            return  # opened, closed_no_write, attrib (reported as modified as well)
        if kind is ChangeKind.DELETED:
            self._gone(src, is_dir)
            return
        signal = Signal.CLOSED if event.event_type == "closed" else Signal.NONE
        self.sink(FileChange(src, kind, is_dir, signal))

    def _gone(self, path: str, is_dir: bool) -> None:
        root = os.fspath(self.root)
        if path in (root, os.path.join(root, IMAGES_DIR)):
            self.sink(Rescan("store_moved_or_deleted"))
            return
        self.sink(FileChange(path, ChangeKind.DELETED, is_dir))


def _event_filter() -> list[Any]:
    """The events worth delivering: never ``opened`` / ``closed_no_write`` (their flood
    overflowed the kernel queue on a large tree: see DESIGN's field notes), nor a
    folder's own modification (each file created in it is reported by itself)."""
    from watchdog import events as e

    return [
        e.FileCreatedEvent,
        e.DirCreatedEvent,
        e.FileModifiedEvent,
        e.FileMovedEvent,
        e.DirMovedEvent,
        e.FileDeletedEvent,
        e.DirDeletedEvent,
        e.FileClosedEvent,
    ]
