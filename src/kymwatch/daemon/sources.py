"""Choosing the event source: a factory given by the caller, inotify, or polling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog

from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.watcher import (
    EventSink,
    EventSource,
    InotifyWatcher,
    PollingWatcher,
    inotify_available,
    network_fs_type,
)

__all__ = ["SourceFactory", "SourceKeeper", "make_source"]

log = structlog.get_logger(__name__)

SourceFactory = Callable[[Path, EventSink], EventSource]


def make_source(
    root: Path, sink: EventSink, config: DaemonConfig, factory: SourceFactory | None = None
) -> tuple[EventSource, str]:
    """A new (not started) event source for ``root`` and its watch mode.

    ``factory`` (tests) wins; otherwise inotify, or polling when asked, on a network
    file system (inotify sees no remote writes) or where inotify is unavailable.
    """
    if factory is not None:
        return factory(root, sink), "custom"
    fs_type = network_fs_type(root)
    reason = (
        "requested" if config.polling
        else f"network file system ({fs_type})" if fs_type
        else "inotify unavailable" if not inotify_available()
        else None
    )  # fmt: skip
    if reason is None:
        return InotifyWatcher(root, sink), "inotify"
    if reason != "requested":
        log.warning("polling_fallback", reason=reason, interval_s=config.poll_interval_s)
    return PollingWatcher(root, sink, config.poll_interval_s), "polling"


class SourceKeeper:
    """The daemon's event source: started, checked for liveness, restarted.

    watchdog's inotify reader thread ends without a word when reading raises; a
    source that has ``is_alive()`` is checked by :meth:`check`, and a dead one is
    replaced (``watcher_died``, then ``watcher_restarted``).

    Args:
        root: The store folder.
        sink: Where the source reports changes.
        config: The daemon's configuration (polling, interval).
        factory: A caller's source factory (tests), or None for inotify/polling.
    """

    def __init__(
        self, root: Path, sink: EventSink, config: DaemonConfig, factory: SourceFactory | None
    ) -> None:
        self.root, self.sink, self.config, self.factory = root, sink, config, factory
        self.source: EventSource | None = None
        self.mode = ""
        self.restarts = 0

    @property
    def watch_count(self) -> int:
        """OS watches held by the current source."""
        return self.source.watch_count if self.source is not None else 0

    def start(self) -> None:
        """Make and start a source (raises if it cannot start)."""
        source, self.mode = make_source(self.root, self.sink, self.config, self.factory)
        source.start()
        self.source = source

    def stop(self) -> None:
        """Stop the source (best effort: a dead source may fail to stop)."""
        source, self.source = self.source, None
        if source is not None:
            with contextlib.suppress(Exception):
                source.stop()

    def rewatch(self) -> None:
        """Re-establish watches after a loss of events."""
        if self.source is not None:
            self.source.rewatch()

    def check(self) -> bool:
        """Replace a source whose thread died; True if events may have been missed
        (the caller rescans)."""
        if self.source is not None:
            alive = getattr(self.source, "is_alive", None)
            if alive is None or alive():
                return False
            log.error("watcher_died", watch_mode=self.mode)
            self.restarts += 1
            self.stop()
        try:
            self.start()
        except Exception as e:
            log.error("watcher_restart_failed", error=str(e))
            return True
        log.info("watcher_restarted", watch_mode=self.mode)
        return True
