"""Generation-2 indexers, params hashing and routing, the indexer registry and per-store
selection, and per-record failure isolation (issue 10, part 5), on kymflow-shaped data."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from structlog.testing import capture_logs

from conformance import cases, copy_store
from helpers_store import (
    events_frame,
    gen2_events_frame,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon.changes import ChangeKind, FileChange, RecordChange
from kymwatch.daemon.classify import classify
from kymwatch.daemon.reconcile import route
from kymwatch.index import (
    GENERATION_1,
    GENERATION_2,
    UNDECIDED,
    KymDataset,
    OutcomeStatus,
    decide_from_artifacts,
    make_indexers,
    params_hash,
    select_indexers,
)
from kymwatch.index.params import radon_params_hash, velocity_events_params_hash
from kymwatch.store import ZarrDataset, ZarrImageRecord

KVE, KRADON = "kym_velocity_events", "kym_radon"
ROI = {"roi_id": 1, "roi_type": "rect", "data": {"x0": 1, "x1": 7, "y0": 2, "y1": 7}}


@pytest.fixture
def gen2_store(tmp_path: Path) -> Path:
    """A store with two generation-2 records written with plain file I/O."""
    root = make_v2_store(tmp_path / "store.zarr")
    for image_id in ("4c0f6a1e-0001", "4c0f6a1e-0002"):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events/events", gen2_events_frame(2))
        write_json_artifact(root, image_id, "velocity_events/params", {"threshold": 0.5})
        results = pd.DataFrame({"roi_id": [1], "velocity": [0.5]})
        write_parquet_artifact(root, image_id, "radon/results", results)
        write_json_artifact(root, image_id, "radon/params", {"window": 9})
        write_json_artifact(root, image_id, "metadata", {"version": "2.0", "rois": [ROI]})
    return root


def _kd(root: Path) -> KymDataset:
    return KymDataset(root, indexers=make_indexers(GENERATION_2))


def test_params_hash_is_kymflows_canonical_json() -> None:
    """params_hash is SHA-256 of sorted, compact, non-ASCII-escaped JSON."""
    assert params_hash({}) == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert params_hash({"b": 1, "a": "é"}) == params_hash({"a": "é", "b": 1})


def test_rows_are_stamped_with_version_and_current_hash(gen2_store: Path) -> None:
    """Every row carries kymflow's analysis_version and the record's current params_hash."""
    kd = _kd(gen2_store)
    ve, radon = kd.rebuild(KVE), kd.rebuild(KRADON)
    rec = ZarrImageRecord(kd.store, "4c0f6a1e-0001")
    assert set(ve["analysis_version"]) == {"kymflow.velocity_events@0.1"}
    assert set(ve["params_hash"]) == {velocity_events_params_hash(rec)}
    assert set(radon["analysis_version"]) == {"kymflow.radon@0.1"}
    assert set(radon["params_hash"]) == {radon_params_hash(rec)}
    assert list(ve.columns[:7]) == [
        "roi_id", "event_id", "t_start_s", "t_end_s", "peak_t_s", "peak_value", "score"
    ]  # fmt: skip
    assert list(ve.columns[-3:]) == ["image_id", "analysis_version", "params_hash"]


def test_params_and_roi_edits_are_routed_and_change_the_hash(gen2_store: Path) -> None:
    """Editing params.json or an ROI in metadata.json is routed to the indexer it feeds,
    and re-indexing gives the new hash."""
    kd = _kd(gen2_store)
    kd.rebuild(KVE), kd.rebuild(KRADON)
    reads = [(ix.name, ix.artifact_names) for ix in kd.indexers]
    rec_dir = gen2_store / "images" / "4c0f6a1e-0001" / "analysis"
    for rel, indexer in (
        ("metadata.json", KRADON),
        ("radon/params.json", KRADON),
        ("velocity_events/params.json", KVE),
        ("velocity_events_params.json", KVE),
        ("radon.params.json", KRADON),
    ):
        change = classify(gen2_store, FileChange(str(rec_dir / rel), ChangeKind.MODIFIED))
        assert isinstance(change, RecordChange), rel
        assert route(change, reads) == [indexer], rel
    old = kd.get_table(KRADON)["params_hash"].tolist()
    moved = {**ROI, "data": {"x0": 2, "x1": 7, "y0": 2, "y1": 7}}
    write_json_artifact(gen2_store, "4c0f6a1e-0001", "metadata", {"rois": [moved]})
    new = kd.update_images(KRADON, ["4c0f6a1e-0001"])["params_hash"].tolist()
    assert new[0] != old[0] and new[1] == old[1]


def test_unreadable_params_keep_the_old_rows(gen2_store: Path) -> None:
    """A params file that cannot be parsed keeps the record's rows (never a wrong hash)."""
    kd = _kd(gen2_store)
    before = kd.rebuild(KVE).copy()
    write_file(gen2_store / "images/4c0f6a1e-0001/analysis/velocity_events/params.json", b"{")
    kd.update_images(KVE, ["4c0f6a1e-0001"])
    assert kd.last_report is not None
    assert kd.last_report.outcomes[0].status is OutcomeStatus.UNREADABLE
    pd.testing.assert_frame_equal(kd.get_table(KVE), before)


