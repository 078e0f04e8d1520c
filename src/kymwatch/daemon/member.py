"""One store of a folder of stores: its own :class:`~kymwatch.daemon.runner.Daemon`
on its own thread (``kymwatch run ROOT``; :mod:`kymwatch.daemon.fleet` supervises).

The daemon is unchanged: its own lock, state, tables, status file and log lines.
Only its service-manager notifications go to a :class:`MemberNotifier`, which
the supervisor reads (first reconcile done, loop alive) and turns into the
process's own ``READY=1`` and ``WATCHDOG=1``. Every log line of the store's
thread carries ``store=<path>`` (a structlog context variable), which routes it
to the store's own log file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from kymwatch.daemon.sdnotify import Notifier
from kymwatch.errors import DaemonRunningError

__all__ = ["Member", "MemberNotifier", "StoreDaemon"]

log = structlog.get_logger(__name__)


class StoreDaemon(Protocol):
    """What a member needs of a store's daemon (:class:`~kymwatch.daemon.runner.Daemon`)."""

    def run(self) -> None:
        """Run until stopped."""

    def stop(self) -> None:
        """Ask the loop to stop (thread-safe)."""


class MemberNotifier:
    """A store daemon's notifier inside a folder of stores: remembers, sends nothing.

    Args:
        interval: Seconds between the daemon's watchdog pings (None: no watchdog).
        clock: Monotonic clock.
        wake: Called when the daemon reports ready (wakes the supervisor).
    """

    def __init__(
        self, interval: float | None, clock: Callable[[], float], wake: Callable[[], None]
    ) -> None:
        self._interval, self._clock, self._wake = interval, clock, wake
        self.is_ready = threading.Event()
        self.last_ping = clock()
        self.line = "starting"

    def ready(self, status: str | None = None) -> bool:
        """The first reconcile is done."""
        if status is not None:
            self.line = status
        self.is_ready.set()
        self._wake()
        return True

    def status(self, text: str) -> bool:
        """Remember the daemon's one-line status."""
        self.line = text
        return True

    def watchdog(self) -> bool:
        """The daemon's loop is alive."""
        self.last_ping = self._clock()
        return True

    def stopping(self) -> bool:
        """The daemon is stopping (nothing to tell: the process goes on)."""
        return True

    def watchdog_interval(self) -> float | None:
        """The process's watchdog interval: each daemon pings as often."""
        return self._interval


class Member:
    """A store's daemon running on its own thread.

    Args:
        store: The store folder.
        make_daemon: Builds the store's daemon with the given notifier (may raise:
            a broken store).
        notifier: The daemon's notifier.
        wake: Called when the thread ends (wakes the supervisor).
    """

    def __init__(
        self,
        store: Path,
        make_daemon: Callable[[Path, Notifier], StoreDaemon],
        notifier: MemberNotifier,
        wake: Callable[[], None],
    ) -> None:
        self.store, self.notifier = store, notifier
        self._make, self._wake = make_daemon, wake
        self._lock = threading.Lock()
        self._daemon: StoreDaemon | None = None
        self._stop_asked = False
        self.leaving = False  # let go by the supervisor (gone, or process stopping)
        self.outcome: str | None = None  # "stopped", "busy" or "failed" once ended
        self.error: str | None = None
        self.started = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"kymwatch-store-{store.name}", daemon=True
        )

    @property
    def done(self) -> bool:
        """True once the daemon has ended (the thread is returning: :meth:`join` is quick)."""
        return self.outcome is not None

    @property
    def settled(self) -> bool:
        """First reconcile done, or ended (counts towards the process's ``READY=1``)."""
        return self.notifier.is_ready.is_set() or self.outcome is not None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the daemon to stop after the chunk in hand (returns at once)."""
        with self._lock:
            self._stop_asked = True
            daemon = self._daemon
        if daemon is not None:
            daemon.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def _run(self) -> None:
        structlog.contextvars.bind_contextvars(store=str(self.store))
        outcome = "failed"
        try:
            daemon = self._make(self.store, self.notifier)
            with self._lock:
                self._daemon = daemon
                asked = self._stop_asked
            if not asked:
                daemon.run()
            outcome = "stopped"
        except DaemonRunningError as e:
            outcome, self.error = "busy", str(e)
        except Exception as e:  # a broken store must never stop the others
            self.error = f"{type(e).__name__}: {e}"
            log.error("store_failed", error=self.error, exc_info=e)
        finally:
            self.outcome = outcome
            self._wake()
