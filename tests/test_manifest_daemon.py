"""End-to-end: the real daemon keeps kymflow's ``index/manifest.json.gz`` right.

The store is a copy of the kymflow-written fixture (tests/data/manifest); the
writes are plain file I/O in kymflow's shapes (uuid4 ids, metadata payloads,
nested artifacts, atomic renames as zarr does them).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch, wait_until
from helpers_store import (
    analysis_file,
    events_frame,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.index import build_manifest, load_manifest
from kymwatch.index.manifest_doc import manifest_path
from kymwatch.index.manifest_entry import ManifestSourceError

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "manifest"
IDS: dict[str, str] = json.loads((DATA / "notes.json").read_text())["kymflow_written"]["ids"]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the store kymflow wrote, with kymflow's manifest."""
    dest = tmp_path / "store.zarr"
    shutil.copytree(DATA / "kymflow_written" / "dataset.zarr", dest)
    return dest


def _strip(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != "updated_utc"}


def manifest_is_right(root: Path) -> bool:
    """The manifest on disk equals a full build of the store now."""
    try:
        doc = load_manifest(root)
    except ManifestSourceError:
        return False
    return doc is not None and _strip(doc) == _strip(build_manifest(root, doc))


def set_attrs(root: Path, image_id: str, *, atomic: bool = True, **changes: Any) -> None:
    """Rewrite a record's .zattrs the way zarr does (partial file, then rename), or in place."""
    path = root / "images" / image_id / ".zattrs"
    attrs = {**json.loads(path.read_text()), **changes}
    write_file(path, json.dumps(attrs, indent=2).encode(), atomic=atomic)


def new_kymflow_record(root: Path, acquired_ns: int) -> str:
    image_id = str(uuid.uuid4())
    write_v2_record(root, image_id, shape=(6, 10), axes=("y", "x"))
    payload = {"version": "2.0", "header": {"acquired_local_epoch_ns": acquired_ns}}
    write_json_artifact(root, image_id, "metadata", payload)
    return image_id


def test_live_edits_keep_the_manifest_equal_to_a_full_build(store: Path, tmp_path: Path) -> None:
    """New record, new artifact, .zattrs rewrite, replaced pixels and a deleted record
    each reach the manifest through events alone, and again after a sync."""
    with DaemonProcess(store) as d:
        assert manifest_is_right(store)
        new = new_kymflow_record(store, 1_900_000_000_000_000_000)
        write_parquet_artifact(store, new, "velocity_events/events", events_frame(3))
        wait_until(lambda: manifest_is_right(store), what="new record in the manifest")
        doc = load_manifest(store)
        assert doc is not None and new in {e["image_id"] for e in doc["images"]}

        set_attrs(store, IDS["acquired_2d"], axes=["t", "x"], updated_utc="2026-12-01T00:00:00Z")
        wait_until(lambda: manifest_is_right(store), what="changed .zattrs in the manifest")
        set_attrs(store, IDS["acquired_2d"], atomic=False, created_utc="2026-12-02T00:00:00Z")
        wait_until(lambda: manifest_is_right(store), what=".zattrs rewritten in place")

        # kymflow's save_array(overwrite=True): the data folder goes, comes back resized.
        shutil.rmtree(store / "images" / new / "data")
        write_v2_record(store, new, shape=(12, 10), axes=("y", "x"))
        wait_until(lambda: manifest_is_right(store), what="replaced pixels in the manifest")

        analysis_file(store, new, "velocity_events/events", "parquet").unlink()
        shutil.rmtree(store / "images" / IDS["legacy_gz_3d"])
        d.sync()
        assert manifest_is_right(store)
        doc = load_manifest(store)
        assert doc is not None
        ids = {e["image_id"] for e in doc["images"]}
        assert IDS["legacy_gz_3d"] not in ids and new in ids
        assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_metadata_changed_while_down_is_seen_at_start(store: Path) -> None:
    """A .zattrs or metadata payload changed while no daemon ran is in the manifest after
    the next start (the reconcile checks every record's sources)."""
    with DaemonProcess(store) as d:
        d.sync()
    set_attrs(store, IDS["no_metadata_5d"], axes=["t", "z", "y", "x", "c2"])
    write_json_artifact(
        store, IDS["acquired_2d"], "metadata", {"header": {"acquired_local_epoch_ns": 42}}
    )
    with DaemonProcess(store) as d:
        d.sync()
        assert manifest_is_right(store)
    doc = load_manifest(store)
    assert doc is not None
    by_id = {e["image_id"]: e for e in doc["images"]}
    assert by_id[IDS["acquired_2d"]]["acquired_local_epoch_ns"] == 42


def test_polling_mode_keeps_the_manifest(store: Path) -> None:
    """With --polling, a record metadata change is in the manifest after a sync."""
    with DaemonProcess(store, "--polling", "--poll-interval", "0.2") as d:
        set_attrs(store, IDS["header_without_time"], created_utc="2000-01-01T00:00:00Z")
        new = new_kymflow_record(store, 3)
        d.sync()
        assert manifest_is_right(store)
        doc = load_manifest(store)
        assert doc is not None and new in {e["image_id"] for e in doc["images"]}


def test_store_without_manifest_gets_one_only_when_asked(store: Path) -> None:
    """The daemon writes no manifest into a store that has none, unless run with --manifest."""
    manifest_path(store).unlink()
    with DaemonProcess(store) as d:
        set_attrs(store, IDS["acquired_2d"], axes=["q", "r"])
        d.sync()
    assert not manifest_path(store).exists()
    with DaemonProcess(store, "--manifest") as d:
        d.sync()
        assert manifest_is_right(store)


def test_rebuild_command_rebuilds_an_existing_manifest_only(store: Path) -> None:
    """`kymwatch rebuild` rewrites a manifest the store has, creates none unless asked
    with --manifest, and leaves it alone when only some indexers are rebuilt."""
    set_attrs(store, IDS["acquired_2d"], axes=["u", "v"])
    kymwatch("rebuild", store, check=True)
    assert manifest_is_right(store)
    manifest_path(store).unlink()
    kymwatch("rebuild", store, check=True)
    assert not manifest_path(store).exists()
    kymwatch("rebuild", store, "--indexer", "kym_velocity_events", "--manifest", check=True)
    assert manifest_is_right(store)
