"""``kymwatch init`` makes an empty store shaped exactly like kymflow's own, and
``kymwatch.sync`` waits from Python: init + run + a hand-written artifact + sync."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kymwatch
from harness import DaemonProcess
from harness import kymwatch as kymwatch_cli
from kymwatch.daemon import NoDaemonError
from kymwatch.errors import NotAStoreError, StoreNotFoundError, SyncTimeoutError
from kymwatch.store import ZarrDataset, read_table_file
from kymwatch.store.create import init_store

CONFORMANCE = Path(__file__).parent / "data" / "conformance"
KYMFLOW_STORES = sorted(CONFORMANCE.glob("gen*/*/dataset.zarr"))
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _top_files(root: Path) -> dict[str, bytes]:
    """The store's files outside records and tables: what creating it wrote."""
    names = [".zgroup", ".zattrs", "images/.zgroup", "index/.zgroup"]
    return {n: (root / n).read_bytes() for n in names if (root / n).is_file()}


@pytest.mark.parametrize("kymflow_store", KYMFLOW_STORES[:3], ids=lambda p: p.parent.name)
def test_init_writes_the_files_kymflow_writes(tmp_path: Path, kymflow_store: Path) -> None:
    """The same four files as a store kymflow created, byte for byte but the timestamps."""
    made = init_store(tmp_path / "new.zarr")
    ours, theirs = _top_files(made), _top_files(kymflow_store)
    assert ours.keys() == theirs.keys() == {".zgroup", ".zattrs", "images/.zgroup", "index/.zgroup"}
    for name in ("images/.zgroup", "index/.zgroup", ".zgroup"):
        assert ours[name] == theirs[name]
    attrs, kymflow_attrs = json.loads(ours[".zattrs"]), json.loads(theirs[".zattrs"])
    assert attrs.keys() == kymflow_attrs.keys()
    assert attrs["format"] == kymflow_attrs["format"] == "kymflow_zarr_v1"
    assert attrs["schema_version"] == kymflow_attrs["schema_version"] == 1
    assert STAMP.match(attrs["created_utc"]) and STAMP.match(kymflow_attrs["created_utc"])
    stamped = {**attrs, "created_utc": "T", "updated_utc": "T"}
    kymflow_stamped = {**kymflow_attrs, "created_utc": "T", "updated_utc": "T"}
    assert json.dumps(stamped, indent=4, sort_keys=True).encode() == (
        json.dumps(kymflow_stamped, indent=4, sort_keys=True).encode()
    )
    assert sorted(p.name for p in made.iterdir()) == [".zattrs", ".zgroup", "images", "index"]


def test_init_store_opens_as_an_empty_format_2_dataset(tmp_path: Path) -> None:
    """kymwatch's reader sees a format-2 dataset without records."""
    made = init_store(tmp_path / "a" / "b" / "new.zarr")
    ds = ZarrDataset(made, "r")
    assert ds.zarr_format == 2 and ds.list_image_ids() == []


def test_init_refuses_what_is_not_a_new_or_empty_folder(tmp_path: Path) -> None:
    """An existing store, a non-empty folder, a file and a folder inside a store are refused;
    an empty folder is fine."""
    store = init_store(tmp_path / "s.zarr")
    with pytest.raises(NotAStoreError, match="already a Zarr dataset"):
        init_store(store)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(NotAStoreError, match="not empty"):
        init_store(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAStoreError, match="not a folder"):
        init_store(tmp_path / "file")
    with pytest.raises(NotAStoreError, match="inside the kymflow dataset"):
        init_store(store / "images" / "nested.zarr")
    (tmp_path / "empty").mkdir()
    assert init_store(tmp_path / "empty") == tmp_path / "empty"
    assert (tmp_path / "full" / "notes.txt").read_text() == "x"


def test_init_command_refuses_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """`kymwatch init` on a non-empty folder prints one error line and exits 2."""
    (tmp_path / "notes.txt").write_text("x")
    proc = kymwatch_cli("init", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not empty" in proc.stderr


def test_sync_is_exported_lazily_from_the_package() -> None:
    """`import kymwatch` stays light; `kymwatch.sync` imports neither pandas, pyarrow, zarr
    nor watchdog."""
    code = (
        "import sys, kymwatch; assert 'kymwatch.client' not in sys.modules; "
        "f = kymwatch.sync; assert callable(f) and 'sync' in dir(kymwatch); "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'zarr', 'numpy', 'watchdog') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_sync_raises_the_clear_errors(tmp_path: Path) -> None:
    """A missing path, a folder that is no store, no daemon and a bad timeout each raise
    their documented error."""
    with pytest.raises(StoreNotFoundError):
        kymwatch.sync(tmp_path / "nope.zarr")
    with pytest.raises(NotAStoreError):
        kymwatch.sync(str(tmp_path))
    store = init_store(tmp_path / "s.zarr")
    with pytest.raises(NoDaemonError, match="no kymwatch daemon"):
        kymwatch.sync(store)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            kymwatch.sync(store, timeout=bad)


@pytest.mark.integration
def test_init_run_write_by_hand_and_sync_from_python(tmp_path: Path) -> None:
    """A store made by `kymwatch init`, watched by a real daemon: an events parquet written
    with pandas (kymflow's string event ids) is in the table when `kymwatch.sync(str)`
    returns; a corrupt one is reported as not current; the CLI agrees."""
    store = tmp_path / "exp1.zarr"
    kymwatch_cli("init", store, check=True)
    with DaemonProcess(store) as daemon:
        record = store / "images" / "cell1"
        (record / "analysis").mkdir(parents=True)
        (record / ".zgroup").write_text('{\n    "zarr_format": 2\n}')
        events = pd.DataFrame(
            {
                "roi_id": [1, 1],
                "event_id": ["e1", "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"],
                "t0_s": [0.5, 2.0],
                "t1_s": [1.0, 2.5],
                "kind": ["stall", "reversal"],
                "score": [0.9, 0.4],
            }
        )
        events.to_parquet(record / "analysis" / "velocity_events.parquet", index=False)
        result = kymwatch.sync(str(store), timeout=120)
        assert result.current and result.store == str(store)
        table = read_table_file(store / "tables" / "velocity_events.parquet")
        assert sorted(table["event_id"]) == sorted(events["event_id"])
        assert set(table["image_id"]) == {"cell1"}
        (record / "analysis" / "radon_report.json").write_text("[1, 2]")
        result = kymwatch.sync(store, timeout=120)
        assert not result.current
        assert [(p["image_id"], p["problem"]) for p in result.not_current] == [
            ("cell1", "artifact_invalid")
        ]
        daemon.sync()
    with pytest.raises((NoDaemonError, SyncTimeoutError)):
        kymwatch.sync(store, timeout=5)
