"""Event sources: where file changes come from. The only modules importing watchdog
are this one, :mod:`kymwatch.daemon.inotify` and :mod:`kymwatch.daemon.observer`.

:class:`InotifyWatcher` watches narrowly with one inotify instance (watchdog's
``InotifyFD`` reader, without its state per watch: :mod:`kymwatch.daemon.inotify`):
the store root, ``images/``, each record folder and each record's
``analysis/`` tree — about two watches per record, never pixel-chunk folders.
:class:`kymwatch.daemon.polling.PollingWatcher` is for file systems where inotify
sees no remote writes (FUSE, NFS, SMB/CIFS, ...). :class:`FolderWatcher`
(:mod:`kymwatch.daemon.folderwatch`, exported here too) watches the folders of a folder
of stores (``kymwatch run ROOT``), each alone, for entries that appear or go.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from kymwatch.daemon.changes import ChangeKind, FileChange, Rescan, Signal
from kymwatch.daemon.classify import SYNC_DIR, is_partial_file_name
from kymwatch.daemon.folderwatch import FolderWatcher
from kymwatch.store import (
    ANALYSIS_DIR,
    IMAGES_DIR,
    INDEX_DIR,
    is_temporary_name,
    is_valid_image_id,
    store_is_whole,
)
from kymwatch.store.atomic import make_folder

__all__ = [
    "EventSink",
    "EventSource",
    "FolderWatcher",
    "InotifyWatcher",
    "inotify_available",
]

log = structlog.get_logger(__name__)

EventSink = Callable[[FileChange | Rescan], None]


class EventSource(Protocol):
    """Something that reports file changes and lost-event signals to a sink."""

    def start(self) -> None:
        """Begin watching (may report events before returning)."""

    def stop(self) -> None:
        """Stop watching and release resources."""

    def rewatch(self) -> None:
        """Re-establish watches after a loss of events (no-op for polling)."""

    # Optional: ``is_alive() -> bool``. A source that has it is checked every
    # ``DaemonConfig.watcher_check_s``; once it returns False the daemon logs
    # ``watcher_died``, starts a new source and rescans.
    #
    # Optional: ``ordered: bool`` (default False). True promises that the source
    # reports every change in the order it happened, through one queue, sync
    # requests included, and reports any loss of events (``Rescan``) before the
    # changes that follow it: the arrival of a sync request then proves every
    # earlier change was reported, and the daemon answers it without a scan
    # (:func:`kymwatch.daemon.sync.choose_sync_path`).

    @property
    def watch_count(self) -> int:
        """Number of OS watches held."""
        ...


def inotify_available() -> bool:
    """True where watchdog's inotify backend can be used (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import watchdog.observers.inotify_c  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


