"""kymflow's manifest: a full build equals kymflow's, incremental updates equal a full build."""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers_store import (
    analysis_file,
    events_frame,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import Batch, IndexState, RecordChange, Worker
from kymwatch.daemon.changes import RECORD_METADATA
from kymwatch.index import KymDataset, ManifestIndexer, build_manifest, load_manifest
from kymwatch.index.manifest_doc import dump_manifest, manifest_path
from kymwatch.index.manifest_entry import read_entry

DATA = Path(__file__).parent / "data" / "manifest"
CASES = ["gen1_demo_v01", "gen2_demo_ve", "gen2_demo_radon_roi", "kymflow_written"]
IDS: dict[str, str] = json.loads((DATA / "notes.json").read_text())["kymflow_written"]["ids"]


def copy_case(case: str, tmp_path: Path) -> Path:
    dest = tmp_path / case / "dataset.zarr"
    shutil.copytree(DATA / case / "dataset.zarr", dest)
    return dest


def without_updated(doc: dict[str, Any] | None) -> dict[str, Any]:
    assert doc is not None
    return {k: v for k, v in doc.items() if k != "updated_utc"}


def assert_equals_full_build(root: Path) -> None:
    on_disk = load_manifest(root)
    assert without_updated(on_disk) == without_updated(build_manifest(root, on_disk))


def write_kymflow_record(root: Path, acquired_ns: int | None) -> str:
    """A record as kymflow's add_image + metadata payload leave it (uuid4 id)."""
    image_id = str(uuid.uuid4())
    write_v2_record(root, image_id, shape=(5, 9), axes=("y", "x"))
    if acquired_ns is not None:
        payload = {"version": "2.0", "header": {"acquired_local_epoch_ns": acquired_ns}}
        write_json_artifact(root, image_id, "metadata", payload)
    return image_id


@pytest.mark.parametrize("case", CASES)
def test_full_build_equals_kymflows_manifest(case: str) -> None:
    """Our full build of a fixture store equals the manifest kymflow wrote, key order too."""
    root = DATA / case / "dataset.zarr"
    theirs = load_manifest(root)
    ours = build_manifest(root, theirs)
    assert without_updated(ours) == without_updated(theirs)
    assert theirs is not None
    assert list(ours) == list(theirs)
    assert [list(e) for e in ours["images"]] == [list(e) for e in theirs["images"]]
    # Same JSON text as kymflow's (indent=2, key order kept), once the clock agrees.
    kymflow_text = gzip.decompress(manifest_path(root).read_bytes())
    assert gzip.decompress(dump_manifest({**ours, "updated_utc": theirs["updated_utc"]})) == (
        kymflow_text
    )


@pytest.mark.parametrize(
    "images",
    [[], [{"image_id": "a", "axes": None, "x": {"nested": [1, {"é": "\u2603\n"}]}, "e": []}]],
)
def test_dump_is_jsons_indented_text(images: list[dict[str, Any]]) -> None:
    """The piecewise serialiser (cached entry texts) writes exactly json.dumps(indent=2)."""
    doc = {"schema_version": 1, "format": "f", "created_utc": "c", "images": images}
    expected = json.dumps(doc, indent=2).encode()
    cache: dict[str, Any] = {}
    assert gzip.decompress(dump_manifest(doc, cache)) == expected
    assert gzip.decompress(dump_manifest(doc, cache)) == expected  # from the cache


def test_kymflow_written_store_covers_every_field() -> None:
    """The kymflow-written fixture exercises acquisition times, legacy gz, bad payloads and
    stores without pixels, so the full-build test above pins each rule."""
    doc = load_manifest(DATA / "kymflow_written" / "dataset.zarr")
    assert doc is not None
    by_id = {e["image_id"]: e for e in doc["images"]}
    assert by_id[IDS["acquired_2d"]]["acquired_local_epoch_ns"] == 1_732_600_000_123_456_789
    assert by_id[IDS["legacy_gz_3d"]]["acquired_local_epoch_ns"] == 1_700_000_000_000_000_000
    assert by_id[IDS["artifacts_bad_metadata"]]["acquired_local_epoch_ns"] is None
    assert by_id[IDS["no_metadata_5d"]]["dtype"] == "int16"
    assert "nodata" not in by_id
    keys = by_id[IDS["artifacts_bad_metadata"]]["analysis_keys"]
    assert any(k.endswith("velocity_events/events.parquet") for k in keys)
    assert not any("analysis_arrays" in k for k in keys)


def test_full_build_without_a_manifest_matches_kymflows_entries(tmp_path: Path) -> None:
    """A store whose manifest is gone gets the same entries back from a build from nothing."""
    root = copy_case("kymflow_written", tmp_path)
    theirs = load_manifest(root)
    manifest_path(root).unlink()
    ours = build_manifest(root)
    assert theirs is not None
    assert ours["images"] == theirs["images"]
    assert (ours["format"], ours["schema_version"]) == (theirs["format"], theirs["schema_version"])


@pytest.mark.parametrize("case", ["kymflow_written", "gen2_demo_ve"])
def test_incremental_edits_equal_a_full_build(case: str, tmp_path: Path) -> None:
    """New record, new and removed artifact, changed .zattrs, .zarray and acquisition time,
    deleted record: after each update of just that record, the file equals a full build."""
    root = copy_case(case, tmp_path)
    created = load_manifest(root)["created_utc"]  # type: ignore[index]
    m = ManifestIndexer(root)
    first = load_manifest(root)["images"][0]["image_id"]  # type: ignore[index]

    new = write_kymflow_record(root, 1_800_000_000_000_000_001)
    assert m.update([new]) is not None
    assert_equals_full_build(root)

    write_parquet_artifact(root, new, "velocity_events/events", events_frame(2))
    assert m.update([new]).changed == (new,)  # type: ignore[union-attr]
    assert_equals_full_build(root)

    attrs = root / "images" / first / ".zattrs"
    doc = json.loads(attrs.read_text())
    write_file(attrs, json.dumps({**doc, "axes": ["t", "x"], "updated_utc": "later"}).encode())
    m.update([first])
    assert_equals_full_build(root)

    zarray = root / "images" / new / "data" / ".zarray"
    meta = json.loads(zarray.read_text())
    write_file(zarray, json.dumps({**meta, "shape": [50, 9], "chunks": [10, 9]}).encode())
    write_json_artifact(root, new, "metadata", {"header": {"acquired_local_epoch_ns": 7}})
    m.update([new])
    assert_equals_full_build(root)

    analysis_file(root, new, "velocity_events/events", "parquet").unlink()
    m.update([new])
    assert_equals_full_build(root)

    shutil.rmtree(root / "images" / first)
    assert m.update([first]).changed == (first,)  # type: ignore[union-attr]
    assert_equals_full_build(root)
    assert load_manifest(root)["created_utc"] == created  # type: ignore[index]


def test_update_reads_only_the_named_records(tmp_path: Path) -> None:
    """An update re-reads the named record only: another record's change stays unseen
    until it is named (kymflow's rebuild would rescan every record)."""
    root = copy_case("kymflow_written", tmp_path)
    m = ManifestIndexer(root)
    a, b = IDS["acquired_2d"], IDS["legacy_gz_3d"]
    write_json_artifact(root, a, "metadata", {"header": {"acquired_local_epoch_ns": 1}})
    write_json_artifact(root, b, "metadata", {"header": {"acquired_local_epoch_ns": 2}})
    update = m.update([a])
    assert update is not None and update.changed == (a,)
    by_id = {e["image_id"]: e for e in load_manifest(root)["images"]}  # type: ignore[index]
    assert by_id[a]["acquired_local_epoch_ns"] == 1
    assert by_id[b]["acquired_local_epoch_ns"] == 1_700_000_000_000_000_000


def test_unchanged_update_does_not_rewrite(tmp_path: Path) -> None:
    """An update that changes no entry leaves the file alone."""
    root = copy_case("gen2_demo_ve", tmp_path)
    m = ManifestIndexer(root)
    before = manifest_path(root).stat().st_ino
    ids = [e["image_id"] for e in load_manifest(root)["images"]]  # type: ignore[index]
    update = m.update(ids)
    assert update is not None and not update.written and update.changed == ()
    assert manifest_path(root).stat().st_ino == before


def test_unreadable_record_metadata_keeps_the_old_entry(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A torn .zattrs or .zarray never crashes and never drops the record's entry."""
    root = copy_case("kymflow_written", tmp_path)
    m = ManifestIndexer(root)
    a, b = IDS["acquired_2d"], IDS["no_metadata_5d"]
    before = {e["image_id"]: e for e in load_manifest(root)["images"]}  # type: ignore[index]
    write_file(root / "images" / a / ".zattrs", b'{"axes": ["y",')
    write_file(root / "images" / b / "data" / ".zarray", b"")
    update = m.update([a, b])
    assert update is not None and update.kept == (a, b)
    after = {e["image_id"]: e for e in load_manifest(root)["images"]}  # type: ignore[index]
    assert after[a] == before[a] and after[b] == before[b]
    assert [e["event"] for e in captured_logs].count("manifest_record_unreadable") == 2
    m.reconcile()  # unchanged torn files are not reported again on every scan
    assert [e["event"] for e in captured_logs].count("manifest_record_unreadable") == 2
    write_file(root / "images" / a / ".zattrs", json.dumps({"axes": ["p", "q"]}).encode())
    assert m.reconcile().changed == (a,)  # type: ignore[union-attr]
    # A full build keeps them too, from the manifest it replaces.
    assert build_manifest(root, load_manifest(root))["images"] == load_manifest(root)["images"]  # type: ignore[index]


def test_corrupt_manifest_is_replaced_by_a_full_build(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A truncated manifest file is logged and replaced by a complete one."""
    root = copy_case("gen1_demo_v01", tmp_path)
    good = load_manifest(root)
    path = manifest_path(root)
    path.write_bytes(path.read_bytes()[:40])
    ManifestIndexer(root).update([])
    assert "manifest_unreadable" in [e["event"] for e in captured_logs]
    assert load_manifest(root)["images"] == good["images"]  # type: ignore[index]


def test_store_without_manifest_gets_none_unless_asked(tmp_path: Path) -> None:
    """Without a manifest nothing is written; with create=True a full one is."""
    root = copy_case("gen2_demo_radon_roi", tmp_path)
    expected = load_manifest(root)
    manifest_path(root).unlink()
    assert ManifestIndexer(root).update(["x"]) is None
    assert not manifest_path(root).exists()
    update = ManifestIndexer(root, create=True).update([])
    assert update is not None and update.written
    assert load_manifest(root)["images"] == expected["images"]  # type: ignore[index]


def test_manifest_without_analysis_keys_stays_without(tmp_path: Path) -> None:
    """A manifest kymflow built with include_analysis_keys=False is kept in that shape."""
    root = copy_case("gen2_demo_ve", tmp_path)
    doc = load_manifest(root)
    assert doc is not None
    for e in doc["images"]:
        del e["analysis_keys"]
    manifest_path(root).write_bytes(dump_manifest(doc))
    image_id = doc["images"][0]["image_id"]
    write_parquet_artifact(root, image_id, "radon/results", events_frame(1))
    ManifestIndexer(root).update([image_id])
    assert load_manifest(root)["images"] == doc["images"]  # type: ignore[index]


def test_reconcile_finds_changes_made_behind_its_back(tmp_path: Path) -> None:
    """reconcile() re-reads only records whose sources changed, and finds new, changed
    and deleted records without being told."""
    root = copy_case("kymflow_written", tmp_path)
    m = ManifestIndexer(root)
    m.reconcile()
    assert m.reconcile().written is False  # type: ignore[union-attr]
    new = write_kymflow_record(root, 5)
    shutil.rmtree(root / "images" / IDS["acquired_2d"])
    write_file(root / "images" / IDS["legacy_gz_3d"] / "analysis" / "notes.txt", b"hi")
    update = m.reconcile()
    assert update is not None
    assert set(update.changed) == {new, IDS["acquired_2d"], IDS["legacy_gz_3d"]}
    assert_equals_full_build(root)


def test_external_rewrite_is_reloaded(tmp_path: Path) -> None:
    """A manifest rewritten by kymflow is re-read before the next update (its
    created_utc and entries are the base, not a stale cached copy)."""
    root = copy_case("gen1_demo_v01", tmp_path)
    m = ManifestIndexer(root)
    m.update([])
    doc = load_manifest(root)
    assert doc is not None
    doc["created_utc"] = "2020-01-01T00:00:00Z"
    manifest_path(root).write_bytes(dump_manifest(doc))
    new = write_kymflow_record(root, None)
    m.update([new])
    assert load_manifest(root)["created_utc"] == "2020-01-01T00:00:00Z"  # type: ignore[index]
    assert_equals_full_build(root)


def test_read_entry_of_a_format3_record(tmp_path: Path) -> None:
    """A zarr-format-3 record (zarr.json) gives the same fields as a format-2 one."""
    rec = tmp_path / "s.zarr" / "images" / "r1"
    group = {"zarr_format": 3, "node_type": "group", "attributes": {"axes": ["y", "x"]}}
    write_file(rec / "zarr.json", json.dumps(group).encode())
    array = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [4, 6],
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 3]}},
    }
    write_file(rec / "data" / "zarr.json", json.dumps(array).encode())
    entry = read_entry(tmp_path / "s.zarr", "r1")
    assert entry is not None
    assert (entry["shape"], entry["dtype"], entry["chunks"], entry["axes"]) == (
        [4, 6],
        "uint16",
        [4, 3],
        ["y", "x"],
    )


def test_worker_updates_manifest_for_metadata_only_change(tmp_path: Path) -> None:
    """A RECORD_METADATA change runs no table indexer but updates the manifest entry."""
    root = copy_case("gen2_demo_ve", tmp_path)
    manifest = ManifestIndexer(root)
    worker = Worker(KymDataset(root), IndexState(), manifest=manifest)
    image_id = load_manifest(root)["images"][0]["image_id"]  # type: ignore[index]
    attrs = root / "images" / image_id / ".zattrs"
    write_file(attrs, json.dumps({**json.loads(attrs.read_text()), "axes": ["a", "b"]}).encode())
    result = worker.process(Batch((RecordChange(image_id, RECORD_METADATA),), 0.0))
    assert result.tables == ["manifest"]
    assert not (root / "tables").exists()
    assert_equals_full_build(root)


def test_analysis_keys_reach_as_deep_as_the_artifact_walker(tmp_path: Path) -> None:
    """A file nested as deep as artifacts may nest is listed, one level deeper is not."""
    from kymwatch.index.manifest_entry import analysis_keys
    from kymwatch.store.scan import MAX_ARTIFACT_DEPTH

    root = make_v2_store(tmp_path / "store.zarr")
    write_v2_record(root, "a")
    analysis = root / "images" / "a" / "analysis"
    deepest = analysis.joinpath(*[f"d{i}" for i in range(MAX_ARTIFACT_DEPTH)])
    deepest.mkdir(parents=True)
    (deepest / "kept.json").write_text("{}")
    (deepest / "too_deep").mkdir()
    (deepest / "too_deep" / "dropped.json").write_text("{}")
    keys = analysis_keys(root, "a")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["kept.json"]