def test_extra_columns_are_kept_and_typed_like_a_rebuild(gen2_store: Path) -> None:
    """Extra artifact columns are kept; their type follows every record's values, and an
    incremental update gives the same table as a rebuild, whatever the order."""
    kd = _kd(gen2_store)
    kd.rebuild(KVE)
    a, b = "4c0f6a1e-0001", "4c0f6a1e-0002"
    write_parquet_artifact(gen2_store, a, "velocity_events/events", gen2_events_frame(2).assign(
        quality=[1, 2]
    ))  # fmt: skip
    kd.update_images(KVE, [a])
    assert str(kd.get_table(KVE)["quality"].dtype) == "Int64"
    write_parquet_artifact(gen2_store, b, "velocity_events/events", gen2_events_frame(1).assign(
        quality=["good"]
    ))  # fmt: skip
    incremental = kd.update_images(KVE, [b])
    assert incremental["quality"].tolist() == ["1", "2", "good"]
    rebuilt = KymDataset(gen2_store, indexers=make_indexers([KVE])).rebuild(KVE)
    pd.testing.assert_frame_equal(incremental, rebuilt)
    write_parquet_artifact(gen2_store, b, "velocity_events/events", gen2_events_frame(1))
    back = kd.update_images(KVE, [b])
    assert str(back["quality"].dtype) == "Int64"
    pd.testing.assert_frame_equal(back, _kd(gen2_store).rebuild(KVE))


def test_integer_event_ids_become_text(gen2_store: Path) -> None:
    """An events artifact with integer event_ids gives "1", "2" (one type per column)."""
    frame = gen2_events_frame(2).assign(event_id=[1, 2])
    write_parquet_artifact(gen2_store, "4c0f6a1e-0001", "velocity_events/events", frame)
    table = _kd(gen2_store).rebuild(KVE)
    assert str(table["event_id"].dtype) == "string"
    mine = table[table["image_id"] == "4c0f6a1e-0001"]
    assert sorted(mine["event_id"]) == ["1", "2"]


def test_zero_column_frame_means_no_events(gen2_store: Path) -> None:
    """kymflow's "no events" (``pd.DataFrame()``) drops the record's rows, not an error."""
    kd = _kd(gen2_store)
    kd.rebuild(KVE)
    write_parquet_artifact(gen2_store, "4c0f6a1e-0001", "velocity_events/events", pd.DataFrame())
    table = kd.update_images(KVE, ["4c0f6a1e-0001"])
    assert kd.last_report is not None
    assert kd.last_report.outcomes[0].status is OutcomeStatus.INDEXED
    assert set(table["image_id"]) == {"4c0f6a1e-0002"}


# -- one bad record never stops the others (issue 10, part 5) -----------------------------
def _repeated_header_csv() -> bytes:
    return gzip.compress(b"roi_id,event_id,event_id,t_start_s\n1,e1,e2,0.5\n")


