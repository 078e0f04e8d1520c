"""The daemon speaks systemd's notify protocol: READY after the first reconcile,
STATUS lines, WATCHDOG pings from the worker loop, STOPPING on shutdown."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from harness import DaemonProcess, wait_until
from helpers_store import make_v2_store, write_json_artifact, write_v2_record
from kymwatch.daemon import Daemon, DaemonConfig, SystemdNotifier
from kymwatch.index import RadonReportIndexer
from kymwatch.store import ZarrImageRecord

pytestmark = pytest.mark.integration


class Receiver:
    """A notify socket (path or abstract form) collecting every datagram."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, msg in list(self.messages) for line in msg.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """A fake systemd notify socket, in both address forms."""
    if request.param == "path":
        folder = Path(tempfile.mkdtemp(prefix="kwn-"))
        r = Receiver(str(folder / "notify"), str(folder / "notify"))
    else:
        name = f"kymwatch-e2e-{uuid.uuid4().hex}"
        r = Receiver("@" + name, "\0" + name)
        folder = None
    yield r
    r.close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def test_daemon_notifies_ready_status_watchdog_and_stopping(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A real daemon subprocess sends READY=1 after its first reconcile, STATUS=, periodic
    WATCHDOG=1 and STOPPING=1."""
    store = make_v2_store(tmp_path / "s.zarr")
    write_v2_record(store, "r1")
    write_json_artifact(store, "r1", "radon_report", {"mean_velocity": 1.0})
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "400000"}
    daemon = DaemonProcess(store, env=env).start(wait_ready=False)
    try:
        wait_until(lambda: "READY=1" in receiver.lines(), what="READY=1")
        # READY comes only after the startup reconcile has indexed the store.
        reconciles = [e for e in daemon.events("reconcile_done") if e["reason"] == "startup"]
        assert reconciles and reconciles[0]["changed"] == 1
        wait_until(lambda: receiver.lines().count("WATCHDOG=1") >= 3, what="watchdog pings")
        assert any(line.startswith("STATUS=") and "queue" in line for line in receiver.lines())
    finally:
        assert daemon.stop() == 0
    assert "STOPPING=1" in receiver.lines()


class _BlockingIndexer(RadonReportIndexer):
    """A radon indexer whose extraction blocks while ``gate`` is closed (a hung worker)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        if rec.image_id == "stuck":
            self.entered.set()
            self.gate.wait(timeout=120)
        return super().extract_rows(rec)


def test_stuck_worker_stops_watchdog_pings(receiver: Receiver, tmp_path: Path) -> None:
    """Pings come from the worker loop itself: while a batch hangs, no WATCHDOG=1 is sent."""
    store = make_v2_store(tmp_path / "s.zarr")
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "200000"}
    notifier = SystemdNotifier.from_env(env)
    config = DaemonConfig(store=store, quiet_s=0.05, max_delay_s=1.0)
    blocking = _BlockingIndexer()
    daemon = Daemon(config, notifier=notifier, indexers=[blocking])
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        wait_until(lambda: receiver.lines().count("WATCHDOG=1") >= 2, what="first pings")
        write_v2_record(store, "stuck")
        write_json_artifact(store, "stuck", "radon_report", {"mean_velocity": 2.0})
        assert blocking.entered.wait(timeout=120)
        before = receiver.lines().count("WATCHDOG=1")
        time.sleep(1.0)  # five watchdog intervals pass while the worker is stuck
        assert receiver.lines().count("WATCHDOG=1") == before
    finally:
        blocking.gate.set()
        daemon.stop()
        thread.join(timeout=120)
        notifier.close()
    assert not thread.is_alive()
    assert receiver.lines().count("WATCHDOG=1") > before  # pings resume after the batch
