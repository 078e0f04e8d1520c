"""The daemon process never imports pandas with the built-in indexers: a real
``kymwatch run`` on a kymflow-shaped store of both generations, fed edits and synced,
has no pandas extension mapped; a plug-in indexer returning a DataFrame brings it in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conformance import KIT, copy_store
from harness import DaemonProcess, assert_tables_match_rebuild
from helpers_store import (
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    write_csv_gz_artifact,
    write_json_artifact,
    write_parquet_artifact,
)
from kymwatch.index import KymDataset
from kymwatch.index.frames import to_frame
from kymwatch.store import read_table_arrow

SITE = Path(__file__).parent / "data" / "plugin" / "site"
GEN1_CASE = KIT / "gen1" / "demo_v01"
GEN2_CASES = (KIT / "gen2" / "g2_demo_ve", KIT / "gen2" / "g2_demo_radon_roi")


def _mixed_store(tmp_path: Path) -> Path:
    """A copy of a generation-1 kit store with the records of generation-2 kit stores
    (velocity events and radon results) added."""
    store = copy_store(GEN1_CASE, tmp_path / "dataset.zarr")
    for case in GEN2_CASES:
        for rec in sorted((case / "dataset.zarr" / "images").iterdir()):
            if rec.is_dir():
                shutil.copytree(rec, store / "images" / rec.name)
    for path in store.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    return store


def _records(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "images").iterdir() if p.is_dir())


def _edit(store: Path) -> None:
    """Edits of both generations: events with kymflow's string and UUID ids, a csv.gz
    and a legacy radon report."""
    ids = _records(store)
    write_parquet_artifact(store, ids[0], "velocity_events", events_frame(3))
    write_csv_gz_artifact(store, ids[1], "velocity_events", events_frame(2, start_s=5.0))
    write_json_artifact(store, ids[1], "radon_report", legacy_radon_report(2.5))
    gen2 = next(i for i in ids if (store / "images" / i / "analysis" / "velocity_events").is_dir())
    write_parquet_artifact(store, gen2, "velocity_events/events", gen2_events_frame(4))


def _mapped(pid: int) -> set[str]:
    """The files process ``pid`` has mapped (its shared libraries among them)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {parts[5] for parts in (line.split(maxsplit=5) for line in lines) if len(parts) == 6}


def _pandas_loaded(d: DaemonProcess) -> bool:
    assert d.proc is not None
    return any(f"{os.sep}pandas{os.sep}_libs{os.sep}" in path for path in _mapped(d.proc.pid))


@pytest.mark.integration
def test_daemon_never_imports_pandas(tmp_path: Path) -> None:
    """With the built-in indexers of both generations the daemon indexes, takes edits
    and syncs without pandas ever being mapped, and its tables equal a fresh rebuild."""
    store = _mixed_store(tmp_path)
    with DaemonProcess(store) as d:
        d.sync()
        _edit(store)
        d.sync()
        assert not _pandas_loaded(d), "the daemon imported pandas"
        assert {"velocity_events", "radon_report", "kym_velocity_events", "kym_radon"} <= {
            p.stem for p in (store / "tables").glob("*.parquet")
        }
    assert_tables_match_rebuild(store, tmp_path / "scratch")


@pytest.mark.integration
def test_pandas_probe_sees_a_dataframe_plugin(tmp_path: Path) -> None:
    """The probe can fail: with a plug-in indexer whose ``extract_rows`` returns a
    DataFrame, the daemon has pandas' compiled extensions mapped."""
    store = _mixed_store(tmp_path)
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    with DaemonProcess(store, env={"PYTHONPATH": path}) as d:
        _edit(store)
        d.sync()
        assert (store / "tables" / "event_counts.parquet").exists()
        assert _pandas_loaded(d)


def test_table_files_carry_the_pandas_metadata_pandas_writes(tmp_path: Path) -> None:
    """Tables written without pandas carry, per column, the dtype pandas' own metadata
    names, so ``pandas.read_parquet`` gives the policy's dtypes back (as ``get_table``)."""
    store = _mixed_store(tmp_path)
    _edit(store)
    kd = KymDataset(store, "a")
    for ix in kd.indexers:
        kd.rebuild_report(ix.name)
    for ix in kd.indexers:
        path = store / "tables" / f"{ix.table_name}.parquet"
        written = read_table_arrow(path)
        ours = written.schema.pandas_metadata
        theirs = pa.Table.from_pandas(to_frame(written), preserve_index=False)
        want = {c["name"]: c["numpy_type"] for c in theirs.schema.pandas_metadata["columns"]}
        assert {c["name"]: c["numpy_type"] for c in ours["columns"]} == want
        assert ours["index_columns"] == []
        back = pd.read_parquet(path)
        assert back.equals(kd.get_table(ix.table_name)), ix.table_name
        assert str(back["image_id"].dtype) == "string"


_PROBE = """
import sys
from pathlib import Path

import pyarrow as pa

from kymwatch.index import KymDataset
from kymwatch.index.frames import conform_rows, skip_pyarrow_pandas_probe

assert skip_pyarrow_pandas_probe()
kd = KymDataset(Path(sys.argv[1]), "a")
for ix in kd.indexers:
    kd.rebuild_report(ix.name)
    kd.get_arrow(ix.table_name)
assert "pandas" not in sys.modules, "indexing imported pandas"
import pandas as pd

frame = pd.DataFrame({"image_id": ["r1", "r2"], "note": pd.Series(["a", pd.NA], dtype=object)})
rows = conform_rows(frame, {"image_id": "string", "note": "string"}, image_id="r1",
                    key="k", path="p")
assert rows["note"].isna().tolist() == [False, True], rows
print(len(kd.get_table(kd.indexers[0].table_name)))
"""


def test_skipped_pyarrow_probe_keeps_pandas_out_and_dataframes_working(tmp_path: Path) -> None:
    """After the probe skip, indexing both generations imports no pandas, and pandas
    imported later still converts (a ``pd.NA`` in an object column becomes null)."""
    store = _mixed_store(tmp_path)
    _edit(store)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE), str(store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) > 0
