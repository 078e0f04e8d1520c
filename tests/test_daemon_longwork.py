"""Long work never starves the loop (issue 10, part 8).

A first index of thousands of records, and a table lock held by another process,
are waited out in chunks: the heartbeat keeps advancing (status is not STALE) and
SIGTERM stops the daemon mid-work, losing nothing a restart does not pick up.
Nothing here asserts an upper time bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import WAIT_S, DaemonProcess, assert_tables_match_rebuild, kymwatch, wait_until
from helpers_loop import add_kym_record, kym_events, running
from helpers_store import make_v2_store, write_parquet_artifact
from kymwatch.daemon import Daemon, DaemonConfig, daemon_running

pytestmark = pytest.mark.integration


def bulk_store(root: Path, n: int) -> Path:
    """A store of ``n`` records (date-and-UUID-like ids), each with an events parquet and a
    radon JSON report, written fast with plain file I/O."""
    make_v2_store(root)
    write_parquet_artifact(root, "seed", "velocity_events", kym_events(5))
    events = (root / "images" / "seed" / "analysis" / "velocity_events.parquet").read_bytes()
    for i in range(n):
        rec = root / "images" / f"20261125_{i:05d}-{i * 7919 % 65536:04x}"
        (rec / "analysis").mkdir(parents=True)
        (rec / ".zgroup").write_text('{"zarr_format": 2}')
        (rec / ".zattrs").write_text('{"axes": ["time", "space"]}')
        (rec / "analysis" / "velocity_events.parquet").write_bytes(events)
        report = {"mean_velocity": i / 10, "n_valid": i % 7}
        (rec / "analysis" / "radon_report.json").write_text(json.dumps(report))
    return root


def status_doc(store: Path) -> dict[str, Any]:
    """The status file now (empty while it is being replaced)."""
    try:
        doc: dict[str, Any] = json.loads((store / "index" / "status.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return doc


def wait_heartbeat_during(store: Path, state: str) -> None:
    """Wait until the heartbeat advances while the daemon stays in ``state``."""
    first: list[str] = []

    def advanced() -> bool:
        doc = status_doc(store)
        if doc.get("state") not in (state, None):
            raise AssertionError(f"left {state!r} before a heartbeat advanced: {doc}")
        beat = doc.get("heartbeat_utc")
        if beat and not first:
            first.append(beat)
        return bool(beat and first and beat != first[0])

    wait_until(advanced, what=f"a heartbeat while {state}")


def restart_and_sync(store: Path) -> None:
    """Start the daemon again and sync once it holds the store (the rest of a first index of
    thousands of records may take minutes on a loaded machine: the sync waits for it)."""
    again = DaemonProcess(store).start(wait_ready=False)
    try:
        wait_until(lambda: daemon_running(store), what="the restarted daemon to lock the store")
        again.sync(timeout=1800)
    finally:
        if again.proc is not None and again.proc.poll() is None:
            again.stop()


def test_sigterm_during_a_first_index_stops_mid_work_and_restart_converges(
    tmp_path: Path,
) -> None:
    """5,000 records: the heartbeat advances during the first index (status healthy, not
    STALE); SIGTERM stops the daemon before it is done (records pending), exit 0; a restart
    finishes the work and the tables equal a fresh rebuild."""
    store = bulk_store(tmp_path / "store.zarr", 5000)
    daemon = DaemonProcess(store).start(wait_ready=False)
    try:
        wait_heartbeat_during(store, "reconciling")
        status = kymwatch("status", store)
        assert status.returncode == 0 and "healthy" in status.stdout, status.stdout
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
    stopped = daemon.events("daemon_stopped")[-1]
    assert stopped["pending"] > 0, stopped
    assert status_doc(store)["state"] == "stopped"
    restart_and_sync(store)
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    """Two SIGINTs during a first index: the second ends the process at once (exit 130); the
    next start converges."""
    store = bulk_store(tmp_path / "store.zarr", 3000)
    daemon = DaemonProcess(store).start(wait_ready=False)
    assert daemon.proc is not None
    wait_until(lambda: daemon.events("batch_indexed"), what="the first chunk")
    daemon.proc.send_signal(signal.SIGINT)
    wait_until(lambda: daemon.events("stop_requested"), what="the first SIGINT to be seen")
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGINT)
    code = daemon.proc.wait(timeout=WAIT_S)
    assert code in (0, 130), daemon.read_output()  # 0 if the first one already finished
    if code == 130:
        assert "exiting at once" in daemon.read_output()
    restart_and_sync(store)
    assert_tables_match_rebuild(store, tmp_path / "scratch")


_HOLD_TABLE_LOCK = """
import sys
from kymwatch.store import ZarrDataset
lock = ZarrDataset(sys.argv[1], "r").table_lock()
lock.__enter__()
print("locked", flush=True)
sys.stdin.read()
"""


def test_table_lock_held_elsewhere_keeps_heartbeat_and_work_waits(tmp_path: Path) -> None:
    """While another process (an old-style rebuild) holds the table lock, the daemon's batch
    waits for it in slices: table_lock_wait is logged, the heartbeat advances, status stays
    healthy; once the lock is released the change is published and the oracle holds."""
    store = make_v2_store(tmp_path / "store.zarr")
    add_kym_record(store, "20261125_cell1")
    with DaemonProcess(store) as daemon:
        daemon.sync()
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_TABLE_LOCK, str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            add_kym_record(store, "a1b2c3d4-0000-4000-8000-00000000abcd", n_events=4)
            wait_until(lambda: daemon.events("table_lock_wait"), what="the daemon to wait")
            wait_heartbeat_during(store, "indexing")
            wait_heartbeat_during(store, "indexing")
            assert kymwatch("status", store).returncode == 0
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(timeout=WAIT_S)
            holder.stdout.close()
        daemon.sync()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_rebuild_in_another_process_reads_outside_the_lock(tmp_path: Path) -> None:
    """kymwatch rebuild while the daemon indexes a burst: both finish, nothing is lost."""
    store = bulk_store(tmp_path / "store.zarr", 300)
    with DaemonProcess(store) as daemon:
        for i in range(40):
            add_kym_record(store, f"burst-{i:03d}", n_events=1 + i % 4)
        rebuild = kymwatch("rebuild", store, check=True)
        assert "velocity_events:" in rebuild.stdout
        daemon.sync()
    assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert os.path.exists(store / "tables" / "radon_report.parquet")


def test_a_first_index_in_chunks_rebuilds_no_table(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A never-indexed store is indexed chunk by chunk (tables written once per
    ``backlog_write_s`` of chunks), without a whole-table rebuild between chunks, and ends
    equal to a fresh rebuild."""
    store = bulk_store(tmp_path / "store.zarr", 120)
    config = DaemonConfig(store, quiet_s=0.05, max_delay_s=1.0, batch_records=25)
    with running(Daemon(config)):
        pass
    names = [e["event"] for e in captured_logs]
    assert "table_rebuilt" not in names
    startup = [e for e in captured_logs if e["event"] == "batch_indexed"]
    assert sum(e["chunks"] for e in startup) >= 121 // 25
    assert sum(e["records"] for e in startup) == 121
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_deleted_table_is_regrown_in_chunks(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A table deleted behind the daemon's back is rebuilt as ordinary chunked work (many
    small chunks, written once per ``backlog_write_s``, not one long rebuild); the other
    table is left alone; oracle holds."""
    from kymwatch.daemon import request_sync

    store = bulk_store(tmp_path / "store.zarr", 120)
    config = DaemonConfig(store, quiet_s=0.05, max_delay_s=1.0, batch_records=25)
    with running(Daemon(config)):
        request_sync(store)
        (store / "tables" / "velocity_events.parquet").unlink()
        mark = len(captured_logs)
        request_sync(store)
        after = captured_logs[mark:]
    rebuilt = [e for e in after if e["event"] == "table_rebuilt"]
    assert [(e["table"], e["reason"]) for e in rebuilt] == [("velocity_events", "table_missing")]
    chunks = [e for e in after if e["event"] == "batch_indexed" and e["records"]]
    assert sum(e["chunks"] for e in chunks) >= 121 // 25  # several chunks per write
    assert all(e["tables"] == ["velocity_events"] for e in chunks)
    assert_tables_match_rebuild(store, tmp_path / "scratch")
