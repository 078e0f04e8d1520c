"""A real daemon exports Prometheus metrics: scraped over HTTP and written to a
node-exporter textfile, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conformance import KIT, copy_store
from harness import WAIT_S, DaemonProcess, kymwatch, wait_until
from helpers_store import gen2_events_frame, write_parquet_artifact

pytestmark = pytest.mark.integration

GEN2_CASE = KIT / "gen2" / "g2_demo_ve"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels (store label dropped)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "store")
            out[(s.name, labels)] = s.value
    return out


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S) as r:
        return _samples(r.read().decode())


def _one(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **kw: str
) -> float:
    return samples.get((name, frozenset(kw.items())), 0.0)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of a generation-2 store written by kymflow's own code (UUID records)."""
    root = copy_store(GEN2_CASE, tmp_path / "dataset.zarr")
    for path in root.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    return root


def _gen2_record(store: Path) -> str:
    """A record that holds kymflow's generation-2 velocity events folder."""
    return next(
        p.name
        for p in sorted((store / "images").iterdir())
        if (p / "analysis" / "velocity_events").is_dir()
    )


def test_scrape_shows_the_counters_move_after_a_write(store: Path, tmp_path: Path) -> None:
    """--metrics-port 0 serves on a free loopback port (logged); a write moves the counters."""
    prom = tmp_path / "textfile" / "kymwatch.prom"
    prom.parent.mkdir()
    with DaemonProcess(store, "--metrics-port", "0", "--metrics-textfile", str(prom)) as d:
        [serving] = d.events("metrics_serving")
        assert serving["address"] == "127.0.0.1"
        port = int(serving["port"])
        before = _scrape(port)
        assert _one(before, "kymwatch_state", state="watching") == 1
        assert _one(before, "kymwatch_reconcile_duration_seconds_count", reason="startup") == 1
        image_id = _gen2_record(store)
        write_parquet_artifact(store, image_id, "velocity_events/events", gen2_events_frame(3))
        d.sync()
        after = _scrape(port)
        assert after[("kymwatch_records_indexed_total", frozenset())] > _one(
            before, "kymwatch_records_indexed_total"
        )
        assert (
            _one(after, "kymwatch_rows_written_total")
            >= _one(before, "kymwatch_rows_written_total") + 3
        )
        grown = [
            k
            for k, v in after.items()
            if k[0] == "kymwatch_batches_total" and v > before.get(k, 0.0)
        ]
        assert grown, after
        assert _one(after, "kymwatch_outcomes_total", outcome="record_indexed") > _one(
            before, "kymwatch_outcomes_total", outcome="record_indexed"
        )
        assert _one(after, "kymwatch_lag_seconds_count") > _one(
            before, "kymwatch_lag_seconds_count"
        )
        assert _one(after, "kymwatch_last_table_update_timestamp_seconds") > 0
        assert ("kymwatch_problems", frozenset({("problem", "artifact_unreadable")})) in after
        assert ("kymwatch_watches", frozenset()) in after
        assert ("kymwatch_records_pending", frozenset()) in after
        wait_until(prom.is_file, what="the textfile")
        assert d.proc is not None
        other = prom.with_name("second.prom")
        second = kymwatch("run", store, "--metrics-port", str(port), "--metrics-textfile", other)
        assert second.returncode != 0 and f"pid {d.proc.pid}" in second.stderr, second
        assert not other.exists()  # a refused daemon writes no textfile (nor overwrites one)
    textfile = _samples(prom.read_text())  # the final write at stop
    assert _one(textfile, "kymwatch_state", state="stopped") == 1
    assert _one(textfile, "kymwatch_records_indexed_total") == _one(
        after, "kymwatch_records_indexed_total"
    )


def test_metrics_port_in_use_is_one_line(store: Path) -> None:
    """A port that cannot be bound is refused with one line naming it, no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = kymwatch("run", store, "--metrics-port", str(port), "--no-log-file")
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in lines[-1]
