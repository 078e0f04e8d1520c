"""The supervisor of a folder of stores (``kymwatch.daemon.fleet.Fleet``), in-process
with scripted store daemons: readiness, failures and the process-level watchdog."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import wait_until
from helpers_store import make_v2_store
from kymwatch.daemon.fleet import Fleet, FleetConfig
from kymwatch.daemon.member import Member, MemberNotifier
from kymwatch.daemon.sdnotify import Notifier


class Recorder:
    """A notifier that records what the process would tell systemd."""

    def __init__(self, interval: float | None = None) -> None:
        self.sent: list[str] = []
        self._interval = interval

    def ready(self, status: str | None = None) -> bool:
        self.sent.append("READY=1")
        return True

    def status(self, text: str) -> bool:
        return True

    def watchdog(self) -> bool:
        self.sent.append("WATCHDOG=1")
        return True

    def stopping(self) -> bool:
        self.sent.append("STOPPING=1")
        return True

    def watchdog_interval(self) -> float | None:
        return self._interval


class FakeDaemon:
    """A store daemon that becomes ready when told, pings its watchdog when told,
    and runs until stopped."""

    def __init__(self, store: Path, notifier: Notifier) -> None:
        self.store, self.notifier = store, notifier
        self.go = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        self.go.wait()
        self.notifier.ready()
        self.stopped.wait()

    def stop(self) -> None:
        self.go.set()
        self.stopped.set()


class Fixture:
    """A fleet over ``root`` with fake daemons; a store named ``broken*`` fails."""

    def __init__(self, root: Path, notifier: Recorder) -> None:
        self.daemons: dict[str, FakeDaemon] = {}
        self.fleet = Fleet(
            FleetConfig(root=root, retry_s=(60.0, 60.0)),
            self._make,
            notifier=notifier,
            source_factory=lambda _change: None,
        )
        self.thread = threading.Thread(target=self.fleet.run)

    def _make(self, store: Path, notifier: Notifier) -> FakeDaemon:
        if store.name.startswith("broken"):
            raise OSError(f"cannot read {store}")
        d = FakeDaemon(store, notifier)
        self.daemons[store.name] = d
        return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with two stores and a broken one."""
    for name in ("a.zarr", "b.zarr", "broken.zarr"):
        make_v2_store(tmp_path / name)
    return tmp_path


@pytest.fixture
def running(root: Path) -> Iterator[tuple[Fixture, Recorder]]:
    """The fleet running on its own thread; stopped (and joined) afterwards."""
    notifier = Recorder()
    fx = Fixture(root, notifier)
    fx.thread.start()
    yield fx, notifier
    fx.fleet.stop()
    fx.thread.join()


def test_ready_once_every_store_reconciled_or_failed(running: tuple[Fixture, Recorder]) -> None:
    """``READY=1`` waits for each store's first reconcile (a failed store counts as
    done); stopping stops every store's daemon and says ``STOPPING=1``."""
    fx, notifier = running
    wait_until(lambda: set(fx.daemons) == {"a.zarr", "b.zarr"}, what="daemons built")
    wait_until(lambda: fx.fleet.members.keys() == {d.store for d in fx.daemons.values()})
    assert "READY=1" not in notifier.sent
    fx.daemons["a.zarr"].go.set()
    assert "READY=1" not in notifier.sent
    fx.daemons["b.zarr"].go.set()
    wait_until(lambda: "READY=1" in notifier.sent, what="READY=1")
    assert "failed" in fx.fleet.status_line()
    fx.fleet.stop()
    fx.thread.join()
    assert notifier.sent[-1] == "STOPPING=1"
    assert all(d.stopped.is_set() for d in fx.daemons.values())
    assert fx.fleet.members == {}


class Clock:
    """A fake monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_waits_for_every_store_loop(root: Path) -> None:
    """The process is alive for the watchdog only while every running store's loop
    pinged within two intervals (a hung store gets the process restarted)."""
    clock = Clock()
    fx = Fixture(root, Recorder(interval=1.0))
    fleet = Fleet(fx.fleet.config, fx._make, notifier=Recorder(1.0), clock=clock)
    members = []
    for name in ("a.zarr", "b.zarr"):
        notifier = MemberNotifier(1.0, clock, lambda: None)
        members.append(Member(root / name, fx._make, notifier, lambda: None))
    fleet.members = {m.store: m for m in members}
    clock.now = 101.5
    assert fleet._responsive(clock.now, 1.0)
    members[0].notifier.watchdog()
    clock.now = 102.5
    assert not fleet._responsive(clock.now, 1.0)  # b.zarr silent for 2.5 s
    members[1].notifier.watchdog()
    assert fleet._responsive(clock.now, 1.0)


def test_periodic_scan_alone_finds_new_stores_and_lets_gone_ones_go(root: Path) -> None:
    """Without a folder watcher (macOS, network file systems), the periodic scan starts
    a store created later and stops the daemon of a store moved away."""
    fx = Fixture(root, Recorder())
    fx.fleet = Fleet(
        FleetConfig(root=root, rescan_interval_s=0.05, retry_s=(60.0, 60.0)),
        fx._make,
        notifier=Recorder(),
        source_factory=lambda _change: None,
    )
    fx.thread = threading.Thread(target=fx.fleet.run)
    fx.thread.start()
    try:
        wait_until(lambda: {"a.zarr", "b.zarr"} <= fx.daemons.keys(), what="daemons built")
        make_v2_store(root / "2026-11" / "c.zarr")
        wait_until(lambda: "c.zarr" in fx.daemons, what="c.zarr started")
        (root / ".trash").mkdir()  # hidden: not scanned
        (root / "a.zarr").rename(root / ".trash" / "a.zarr")
        wait_until(lambda: fx.daemons["a.zarr"].stopped.is_set(), what="a.zarr let go")
        wait_until(lambda: root / "a.zarr" not in fx.fleet.members, what="a.zarr forgotten")
        assert not fx.daemons["b.zarr"].stopped.is_set()
    finally:
        fx.fleet.stop()
        fx.thread.join()
