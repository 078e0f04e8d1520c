"""``kymwatch status`` judges health from the status file and the daemon lock."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from harness import kymwatch
from helpers_store import make_v2_store
from kymwatch.daemon import read_status
from kymwatch.daemon.instance import DaemonLock


def _write_status(store: Path, age_s: float, state: str = "watching") -> None:
    beat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    doc = {"pid": 4242, "state": state, "heartbeat_utc": beat.isoformat(), "heartbeat_s": 5.0}
    (store / "index").mkdir(exist_ok=True)
    (store / "index" / "status.json").write_text(json.dumps(doc))


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    """A running daemon with a recent heartbeat is healthy."""
    store = make_v2_store(tmp_path / "s.zarr")
    _write_status(store, age_s=1)
    view = read_status(store, running=True)
    assert view.healthy and not view.stale


def test_old_heartbeat_of_a_running_daemon_is_stale(tmp_path: Path) -> None:
    """Three missed heartbeats make a running daemon stale and unhealthy."""
    store = make_v2_store(tmp_path / "s.zarr")
    _write_status(store, age_s=16)
    view = read_status(store, running=True)
    assert view.stale and not view.healthy


def test_store_unavailable_state_is_unhealthy(tmp_path: Path) -> None:
    """A daemon whose store is unavailable is not healthy even with a fresh heartbeat."""
    store = make_v2_store(tmp_path / "s.zarr")
    _write_status(store, age_s=0, state="store_unavailable")
    assert not read_status(store, running=True).healthy


@pytest.mark.integration
def test_status_command_exits_nonzero_on_stale_heartbeat(tmp_path: Path) -> None:
    """`kymwatch status` exits 1 and says STALE when the lock is held but the heartbeat is old."""
    store = make_v2_store(tmp_path / "s.zarr")
    _write_status(store, age_s=600)
    lock = DaemonLock(store)
    lock.acquire()
    try:
        proc = kymwatch("status", store)
        as_json = kymwatch("status", store, "--json")
    finally:
        lock.release()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "STALE" in proc.stdout
    doc = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and doc["stale"] is True and doc["running"] is True


@pytest.mark.integration
def test_status_command_without_daemon_exits_3(tmp_path: Path) -> None:
    """With nobody holding the daemon lock, status says so and exits 3, whatever the file says."""
    store = make_v2_store(tmp_path / "s.zarr")
    _write_status(store, age_s=0)
    proc = kymwatch("status", store)
    assert proc.returncode == 3
    assert "no daemon is running" in proc.stdout
