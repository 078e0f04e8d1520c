"""The worker on a real store with a fake clock: routing, retries, state, damaged tables."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from helpers_store import (
    analysis_file,
    events_frame,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import Batch, BatchResult, Debouncer, IndexState, RecordChange, Worker
from kymwatch.index import KymDataset
from kymwatch.store import scan_record


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(tmp_path: Path) -> tuple[Path, KymDataset, IndexState, Debouncer, FakeClock, Worker]:
    store = make_v2_store(tmp_path / "s.zarr")
    kd = KymDataset(store)
    state, deb, clock = IndexState(), Debouncer(0.3, 5.0), FakeClock()
    worker = Worker(kd, state, clock, retry_delays=(0.5, 1.0))
    return store, kd, state, deb, clock, worker


def batch(*changes: RecordChange) -> Batch:
    return Batch(tuple(changes), 0.0)


def push_back(deb: Debouncer, result: BatchResult, now: float) -> BatchResult:
    """Queue the result's retries the way the daemon's loop does."""
    for retry in result.retry:
        deb.defer(retry.change, now, now + retry.delay_s)
    return result


def test_only_affected_indexers_run(tmp_path: Path, captured_logs: list[dict[str, Any]]) -> None:
    """A radon-only change writes only the radon table."""
    store, kd, *_, worker = setup(tmp_path)
    write_v2_record(store, "r1")
    write_json_artifact(store, "r1", "radon_report", {"mean_velocity": 1.0})
    result = worker.process(batch(RecordChange("r1", frozenset({"radon_report"}))))
    assert result.tables == ["radon_report"]
    assert not kd.store.table_path("velocity_events").exists()


def test_unreadable_artifact_is_retried_then_reported(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A torn file is retried with backoff (old rows kept), then reported unreadable once."""
    store, kd, state, deb, clock, worker = setup(tmp_path)
    write_v2_record(store, "r1")
    write_parquet_artifact(store, "r1", "velocity_events", events_frame(3))
    worker.process(batch(RecordChange("r1")))
    good = state.records["r1"]["velocity_events.parquet"]
    analysis_file(store, "r1", "velocity_events", "parquet").write_bytes(b"PAR1 torn")
    change = RecordChange("r1", frozenset({"velocity_events"}))
    assert push_back(deb, worker.process(batch(change)), clock.now).retries == 1
    assert state.records["r1"]["velocity_events.parquet"] == good  # not settled yet
    assert not deb.due(clock.now + 0.49) and len(deb) == 1
    clock.now += 0.5
    assert push_back(deb, worker.process(deb.due(clock.now)), clock.now).retries == 1
    clock.now += 1.0
    final = push_back(deb, worker.process(deb.due(clock.now)), clock.now)
    assert final.retries == 0 and final.outcomes["artifact_unreadable"] == 1
    assert len(kd.get_table("velocity_events")) == 3  # old rows kept
    assert state.records["r1"] == scan_record(store / "images" / "r1")  # settled now
    events = [e["event"] for e in captured_logs]
    assert events.count("artifact_retry") == 2 and events.count("artifact_unreadable") == 1


def test_final_batch_does_not_retry(tmp_path: Path, captured_logs: list[dict[str, Any]]) -> None:
    """For a sync or shutdown, an unreadable artifact is reported at once."""
    store, _, _, deb, _, worker = setup(tmp_path)
    write_v2_record(store, "r1")
    path = analysis_file(store, "r1", "velocity_events", "parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    result = push_back(deb, worker.process(batch(RecordChange("r1")), final=True), 0.0)
    assert result.outcomes["artifact_unreadable"] == 1 and len(deb) == 0


def test_damaged_table_is_rebuilt(tmp_path: Path, captured_logs: list[dict[str, Any]]) -> None:
    """A table file that cannot be parsed is rebuilt from the artifacts instead of failing."""
    store, kd, *_, worker = setup(tmp_path)
    for i in range(3):
        write_v2_record(store, f"r{i}")
        write_parquet_artifact(store, f"r{i}", "velocity_events", events_frame(2))
    worker.process(batch(*(RecordChange(f"r{i}") for i in range(3))))
    kd.store.table_path("velocity_events").write_bytes(b"not parquet")
    write_parquet_artifact(store, "r0", "velocity_events", events_frame(5))
    result = worker.process(batch(RecordChange("r0", frozenset({"velocity_events"}))))
    assert result.outcomes["record_indexed"] == 1
    assert len(KymDataset(store, "r").get_table("velocity_events")) == 5 + 2 + 2
    assert any(e["event"] == "table_rebuilt" for e in captured_logs)


def test_deleted_record_leaves_state_and_tables(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A record that vanished loses its rows and its fingerprints."""
    store, kd, state, *_, worker = setup(tmp_path)
    write_v2_record(store, "r1")
    write_json_artifact(store, "r1", "radon_report", {"mean_velocity": 1.0})
    worker.process(batch(RecordChange("r1")))
    assert "r1" in state.records
    shutil.rmtree(store / "images" / "r1")
    result = worker.process(batch(RecordChange("r1")))
    assert result.outcomes["record_removed"] == 2
    assert "r1" not in state.records and len(kd.get_table("radon_report")) == 0
