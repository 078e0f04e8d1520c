"""Library conformance: ``KymDataset.rebuild`` on every case of kymflow's kit, both
generations, gives tables that conform to the ones kymflow built (tests/conformance.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from structlog.testing import capture_logs

from conformance import TABLES, assert_conforms, case_ids, cases, copy_store, reference
from kymwatch.demo import seed_flow
from kymwatch.index import KymDataset, OutcomeStatus, make_indexers
from kymwatch.store import ZarrDataset

PARAMS = [
    pytest.param(gen, case, table, id=f"{gen}-{case.name}-{table}")
    for gen in ("gen1", "gen2")
    for case in cases(gen)
    for table in TABLES[gen]
]


@pytest.mark.parametrize(("gen", "case", "table"), PARAMS)
def test_rebuild_conforms(tmp_path: Path, gen: str, case: Path, table: str) -> None:
    """A library rebuild of each kit store gives the table kymflow built, by the kit's rule."""
    store = copy_store(case, tmp_path / "dataset.zarr")
    kd = KymDataset(store, indexers=make_indexers(TABLES[gen]))
    df = kd.rebuild(table)
    assert isinstance(df, pd.DataFrame)
    assert df.equals(kd.get_table(table))
    assert_conforms(df, *reference(case, table, store))


def test_case_names_cover_both_generations() -> None:
    """The kit copy holds cases of both generations (the parametrisation is not empty)."""
    assert len(case_ids("gen1")) >= 18 and len(case_ids("gen2")) >= 13


def test_radon_json_list_of_numbers_is_invalid(tmp_path: Path) -> None:
    """A radon JSON ``[1, 2]`` (kymflow: two all-null rows) is artifact_invalid, logged."""
    case = next(c for c in cases("gen1") if c.name == "radon_invalid_json")
    store = copy_store(case, tmp_path / "dataset.zarr")
    kd = KymDataset(store)
    with capture_logs() as logs:
        kd.rebuild("radon_report")
    assert kd.last_report is not None
    invalid = {o.image_id for o in kd.last_report.outcomes if o.status is OutcomeStatus.INVALID}
    assert "a052cc4d-8319-41e9-9a9e-f902d55b9654" in invalid
    assert any(e["event"] == "artifact_invalid" for e in logs)


def test_mixed_types_index_every_record_and_log_coercion(tmp_path: Path) -> None:
    """Where kymflow fails on mixed types, every record is indexed: n_valid 12.5 is kept,
    "0.5" is read as 0.5, notes 7 is "7"; a value that cannot fit is logged once."""
    case = next(c for c in cases("gen1") if c.name == "radon_mixed_types")
    store = copy_store(case, tmp_path / "dataset.zarr")
    rec = store / "images" / "4b303b62-e355-436e-bf33-c1f121342025" / "analysis"
    (rec / "radon_report.json").write_text(
        '{"mean_velocity": "n/a", "median_velocity": 0.4, "n_valid": "12", "notes": "s"}'
    )
    kd = KymDataset(store)
    with capture_logs() as logs:
        df = kd.rebuild("radon_report")
    assert len(df) == 5
    by_id = df.set_index("image_id")
    assert by_id.loc["452f4152-11f0-4e69-bdda-fe8419f2459b", "n_valid"] == 12.5
    assert by_id.loc["845f6818-6eb9-4073-a11b-09f46e41d5cd", "notes"] == "7"
    assert pd.isna(by_id.loc["4b303b62-e355-436e-bf33-c1f121342025", "mean_velocity"])
    assert by_id.loc["4b303b62-e355-436e-bf33-c1f121342025", "n_valid"] == 12
    coerced = [e for e in logs if e["event"] == "value_coerced"]
    assert [(e["column"], e["count"]) for e in coerced] == [("mean_velocity", 1)]


def test_seed_demo_flow_prints_2_3_2_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kymflow's seed demo flow (KymDataset + indexers v0.1) on our library gives 2/3/2/1."""
    counts = seed_flow(ZarrDataset(tmp_path / "demo.zarr", "a"))
    out = capsys.readouterr().out
    print(out)
    assert counts == (2, 3, 2, 1)
    for line in (
        "velocity events rows: 2",
        "radon report rows: 3",
        "updated velocity rows: 2",
        "rows for the edited image: 1",
    ):
        assert line in out


def test_seed_demo_flow_on_kymflows_own_store(tmp_path: Path) -> None:
    """On the store kymflow's own demo wrote (kit demo_v01): rebuild gives 2 and 3 rows,
    re-updating the edited record gives 2 rows, 1 of them the edited one, id "edited"."""
    case = next(c for c in cases("gen1") if c.name == "demo_v01")
    store = copy_store(case, tmp_path / "dataset.zarr")
    edited = "8e20ca10-ce75-47f5-9d2b-5c4e033929ef"
    kd = KymDataset(store)
    ve, rr = kd.rebuild("velocity_events"), kd.rebuild("radon_report")
    updated = kd.update_image("velocity_events", edited)
    mine = updated[updated["image_id"] == edited]
    print(len(ve), len(rr), len(updated), len(mine))
    assert (len(ve), len(rr), len(updated), len(mine)) == (2, 3, 2, 1)
    assert mine["event_id"].tolist() == ["edited"]
    assert kd.last_report is not None
    assert [o.status for o in kd.last_report.outcomes] == [OutcomeStatus.INDEXED]
