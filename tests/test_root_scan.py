"""Finding the stores of a folder of stores (``kymwatch.store.scan_root``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_store import make_v2_store, write_v2_record
from kymwatch.errors import NotAStoreError, StoreNotFoundError
from kymwatch.rootcli import resolve_target
from kymwatch.store import existing_root, scan_root


def _v3_store(path: Path) -> Path:
    (path / "images").mkdir(parents=True)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    return path


def test_stores_in_root_and_one_level_below_are_found(tmp_path: Path) -> None:
    """Stores of both Zarr formats in ROOT and one level below are found; deeper ones,
    hidden folders and symbolic links are not."""
    a = make_v2_store(tmp_path / "exp1.zarr")
    b = _v3_store(tmp_path / "2026-11" / "exp2.zarr")
    make_v2_store(tmp_path / "x" / "y" / "too_deep.zarr")
    make_v2_store(tmp_path / ".trash" / "hidden.zarr")
    (tmp_path / "link.zarr").symlink_to(a)
    (tmp_path / "file.txt").write_text("not a folder")
    scan = scan_root(tmp_path)
    assert scan.stores == tuple(sorted([a, b]))
    assert scan.folders[0] == tmp_path
    assert set(scan.folders) == {
        tmp_path,
        tmp_path / "2026-11",
        tmp_path / "x",
        tmp_path / "x" / "y",
    }
    assert scan.incomplete == () and scan.unreadable == ()


def test_a_store_is_never_entered(tmp_path: Path) -> None:
    """Records and stores nested inside a store are not stores of the root."""
    outer = make_v2_store(tmp_path / "outer.zarr")
    write_v2_record(outer, "rec1")
    make_v2_store(outer / "nested.zarr")
    assert scan_root(tmp_path).stores == (outer,)


def test_a_store_being_created_is_incomplete(tmp_path: Path) -> None:
    """A folder with a Zarr marker but no images/ yet is incomplete (not a store, not
    entered); once images/ exists it is a store."""
    new = tmp_path / "exp43.zarr"
    new.mkdir()
    (new / ".zgroup").write_text('{"zarr_format": 2}')
    scan = scan_root(tmp_path)
    assert scan.stores == () and scan.incomplete == (new,)
    assert new not in scan.folders
    (new / "images").mkdir()
    assert scan_root(tmp_path).stores == (new,)


def test_existing_root_needs_a_store(tmp_path: Path) -> None:
    """A folder of stores must exist and hold a store now; inside a store is refused."""
    with pytest.raises(StoreNotFoundError):
        existing_root(tmp_path / "nowhere")
    with pytest.raises(NotAStoreError, match="nor a folder holding one"):
        existing_root(tmp_path)
    store = make_v2_store(tmp_path / "exp1.zarr")
    assert existing_root(tmp_path) == tmp_path
    with pytest.raises(NotAStoreError, match="inside the kymflow dataset"):
        existing_root(store / "images")


def test_resolve_target_tells_a_store_from_a_root(tmp_path: Path) -> None:
    """A store is a store (even one holding no record), a folder of stores is a root."""
    store = make_v2_store(tmp_path / "exp1.zarr")
    assert resolve_target(store) == (store, False)
    assert resolve_target(tmp_path) == (tmp_path, True)
