"""The loop's inbox: what the event source reports, classified and fed to the debouncer.

The event source (inotify or polling thread) puts :class:`FileChange` and
:class:`Rescan` items on a queue; ``None`` only wakes the loop (a stop or a
SIGHUP). The loop thread drains it with a deadline (:meth:`Intake.wait`) and
accepts each item (:meth:`Intake.accept`): record changes go to the debouncer,
``kymwatch sync`` requests are collected for the loop to answer, lost events ask
for a rescan.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
from collections.abc import Callable
from pathlib import Path

import structlog

from kymwatch.daemon.changes import RECORD_METADATA, ChangeKind, FileChange, RecordChange, Rescan
from kymwatch.daemon.classify import SyncRequest, classify
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.reporter import Reporter
from kymwatch.store import IMAGES_DIR, is_temporary_name, is_valid_image_id

__all__ = ["MAX_DRAIN", "Intake", "Item"]

log = structlog.get_logger(__name__)

Item = FileChange | Rescan | None
"""What goes on the queue (``None``: wake up, nothing to accept)."""

MAX_DRAIN = 100_000
"""Items taken from the queue per :meth:`Intake.wait`."""


class Intake:
    """Receives the event source's items and routes them.

    Args:
        root: The store folder.
        debouncer: Receives the record changes.
        reporter: Counts the events and the lost-event signals.
        wants_record_metadata: Whether record metadata changes matter (an indexer
            or the manifest reads them).
        request_rescan: Called with the reason when the source lost events.
    """

    def __init__(
        self,
        root: Path,
        debouncer: Debouncer,
        reporter: Reporter,
        wants_record_metadata: Callable[[], bool],
        request_rescan: Callable[[str], None],
    ) -> None:
        self.root, self.debouncer, self.reporter = root, debouncer, reporter
        self._wants_metadata, self._request_rescan = wants_record_metadata, request_rescan
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._images = os.path.join(root, IMAGES_DIR)
        self.syncs: list[str] = []
        """Tokens of the ``kymwatch sync`` requests not answered yet."""

    def put(self, item: Item) -> None:
        """Hand an item to the loop (thread-safe; the event source's sink)."""
        self._queue.put(item)

    def wake(self) -> None:
        """Make a waiting :meth:`wait` return (thread- and signal-safe)."""
        self._queue.put(None)

    def wait(self, timeout: float) -> list[Item]:
        """The items queued, waiting up to ``timeout`` seconds for the first one."""
        items: list[Item] = []
        try:
            items.append(
                self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            )
        except queue.Empty:
            return items
        with contextlib.suppress(queue.Empty):
            while len(items) < MAX_DRAIN:
                items.append(self._queue.get_nowait())
        return items

    def accept(self, item: Item, now: float) -> None:
        """Route one item: a record change to the debouncer, a sync request to
        :attr:`syncs`, lost events to a rescan request."""
        if item is None:
            return
        if isinstance(item, Rescan):
            self.reporter.events_lost(item.reason)
            self._request_rescan(item.reason)
            return
        self.reporter.status.counters["events"] += 1
        if item.kind is ChangeKind.ADDED:
            self._report_if_no_record(item.path)
        what = classify(self.root, item)
        if isinstance(what, SyncRequest):
            self.syncs.append(what.token)
        elif isinstance(what, RecordChange) and (
            what.artifacts != RECORD_METADATA or self._wants_metadata()
        ):
            log.debug(
                "artifact_changed",
                image_id=what.image_id,
                path=item.path,
                kind=item.kind.value,
                signal=item.signal.value,
            )
            self.debouncer.feed(what, now, item)

    def _report_if_no_record(self, path: str) -> None:
        """Report an entry added to ``images/`` that is no record (a name that cannot be
        an image id, a symbolic link, a file), as the reconcile scan does: a sync
        answered from the events runs no scan, and the user would hear of it only at the
        next periodic one."""
        parent, name = os.path.split(path)
        if parent != self._images or name.startswith(".") or is_temporary_name(name):
            return
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone already: nothing to report
        if not (is_valid_image_id(name) and stat.S_ISDIR(st.st_mode)):
            self.reporter.folders_skipped([path])

    def take_syncs(self) -> list[str]:
        """The pending sync tokens, each once, in order; none pending afterwards."""
        tokens, self.syncs = list(dict.fromkeys(self.syncs)), []
        return tokens
