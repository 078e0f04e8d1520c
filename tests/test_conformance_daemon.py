"""Daemon conformance: the real ``kymwatch run`` subprocess on every case of kymflow's kit
(both generations) gives tables that conform to kymflow's, started on the store, fed by
live writes, and started on a store whose tables kymflow wrote (adoption)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conformance import (
    INDEXERS,
    TABLES,
    assert_conforms,
    cases,
    copy_store,
    expected_table,
    reference,
    upstream,
)
from harness import DaemonProcess, assert_tables_match_rebuild
from helpers_store import write_parquet_artifact
from kymwatch.store import read_table_file

pytestmark = pytest.mark.integration

CASES = [
    pytest.param(gen, case, id=f"{gen}-{case.name}")
    for gen in ("gen1", "gen2")
    for case in cases(gen)
]


def _table(store: Path, name: str) -> pd.DataFrame:
    path = store / "tables" / f"{name}.parquet"
    return read_table_file(path) if path.exists() else pd.DataFrame({"image_id": []})


def _assert_case(store: Path, gen: str, case: Path) -> None:
    for table in TABLES[gen]:
        assert_conforms(_table(store, table), *reference(case, table, store))


def _records(store: Path) -> list[Path]:
    return sorted(p for p in (store / "images").iterdir() if p.is_dir())


@pytest.mark.parametrize(("gen", "case"), CASES)
def test_daemon_conforms_at_start_and_after_live_writes(
    tmp_path: Path, gen: str, case: Path
) -> None:
    """A daemon started on a kit store holds conforming tables after ``sync``; with every
    artifact folder taken away its tables empty, and with them copied back while it runs
    the tables conform again and equal a fresh rebuild."""
    store = copy_store(case, tmp_path / "dataset.zarr")
    held = tmp_path / "held"
    held.mkdir()
    with DaemonProcess(store, "--indexers", INDEXERS[gen]) as d:
        d.sync()
        _assert_case(store, gen, case)
        for rec in _records(store):
            if (rec / "analysis").is_dir():
                shutil.move(rec / "analysis", held / rec.name)
        d.sync()
        keep = {r.name for r in _records(store)}  # unreadable-kept rows are none here
        for table in TABLES[gen]:
            rows = _table(store, table)
            assert not len(rows[rows["image_id"].isin(keep)]), f"{table} kept rows"
        for src in sorted(held.iterdir()):
            shutil.copytree(src, store / "images" / src.name / "analysis")
        d.sync()
        _assert_case(store, gen, case)
        assert_tables_match_rebuild(store, tmp_path / "scratch", indexers=INDEXERS[gen].split(","))
        assert d.proc is not None and d.proc.poll() is None


ADOPTABLE = [
    pytest.param(gen, case, id=f"{gen}-{case.name}")
    for gen in ("gen1", "gen2")
    for case in cases(gen)
    if all(upstream(case, t).get("ok") for t in TABLES[gen])
]


@pytest.mark.parametrize(("gen", "case"), ADOPTABLE)
def test_daemon_adopts_kymflows_tables(tmp_path: Path, gen: str, case: Path) -> None:
    """With kymflow's own table files in tables/, the daemon starts (no indexers named),
    keeps at least kymflow's rows, conforms, and a live edit continues the table."""
    store = copy_store(case, tmp_path / "dataset.zarr")
    (store / "tables").mkdir(exist_ok=True)
    for table in TABLES[gen]:
        shutil.copy(case / "expected" / f"{table}.parquet", store / "tables")
    with DaemonProcess(store) as d:
        d.sync()
        for table in TABLES[gen]:
            found = expected_table(case, table)
            assert found is not None
            ours = _table(store, table)
            assert len(ours) >= len(found[1]), f"{table}: fewer rows than kymflow's table"
            assert_conforms(ours, *found)
        assert not d.events("table_rebuilt")
        # a live edit continues the table: one record gets new events
        rec = _records(store)[0].name
        name = "velocity_events" if gen == "gen1" else "velocity_events/events"
        table = TABLES[gen][0]
        before = _table(store, table)
        edited = pd.DataFrame({"roi_id": [7], "event_id": ["ev-edited"], "score": [0.5]})
        write_parquet_artifact(store, rec, name, edited)
        d.sync()
        after = _table(store, table)
        mine = after[after["image_id"] == rec]
        assert mine["event_id"].tolist() == ["ev-edited"]
        others = before[before["image_id"] != rec]
        assert len(after) == len(others) + 1
        assert d.proc is not None and d.proc.poll() is None


def test_daemon_on_an_empty_store_follows_the_first_artifacts(tmp_path: Path) -> None:
    """A daemon started on an empty store switches to generation 2 when the first artifacts
    are kymflow's generation-2 ones (copied from the kit), logs indexers_selected, shows it
    in status, and its tables conform."""
    case = next(c for c in cases("gen2") if c.name == "g2_demo_ve")
    store = tmp_path / "dataset.zarr"
    store.mkdir()
    for name in (".zgroup", ".zattrs"):
        shutil.copy(case / "dataset.zarr" / name, store)
    (store / "images").mkdir()
    shutil.copy(case / "dataset.zarr" / "images" / ".zgroup", store / "images")
    with DaemonProcess(store) as d:
        for rec in _records(case / "dataset.zarr"):
            shutil.copytree(rec, store / "images" / rec.name)
        d.sync()
        [selected] = d.events("indexers_selected")
        assert selected["indexers"] == ["kym_velocity_events", "kym_radon"]
        status = json.loads((store / "index" / "status.json").read_text())
        assert status["indexers"] == ["kym_velocity_events", "kym_radon"]
        _assert_case(store, "gen2", case)
        assert not (store / "tables" / "velocity_events.parquet").exists() or not len(
            _table(store, "velocity_events")
        )


def test_daemon_on_a_generation_1_store_adds_generation_2_when_it_arrives(
    tmp_path: Path,
) -> None:
    """A daemon watching a generation-1 store (kymflow's demo) adds the generation-2
    indexers when kymflow's generation-2 records are copied in while it runs: both
    generations' tables then conform, and equal a fresh rebuild."""
    gen1 = next(c for c in cases("gen1") if c.name == "demo_v01")
    gen2 = next(c for c in cases("gen2") if c.name == "g2_demo_ve")
    store = copy_store(gen1, tmp_path / "dataset.zarr")
    with DaemonProcess(store) as d:
        d.sync()
        assert json.loads((store / "index" / "status.json").read_text())["indexers"] == [
            "velocity_events",
            "radon_report",
        ]
        for rec in _records(gen2 / "dataset.zarr"):
            shutil.copytree(rec, store / "images" / rec.name)
        d.sync()
        [selected] = d.events("indexers_selected")
        assert selected["indexers"] == [
            "velocity_events",
            "radon_report",
            "kym_velocity_events",
            "kym_radon",
        ]
        gen2_ids = {rec.name for rec in _records(gen2 / "dataset.zarr")}
        kym = _table(store, "kym_velocity_events")  # also reads generation-1 event files
        kym = kym[kym["image_id"].isin(gen2_ids)].reset_index(drop=True)
        assert_conforms(kym, *reference(gen2, "kym_velocity_events"))
        assert_tables_match_rebuild(store, tmp_path / "scratch")
