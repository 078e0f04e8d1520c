"""ZarrDataset and ZarrImageRecord: opening, formats, artifacts, tables and read-only mode."""

from __future__ import annotations

import gzip
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import zarr

from helpers_store import (
    events_frame,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.errors import (
    ArtifactNotFoundError,
    ArtifactUnreadableError,
    InvalidNameError,
    KymwatchError,
    NotAStoreError,
    ReadOnlyStoreError,
    RecordNotFoundError,
    StoreNotFoundError,
    TableNotFoundError,
)
from kymwatch.store import ArtifactFormat, ZarrDataset, ZarrImageRecord

PIXELS = np.arange(32, dtype="uint16").reshape(4, 8)


def _open_zarr_group(path: Path, zarr_format: int) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        return zarr.open_group(str(path), mode="r", zarr_format=zarr_format)  # type: ignore[arg-type]


# -- opening and formats ------------------------------------------------------------------
def test_created_store_is_zarr_format_2_and_zarr_reads_it(store_path: Path) -> None:
    """A store ZarrDataset creates is zarr format 2 (.zgroup) that zarr opens with format 2."""
    ds = ZarrDataset(store_path, "a")
    rec = ds.add_image(PIXELS, axes=["time", "space"], image_id="r1")
    rec.save_json("radon_report", {"vel_mean": 1.0})

    assert ds.zarr_format == 2
    assert (store_path / ".zgroup").is_file()
    assert (store_path / "images" / "r1" / ".zgroup").is_file()
    assert not (store_path / "zarr.json").exists()
    group = _open_zarr_group(store_path, 2)
    np.testing.assert_array_equal(group["images/r1/data"][...], PIXELS)
    assert group["images/r1"].attrs["axes"] == ["time", "space"]


def test_add_image_writes_record_attrs(new_dataset: ZarrDataset) -> None:
    """add_image stores axes, created_utc and updated_utc and the pixels under data/."""
    rec = new_dataset.add_image(PIXELS, axes=["time", "space"], image_id="r1")
    assert set(rec.attrs) >= {"axes", "created_utc", "updated_utc"}
    assert rec.attrs["axes"] == ["time", "space"]
    np.testing.assert_array_equal(rec.load_array(), PIXELS)
    assert new_dataset.list_image_ids() == ["r1"]


def test_add_image_default_id_and_axes(new_dataset: ZarrDataset) -> None:
    """Without an id a record gets a fresh uuid4 hex id and dim_<i> axis names."""
    rec = new_dataset.add_image(PIXELS)
    assert len(rec.image_id) == 32
    assert rec.attrs["axes"] == ["dim_0", "dim_1"]


def test_add_image_rejects_wrong_axes(new_dataset: ZarrDataset) -> None:
    """An axes list that does not match the array's dimensions is a ValueError."""
    with pytest.raises(ValueError, match="axes"):
        new_dataset.add_image(PIXELS, axes=["t"])


def test_plain_v2_store_opens_and_reads(plain_v2_store: Path) -> None:
    """A format-2 store written with plain file I/O opens, lists records and reads them."""
    write_v2_record(plain_v2_store, "r2", created_utc="2026-01-01T00:00:00+00:00")
    write_v2_record(plain_v2_store, "r1")
    ds = ZarrDataset(plain_v2_store, "r")
    assert ds.zarr_format == 2
    assert ds.list_image_ids() == ["r1", "r2"]
    rec = ds.record("r2")
    assert rec.attrs["created_utc"] == "2026-01-01T00:00:00+00:00"
    assert rec.attrs["axes"] == ["time", "space"]
    np.testing.assert_array_equal(rec.load_array(), PIXELS)


def test_format_3_store_made_by_zarr_is_read(store_path: Path) -> None:
    """A format-3 store created by zarr itself opens, with record attrs from zarr.json."""
    root = zarr.open_group(str(store_path), mode="w", zarr_format=3)
    group = root.require_group("images").create_group("r1")
    group.attrs.update({"axes": ["time", "space"], "created_utc": "x", "updated_utc": "y"})
    group.create_array("data", data=PIXELS)

    ds = ZarrDataset(store_path, "r")
    assert ds.zarr_format == 3
    assert ds.list_image_ids() == ["r1"]
    assert ds.record("r1").attrs["created_utc"] == "x"
    np.testing.assert_array_equal(ds.record("r1").load_array(), PIXELS)


def test_create_format_3_when_asked(store_path: Path) -> None:
    """zarr_format=3 creates a zarr.json store, and reopening detects format 3."""
    ZarrDataset(store_path, "a", zarr_format=3).add_image(PIXELS, image_id="r1")
    assert (store_path / "zarr.json").is_file()
    assert ZarrDataset(store_path, "r").zarr_format == 3


def test_missing_path_in_read_mode_is_store_not_found(tmp_path: Path) -> None:
    """Opening a path that does not exist with mode "r" raises StoreNotFoundError."""
    with pytest.raises(StoreNotFoundError) as info:
        ZarrDataset(tmp_path / "nope", "r")
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("mode", ["r", "a", "w"])
def test_folder_with_files_is_not_a_store(tmp_path: Path, mode: Any) -> None:
    """A non-empty folder that is not a Zarr group raises NotAStoreError and is left alone."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAStoreError) as info:
        ZarrDataset(tmp_path, mode)
    assert isinstance(info.value, ValueError)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_file_path_is_not_a_store(tmp_path: Path) -> None:
    """A path to a regular file is not a store, in any mode."""
    f = tmp_path / "file.zarr"
    f.write_text("x")
    for mode in ("r", "a"):
        with pytest.raises(NotAStoreError):
            ZarrDataset(f, mode)


def test_empty_folder_becomes_a_store(tmp_path: Path) -> None:
    """Mode "a" on an existing empty folder creates the dataset in it."""
    ds = ZarrDataset(tmp_path, "a")
    assert (tmp_path / ".zgroup").is_file()
    assert (tmp_path / "images").is_dir()
    assert ds.list_image_ids() == []


def test_mode_w_recreates_an_existing_store(new_dataset: ZarrDataset) -> None:
    """Mode "w" on an existing dataset removes its records and starts empty."""
    new_dataset.add_image(PIXELS, image_id="r1")
    again = ZarrDataset(new_dataset.path, "w")
    assert again.list_image_ids() == []


def test_bad_mode_is_rejected(store_path: Path) -> None:
    """Only the modes "r", "a" and "w" exist."""
    with pytest.raises(ValueError, match="mode"):
        ZarrDataset(store_path, "x")  # type: ignore[arg-type]


def test_record_lookup_errors(new_dataset: ZarrDataset) -> None:
    """record() raises RecordNotFoundError for an absent id and InvalidNameError for a bad one."""
    with pytest.raises(RecordNotFoundError) as info:
        new_dataset.record("r9")
    assert isinstance(info.value, FileNotFoundError)
    for bad in ("../x", "a/../b", ".hidden"):
        with pytest.raises(InvalidNameError):
            new_dataset.record(bad)
        with pytest.raises(InvalidNameError):
            new_dataset.add_image(PIXELS, image_id=bad)
    assert not (new_dataset.path / "x").exists()
    assert new_dataset.list_image_ids() == []


def test_delete_image_removes_the_record(new_dataset: ZarrDataset) -> None:
    """delete_image removes the record folder and its artifacts."""
    new_dataset.add_image(PIXELS, image_id="r1").save_json("radon_report", {})
    new_dataset.delete_image("r1")
    assert new_dataset.list_image_ids() == []
    with pytest.raises(RecordNotFoundError):
        new_dataset.delete_image("r1")


def test_list_image_ids_skips_hidden_and_files(plain_v2_store: Path) -> None:
    """Only record folders with valid ids are listed, sorted."""
    for image_id in ("b", "a"):
        write_v2_record(plain_v2_store, image_id)
    (plain_v2_store / "images" / ".trash").mkdir()
    (plain_v2_store / "images" / "stray.txt").write_text("x")
    assert ZarrDataset(plain_v2_store, "r").list_image_ids() == ["a", "b"]


# -- artifacts ----------------------------------------------------------------------------
@pytest.fixture
def record(new_dataset: ZarrDataset) -> ZarrImageRecord:
    """A record with pixels and no artifacts."""
    return new_dataset.add_image(PIXELS, axes=["time", "space"], image_id="r1")


def test_missing_artifact_names_record_and_key(record: ZarrImageRecord) -> None:
    """Reading an absent artifact raises ArtifactNotFoundError naming the record and the key."""
    with pytest.raises(ArtifactNotFoundError) as info:
        record.load_json("velocity_events/summary")
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert isinstance(err, KymwatchError)
    assert (err.image_id, err.key) == ("r1", "velocity_events/summary")
    assert err.looked_for == ("velocity_events/summary.json", "velocity_events/summary.json.gz")
    assert "r1" in str(err)
    assert "velocity_events/summary" in str(err)
    with pytest.raises(ArtifactNotFoundError):
        record.load_df_parquet("x")
    with pytest.raises(ArtifactNotFoundError):
        record.load_df_csv_gz("x")


def test_nested_artifact_names_round_trip(record: ZarrImageRecord) -> None:
    """Artifact names with "/" are stored in sub-folders and read back in every format."""
    df = events_frame(3)
    p_json = record.save_json("velocity_events/summary", {"n": 3})
    p_parquet = record.save_df_parquet("velocity_events/events", df)
    p_csv = record.save_df_csv_gz("velocity_events/events", df)

    analysis = record.analysis_path
    assert p_json == analysis / "velocity_events" / "summary.json"
    assert p_parquet == analysis / "velocity_events" / "events.parquet"
    assert p_csv == analysis / "velocity_events" / "events.csv.gz"
    assert record.load_json("velocity_events/summary") == {"n": 3}
    pd.testing.assert_frame_equal(record.load_df_parquet("velocity_events/events"), df)
    pd.testing.assert_frame_equal(record.load_df_csv_gz("velocity_events/events"), df)
    assert record.list_analysis_keys() == ["velocity_events/events", "velocity_events/summary"]


@pytest.mark.parametrize("bad", ["../x", "a/../b", ".hidden", "a/.b", ""])
def test_invalid_artifact_names_are_refused(record: ZarrImageRecord, bad: str) -> None:
    """Reads and writes with a traversal or hidden artifact name raise InvalidNameError."""
    with pytest.raises(InvalidNameError):
        record.save_json(bad, {})
    with pytest.raises(InvalidNameError):
        record.load_json(bad)
    with pytest.raises(InvalidNameError):
        record.save_df_parquet(bad, events_frame(1))
    assert not (record.path / "x.json").exists()
    assert not (record.dataset.images_path / "x.json").exists()


def test_legacy_json_gz_is_a_read_fallback(record: ZarrImageRecord) -> None:
    """load_json reads ``<name>.json.gz`` when no ``.json`` exists, and prefers ``.json``."""
    root = record.dataset.path
    write_json_artifact(root, "r1", "radon_report", {"v": "gz"}, gz=True)
    assert record.load_json("radon_report") == {"v": "gz"}
    write_json_artifact(root, "r1", "radon_report", {"v": "plain"})
    assert record.load_json("radon_report") == {"v": "plain"}


def test_find_artifact_tries_formats_in_order(record: ZarrImageRecord) -> None:
    """find_artifact returns the first existing format in the order given."""
    record.save_json("radon_report", {})
    record.save_df_parquet("radon_report", pd.DataFrame({"a": [1]}))
    found = record.find_artifact("radon_report", [ArtifactFormat.JSON, ArtifactFormat.PARQUET])
    assert found is not None and found[1] is ArtifactFormat.JSON
    found = record.find_artifact("radon_report", [ArtifactFormat.PARQUET, ArtifactFormat.JSON])
    assert found is not None and found[1] is ArtifactFormat.PARQUET
    assert record.find_artifact("radon_report", [ArtifactFormat.CSV_GZ]) is None


@pytest.mark.parametrize(
    ("file_name", "content", "load"),
    [
        ("x.json", b'{"a": 1,', "load_json"),
        ("x.json.gz", b"not gzip", "load_json"),
        ("x.json.gz", gzip.compress(b'{"a": 1}')[:-6], "load_json"),
        ("x.parquet", b"PAR1 nonsense", "load_df_parquet"),
        ("x.csv.gz", b"not gzip", "load_df_csv_gz"),
        ("x.csv.gz", gzip.compress(b""), "load_df_csv_gz"),
    ],
)
def test_corrupt_artifacts_are_unreadable(
    record: ZarrImageRecord, file_name: str, content: bytes, load: str
) -> None:
    """A file that exists but cannot be parsed raises ArtifactUnreadableError with its path."""
    path = record.analysis_path / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(ArtifactUnreadableError) as info:
        getattr(record, load)("x")
    assert info.value.path == str(path)
    assert (info.value.image_id, info.value.key) == ("r1", "x")


def test_truncated_parquet_is_unreadable(record: ZarrImageRecord) -> None:
    """A parquet file cut in half (a writer caught mid-write) is unreadable, not empty."""
    path = record.save_df_parquet("x", events_frame(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactUnreadableError):
        record.load_df_parquet("x")


def test_symlinked_artifact_is_not_followed(record: ZarrImageRecord, tmp_path: Path) -> None:
    """An artifact that is a symbolic link is refused as unreadable."""
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = record.analysis_path / "x.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(ArtifactUnreadableError, match="symbolic"):
        record.load_json("x")


def test_delete_artifact_removes_every_format(record: ZarrImageRecord) -> None:
    """delete_artifact removes all files of one name and nothing else."""
    record.save_json("radon_report", {})
    record.save_df_parquet("radon_report", pd.DataFrame({"a": [1]}))
    record.save_json("other", {})
    removed = record.delete_artifact("radon_report")
    assert sorted(p.name for p in removed) == ["radon_report.json", "radon_report.parquet"]
    assert record.list_analysis_keys() == ["other"]


def test_array_artifact_round_trips(record: ZarrImageRecord) -> None:
    """An array artifact lands under analysis_arrays/<name>/data in the store's format."""
    path = record.save_array_artifact("kym/filtered", PIXELS * 2)
    assert path == record.path / "analysis_arrays" / "kym" / "filtered" / "data"
    assert (path / ".zarray").is_file()
    arr = zarr.open_array(str(path), mode="r")
    np.testing.assert_array_equal(arr[...], PIXELS * 2)


def test_artifact_writes_leave_no_temporaries(record: ZarrImageRecord) -> None:
    """save_json/save_df_parquet/save_df_csv_gz leave only their final files."""
    record.save_json("a/b", {"x": 1})
    record.save_json("a/b", {"x": 2})
    record.save_df_parquet("a/c", events_frame(2))
    record.save_df_csv_gz("a/c", events_frame(2))
    files = sorted(p.name for p in record.analysis_path.rglob("*") if p.is_file())
    assert files == ["b.json", "c.csv.gz", "c.parquet"]


# -- tables -------------------------------------------------------------------------------
def test_table_round_trip_and_listing(new_dataset: ZarrDataset) -> None:
    """save_table writes tables/<name>.parquet atomically and load_table reads it back."""
    df = pd.DataFrame({"image_id": ["a", "b"], "x": [1.0, 2.0]})
    new_dataset.save_table("t1", df)
    new_dataset.save_table("t1", df)
    assert new_dataset.list_table_names() == ["t1"]
    pd.testing.assert_frame_equal(new_dataset.load_table("t1"), df)
    assert sorted(p.name for p in new_dataset.tables_path.iterdir()) == ["t1.parquet"]
    assert (new_dataset.index_path / "tables.lock").exists()


def test_missing_table_is_table_not_found(new_dataset: ZarrDataset) -> None:
    """load_table of an absent table raises TableNotFoundError (a FileNotFoundError)."""
    assert new_dataset.list_table_names() == []
    with pytest.raises(TableNotFoundError) as info:
        new_dataset.load_table("nope")
    assert isinstance(info.value, FileNotFoundError)


def test_invalid_table_name_is_refused(new_dataset: ZarrDataset) -> None:
    """A table name that is not a plain lower-case slug raises InvalidNameError."""
    with pytest.raises(InvalidNameError):
        new_dataset.save_table("../evil", pd.DataFrame({"a": [1]}))
    with pytest.raises(InvalidNameError):
        new_dataset.load_table("Radon Report")


def test_replace_rows_for_image_id(new_dataset: ZarrDataset) -> None:
    """replace_rows_for_image_id creates the table, then swaps only that record's rows."""
    new_dataset.replace_rows_for_image_id("t", "a", pd.DataFrame({"v": [1, 2]}))
    new_dataset.replace_rows_for_image_id("t", "b", pd.DataFrame({"v": [3]}))
    table = new_dataset.replace_rows_for_image_id("t", "a", pd.DataFrame({"v": [9]}))
    on_disk = new_dataset.load_table("t")
    pd.testing.assert_frame_equal(on_disk, table)
    assert sorted(zip(on_disk["image_id"], on_disk["v"], strict=True)) == [("a", 9), ("b", 3)]


def test_replace_rows_with_no_rows_removes_the_record(new_dataset: ZarrDataset) -> None:
    """Replacing a record's rows with an empty frame drops them and keeps the columns."""
    new_dataset.replace_rows_for_image_id("t", "a", pd.DataFrame({"v": [1]}))
    table = new_dataset.replace_rows_for_image_id("t", "a", pd.DataFrame({"v": []}))
    assert len(table) == 0
    assert set(new_dataset.load_table("t").columns) == {"image_id", "v"}


def test_table_lock_is_reentrant_in_one_thread(new_dataset: ZarrDataset) -> None:
    """A thread holding the table lock can call table writes without deadlocking itself."""
    df = pd.DataFrame({"image_id": ["a"], "v": [1]})
    with new_dataset.table_lock(), new_dataset.table_lock(timeout=1):
        new_dataset.save_table("t", df)
        new_dataset.replace_rows_for_image_id("t", "b", pd.DataFrame({"v": [2]}))
    assert len(new_dataset.load_table("t")) == 2


def test_table_lock_excludes_other_threads(new_dataset: ZarrDataset) -> None:
    """While one thread holds the table lock another thread cannot take it."""
    import filelock

    outcome: list[str] = []

    def try_lock() -> None:
        try:
            with new_dataset.table_lock(timeout=0.2):
                outcome.append("acquired")
        except filelock.Timeout:
            outcome.append("blocked")

    with new_dataset.table_lock():
        t = threading.Thread(target=try_lock)
        t.start()
        t.join(timeout=60)
    assert outcome == ["blocked"]
    try_lock()
    assert outcome == ["blocked", "acquired"]


# -- read-only mode -----------------------------------------------------------------------
@pytest.fixture
def read_only(store_path: Path) -> ZarrDataset:
    """A dataset with one record and one table, opened with mode "r"."""
    ds = ZarrDataset(store_path, "a")
    ds.add_image(PIXELS, image_id="r1").save_json("radon_report", {"vel_mean": 1})
    ds.save_table("t", pd.DataFrame({"image_id": ["r1"]}))
    return ZarrDataset(store_path, "r")


WRITES: dict[str, Callable[[ZarrDataset], object]] = {
    "save_json": lambda ds: ds.record("r1").save_json("x", {}),
    "save_df_parquet": lambda ds: ds.record("r1").save_df_parquet("x", events_frame(1)),
    "save_df_csv_gz": lambda ds: ds.record("r1").save_df_csv_gz("x", events_frame(1)),
    "save_array_artifact": lambda ds: ds.record("r1").save_array_artifact("x", PIXELS),
    "delete_artifact": lambda ds: ds.record("r1").delete_artifact("radon_report"),
    "save_table": lambda ds: ds.save_table("t", pd.DataFrame({"image_id": []})),
    "add_image": lambda ds: ds.add_image(PIXELS, image_id="r2"),
    "delete_image": lambda ds: ds.delete_image("r1"),
    "replace_rows_for_image_id": lambda ds: ds.replace_rows_for_image_id(
        "t", "r1", pd.DataFrame({"v": [1]})
    ),
}


@pytest.mark.parametrize("write", list(WRITES.values()), ids=list(WRITES))
def test_read_only_mode_refuses_writes(
    read_only: ZarrDataset, write: Callable[[ZarrDataset], object]
) -> None:
    """Every write on a mode-"r" dataset raises PermissionError and changes nothing."""
    before = sorted(str(p) for p in read_only.path.rglob("*"))
    with pytest.raises(ReadOnlyStoreError) as info:
        write(read_only)
    assert isinstance(info.value, PermissionError)
    assert sorted(str(p) for p in read_only.path.rglob("*")) == before


def test_read_only_mode_still_reads(read_only: ZarrDataset) -> None:
    """Mode "r" reads records, artifacts and tables."""
    assert read_only.read_only
    assert read_only.record("r1").load_json("radon_report") == {"vel_mean": 1}
    assert read_only.load_table("t")["image_id"].tolist() == ["r1"]


def test_plain_artifacts_are_read_through_the_record(plain_v2_store: Path) -> None:
    """Artifacts written by another program with plain file I/O load through the record API."""
    write_v2_record(plain_v2_store, "r1")
    write_parquet_artifact(plain_v2_store, "r1", "velocity_events", events_frame(2))
    write_json_artifact(plain_v2_store, "r1", "radon_report", {"a": 1}, gz=True)
    rec = ZarrDataset(plain_v2_store, "r").record("r1")
    assert rec.list_analysis_keys() == ["radon_report", "velocity_events"]
    assert len(rec.load_df_parquet("velocity_events")) == 2
    assert rec.load_json("radon_report") == {"a": 1}


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])
def test_plain_writers_leave_only_final_files(plain_v2_store: Path, atomic: bool) -> None:
    """The plain-file helpers write the final file, atomically or in place, and no partials."""
    write_v2_record(plain_v2_store, "r1", atomic=atomic)
    write_parquet_artifact(plain_v2_store, "r1", "a/b", events_frame(2), atomic=atomic)
    write_json_artifact(plain_v2_store, "r1", "c", {"x": 1}, atomic=atomic)
    names = [p.name for p in plain_v2_store.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith(".partial")]
    rec = ZarrDataset(plain_v2_store, "r").record("r1")
    assert rec.list_analysis_keys() == ["a/b", "c"]
    np.testing.assert_array_equal(rec.load_array(), PIXELS)
