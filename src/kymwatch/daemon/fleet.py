"""One process for a folder of stores (``kymwatch run ROOT``): a daemon per store.

:class:`Fleet` finds the stores in ROOT (:func:`kymwatch.store.scan_root`: in ROOT
and one level below, never inside a store) and runs one unchanged
:class:`~kymwatch.daemon.runner.Daemon` per store on its own thread
(:mod:`kymwatch.daemon.member`), each with its own lock, state, tables, status
file and log file. It decides only which stores run:

- a store that appears is started once it is complete (marker and ``images/``);
  a folder being created is looked at again when it changes;
- a store that disappears is let go: its daemon is stopped cleanly;
- a store another daemon holds (``kymwatch run STORE``) is skipped, logged, and
  looked at again every few seconds; a store whose daemon fails (a broken store)
  is logged and retried with a growing delay; neither stops the others.

**Events are hints, the scan is the truth**: ROOT, the plain folders in it and
the stores themselves are watched (each alone, inotify, Linux; a store only for
its marker or ``images/`` going) so a store that appears or goes is seen within a
second, and ROOT is rescanned periodically anyway (the only way elsewhere).

At the process level it holds a lock on ROOT (a second ``kymwatch run ROOT`` is
refused), handles the signals, and talks to systemd: ``READY=1`` once every
store's first reconcile is done (or its daemon ended), ``WATCHDOG=1`` while every
store's loop is alive, ``STATUS=`` a summary.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from kymwatch.daemon.instance import DaemonLock, daemon_pid
from kymwatch.daemon.member import Member, MemberNotifier, StoreDaemon
from kymwatch.daemon.schedule import Backoff
from kymwatch.daemon.sdnotify import Notifier, SystemdNotifier
from kymwatch.daemon.signals import handle_signals
from kymwatch.store import ROOT_DEPTH, RootScan, scan_root

__all__ = ["Fleet", "FleetConfig", "FolderSource"]

log = structlog.get_logger(__name__)

_STATUS_S = 5.0  # how often STATUS= is refreshed


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How a folder of stores is supervised.

    Attributes:
        root: The folder of stores.
        rescan_interval_s: Seconds between full scans of ROOT (the truth; events
            only make a scan come sooner).
        event_delay_s: A scan follows a change in ROOT after this long (a folder
            being created settles meanwhile).
        busy_recheck_s: Seconds between looks at a store another daemon holds.
        retry_s: (first, longest) delay before a failed store is started again.
    """

    root: Path
    rescan_interval_s: float = 30.0
    event_delay_s: float = 0.5
    busy_recheck_s: float = 5.0
    retry_s: tuple[float, float] = (10.0, 600.0)


class FolderSource(Protocol):
    """Watches folders for entries that appear or go (:class:`~kymwatch.daemon.watcher.
    FolderWatcher`); a seam for tests."""

    def start(self) -> None:
        """Begin watching."""

    def stop(self) -> None:
        """Stop watching."""

    def watch(self, folders: Iterable[Path], stores: Iterable[Path]) -> None:
        """Watch exactly these folders (any entry) and stores (their shape going)."""


def _default_source(on_change: Callable[[], None]) -> FolderSource | None:
    from kymwatch.daemon.watcher import FolderWatcher, inotify_available

    return FolderWatcher(on_change) if inotify_available() else None


