"""Long work reports its progress: a daemon's first index feeds the progress display
chunk by chunk, and ``rebuild_report`` calls its callback per chunk of records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import kymwatch
from helpers_loop import kym_events, running
from helpers_store import make_v2_store, write_parquet_artifact
from kymwatch.daemon import Daemon, DaemonConfig
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