def test_repeated_csv_header_is_that_records_outcome(gen2_store: Path) -> None:
    """A csv.gz whose header repeats a column is artifact_invalid for that record only."""
    bad = gen2_store / "images" / "4c0f6a1e-0001" / "analysis"
    (bad / "velocity_events" / "events.parquet").unlink()
    write_file(bad / "velocity_events" / "events.csv.gz", _repeated_header_csv())
    kd = _kd(gen2_store)
    table = kd.rebuild(KVE)
    assert kd.last_report is not None
    status = {o.image_id: o.status for o in kd.last_report.outcomes}
    assert status == {
        "4c0f6a1e-0001": OutcomeStatus.INVALID,
        "4c0f6a1e-0002": OutcomeStatus.INDEXED,
    }
    assert set(table["image_id"]) == {"4c0f6a1e-0002"}


def test_deeply_nested_json_is_that_records_outcome(tmp_path: Path) -> None:
    """A radon JSON nested 100,000 levels deep (RecursionError) is that record's outcome;
    the other records of the batch are indexed."""
    root = make_v2_store(tmp_path / "store.zarr")
    for image_id in ("a1", "a2", "a3"):
        write_v2_record(root, image_id)
        write_json_artifact(root, image_id, "radon_report", {"mean_velocity": 0.5, "notes": "n"})
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(1))
    write_file(root / "images/a2/analysis/radon_report.json", b"[" * 100_000 + b"]" * 100_000)
    kd = KymDataset(root)
    with capture_logs() as logs:
        table = kd.update_images("radon_report", ["a1", "a2", "a3"])
    assert sorted(table["image_id"]) == ["a1", "a3"]
    assert kd.last_report is not None
    bad = next(o for o in kd.last_report.outcomes if o.image_id == "a2")
    assert bad.status in (OutcomeStatus.INVALID, OutcomeStatus.UNREADABLE)
    assert any(e["event"] == bad.status.value and e["image_id"] == "a2" for e in logs)


def test_an_indexer_that_raises_anything_gives_an_outcome(tmp_path: Path) -> None:
    """Any exception an indexer raises for one record becomes that record's outcome."""

    class Flaky:
        name = table_name = "flaky"
        schema_version = 1
        artifact_names = frozenset({"radon_report"})
        columns: ClassVar[dict[str, str]] = {"image_id": "string", "x": "float64"}

        def required_columns(self) -> list[str]:
            return list(self.columns)

        def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
            if rec.image_id == "b":
                raise KeyError("boom")
            return pd.DataFrame({"image_id": [rec.image_id], "x": [1.0]})

    ds = ZarrDataset(tmp_path / "s.zarr", "a")
    for image_id in ("a", "b", "c"):
        ds.add_image(pd.DataFrame([[0]]).to_numpy(), image_id=image_id)
    kd = KymDataset(ds.path, indexers=[Flaky()])
    table = kd.rebuild("flaky")
    assert table["image_id"].tolist() == ["a", "c"]
    assert kd.last_report is not None
    [bad] = [o for o in kd.last_report.outcomes if o.status is OutcomeStatus.INVALID]
    assert bad.image_id == "b" and bad.error is not None and "KeyError" in bad.error


# -- the registry and per-store selection --------------------------------------------------
@pytest.mark.parametrize("case", cases("gen2"), ids=lambda c: c.name)
def test_selection_on_generation_2_stores(case: Path) -> None:
    """A kit store written by kymflow's generation 2 selects the generation-2 indexers
    (a store whose only record uses generation-1 names selects generation 1 too; one
    without artifacts is undecided)."""
    chosen = select_indexers(case / "dataset.zarr")
    found = {
        p.name.split(".")[0] for p in (case / "dataset.zarr").rglob("analysis/**/*") if p.is_file()
    }
    if not found:
        assert chosen.reason == UNDECIDED
    elif found <= {"velocity_events", "radon_report"}:
        assert set(GENERATION_1) <= set(chosen)
    else:
        assert set(GENERATION_2) <= set(chosen)


@pytest.mark.parametrize(
    "case", [c for c in cases("gen1") if c.name != "no_artifacts"], ids=lambda c: c.name
)
def test_selection_on_generation_1_stores(case: Path) -> None:
    """A kit store written by kymflow's generation 1 selects exactly the generation-1 indexers."""
    assert tuple(select_indexers(case / "dataset.zarr")) == GENERATION_1


