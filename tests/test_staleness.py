"""Staleness of generation-2 records: kymflow's reasons, equal to kymflow's own answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harness import kymwatch
from helpers_store import write_file, write_json_artifact
from kymwatch.index import KymDataset
from kymwatch.index.registry import make_indexers, select_indexers
from kymwatch.index.staleness import (
    StalenessReason,
    dataset_staleness,
    judge,
    stale_counts,
    validate_marker,
)
from kymwatch.store import SortedTable

DATA = Path(__file__).parent / "data" / "staleness"
CASES = ["ve_params_edit", "ve_zero_rows", "radon_roi_edit", "ve_mixed"]
FIELDS = (
    "reason",
    "is_stale",
    "has_run_marker",
    "table_rows_present",
    "marker_n_rows",
    "params_hash_matches",
    "analysis_version_matches",
)
VERSION = "kymflow.velocity_events@0.1"


def expected(case: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / case / "expected.json").read_text())
    return doc


def copy_case(case: str, tmp_path: Path) -> Path:
    dest = tmp_path / case / "dataset.zarr"
    shutil.copytree(DATA / case / "dataset.zarr", dest)
    return dest


def marker(params_hash: str = "h", n_rows: int = 0, version: str = VERSION) -> dict[str, Any]:
    return {
        "marker_version": "1",
        "indexer_name": "velocity_events",
        "params_hash": params_hash,
        "analysis_version": version,
        "n_rows": n_rows,
        "ran_utc_epoch_ns": 1,
        "status": "ok",
    }


@pytest.mark.parametrize("case", CASES)
def test_staleness_equals_kymflows_get_staleness(case: str) -> None:
    """For every record and table of stores kymflow indexed and a user then edited, our
    reason and diagnostics equal kymflow's own get_staleness."""
    want = expected(case)["staleness"]
    got = {
        (s.image_id, s.indexer): s.to_dict()
        for s in dataset_staleness(DATA / case / "dataset.zarr")
    }
    assert {i for i, _ in got} == set(want)
    for image_id, per_table in want.items():
        for table, fields in per_table.items():
            mine = {k: got[(image_id, table)][k] for k in FIELDS}
            assert mine == fields, (case, image_id, table)


@pytest.mark.parametrize("case", CASES)
def test_judging_some_records_equals_judging_all(case: str) -> None:
    """Judging a few records (the stale counter after a batch reads only their rows of
    the table) gives each of them the verdict a judgement of every record gives."""
    root = DATA / case / "dataset.zarr"
    everything = {(s.image_id, s.indexer): s.to_dict() for s in dataset_staleness(root)}
    ids = sorted({i for i, _ in everything})
    for some in (ids[:1], ids[1::2], ["not-a-record", *ids[-1:]]):
        got = {(s.image_id, s.indexer): s.to_dict() for s in dataset_staleness(root, None, some)}
        assert got == {k: v for k, v in everything.items() if k[0] in some}, (case, some)


@pytest.mark.parametrize("case", CASES)
def test_judging_from_cached_tables_equals_judging_from_files(case: str) -> None:
    """Judging a few records against in-memory copies of kymflow's tables (what the
    daemon's stale counter hands over) gives the verdicts the table files give; the
    missing table of a store without radon output counts as no rows either way."""
    root = DATA / case / "dataset.zarr"

    def cached(name: str) -> SortedTable | None:
        path = root / "tables" / f"{name}.parquet"
        return SortedTable.adopt(pq.read_table(path))[0] if path.exists() else None

    everything = {(s.image_id, s.indexer): s.to_dict() for s in dataset_staleness(root)}
    ids = sorted({i for i, _ in everything})
    for some in (ids, ids[:1], ids[1::2], ["not-a-record", "../x", *ids[-1:]]):
        got = dataset_staleness(root, None, some, cached=cached)
        assert {(s.image_id, s.indexer): s.to_dict() for s in got} == {
            k: v for k, v in everything.items() if k[0] in some
        }, (case, some)


