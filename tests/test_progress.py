"""Long work reports its progress: a daemon's first index feeds the progress display
chunk by chunk, and ``rebuild_report`` calls its callback per chunk of records."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from harness import KYMWATCH, WAIT_S, kymwatch
from helpers_loop import kym_events, running
from helpers_store import make_v2_store, write_parquet_artifact
from kymwatch.daemon import Daemon, DaemonConfig
from kymwatch.daemon.instance import DaemonLock
from kymwatch.daemon.progress import Progress
from kymwatch.index import KymDataset, make_indexers, select_indexers

pytestmark = pytest.mark.integration


class Bar:
    """A progress sink that remembers what it was shown."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, int, int]] = []
        self.closed = 0

    def update(self, progress: Progress) -> None:
        self.shown.append((progress.what, progress.done, progress.total))

    def close(self) -> None:
        self.closed += 1


def _bulk(root: Path, n: int) -> Path:
    """``n`` records (UUID-like ids) with an events parquet of string event ids."""
    make_v2_store(root)
    write_parquet_artifact(root, "seed", "velocity_events", kym_events(3))
    events = (root / "images" / "seed" / "analysis" / "velocity_events.parquet").read_bytes()
    for i in range(n):
        rec = root / "images" / f"{i:08x}-5ab7-405e-8f53-6e171f9ea6cd"
        (rec / "analysis").mkdir(parents=True)
        (rec / ".zgroup").write_text('{"zarr_format": 2}')
        (rec / ".zattrs").write_text('{"axes": ["time", "space"]}')
        (rec / "analysis" / "velocity_events.parquet").write_bytes(events)
    return root


def test_first_index_feeds_the_bar_to_the_end_and_a_restart_does_not(tmp_path: Path) -> None:
    """A first index of 400 records shows rising counts up to 401/401 and closes the bar;
    a restart with nothing changed shows no progress."""
    store = _bulk(tmp_path / "s.zarr", 400)
    bar = Bar()
    config = DaemonConfig(store, chunk_target_s=0.05, batch_records=100)
    with running(Daemon(config, progress=bar)) as d:
        assert d.status.progress is None
    assert bar.shown, "no progress was shown"
    assert {what for what, _, _ in bar.shown} == {"first index"}
    done = [n for _, n, _ in bar.shown]
    assert done == sorted(done) and len(done) >= 2
    assert bar.shown[-1][1:] == (401, 401)
    assert bar.closed == 1
    doc = json.loads((store / "index" / "status.json").read_text())
    assert doc["progress"] is None
    again = Bar()
    with running(Daemon(config, progress=again)):
        pass
    assert again.shown == [] and again.closed == 0


def test_rebuild_report_calls_progress_per_chunk(tmp_path: Path) -> None:
    """rebuild_report(progress=...) reports (done, total) after each chunk, ending at total."""
    store = _bulk(tmp_path / "s.zarr", 1200)
    kd = KymDataset(store, "a", indexers=make_indexers(select_indexers(store)))
    calls: list[tuple[int, int]] = []
    report = kd.rebuild_report("velocity_events", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (1201, 1201)
    assert [t for _, t in calls] == [1201] * len(calls) and len(calls) >= 2
    assert len(report.outcomes) == 1201


def test_rebuild_off_a_terminal_prints_no_bar(tmp_path: Path) -> None:
    """``kymwatch rebuild`` with stderr not a terminal prints its summary and no bar."""
    store = _bulk(tmp_path / "s.zarr", 5)
    proc = kymwatch("rebuild", store, check=True)
    assert "velocity_events: 18 rows from 6 records" in proc.stdout
    assert "rec/s" not in proc.stderr and "%|" not in proc.stderr


def test_status_shows_the_progress_of_a_working_daemon(tmp_path: Path) -> None:
    """``kymwatch status`` prints done / total and the ETA from the status file's progress."""
    store = make_v2_store(tmp_path / "s.zarr")
    doc = {
        "pid": 4242,
        "state": "reconciling",
        "heartbeat_utc": dt.datetime.now(dt.UTC).isoformat(),
        "heartbeat_s": 5.0,
        "progress": {"what": "first index", "done": 4200, "total": 10000, "eta_s": 6.2},
    }
    (store / "index").mkdir(exist_ok=True)
    (store / "index" / "status.json").write_text(json.dumps(doc))
    lock = DaemonLock(store)
    lock.acquire()
    try:
        proc = kymwatch("status", store, check=True)
    finally:
        lock.release()
    assert "  first index 4,200 / 10,000, ETA 6 s" in proc.stdout.splitlines()


def _rebuild_on_a_terminal(store: Path, *args: str) -> str:
    """``kymwatch rebuild`` with stderr on a pseudo-terminal; what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    try:
        proc = subprocess.Popen(
            [*KYMWATCH, "rebuild", str(store), *args],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_rebuild_on_a_terminal_draws_a_bar_of_records_read(tmp_path: Path) -> None:
    """On a terminal, rebuild draws one bar that ends at every record of every pass over
    the records; --no-progress draws none."""
    store = _bulk(tmp_path / "s.zarr", 5)
    drawn = _rebuild_on_a_terminal(store)
    counts = re.findall(r"(\d+)/(\d+) \[", drawn)
    assert "records read" in drawn and counts, drawn
    done, total = counts[-1]
    assert done == total and int(total) % 6 == 0, drawn
    assert not re.search(r"\d+/\d+ \[", _rebuild_on_a_terminal(store, "--no-progress"))