class InotifyWatcher:
    """Narrow inotify watches on a store, reporting :class:`FileChange` to ``sink``.

    New record and ``analysis/`` folders get watches as they appear; a queue
    overflow or a watcher failure is reported as :class:`Rescan`.

    The events of partial files (``<name>.<hex>.partial`` written before the rename
    onto ``<name>``: ~4 of 5 events in a burst of atomic writes) are dropped on the
    inotify thread and only counted (:attr:`partial_events`): the daemon's loop would
    classify each and drop it (:func:`~kymwatch.daemon.classify.is_partial_file_name`);
    the rename onto the final name is reported as ever.

    Events come from one inotify instance, read and handled in order on one thread,
    so a sync request's event is reported after every event queued before it
    (:attr:`ordered`). A folder created before its watch is added is covered too: its
    creation event (before the request's) is handled by adding its watch and listing
    it for sub-folders, and it is reported as a change of the whole record, which the
    worker reads from disk after the request arrived.
    """

    ordered = True
    """Events (sync requests included) are reported in the order they happened."""

    def __init__(self, root: Path, sink: EventSink) -> None:
        from watchdog.observers.inotify_c import InotifyConstants as C

        from kymwatch.daemon.inotify import LeanInotifyFD

        self.root, self.sink = root, sink
        self._C = C
        self._fd = LeanInotifyFD(self)
        self._lock = threading.Lock()
        # Held across the whole of _add: the inotify thread (a folder created) and the
        # daemon's rewatch (after an overflow) may add the same folder at once.
        self._adding = threading.Lock()
        # The only state kept per watch (~30,000 at 10k records): its folder's path.
        # Whether a path is watched already, and under which other name a renamed
        # folder was watched, the kernel says (one watch per folder, see _add).
        self._path_of: dict[int, str] = {}
        # During a rewatch: the watches the kernel handed back (see rewatch).
        self._seen: set[int] | None = None
        self.partial_events = 0
        """Events of partial files dropped here, never reported (written by the
        inotify thread only)."""
        dirs = C.IN_CREATE | C.IN_MOVED_TO | C.IN_DELETE | C.IN_MOVED_FROM
        selfs = C.IN_DELETE_SELF | C.IN_MOVE_SELF
        flags = C.IN_ONLYDIR | C.IN_DONT_FOLLOW
        # IN_ATTRIB on folders: a chmod that makes a record's analysis/ readable again.
        self._mask_dirs = dirs | selfs | flags | C.IN_ATTRIB
        # IN_ATTRIB: a chmod (0600 → 0644) makes an unreadable artifact readable, and
        # a chmod of the folder itself an unreadable analysis/ readable.
        self._mask_files = dirs | selfs | flags | C.IN_MODIFY | C.IN_CLOSE_WRITE | C.IN_ATTRIB
        # A record folder: also a .zattrs rewritten in place (kymflow's manifest reads it).
        self._mask_record = self._mask_dirs | C.IN_CLOSE_WRITE

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._path_of)

    def start(self) -> None:
        self._fd.start()
        self._watch_all()

    def stop(self) -> None:
        self._fd.stop()
        if self._fd.is_alive():
            self._fd.join()

    def is_alive(self) -> bool:
        """True while the inotify reader thread runs. watchdog's thread dies without a
        word if reading or parsing raises: the daemon checks this and restarts it."""
        return bool(self._fd.is_alive())

    # -- watch management -----------------------------------------------------------------
    def _add(self, path: str, mask: int) -> bool | None:
        """Watch ``path``: True if newly watched, False if it was watched already, None
        if it cannot be watched.

        The kernel keeps one watch per folder and hands it back when the folder is
        watched again, under any name: a watch known under another path is a folder
        renamed while events were lost (an overflow), now known by its new name.
        """
        with self._adding:
            try:
                wd = self._fd.add_watch(os.fsencode(path), mask)
            except OSError as e:
                if e.errno == 13:  # EACCES: an unreadable folder; its chmod back is an IN_ATTRIB
                    log.warning("watch_failed", path=path, error=str(e))
                elif e.errno not in (2, 20):  # ENOENT / ENOTDIR: gone already, nothing to watch
                    log.error("watch_failed", path=path, error=str(e))
                    self.sink(Rescan("watch_failed"))
                return None
            with self._lock:
                if self._seen is not None:
                    self._seen.add(wd)
                if self._path_of.get(wd) == path:
                    return False
                self._path_of[wd] = path
            return True

    def _drop(self, wd: int) -> None:
        """Forget watch ``wd`` (``self._lock`` held)."""
        self._path_of.pop(wd, None)

    def _remove_under(self, prefix: str) -> None:
        with self._lock:
            gone = [
                wd for wd, p in self._path_of.items() if p == prefix or p.startswith(prefix + "/")
            ]
            for wd in gone:
                self._drop(wd)
        if gone:
            self._fd.remove_watches(gone)

    def _watch_analysis(self, folder: str) -> None:
        if self._add(folder, self._mask_files) is None:
            return  # failed or gone
        # Watched already or not: look for sub-folders, which may have appeared while
        # events were lost (an overflow's rewatch must find them).
        try:
            subdirs = [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for sub in subdirs:
            if not is_temporary_name(os.path.basename(sub)):
                self._watch_analysis(sub)

    def _watch_record(self, record: str) -> None:
        self._add(record, self._mask_record)
        analysis = os.path.join(record, ANALYSIS_DIR)
        if os.path.isdir(analysis):
            self._watch_analysis(analysis)

    def rewatch(self) -> None:
        """Watch everything that should be watched and is not (idempotent), and forget
        the watches of folders that are not where they were watched any more.

        After a loss of events the watcher cannot know which folders went (deleted, or
        renamed out of the store, perhaps replaced under their name: their watches' end,
        ``IN_IGNORED``, was lost with the rest). The kernel does: every folder the
        rewatch visits hands back its watch (the same one under a new name), so the
        watches not handed back are of folders gone from where they were watched.
        """
        with self._lock:
            self._seen = set()
        try:
            complete = self._watch_all()
        finally:
            with self._lock:
                seen, self._seen = self._seen, None
        if complete:
            self._forget_all_but(seen)

    def _forget_all_but(self, seen: set[int]) -> None:
        """Forget (and remove) every watch but ``seen``."""
        with self._lock:
            gone = [wd for wd in self._path_of if wd not in seen]
            for wd in gone:
                self._drop(wd)
        if gone:  # a folder renamed out of the store would report under its old name
            self._fd.remove_watches(gone)

    def _watch_all(self) -> bool:
        """Watch every folder that should be watched and is not; False if the records
        could not be listed (the store gone or going)."""
        root = os.fspath(self.root)
        if not os.path.isdir(root):
            return False  # store gone: nothing to watch (nor to create) until it is back
        self._add(root, self._mask_dirs)
        if store_is_whole(Path(root)):  # never create index/ in a store being deleted
            try:
                make_folder(Path(root, SYNC_DIR), within=Path(root))
            except OSError:
                return False  # the store vanished since the check above: a rescan follows
        self._watch_sync_folder()
        images = os.path.join(root, IMAGES_DIR)
        if self._add(images, self._mask_dirs) is None:
            return False
        try:
            records = [e.path for e in os.scandir(images) if is_valid_image_id(e.name)]
        except OSError:
            return False
        for rec in records:
            self._watch_record(rec)
        return True

    def _watch_sync_folder(self) -> None:
        """Watch ``index/`` and ``index/sync/`` (again, after someone deleted
        ``index/``: a ``kymwatch sync`` recreates them and must still be answered)."""
        root = os.fspath(self.root)
        self._add(os.path.join(root, INDEX_DIR), self._mask_dirs)
        sync = os.path.join(root, SYNC_DIR)
        if self._add(sync, self._mask_files) or os.path.isdir(sync):
            self._report_sync_requests(sync)

    def _report_sync_requests(self, folder: str) -> None:
        """Report the sync requests already waiting: their events may have been lost
        (an overflow, or made while the store was moved away), and a client would
        otherwise wait for its full timeout."""
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".request"))
        except OSError:
            return
        for name in names:
            self.sink(FileChange(os.path.join(folder, name), ChangeKind.ADDED))

    # -- watchdog callbacks (run on the InotifyFD thread) -------------------------------
    def on_event(self, event: Any) -> None:
        try:
            self._handle(event)
        except Exception as e:  # never let the watcher thread die silently
            log.exception("watcher_error", error=str(e))
            self.sink(Rescan("watcher_error"))

    def on_watch_deleted(self, wd: int) -> None:
        with self._lock:
            self._drop(wd)

    def on_queue_overflow(self) -> None:
        log.warning("events_lost", reason="inotify_overflow")
        self.sink(Rescan("inotify_overflow"))

    def _handle(self, event: Any) -> None:
        C = self._C  # noqa: N806
        with self._lock:
            parent = self._path_of.get(event.wd)
        if parent is None:
            return
        if event.mask & (C.IN_DELETE_SELF | C.IN_MOVE_SELF) and not event.name:
            if parent in (os.fspath(self.root), os.path.join(os.fspath(self.root), IMAGES_DIR)):
                # Watches below a moved folder would report its new place under old names.
                self._remove_under(parent)
                self.sink(Rescan("store_moved_or_deleted"))
            return
        is_dir = bool(event.mask & C.IN_ISDIR)
        name = os.fsdecode(event.name) if event.name else ""
        if name and not is_dir and is_partial_file_name(name):
            self.partial_events += 1  # never indexed (classify drops it): not reported
            return
        path = os.path.join(parent, name) if name else parent
        signal = Signal.NONE
        if event.mask & (C.IN_CREATE | C.IN_MOVED_TO):
            kind = ChangeKind.ADDED
            if is_dir:
                self._watch_new_dir(parent, path)
            elif event.mask & C.IN_MOVED_TO:  # renamed onto its name: complete
                signal = Signal.MOVED
        elif event.mask & (C.IN_DELETE | C.IN_MOVED_FROM):
            kind = ChangeKind.DELETED
            if is_dir:
                self._remove_under(path)
        else:
            kind = ChangeKind.MODIFIED
            if is_dir and event.name and event.mask & C.IN_ATTRIB:
                self._watch_new_dir(parent, path)  # may have been unreadable so far
            elif event.mask & C.IN_CLOSE_WRITE:  # a file opened for writing was closed
                signal = Signal.CLOSED
        self.sink(FileChange(path, kind, is_dir, signal))

    def _watch_new_dir(self, parent: str, path: str) -> None:
        root = os.fspath(self.root)
        images = os.path.join(root, IMAGES_DIR)
        name = os.path.basename(path)
        rel = os.path.relpath(path, images).split(os.sep)
        if parent == root and name == IMAGES_DIR:
            self._watch_all()
        elif path in (os.path.join(root, INDEX_DIR), os.path.join(root, SYNC_DIR)):
            self._watch_sync_folder()
        elif parent == images and is_valid_image_id(name):
            self._watch_record(path)
        elif len(rel) >= 2 and rel[1] == ANALYSIS_DIR and not is_temporary_name(name):
            self._watch_analysis(path)