def test_selection_follows_tables_and_requests(tmp_path: Path) -> None:
    """kymflow's kym_* tables select generation 2; an empty store is undecided (generation 1
    until its first artifacts); a table without rows says nothing; a request wins."""
    root = make_v2_store(tmp_path / "s.zarr")
    chosen = select_indexers(root)
    assert (tuple(chosen), chosen.reason) == (GENERATION_1, UNDECIDED)
    empty = next(c for c in cases("gen2") if c.name == "g2_test_tiny_ds")
    (root / "tables").mkdir()
    shutil.copy(empty / "expected" / "kym_radon.parquet", root / "tables")
    assert select_indexers(root).reason == UNDECIDED
    assert decide_from_artifacts({"radon/results"}) == GENERATION_2
    assert decide_from_artifacts({"radon_report", "radon/results"}) == (
        *GENERATION_1,
        *GENERATION_2,
    )
    # kymflow's storage library writes metadata.json in records of either generation
    assert decide_from_artifacts({"metadata"}) is None
    assert decide_from_artifacts({"something_else"}) is None
    store = copy_store(empty, tmp_path / "tiny.zarr")
    (store / "tables").mkdir()
    with_rows = next(c for c in cases("gen2") if c.name == "g2_demo_ve")
    for t in GENERATION_2:
        shutil.copy(with_rows / "expected" / f"{t}.parquet", store / "tables")
    assert tuple(select_indexers(store)) == GENERATION_2
    assert tuple(select_indexers(store, ["kym_radon"])) == ("kym_radon",)
    with pytest.raises(KeyError, match="no indexer named 'nope'"):
        make_indexers(["nope"])


def test_json_dump_of_rois_is_order_independent(gen2_store: Path) -> None:
    """The radon hash does not depend on key order in metadata.json (canonical JSON)."""
    rec = ZarrImageRecord(ZarrDataset(gen2_store, "r"), "4c0f6a1e-0001")
    before = radon_params_hash(rec)
    path = gen2_store / "images/4c0f6a1e-0001/analysis/metadata.json"
    doc = json.loads(path.read_text())
    path.write_text(
        json.dumps({"rois": [dict(reversed(list(ROI.items())))], **{"version": doc["version"]}})
    )
    assert radon_params_hash(rec) == before


def test_all_null_extra_column_is_kept_and_valued_ones_leave_with_their_rows(
    gen2_store: Path,
) -> None:
    """An extra column an artifact has, even all-null, is kept (kymflow keeps it); one
    whose values leave with their record's rows leaves too, as in a rebuild."""
    a, b = "4c0f6a1e-0001", "4c0f6a1e-0002"
    kd = _kd(gen2_store)
    frame = gen2_events_frame(2).assign(comment=[None, None], t0_s=[0.1, 0.2])
    write_parquet_artifact(gen2_store, a, "velocity_events/events", frame)
    table = kd.rebuild(KVE)
    assert {"comment", "t0_s"} <= set(table.columns)
    table = kd.update_images(KVE, [b])
    assert {"comment", "t0_s"} <= set(table.columns)
    write_parquet_artifact(gen2_store, a, "velocity_events/events", gen2_events_frame(2))
    table = kd.update_images(KVE, [a])
    assert "t0_s" not in table.columns


def test_an_artifacts_own_image_id_is_replaced_by_the_records(gen2_store: Path) -> None:
    """Rows are named by the record they were read from, whatever image_id column the
    artifact carries (kymflow's generation 1 keeps it and piles rows up on each update)."""
    a = "4c0f6a1e-0001"
    frame = gen2_events_frame(2).assign(image_id=["someone-else", "someone-else"])
    write_parquet_artifact(gen2_store, a, "velocity_events/events", frame)
    write_parquet_artifact(gen2_store, a, "velocity_events", events_frame(2).assign(image_id="x"))
    kd = KymDataset(gen2_store, indexers=make_indexers([*GENERATION_1, KVE]))
    for _ in range(2):
        for table in ("velocity_events", KVE):
            df = kd.update_images(table, [a])
            assert (df["image_id"] == a).sum() == 2, table
            assert "someone-else" not in set(df["image_id"]) and "x" not in set(df["image_id"])
