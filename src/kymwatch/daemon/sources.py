"""Choosing the event source: a factory given by the caller, inotify (Linux), FSEvents
(macOS, through watchdog's observer), or polling (network and FUSE file systems)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.mounts import (
    WatchDecision,
    decide_watch_mode,
    find_mount,
    native_watch_mode,
)
from kymwatch.daemon.observer import ObserverWatcher, fsevents_available, observer_class
from kymwatch.daemon.polling import PollingWatcher, PollSettings
from kymwatch.daemon.watcher import EventSink, EventSource, InotifyWatcher, inotify_available

__all__ = ["SourceFactory", "SourceKeeper", "make_source"]

log = structlog.get_logger(__name__)

SourceFactory = Callable[[Path, EventSink], EventSource]

CUSTOM = WatchDecision("custom", "source_factory")
"""The decision when the caller gave its own source factory (tests)."""


def choose_watch_mode(
    root: Path,
    config: DaemonConfig,
    *,
    platform: str = sys.platform,
    available: Callable[[str], bool] | None = None,
) -> WatchDecision:
    """inotify (Linux), FSEvents (macOS) or polling for the store at ``root``, and why
    (see :func:`kymwatch.daemon.mounts.decide_watch_mode`).

    Args:
        root: The store folder.
        config: The daemon's configuration (``--polling``, ``--inotify``).
        platform: ``sys.platform`` (tests inject ``darwin``).
        available: Whether a native mode can be used here (default: inotify or
            watchdog's FSEvents observer can be loaded).
    """
    native = native_watch_mode(platform)
    usable = available or _native_available
    return decide_watch_mode(
        find_mount(root, platform=platform),
        polling=config.polling,
        inotify=config.inotify,
        inotify_available=native is not None and usable(native),
        native=native or "inotify",
    )


def _native_available(mode: str) -> bool:
    return inotify_available() if mode == "inotify" else fsevents_available()


def make_source(
    root: Path, sink: EventSink, config: DaemonConfig, factory: SourceFactory | None = None
) -> tuple[EventSource, WatchDecision]:
    """A new (not started) event source for ``root`` and the decision behind it.

    ``factory`` (tests) wins; otherwise inotify on Linux, FSEvents on macOS, or
    polling when asked, on a FUSE or network file system (neither sees writes made
    elsewhere) or where neither is available. The decision is logged
    (``watch_mode_chosen``; ``polling_fallback`` when polling was not asked for).
    """
    if factory is not None:
        return factory(root, sink), CUSTOM
    decision = choose_watch_mode(root, config)
    log.info(
        "watch_mode_chosen",
        watch_mode=decision.mode,
        reason=decision.reason,
        fs_type=decision.fs_type,
        mount_point=decision.mount_point,
    )
    if decision.mode == "inotify":
        return InotifyWatcher(root, sink), decision
    if decision.mode == "fsevents":
        return ObserverWatcher(root, sink, observer_class("darwin")), decision
    settings = PollSettings(
        min_interval_s=config.poll_interval_s,
        max_interval_s=config.poll_max_interval_s,
        full_every=config.poll_full_every,
    )
    if decision.reason != "polling_requested":
        log.warning(
            "polling_fallback",
            reason=decision.reason,
            fs_type=decision.fs_type,
            mount_point=decision.mount_point,
            interval_s=config.poll_interval_s,
        )
    return PollingWatcher(root, sink, settings), decision


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
        self.decision = WatchDecision("", "")
        self.restarts = 0

    @property
    def mode(self) -> str:
        """The current watch mode (``inotify``, ``polling``, ``custom``; "" before start)."""
        return self.decision.mode

    @property
    def ordered(self) -> bool:
        """Whether the current source promises its events in order (see
        :class:`~kymwatch.daemon.watcher.EventSource`); False without a source."""
        return bool(getattr(self.source, "ordered", False))

    @property
    def watch_count(self) -> int:
        """OS watches held by the current source."""
        return self.source.watch_count if self.source is not None else 0

    def start(self) -> None:
        """Make and start a source (raises if it cannot start)."""
        source, self.decision = make_source(self.root, self.sink, self.config, self.factory)
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
