"""The daemon with inputs that used to stop everything (issue 10, part 5) and tables that
kymflow writes behind it (issue 9, part 3): one bad record is that record's outcome, and
no table another program wrote ever stops the daemon or loses rows."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conformance import cases, copy_store
from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch
from helpers_store import (
    analysis_file,
    events_frame,
    gen2_events_frame,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.store import read_table_file

pytestmark = pytest.mark.integration


def _ids(n: int) -> list[str]:
    return [f"7d3c2a10-{i:04d}" for i in range(n)]


def test_one_poisoned_record_does_not_stop_fifty(tmp_path: Path) -> None:
    """A csv.gz with a repeated header and a JSON nested 100,000 deep are their records'
    artifact_invalid; the 50 other records changed with them are indexed, sync and
    ``kymwatch rebuild`` succeed, and the daemon stays up."""
    store = make_v2_store(tmp_path / "store.zarr")
    ids = _ids(52)
    bad_csv, bad_json = ids[10], ids[20]
    with DaemonProcess(store) as d:
        for image_id in ids:  # the bad records get their bad files from the start
            write_v2_record(store, image_id)
            if image_id == bad_csv:
                header = b"roi_id,event_id,event_id,t_start_s\n1,e1,e2,0.5\n"
                csv = analysis_file(store, image_id, "velocity_events/events", "csv.gz")
                write_file(csv, gzip.compress(header))
            else:
                events = gen2_events_frame(2)
                write_parquet_artifact(store, image_id, "velocity_events/events", events)
                write_parquet_artifact(store, image_id, "velocity_events", events_frame(1))
            if image_id == bad_json:
                deep = b"[" * 100_000 + b"]" * 100_000
                write_file(analysis_file(store, image_id, "radon_report", "json"), deep)
            else:
                write_json_artifact(store, image_id, "radon_report", {"mean_velocity": 0.5})
        d.sync()
        invalid = {(e["image_id"], e["indexer"]) for e in d.events("artifact_invalid")}
        assert invalid == {(bad_csv, "kym_velocity_events"), (bad_json, "radon_report")}
        kve = read_table_file(store / "tables" / "kym_velocity_events.parquet")
        assert set(kve["image_id"]) == set(ids) - {bad_csv}
        radon = read_table_file(store / "tables" / "radon_report.parquet")
        assert set(radon["image_id"]) == set(ids) - {bad_json}
        events = read_table_file(store / "tables" / "velocity_events.parquet")
        assert set(events["image_id"]) == set(ids) - {bad_csv}
        rebuilt = kymwatch("rebuild", store)
        assert rebuilt.returncode == 0, rebuilt.stderr
        d.sync()
        assert d.proc is not None and d.proc.poll() is None
        assert not d.events("batch_failed")
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_kymflow_rewriting_its_tables_never_stops_the_daemon(tmp_path: Path) -> None:
    """kymflow rewrites radon_report (float n_valid, object columns) and velocity_events
    while the daemon runs: the daemon stays up, loses no rows, and continues the tables."""
    case = next(c for c in cases("gen1") if c.name == "radon_parquet")
    store = copy_store(case, tmp_path / "dataset.zarr")
    events_case = next(c for c in cases("gen1") if c.name == "ve_event_id_strings")
    for rec in (events_case / "dataset.zarr" / "images").iterdir():
        if rec.is_dir():
            shutil.copytree(rec, store / "images" / rec.name)
    with DaemonProcess(store, "--indexers", "velocity_events,radon_report") as d:
        d.sync()
        before = {
            t: len(read_table_file(store / "tables" / f"{t}.parquet"))
            for t in ("velocity_events", "radon_report")
        }
        # kymflow rewrites both tables behind the daemon's back, as its KymDataset does
        kymflow_radon = pd.read_parquet(case / "expected" / "radon_report.parquet")
        kymflow_events = pd.read_parquet(events_case / "expected" / "velocity_events.parquet")
        kymflow_radon.to_parquet(store / "tables" / "radon_report.parquet", index=False)
        kymflow_events.to_parquet(store / "tables" / "velocity_events.parquet", index=False)
        images = (events_case / "dataset.zarr" / "images").iterdir()
        rec = sorted(p.name for p in images if p.is_dir())[0]
        edited = pd.DataFrame({"roi_id": [5], "event_id": ["ev-1f"], "t0_s": [0.5]})
        write_parquet_artifact(store, rec, "velocity_events", edited)
        d.sync()
        assert d.proc is not None and d.proc.poll() is None
        radon = read_table_file(store / "tables" / "radon_report.parquet")
        events = read_table_file(store / "tables" / "velocity_events.parquet")
        assert len(radon) >= before["radon_report"]
        assert events[events["image_id"] == rec]["event_id"].tolist() == ["ev-1f"]
        assert len(events) == before["velocity_events"] - 1
        # Seen as changed behind its back and re-derived record by record (rows kept
        # meanwhile), never thrown away as unreadable.
        reasons = {e.get("reason") for e in d.events("table_rebuilt")}
        assert reasons <= {"table_missing", "table_changed_externally"}
        status = json.loads((store / "index" / "status.json").read_text())
        assert status["state"] == "watching"