def test_a_daemons_cached_table_is_used_only_while_its_file_is_unchanged(
    tmp_path: Path,
) -> None:
    """`current_cached` hands over the table the dataset wrote and cached; once another
    program rewrites the file (even with the same rows), for a table adopted from
    kymflow's own file, or one cached without an indexer (no id map), it hands over
    nothing and the file is read instead."""
    root = copy_case("ve_mixed", tmp_path)
    plain = KymDataset(root, "r")  # generation 1's indexers: the table has none
    plain.get_arrow("kym_velocity_events")
    assert plain.current_cached("kym_velocity_events") is None
    kd = KymDataset(root, "a", indexers=make_indexers(select_indexers(root)))
    assert kd.current_cached("kym_velocity_events") is None  # nothing cached yet
    kd.get_arrow("kym_velocity_events")
    assert kd.current_cached("kym_velocity_events") is None  # kymflow's file: adopted
    kd.rebuild_reports()
    ours = kd.current_cached("kym_velocity_events")
    assert ours is not None and ours.table.equals(kd.get_arrow("kym_velocity_events"))
    path = root / "tables" / "kym_velocity_events.parquet"
    pq.write_table(pq.read_table(path), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    assert kd.current_cached("kym_velocity_events") is None


def test_fixtures_cover_every_reason_kymflow_gives() -> None:
    """The kymflow-made cases between them produce every reason but STALE_UNKNOWN."""
    reasons = {
        f["reason"]
        for case in CASES
        for per in expected(case)["staleness"].values()
        for f in per.values()
    }
    assert reasons == {r.value for r in StalenessReason} - {"STALE_UNKNOWN"}


@pytest.mark.parametrize(
    ("stamps", "mark", "reason"),
    [
        ([("h", VERSION)], None, StalenessReason.FRESH_ROWS),
        ([("h", VERSION)], marker("h", 0), StalenessReason.STALE_MARKER_TABLE_MISMATCH),
        ([("old", VERSION)], None, StalenessReason.STALE_PARAMS_CHANGED),
        ([("h", "v0")], marker("h", 3, "v0"), StalenessReason.STALE_VERSION_CHANGED),
        # The marker's version saves the table's old one: kymflow falls through to UNKNOWN.
        ([("h", "v0")], marker("h", 3), StalenessReason.STALE_UNKNOWN),
        ([], marker("h", 0), StalenessReason.FRESH_ZERO_ROWS),
        ([], None, StalenessReason.STALE_MISSING_MARKER),
        ([], marker("h", 2), StalenessReason.STALE_MARKER_TABLE_MISMATCH),
        ([], marker("old", 0), StalenessReason.STALE_PARAMS_CHANGED),
        ([], marker("h", 0, "v0"), StalenessReason.STALE_VERSION_CHANGED),
    ],
)
def test_judge_rules(
    stamps: list[tuple[str, str]], mark: dict[str, Any] | None, reason: StalenessReason
) -> None:
    """Each branch of kymflow's decision, with table rows and marker as given."""
    s = judge(
        image_id="e1",
        indexer="kym_velocity_events",
        params_hash="h",
        analysis_version=VERSION,
        marker=mark,
        table_stamps=stamps,
    )
    assert s.reason is reason
    assert s.is_stale is not reason.value.startswith("FRESH")


@pytest.mark.parametrize(
    "broken",
    [
        {"marker_version": "2"},
        {"n_rows": -1},
        {"n_rows": "3"},
        {"ran_utc_epoch_ns": 0},
        {"indexer_name": " "},
        {"status": None},
    ],
)
def test_invalid_markers_are_no_markers(broken: dict[str, Any]) -> None:
    """A marker that fails kymflow's validation counts as no marker."""
    assert validate_marker(marker()) is not None
    assert validate_marker({**marker(), **broken}) is None


def test_unreadable_files_never_raise(tmp_path: Path) -> None:
    """A torn marker, torn params and a damaged table give answers, not exceptions."""
    root = copy_case("ve_mixed", tmp_path)
    roles = expected("ve_mixed")["roles"]
    rec = root / "images" / roles["fresh_rows"] / "analysis"
    write_file(rec / "velocity_events" / "summary.json", b'{"marker_version": "1", ')
    write_file(
        root
        / "images"
        / roles["standard_marker_params_changed"]
        / "analysis"
        / "velocity_events"
        / "params.json",
        b"{",
    )
    write_file(root / "tables" / "kym_radon.parquet", b"PAR1 not really")
    by = {(s.image_id, s.indexer): s for s in dataset_staleness(root)}
    fresh = by[(roles["fresh_rows"], "kym_velocity_events")]
    assert fresh.reason is StalenessReason.FRESH_ROWS and fresh.error
    unknown = by[(roles["standard_marker_params_changed"], "kym_velocity_events")]
    assert unknown.reason is StalenessReason.STALE_UNKNOWN and unknown.error
    radon = by[(roles["fresh_rows"], "kym_radon")]
    assert radon.error is not None and "table unreadable" in radon.error
    proc = kymwatch("status", root, "--json")
    assert json.loads(proc.stdout)["stale_records"] is not None  # clean JSON, no log lines


def test_new_params_make_a_fresh_record_stale(tmp_path: Path) -> None:
    """Editing a fresh record's params (as an analysis rerun would) makes it stale."""
    root = copy_case("ve_params_edit", tmp_path)
    fresh = expected("ve_params_edit")["roles"]["fresh"]
    write_json_artifact(root, fresh, "velocity_events/params", {"threshold": 0.99})
    by = {(s.image_id, s.indexer): s for s in dataset_staleness(root, ["kym_velocity_events"])}
    assert by[(fresh, "kym_velocity_events")].reason is StalenessReason.STALE_PARAMS_CHANGED


def test_counts_skip_records_never_analysed() -> None:
    """Radon counts only records with radon output or markers: a store without radon
    data is not "all stale"."""
    results = dataset_staleness(DATA / "ve_zero_rows" / "dataset.zarr")
    radon = [s for s in results if s.indexer == "kym_radon"]
    assert radon and all(s.reason is StalenessReason.STALE_MISSING_MARKER for s in radon)
    assert all(not s.analysed for s in radon)
    assert stale_counts(results) == {"kym_velocity_events": 0, "kym_radon": 0}
    assert stale_counts(results, analysed_only=False)["kym_radon"] == len(radon)


def test_stale_command_lists_stale_records(tmp_path: Path) -> None:
    """`kymwatch stale STORE --json` lists the analysed stale records with kymflow's
    reasons; the human output names them too; nothing is written into the store."""
    root = copy_case("ve_mixed", tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    proc = kymwatch("stale", root, "--json", check=True)
    doc = json.loads(proc.stdout)
    want = {
        (i, t): f["reason"]
        for i, per in expected("ve_mixed")["staleness"].items()
        for t, f in per.items()
        if f["is_stale"]
        and (f["has_run_marker"] or f["table_rows_present"] or t == "kym_velocity_events")
    }
    got = {(r["image_id"], r["indexer"]): r["reason"] for r in doc["records"]}
    assert got == want
    assert doc["counts"]["kym_velocity_events"] == sum(
        1 for i, t in want if t == "kym_velocity_events"
    )
    text = kymwatch("stale", root, check=True).stdout
    assert (
        "STALE_VERSION_CHANGED" in text and expected("ve_mixed")["roles"]["version_changed"] in text
    )
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_status_shows_the_stale_count(tmp_path: Path) -> None:
    """`kymwatch status --json` carries the stale counts of the tabled generation-2
    indexers (kymflow indexed only radon here), even with no daemon running."""
    root = copy_case("radon_roi_edit", tmp_path)
    proc = kymwatch("status", root, "--json")
    doc = json.loads(proc.stdout)
    assert doc["stale_records"] == {"kym_radon": 1}
    assert "1 stale" in kymwatch("status", root).stdout