class Fleet:
    """Runs a daemon for every store in a folder of stores.

    Args:
        config: The folder and the supervision timings.
        make_daemon: Builds a store's daemon (given the store and its notifier).
        notifier: The process's systemd notifier (default: from the environment).
        clock: Monotonic clock.
        on_hangup: Called on the supervisor's thread after SIGHUP (reopen log files).
        attach_log: Called before a store's daemon starts; returns what detaches
            it once the daemon ended (the CLI opens the store's log file there).
        source_factory: Builds the folder watcher (default: inotify on Linux, none
            elsewhere); None from it means periodic scans only.
    """

    def __init__(
        self,
        config: FleetConfig,
        make_daemon: Callable[[Path, Notifier], StoreDaemon],
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_hangup: Callable[[], None] | None = None,
        attach_log: Callable[[Path], Callable[[], None]] | None = None,
        source_factory: Callable[[Callable[[], None]], FolderSource | None] = _default_source,
    ) -> None:
        self.config, self.root = config, config.root
        self._make, self._clock = make_daemon, clock
        self.notifier: Notifier = notifier or SystemdNotifier.from_env()
        self._on_hangup, self._attach_log = on_hangup, attach_log
        self._source_factory = source_factory
        self.members: dict[Path, Member] = {}
        self._leaving: list[Member] = []
        self._detach: dict[int, Callable[[], None]] = {}
        self._retry: dict[Path, tuple[Backoff, float]] = {}  # failed store → (backoff, at)
        self._busy: dict[Path, float] = {}  # held by another daemon → next look
        self._said: set[tuple[str, str]] = set()  # (event, path) logged once per episode
        self._stop, self._wake, self._hangup = threading.Event(), threading.Event(), False
        self._scan_at = clock()
        self._ready_sent = False
        self._late: set[Path] = set()  # stores whose loop stopped pinging (logged once)
        self._lock = DaemonLock(self.root)

    # -- public ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every store's daemon and return from :meth:`run` (thread- and signal-safe)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when on the main thread).

        Raises:
            DaemonRunningError: another daemon already watches this folder.
        """
        self._lock.acquire()
        try:
            with handle_signals(self._stop, self.stop, self._hangup_requested):
                self._run_locked()
        finally:
            self._lock.release()

    # -- lifecycle ------------------------------------------------------------------------
    def _hangup_requested(self) -> None:
        self._hangup = True
        self._wake.set()

    def _changed(self) -> None:
        """A watched folder changed (watcher thread): scan soon."""
        self._scan_at = min(self._scan_at, self._clock() + self.config.event_delay_s)
        self._wake.set()

    def _run_locked(self) -> None:
        log.info("root_daemon_started", root=str(self.root), pid=os.getpid(), depth=ROOT_DEPTH)
        source = self._source_factory(self._changed)
        if source is not None:
            try:
                source.start()
            except OSError as e:  # e.g. no inotify instance left: the periodic scan remains
                log.warning("folder_watch_failed", error=str(e))
                source = None
        interval = self.notifier.watchdog_interval()
        now = self._clock()
        next_ping = next_status = now
        try:
            while not self._stop.is_set():
                self._wake.clear()  # before the work: a wake-up during it is kept
                now = self._clock()
                if self._hangup:
                    self._hangup = False
                    if self._on_hangup is not None:
                        self._on_hangup()
                    log.info("log_reopened", signal="SIGHUP")
                self._reap()
                if now >= self._scan_at:
                    scan = self._rescan(now)
                    if source is not None:
                        source.watch((*scan.folders, *scan.incomplete), scan.stores)
                if not self._ready_sent and all(m.settled for m in self.members.values()):
                    self._ready_sent = True
                    self.notifier.ready(self.status_line())
                    log.info("root_daemon_ready", stores=len(self.members))
                if interval is not None and now >= next_ping:
                    next_ping = now + interval
                    if self._responsive(now, interval):
                        self.notifier.watchdog()
                if now >= next_status:
                    next_status = now + _STATUS_S
                    self.notifier.status(self.status_line())
                deadlines = [self._scan_at, next_status]
                if interval is not None:
                    deadlines.append(next_ping)
                self._wake.wait(max(0.0, min(deadlines) - self._clock()))
        finally:
            self.notifier.stopping()
            if source is not None:
                with contextlib.suppress(Exception):
                    source.stop()
            self._shutdown()

    def _shutdown(self) -> None:
        everyone = [*self.members.values(), *self._leaving]
        for m in everyone:
            m.leaving = True
            m.stop()
        for m in everyone:
            m.join()
            self._ended(m)
        self.members.clear()
        self._leaving.clear()
        log.info("root_daemon_stopped", stores=len(everyone))

    # -- stores ---------------------------------------------------------------------------
    def _rescan(self, now: float) -> RootScan:
        start = time.perf_counter()
        self._scan_at = now + self.config.rescan_interval_s
        scan = scan_root(self.root)
        present = set(scan.stores)
        self._once("root_folder_unreadable", [(p, {"error": e}) for p, e in scan.unreadable])
        self._once("store_incomplete", [(p, {}) for p in scan.incomplete], level="info")
        gone = [p for p in self.members if p not in present]
        for path in gone:
            self._let_go(self.members.pop(path), "gone")
        for stale in [p for p in (*self._retry, *self._busy) if p not in present]:
            self._retry.pop(stale, None)
            self._busy.pop(stale, None)
        started = [p for p in scan.stores if self._maybe_start(p, now)]
        level = log.info if started or gone else log.debug
        level(
            "root_scan_done",
            stores=len(scan.stores),
            started=len(started),
            let_go=len(gone),
            incomplete=len(scan.incomplete),
            unreadable=len(scan.unreadable),
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
        )
        return scan

    def _maybe_start(self, path: Path, now: float) -> bool:
        if path in self.members or any(m.store == path for m in self._leaving):
            return False  # running, or its old daemon is still stopping
        if path in self._retry and now < self._retry[path][1]:
            self._scan_at = min(self._scan_at, self._retry[path][1])
            return False
        holder = daemon_pid(path)
        if holder is not None and holder != os.getpid():
            if path not in self._busy:
                log.warning("store_busy", store=str(path), pid=holder)
            self._busy[path] = now + self.config.busy_recheck_s
            self._scan_at = min(self._scan_at, self._busy[path])
            return False
        if self._busy.pop(path, None) is not None:
            log.info("store_free", store=str(path))
        notifier = MemberNotifier(self.notifier.watchdog_interval(), self._clock, self._wake.set)
        member = Member(path, self._make, notifier, self._wake.set)
        if self._attach_log is not None:
            self._detach[id(member)] = self._attach_log(path)
        self.members[path] = member
        log.info("store_started", store=str(path))
        member.start()
        return True

    def _let_go(self, member: Member, reason: str) -> None:
        log.info("store_let_go", store=str(member.store), reason=reason)
        member.leaving = True
        member.stop()
        self._leaving.append(member)

    def _reap(self) -> None:
        """Collect the daemons that ended: let-go ones, and those that failed or stopped."""
        now = self._clock()
        for m in [m for m in self._leaving if m.done]:
            self._leaving.remove(m)
            self._ended(m)
            self._scan_at = min(self._scan_at, now)  # the store may be back already
        for path, m in list(self.members.items()):
            if not m.done:
                continue
            del self.members[path]
            self._ended(m)
            if m.outcome == "busy":  # lost the race for the lock: another daemon has it
                log.warning("store_busy", store=str(path), error=m.error)
                self._busy[path] = now + self.config.busy_recheck_s
                self._scan_at = min(self._scan_at, self._busy[path])
                continue
            backoff, _ = self._retry.get(path, (Backoff(*self.config.retry_s), now))
            backoff.fired(now)
            at = now + backoff.delay
            self._retry[path] = (backoff, at)
            self._scan_at = min(self._scan_at, at)
            log.warning(
                "store_retry_scheduled",
                store=str(path),
                outcome=m.outcome,
                error=m.error,
                retry_in_s=round(backoff.delay, 1),
            )

    def _ended(self, member: Member) -> None:
        member.join()
        detach = self._detach.pop(id(member), None)
        if detach is not None:
            detach()
        if member.leaving and member.outcome is not None:
            log.info("store_stopped", store=str(member.store), outcome=member.outcome)

    def _once(
        self,
        event: str,
        items: list[tuple[Path, dict[str, str]]],
        level: str = "warning",
    ) -> None:
        """Log ``event`` once per path while the condition lasts."""
        now = {(event, str(p)) for p, _ in items}
        for p, fields in items:
            if (event, str(p)) not in self._said:
                getattr(log, level)(event, path=str(p), **fields)
        self._said = {k for k in self._said if k[0] != event} | now

    # -- liveness -------------------------------------------------------------------------
    def _responsive(self, now: float, interval: float) -> bool:
        """Whether every running store's loop pinged lately (else no ``WATCHDOG=1``:
        systemd restarts a process with a hung store, as it would a hung daemon)."""
        late = [
            m
            for m in self.members.values()
            if not m.done and now - m.notifier.last_ping > 2 * interval
        ]
        for m in late:
            if m.store not in self._late:
                silent = round(now - m.notifier.last_ping, 1)
                log.error("store_unresponsive", store=str(m.store), silent_s=silent)
        self._late = {m.store for m in late}
        return not late

    def status_line(self) -> str:
        """One line for ``systemctl status``."""
        ms = list(self.members.values())
        ready = sum(1 for m in ms if m.notifier.is_ready.is_set() and not m.done)
        parts = [f"{len(ms)} stores", f"{ready} watching"]
        if self._busy:
            parts.append(f"{len(self._busy)} held by another daemon")
        failed = [p for p in self._retry if p not in self.members]
        if failed:
            parts.append(f"{len(failed)} failed")
        return "; ".join(parts)
