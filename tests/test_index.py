"""KymDataset and the seed indexers: tables, outcomes, typed columns and batching."""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import zarr

import kymwatch.store.grouped as grouped_module
import kymwatch.store.tables as tables_module
from helpers_store import (
    delete_record,
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    write_csv_gz_artifact,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.errors import (
    ArtifactUnreadableError,
    InvalidNameError,
    ReadOnlyStoreError,
    TableNotFoundError,
    TableUnreadableError,
)
from kymwatch.index import (
    GENERATION_1,
    GENERATION_2,
    DatasetIndexer,
    KymDataset,
    OutcomeStatus,
    RadonReportIndexer,
    RecordOutcome,
    VelocityEventsIndexer,
    default_indexers,
    ensure_image_id_column,
    make_indexers,
    normalize_table_name,
)
from kymwatch.store import ZarrDataset, ZarrImageRecord, read_table_file

PIXELS = np.arange(32, dtype="uint16").reshape(4, 8)
EVENTS = "velocity_events"
RADON = "radon_report"
Logs = list[MutableMapping[str, Any]]


def outcome_of(kd: KymDataset, ref: str, image_id: str) -> RecordOutcome:
    """Re-index one record and return its outcome (the report API the daemon uses)."""
    return kd.update_images_report(ref, [image_id]).outcomes[0]


def _events(logs: Logs, name: str) -> Logs:
    return [e for e in logs if e["event"] == name]


def _dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


def _rows_per_image(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df["image_id"].value_counts().sort_index().items()}


def _plain_records(root: Path, *image_ids: str) -> None:
    for image_id in image_ids:
        write_v2_record(root, image_id)


# -- the seed flow ------------------------------------------------------------------------
def test_seed_flow_rebuild_then_update_one_record(store_path: Path) -> None:
    """Rebuild indexes 3 records; re-indexing one edited record swaps only its rows."""
    ds = ZarrDataset(store_path, "a")
    recs = [ds.add_image(PIXELS, axes=["time", "space"], image_id=f"img{i}") for i in range(3)]
    for i, rec in enumerate(recs):
        rec.save_json(RADON, legacy_radon_report(float(i + 1), note=f"n{i}"))
    for rec in recs[:2]:
        rec.save_df_parquet(EVENTS, events_frame(1))

    kd = KymDataset(store_path)
    events_report = kd.rebuild_report(EVENTS)
    radon_report = kd.rebuild_report(RADON)
    assert len(kd.get_table(EVENTS)) == 2
    assert len(kd.get_table(RADON)) == 3
    assert events_report.count(OutcomeStatus.INDEXED) == 2
    assert events_report.count(OutcomeStatus.MISSING) == 1
    assert radon_report.count(OutcomeStatus.INDEXED) == 3

    radon = kd.get_table(RADON)
    assert list(radon.columns) == [
        "image_id",
        "roi_id",
        "mean_velocity",
        "median_velocity",
        "n_valid",
        "notes",
    ]
    assert radon["image_id"].tolist() == ["img0", "img1", "img2"]
    assert radon["mean_velocity"].tolist() == [1.0, 2.0, 3.0]
    assert radon["median_velocity"].tolist() == [0.5, 1.0, 1.5]
    assert radon["n_valid"].tolist() == [10, 10, 10]
    assert radon["notes"].tolist() == ["n0", "n1", "n2"]

    recs[1].save_df_parquet(EVENTS, events_frame(2, start_s=5.0))
    outcome = outcome_of(kd, EVENTS, "img1")
    assert (outcome.status, outcome.rows) == (OutcomeStatus.INDEXED, 2)
    events = kd.get_table(EVENTS)
    assert len(events) == 3
    assert _rows_per_image(events) == {"img0": 1, "img1": 2}
    assert events[events["image_id"] == "img1"]["t0_s"].tolist() == [5.0, 6.0]

    fresh = KymDataset(store_path, "r")
    pd.testing.assert_frame_equal(fresh.get_table(EVENTS), events)
    pd.testing.assert_frame_equal(fresh.get_table(RADON), radon)


def test_new_keys_win_over_legacy_keys(new_dataset: ZarrDataset) -> None:
    """When a report has both a legacy key and its new name, the new name's value is used."""
    rec = new_dataset.add_image(PIXELS, image_id="r1")
    rec.save_json(RADON, {"vel_mean": 1.0, "mean_velocity": 7.0, "note": "old", "notes": "new"})
    kd = KymDataset(new_dataset.path)
    kd.rebuild_report(RADON)
    row = kd.get_table(RADON).iloc[0]
    assert (row["mean_velocity"], row["notes"]) == (7.0, "new")


# -- stores kymwatch did not write --------------------------------------------------------
def test_plain_v2_store_with_every_artifact_spelling(plain_v2_store: Path) -> None:
    """A plain-file format-2 store indexes every artifact name and format kymflow writes,
    each generation reading its own names (first found wins)."""
    root = plain_v2_store
    _plain_records(root, "a", "b", "c", "d")
    write_parquet_artifact(root, "a", "velocity_events/events", gen2_events_frame(2))
    write_json_artifact(root, "a", RADON, legacy_radon_report(1.5), gz=True)
    write_csv_gz_artifact(root, "b", "velocity_events/events", gen2_events_frame(3))
    write_json_artifact(root, "b", RADON, [legacy_radon_report(2.0, roi_id=r) for r in (1, 2)])
    # c has both spellings of each artifact: the lookup order decides.
    write_parquet_artifact(root, "c", EVENTS, events_frame(1))
    write_parquet_artifact(root, "c", "velocity_events/events", gen2_events_frame(5))
    write_parquet_artifact(root, "c", RADON, pd.DataFrame({"roi_id": [4], "mean_velocity": [4.0]}))
    write_json_artifact(root, "c", RADON, legacy_radon_report(99.0))
    # d has no artifacts at all.

    kd = KymDataset(root, indexers=make_indexers([*GENERATION_1, *GENERATION_2]))
    assert kd.store.zarr_format == 2
    for ix in kd.indexers:
        kd.rebuild_report(ix)

    assert _rows_per_image(kd.get_table(EVENTS)) == {"c": 1}
    kym = kd.get_table("kym_velocity_events")
    assert _rows_per_image(kym) == {"a": 2, "b": 3, "c": 5}
    assert kym[kym["image_id"] == "b"]["t_start_s"].tolist() == [0.0, 1.0, 2.0]
    radon = kd.get_table(RADON)
    assert radon["image_id"].tolist() == ["a", "b", "b", "c"]
    assert radon["roi_id"].tolist() == [1, 1, 2, 4]
    assert radon["mean_velocity"].tolist() == [1.5, 2.0, 2.0, 4.0]
    assert radon["n_valid"].isna().tolist() == [False, False, False, True]
    assert _rows_per_image(kd.get_table("kym_radon")) == {"c": 1}

    assert sorted(p.name for p in (root / "tables").iterdir()) == [
        "kym_radon.parquet",
        "kym_velocity_events.parquet",
        "radon_report.parquet",
        "velocity_events.parquet",
    ]
    assert not (root / "zarr.json").exists()


def test_csv_gz_events_follow_the_parquet_spelling_when_it_goes(plain_v2_store: Path) -> None:
    """With velocity_events/events in both formats, parquet wins; without it, csv.gz is read."""
    root = plain_v2_store
    _plain_records(root, "a")
    pq_file = write_parquet_artifact(root, "a", "velocity_events/events", gen2_events_frame(2))
    write_csv_gz_artifact(root, "a", "velocity_events/events", gen2_events_frame(4))
    kd = KymDataset(root, indexers=make_indexers(GENERATION_2))
    assert outcome_of(kd, "kym_velocity_events", "a").rows == 2
    pq_file.unlink()
    assert outcome_of(kd, "kym_velocity_events", "a").rows == 4


def test_format_3_store_made_by_zarr_is_indexed(store_path: Path) -> None:
    """A format-3 store created with zarr, with artifacts as plain files, is indexed."""
    root_group = zarr.open_group(str(store_path), mode="w", zarr_format=3)
    images = root_group.require_group("images")
    for image_id in ("r2", "r1"):
        group = images.create_group(image_id)
        group.attrs.update({"axes": ["time", "space"], "created_utc": "t", "updated_utc": "t"})
        group.create_array("data", data=PIXELS)
        write_parquet_artifact(store_path, image_id, EVENTS, events_frame(2))
        write_json_artifact(store_path, image_id, RADON, legacy_radon_report(3.0))

    kd = KymDataset(store_path)
    assert kd.store.zarr_format == 3
    kd.rebuild_report(EVENTS)
    kd.rebuild_report(RADON)
    assert _rows_per_image(kd.get_table(EVENTS)) == {"r1": 2, "r2": 2}
    assert kd.get_table(RADON)["mean_velocity"].tolist() == [3.0, 3.0]


# -- outcomes -----------------------------------------------------------------------------
@pytest.fixture
def indexed(plain_v2_store: Path) -> KymDataset:
    """Records r1 (3 events, 1 report row) and r2 (1 event, 1 report row), both tables built."""
    root = plain_v2_store
    _plain_records(root, "r1", "r2")
    write_parquet_artifact(root, "r1", EVENTS, events_frame(3))
    write_parquet_artifact(root, "r2", EVENTS, events_frame(1))
    write_json_artifact(root, "r1", RADON, legacy_radon_report(1.0))
    write_json_artifact(root, "r2", RADON, legacy_radon_report(2.0))
    kd = KymDataset(root)
    kd.rebuild_report(EVENTS)
    kd.rebuild_report(RADON)
    return kd


def _truncate_events(root: Path) -> str:
    path = write_parquet_artifact(root, "r1", EVENTS, events_frame(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _broken_json(root: Path) -> str:
    return str(write_file(root / "images/r1/analysis/radon_report.json", b'{"vel_mean": 1.0,'))


@pytest.mark.parametrize(
    ("table", "damage"),
    [(EVENTS, _truncate_events), (RADON, _broken_json)],
    ids=["truncated-parquet", "json-syntax-error"],
)
def test_unreadable_artifact_keeps_old_rows(
    indexed: KymDataset, captured_logs: Logs, table: str, damage: Callable[[Path], str]
) -> None:
    """An artifact that cannot be parsed logs artifact_unreadable and keeps the record's rows."""
    before = indexed.get_table(table).copy()
    path = damage(indexed.path)
    outcome = outcome_of(indexed, table, "r1")

    assert outcome.status is OutcomeStatus.UNREADABLE
    assert outcome.keeps_old_rows
    pd.testing.assert_frame_equal(indexed.get_table(table), before)
    pd.testing.assert_frame_equal(KymDataset(indexed.path, "r").get_table(table), before)
    [event] = _events(captured_logs, "artifact_unreadable")
    assert event["image_id"] == "r1"
    assert event["indexer"] == table
    assert event["path"] == path
    assert event["error"]
    assert event["kept_rows"] == _rows_per_image(before)["r1"]
    assert event["log_level"] == "warning"


def test_unreadable_artifact_on_first_sight_adds_no_rows(
    plain_v2_store: Path, captured_logs: Logs
) -> None:
    """A record whose only artifact is unreadable from the start has no rows and 0 kept_rows."""
    _plain_records(plain_v2_store, "r1")
    write_file(plain_v2_store / "images/r1/analysis/radon_report.json", b"{")
    kd = KymDataset(plain_v2_store)
    report = kd.rebuild_report(RADON)
    assert report.count(OutcomeStatus.UNREADABLE) == 1
    assert len(kd.get_table(RADON)) == 0
    assert _events(captured_logs, "artifact_unreadable")[0]["kept_rows"] == 0


def test_rebuild_keeps_rows_of_unreadable_artifacts(indexed: KymDataset) -> None:
    """A full rebuild also keeps the old rows of a record whose artifact is unreadable."""
    before = indexed.get_table(EVENTS).copy()
    _truncate_events(indexed.path)
    report = indexed.rebuild_report(EVENTS)
    assert report.count(OutcomeStatus.UNREADABLE) == 1
    pd.testing.assert_frame_equal(indexed.get_table(EVENTS), before)


@pytest.mark.parametrize("obj", [42, "text", 1.5, None, [1, 2], [{"notes": "a"}, 3]])
def test_json_of_the_wrong_shape_is_invalid(
    indexed: KymDataset, captured_logs: Logs, obj: Any
) -> None:
    """A radon report that parses but is not an object (or a list of objects) is invalid."""
    before = indexed.get_table(RADON).copy()
    path = write_json_artifact(indexed.path, "r1", RADON, obj)
    outcome = outcome_of(indexed, RADON, "r1")

    assert outcome.status is OutcomeStatus.INVALID
    assert (outcome.path, outcome.rows) == (str(path), 1)
    pd.testing.assert_frame_equal(indexed.get_table(RADON), before)
    [event] = _events(captured_logs, "artifact_invalid")
    assert (event["image_id"], event["indexer"], event["path"]) == ("r1", RADON, str(path))
    assert event["kept_rows"] == 1
    assert event["log_level"] == "warning"


@pytest.mark.parametrize(
    ("frame", "column"),
    [
        (events_frame(2).assign(t0_s=["abc", "def"]), "t0_s"),
        (events_frame(2).assign(roi_id=[1.5, 2.5]), "roi_id"),
        (events_frame(2).assign(roi_id=["one", "two"]), "roi_id"),
    ],
    ids=["t0_s-strings", "roi_id-fractional", "roi_id-strings"],
)
def test_values_that_do_not_fit_cost_no_rows(
    indexed: KymDataset, captured_logs: Logs, frame: pd.DataFrame, column: str
) -> None:
    """A value that does not fit its column becomes null: the record keeps its rows and
    the column is logged once (value_coerced) with the count."""
    write_parquet_artifact(indexed.path, "r1", EVENTS, frame)
    outcome = outcome_of(indexed, EVENTS, "r1")

    assert outcome.status is OutcomeStatus.INDEXED
    rows = indexed.get_table(EVENTS).query("image_id == 'r1'")
    assert len(rows) == 2
    assert rows[column].isna().all()
    [event] = _events(captured_logs, "value_coerced")
    assert (event["image_id"], event["column"], event["count"]) == ("r1", column, 2)


def test_missing_column_is_null_not_invalid(indexed: KymDataset) -> None:
    """Events without t0_s keep their rows (kymflow keeps them, with nulls)."""
    write_parquet_artifact(indexed.path, "r1", EVENTS, events_frame(2).drop(columns=["t0_s"]))
    assert outcome_of(indexed, EVENTS, "r1").status is OutcomeStatus.INDEXED
    assert indexed.get_table(EVENTS).query("image_id == 'r1'")["t0_s"].isna().all()


def test_nested_json_value_in_a_text_column_is_kept_as_json(indexed: KymDataset) -> None:
    """A radon ``notes`` holding an object is kept as its JSON text (kymflow keeps it)."""
    write_json_artifact(indexed.path, "r1", RADON, {"mean_velocity": 1.0, "notes": {"a": 1}})
    assert outcome_of(indexed, RADON, "r1").status is OutcomeStatus.INDEXED
    notes = indexed.get_table(RADON).query("image_id == 'r1'")["notes"].tolist()
    assert notes == ['{"a": 1}']


def test_extra_and_absent_optional_columns_are_conformed(indexed: KymDataset) -> None:
    """Undeclared artifact columns are dropped and absent optional ones become nulls."""
    frame = events_frame(2).drop(columns=["kind", "score"]).assign(extra=["x", "y"])
    write_parquet_artifact(indexed.path, "r1", EVENTS, frame)
    assert outcome_of(indexed, EVENTS, "r1").status is OutcomeStatus.INDEXED
    rows = indexed.get_table(EVENTS).query("image_id == 'r1'")
    assert "extra" not in rows.columns
    assert rows["kind"].isna().all()
    assert rows["score"].isna().all()


def test_missing_artifact_is_logged_and_removes_rows(
    indexed: KymDataset, captured_logs: Logs
) -> None:
    """A deleted artifact logs artifact_missing with what was looked for, and drops the rows."""
    (indexed.path / "images/r1/analysis/velocity_events.parquet").unlink()
    outcome = outcome_of(indexed, EVENTS, "r1")

    assert outcome.status is OutcomeStatus.MISSING
    expected = ("velocity_events.parquet",)
    assert outcome.keys == expected
    assert _rows_per_image(indexed.get_table(EVENTS)) == {"r2": 1}
    [event] = _events(captured_logs, "artifact_missing")
    assert event["image_id"] == "r1"
    assert event["indexer"] == EVENTS
    assert event["looked_for"] == list(expected)


def test_missing_radon_report_lists_every_format(indexed: KymDataset, captured_logs: Logs) -> None:
    """A missing radon report names the parquet, JSON and legacy JSON files looked for."""
    (indexed.path / "images/r2/analysis/radon_report.json").unlink()
    outcome_of(indexed, RADON, "r2")
    [event] = _events(captured_logs, "artifact_missing")
    assert event["looked_for"] == [
        "radon_report.parquet",
        "radon_report.json",
        "radon_report.json.gz",
    ]
    assert indexed.get_table(RADON)["image_id"].tolist() == ["r1"]


def test_deleted_record_is_logged_and_removes_rows(
    indexed: KymDataset, captured_logs: Logs
) -> None:
    """Re-indexing a record whose folder is gone logs record_removed and drops its rows."""
    delete_record(indexed.path, "r1")
    for table in (EVENTS, RADON):
        outcome = outcome_of(indexed, table, "r1")
        assert outcome.status is OutcomeStatus.REMOVED
        assert indexed.get_table(table)["image_id"].unique().tolist() == ["r2"]
    events = _events(captured_logs, "record_removed")
    assert [(e["image_id"], e["indexer"]) for e in events] == [("r1", EVENTS), ("r1", RADON)]


def test_indexed_records_are_logged_at_debug(indexed: KymDataset, captured_logs: Logs) -> None:
    """Each indexed record logs record_indexed (debug) and each call one table_updated."""
    indexed.update_images_report(EVENTS, ["r1", "r2"])
    indexed_events = _events(captured_logs, "record_indexed")
    assert [(e["image_id"], e["rows"], e["log_level"]) for e in indexed_events] == [
        ("r1", 3, "debug"),
        ("r2", 1, "debug"),
    ]
    [updated] = _events(captured_logs, "table_updated")
    assert updated["table"] == EVENTS
    assert updated["indexer"] == EVENTS
    assert (updated["records"], updated["rows"]) == (2, 4)
    assert isinstance(updated["duration_ms"], float)


def test_log_outcomes_false_logs_only_the_table_line(
    indexed: KymDataset, captured_logs: Logs
) -> None:
    """With log_outcomes=False the caller gets outcomes in the report and no per-record events."""
    report = indexed.update_images_report(EVENTS, ["r1", "r2"], log_outcomes=False)
    assert [e["event"] for e in captured_logs] == ["table_updated"]
    assert [o.image_id for o in report.outcomes] == ["r1", "r2"]


def test_one_bad_record_does_not_stop_the_others(indexed: KymDataset) -> None:
    """In one batch a broken record keeps its rows while the others are re-indexed."""
    _truncate_events(indexed.path)
    write_parquet_artifact(indexed.path, "r2", EVENTS, events_frame(4))
    report = indexed.update_images_report(EVENTS, ["r1", "r2"])
    statuses = {o.image_id: o.status for o in report.outcomes}
    assert statuses == {"r1": OutcomeStatus.UNREADABLE, "r2": OutcomeStatus.INDEXED}
    assert _rows_per_image(indexed.get_table(EVENTS)) == {"r1": 3, "r2": 4}
    assert report.rows_written == 4


# -- typed columns and order --------------------------------------------------------------
@pytest.mark.parametrize("indexer", default_indexers(), ids=lambda ix: ix.name)
def test_table_dtypes_match_declared_columns(plain_v2_store: Path, indexer: DatasetIndexer) -> None:
    """Columns and dtypes equal the declaration: empty, rebuilt, updated and reloaded."""
    root = plain_v2_store
    declared = dict(indexer.columns)
    _plain_records(root, "c", "a", "b")
    for image_id in ("c", "a"):
        write_parquet_artifact(root, image_id, EVENTS, events_frame(2))
        write_json_artifact(root, image_id, RADON, {"vel_mean": 1, "vel_n_valid": 3.0})

    kd = KymDataset(root)
    assert _dtypes(kd.get_table(indexer.table_name)) == declared  # not built yet
    kd.rebuild_report(indexer)
    assert _dtypes(kd.get_table(indexer.table_name)) == declared
    assert list(kd.get_table(indexer.table_name).columns) == indexer.required_columns()

    write_parquet_artifact(root, "b", EVENTS, events_frame(1))
    write_json_artifact(root, "b", RADON, [{"roi_id": 2, "note": 5}])
    outcome_of(kd, indexer, "b")
    assert _dtypes(kd.get_table(indexer.table_name)) == declared

    fresh = KymDataset(root, "r")
    assert _dtypes(fresh.get_table(indexer.table_name)) == declared
    on_disk = read_table_file(kd.store.table_path(indexer.table_name))
    assert _dtypes(on_disk) == declared


def test_tables_are_sorted_by_image_id(plain_v2_store: Path) -> None:
    """Whatever order records are indexed in, the table is sorted by image_id (stable)."""
    root = plain_v2_store
    ids = ["m", "z", "a", "q"]
    _plain_records(root, *ids)
    for i, image_id in enumerate(ids):
        write_parquet_artifact(root, image_id, EVENTS, events_frame(2, start_s=10.0 * i))
    kd = KymDataset(root)
    kd.update_images_report(EVENTS, ["z", "m"])
    kd.update_images_report(EVENTS, ["q"])
    outcome_of(kd, EVENTS, "a")
    outcome_of(kd, EVENTS, "m")
    table = kd.get_table(EVENTS)
    assert table["image_id"].tolist() == ["a", "a", "m", "m", "q", "q", "z", "z"]
    assert table["t0_s"].tolist() == [20.0, 21.0, 0.0, 1.0, 30.0, 31.0, 10.0, 11.0]
    assert table.index.tolist() == list(range(8))


# -- batching -----------------------------------------------------------------------------
@pytest.fixture
def table_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every table file KymDataset writes, in order (wraps its write_table_arrow and its
    write_grouped, the two ways a table file is written)."""
    written: list[Path] = []
    real, real_grouped = tables_module.write_table_arrow, grouped_module.write_grouped

    def counting(path: Path, table: pa.Table, **kwargs: Any) -> Any:
        written.append(path)
        return real(path, table, **kwargs)

    def counting_grouped(path: Path, st: Any, **kwargs: Any) -> Any:
        written.append(path)
        return real_grouped(path, st, **kwargs)

    monkeypatch.setattr(tables_module, "write_table_arrow", counting)
    monkeypatch.setattr(grouped_module, "write_grouped", counting_grouped)
    return written


def test_update_images_writes_the_table_once_per_batch(
    plain_v2_store: Path, table_writes: list[Path], captured_logs: Logs
) -> None:
    """Re-indexing 100 records in one call reads and writes the table exactly once."""
    root = plain_v2_store
    ids = [f"rec{i:03d}" for i in range(100)]
    for image_id in ids:
        (root / "images" / image_id).mkdir()
        write_parquet_artifact(root, image_id, EVENTS, events_frame(2))
    kd = KymDataset(root)

    report = kd.update_images_report(EVENTS, reversed(ids))
    assert table_writes == [kd.store.table_path(EVENTS)]
    assert report.table_written
    assert report.count(OutcomeStatus.INDEXED) == 100
    assert (report.rows_written, report.table_rows) == (200, 200)
    assert len(_events(captured_logs, "table_updated")) == 1

    report = kd.rebuild_report(EVENTS)
    assert len(table_writes) == 2
    assert len(kd.get_table(EVENTS)) == 200


def test_update_that_changes_nothing_does_not_rewrite(
    indexed: KymDataset, table_writes: list[Path]
) -> None:
    """Re-indexing records whose rows are unchanged leaves the table file untouched."""
    path = indexed.store.table_path(EVENTS)
    before = os.stat(path)
    (indexed.path / "images" / "r3").mkdir()  # a record with no artifact and no rows

    report = indexed.update_images_report(EVENTS, ["r1", "r2", "r3"])
    assert not report.table_written
    assert table_writes == []
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert report.table_rows == 4


def test_first_update_creates_an_empty_typed_table(plain_v2_store: Path) -> None:
    """An update on a store with no table writes one, even when it has no rows."""
    _plain_records(plain_v2_store, "r1")
    kd = KymDataset(plain_v2_store)
    assert kd.update_images_report(EVENTS, ["r1"]).table_written
    on_disk = read_table_file(kd.store.table_path(EVENTS))
    assert len(on_disk) == 0
    assert _dtypes(on_disk) == dict(VelocityEventsIndexer.columns)


def test_table_written_by_another_instance_is_reread(indexed: KymDataset) -> None:
    """A KymDataset notices when another writer replaced a table file and reads it again."""
    other = KymDataset(indexed.path)
    write_parquet_artifact(indexed.path, "r2", EVENTS, events_frame(6))
    outcome_of(other, EVENTS, "r2")
    assert _rows_per_image(indexed.get_table(EVENTS)) == {"r1": 3, "r2": 6}
    # And a batch in the first instance builds on the other's rows rather than its cache.
    outcome_of(indexed, EVENTS, "r1")
    assert _rows_per_image(KymDataset(indexed.path, "r").get_table(EVENTS)) == {"r1": 3, "r2": 6}


# -- API surface --------------------------------------------------------------------------
def test_read_only_kymdataset_refuses_updates(indexed: KymDataset) -> None:
    """A KymDataset opened with mode "r" reads tables but every update raises PermissionError."""
    ro = KymDataset(indexed.path, "r")
    assert len(ro.get_table(EVENTS)) == 4
    attempts: list[Callable[[], object]] = [
        lambda: outcome_of(ro, EVENTS, "r1"),
        lambda: ro.update_images_report(EVENTS, ["r1"]),
        lambda: ro.rebuild_report(RADON),
        lambda: ro.save_table(EVENTS, ro.get_table(EVENTS)),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyStoreError) as info:
            attempt()
        assert isinstance(info.value, PermissionError)


def test_load_tables_and_unknown_names(indexed: KymDataset) -> None:
    """load_tables returns indexer and on-disk tables; unknown tables and indexers raise."""
    indexed.save_table("extra", pd.DataFrame({"image_id": ["r1"], "x": [1]}))
    tables = indexed.load_tables()
    assert sorted(tables) == ["extra", RADON, EVENTS]
    assert len(tables[RADON]) == 2
    with pytest.raises(TableNotFoundError):
        indexed.get_table("nope")
    with pytest.raises(KeyError):
        outcome_of(indexed, "nope", "r1")
    assert isinstance(indexed.indexer(RADON), RadonReportIndexer)
    assert indexed.indexer(indexed.indexers[0]) is indexed.indexers[0]


def test_save_all_tables_rewrites_cached_tables(indexed: KymDataset) -> None:
    """save_all_tables writes every cached table back to disk."""
    indexed.load_tables()
    for name in (EVENTS, RADON):
        indexed.store.table_path(name).unlink()
    indexed.save_all_tables()
    assert sorted(indexed.store.list_table_names()) == [RADON, EVENTS]


def test_seed_indexers_satisfy_the_protocol() -> None:
    """The seed indexers are DatasetIndexers reading the artifact names they declare."""
    for ix in default_indexers():
        assert isinstance(ix, DatasetIndexer)
        assert ix.required_columns()[0] == "image_id"
    assert VelocityEventsIndexer().artifact_names == {EVENTS}
    assert RadonReportIndexer().artifact_names == {RADON}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("radon_report", "radon_report"),
        ("Radon Report", "radon_report"),
        ("  Velocity-Events  ", "velocity_events"),
        ("a__b--c", "a_b_c"),
        ("_t_", "t"),
        ("Table 2", "table_2"),
    ],
)
def test_normalize_table_name(raw: str, expected: str) -> None:
    """normalize_table_name lower-cases and collapses other characters into single "_"."""
    assert normalize_table_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "!!!", "___"])
def test_normalize_table_name_rejects_empty_results(raw: str) -> None:
    """A name with nothing usable left raises InvalidNameError."""
    with pytest.raises(InvalidNameError):
        normalize_table_name(raw)


def test_ensure_image_id_column_adds_it_first() -> None:
    """ensure_image_id_column puts a string image_id column first without touching the input."""
    df = pd.DataFrame({"a": [1, 2]}, index=[5, 7])
    out = ensure_image_id_column(df, "r1")
    assert list(out.columns) == ["image_id", "a"]
    assert out["image_id"].tolist() == ["r1", "r1"]
    assert str(out["image_id"].dtype) == "string"
    assert out.index.tolist() == [5, 7]
    assert list(df.columns) == ["a"]


def test_ensure_image_id_column_overrides_existing_values() -> None:
    """An existing image_id column (anywhere, any values) is replaced and moved first."""
    df = pd.DataFrame({"a": [1], "image_id": ["wrong"], "b": [2]})
    out = ensure_image_id_column(df, "r1")
    assert list(out.columns) == ["image_id", "a", "b"]
    assert out["image_id"].tolist() == ["r1"]
    assert df["image_id"].tolist() == ["wrong"]


def test_ensure_image_id_column_on_empty_frame() -> None:
    """An empty frame gets a typed, empty image_id column."""
    out = ensure_image_id_column(pd.DataFrame(), "r1")
    assert list(out.columns) == ["image_id"]
    assert len(out) == 0
    assert str(out["image_id"].dtype) == "string"


def test_rebuild_replaces_a_corrupt_table_file(indexed: KymDataset, captured_logs: Logs) -> None:
    """A table file that no longer parses blocks updates, but a rebuild logs and replaces it."""
    path = indexed.store.table_path(EVENTS)
    path.write_bytes(path.read_bytes()[:40])
    kd = KymDataset(indexed.path)
    with pytest.raises(TableUnreadableError):
        outcome_of(kd, EVENTS, "r1")

    report = kd.rebuild_report(EVENTS)
    assert report.table_written
    assert _rows_per_image(KymDataset(indexed.path, "r").get_table(EVENTS)) == {"r1": 3, "r2": 1}
    [event] = _events(captured_logs, "table_unreadable")
    assert (event["table"], event["path"], event["log_level"]) == (EVENTS, str(path), "warning")


class _DeletesRecordWhileReading(VelocityEventsIndexer):
    """Simulates a record folder removed while its artifact is being read."""

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        delete_record(rec.dataset.path, rec.image_id)
        raise ArtifactUnreadableError(rec.image_id, EVENTS, "gone", "No such file or directory")


def test_record_removed_while_read_is_removed_not_unreadable(indexed: KymDataset) -> None:
    """A read that fails because the record vanished meanwhile drops the rows (record_removed)."""
    kd = KymDataset(indexed.path, indexers=[_DeletesRecordWhileReading()])
    outcome = outcome_of(kd, EVENTS, "r1")
    assert outcome.status is OutcomeStatus.REMOVED
    assert _rows_per_image(kd.get_table(EVENTS)) == {"r2": 1}


def test_legacy_keys_are_read_per_row(indexed: KymDataset) -> None:
    """In a radon list, each row reads a key, else its legacy name (rows may differ)."""
    rows = [{"vel_mean": 1.0, "note": "old"}, {"mean_velocity": 2.0, "vel_mean": 9.0}]
    write_json_artifact(indexed.path, "r1", RADON, rows)
    table = indexed.update_images(RADON, ["r1"]).query("image_id == 'r1'")
    assert table["mean_velocity"].tolist() == [1.0, 2.0]
    assert table["notes"].tolist()[0] == "old"


def test_save_table_without_a_frame_writes_the_cached_table(indexed: KymDataset) -> None:
    """kymflow's ``save_table(name)`` writes the cached table; an unloaded one is a KeyError."""
    table = indexed.get_table(EVENTS)
    (indexed.path / "tables" / f"{EVENTS}.parquet").unlink()
    indexed.save_table(EVENTS)
    pd.testing.assert_frame_equal(
        read_table_file(indexed.path / "tables" / f"{EVENTS}.parquet"), table
    )
    with pytest.raises(KeyError):
        KymDataset(indexed.path).save_table("not_loaded")
