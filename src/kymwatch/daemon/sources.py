"""Choosing the event source: a factory given by the caller, inotify, or polling."""

from __future__ import annotations

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

__all__ = ["SourceFactory", "make_source"]

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
