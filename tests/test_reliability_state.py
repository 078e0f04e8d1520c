"""Changes a (size, mtime, inode) fingerprint misses, tables changed behind the daemon's
back, values the state cannot store, and an old state migrated: the real daemon, real files.

Artifacts are kymflow-shaped: records named by UUID, event ids as text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch, live_tables, wait_until
from helpers_store import (
    analysis_file,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon.state import STATE_FILE
from test_reliability_model import parquet_bytes

pytestmark = pytest.mark.integration

RECS = [
    "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11",
    "5d1c7e0f-8a43-4f5a-b6a2-31c9e8d0b7aa",
    "c3e9a1d4-2b7f-4c60-9e15-7f0a2d6b4c38",
]


def kymflow_events(n: int, *, kind: str = "stall", score: float = 0.9) -> pd.DataFrame:
    """``n`` velocity events with text event ids, as kymflow writes them."""
    df = events_frame(n)
    df["event_id"] = [str(i + 1) for i in range(n)]
    df["kind"], df["score"] = kind, score
    return df


def store_with_records(root: Path) -> Path:
    """A store of three records, each with events and a radon report."""
    make_v2_store(root)
    for i, rec in enumerate(RECS):
        write_v2_record(root, rec)
        write_parquet_artifact(root, rec, "velocity_events", kymflow_events(3))
        write_json_artifact(root, rec, "radon_report", legacy_radon_report(1.0 + i))
    return root


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Rewrite ``path`` in place with same-size ``data`` and restore its times (cp -p, rsync -t)."""
    st = path.stat()
    assert len(data) == st.st_size
    with path.open("r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )


def kinds(root: Path, rec: str) -> list[str]:
    """The ``kind`` of each of a record's rows in the events table."""
    rows = live_tables(root)["velocity_events"]
    return list(rows[rows["image_id"] == rec]["kind"])


# -- fingerprints: what (size, mtime, inode) missed ---------------------------------------
def test_same_size_rewrite_with_restored_mtime_while_stopped_is_indexed(tmp_path: Path) -> None:
    """A same-size rewrite in place whose mtime is restored while the daemon is down is read."""
    root = store_with_records(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        d.sync()
    path = analysis_file(root, RECS[1], "velocity_events", "parquet")
    rewrite_keeping_size_and_mtime(path, parquet_bytes(kymflow_events(3, kind="pause")))
    with DaemonProcess(root) as d:
        d.sync()
    assert kinds(root, RECS[1]) == ["pause"] * 3
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_same_size_rewrite_with_restored_mtime_is_seen_by_polling(tmp_path: Path) -> None:
    """In --polling mode, a same-size rewrite with restored mtime is found by the next poll."""
    root = store_with_records(tmp_path / "store.zarr")
    with DaemonProcess(root, "--polling", "--poll-interval", "0.3") as d:
        d.sync()
        path = analysis_file(root, RECS[0], "velocity_events", "parquet")
        rewrite_keeping_size_and_mtime(path, parquet_bytes(kymflow_events(3, kind="pause")))
        wait_until(lambda: kinds(root, RECS[0]) == ["pause"] * 3, what="a poll to re-read it")
        d.sync()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_record_replaced_by_cp_a_while_stopped_is_indexed(tmp_path: Path) -> None:
    """rm -rf + cp -a of a record (times kept, inode numbers possibly reused) is re-read."""
    root = store_with_records(tmp_path / "store.zarr")
    backup = tmp_path / "backup"
    shutil.copytree(root / "images" / RECS[2], backup, copy_function=shutil.copy2)
    with DaemonProcess(root) as d:
        d.sync()
    # the backup gets other content of the same size, then its old times back
    path = backup / "analysis" / "velocity_events.parquet"
    rewrite_keeping_size_and_mtime(path, parquet_bytes(kymflow_events(3, kind="pause")))
    shutil.rmtree(root / "images" / RECS[2])
    subprocess.run(["cp", "-a", str(backup), str(root / "images" / RECS[2])], check=True)
    with DaemonProcess(root) as d:
        d.sync()
    assert kinds(root, RECS[2]) == ["pause"] * 3
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- tables changed behind the daemon's back ----------------------------------------------
def test_table_replaced_by_an_old_copy_while_running_is_rebuilt(tmp_path: Path) -> None:
    """``cp`` of an old table over the current one while the daemon runs is noticed and undone."""
    root = store_with_records(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        d.sync()
        old = tmp_path / "old.parquet"
        shutil.copy2(root / "tables" / "velocity_events.parquet", old)
        write_parquet_artifact(root, RECS[0], "velocity_events", kymflow_events(5))
        d.sync()
        subprocess.run(
            ["cp", str(old), str(root / "tables" / "velocity_events.parquet")], check=True
        )
        wait_until(
            lambda: d.events("table_changed_externally"),
            what="the daemon to notice the replaced table",
        )
        d.sync()
        ev = d.events("table_changed_externally")[0]
        assert ev["table"] == "velocity_events" and ev["path"].endswith("velocity_events.parquet")
        assert (live_tables(root)["velocity_events"]["image_id"] == RECS[0]).sum() == 5
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.parametrize("how", ["backup_restored", "rewritten_by_another_program"])
def test_table_changed_while_stopped_is_rebuilt_at_start(tmp_path: Path, how: str) -> None:
    """A table restored from a backup or rewritten by another program while the daemon is down
    is rebuilt at the next start."""
    root = store_with_records(tmp_path / "store.zarr")
    table = root / "tables" / "radon_report.parquet"
    with DaemonProcess(root) as d:
        d.sync()
        backup = tmp_path / "backup.parquet"
        shutil.copy2(table, backup)
        write_json_artifact(root, RECS[1], "radon_report", legacy_radon_report(9.0))
        d.sync()
    if how == "backup_restored":
        shutil.copy2(backup, table)
    else:
        df = pq.read_table(table).to_pandas()
        df["notes"] = "edited elsewhere"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), table)
    with DaemonProcess(root) as d:
        d.sync()
        assert [e["table"] for e in d.events("table_changed_externally")] == ["radon_report"]
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_rebuild_from_another_process_is_adopted(tmp_path: Path) -> None:
    """``kymwatch rebuild`` while the daemon runs is legitimate: the tables stay right."""
    root = store_with_records(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        d.sync()
        write_parquet_artifact(root, RECS[2], "velocity_events", kymflow_events(2))
        kymwatch("rebuild", root, check=True)
        d.sync()
        assert d.proc is not None and d.proc.poll() is None
        noticed = len(d.events("table_changed_externally"))
    assert_tables_match_rebuild(root, tmp_path / "scratch")
    with DaemonProcess(root) as d:  # and the next start trusts what it adopted
        d.sync()
        assert len(d.events("table_changed_externally")) == noticed


# -- values the state cannot store in int64 ------------------------------------------------
@pytest.mark.parametrize("when", ["2300-01-01", "1901-01-01", "@-5000000000"])
def test_artifact_times_beyond_int64_never_stop_the_daemon(tmp_path: Path, when: str) -> None:
    """An artifact touched to 2300 (or far in the past) is indexed, saved, and survives restarts."""
    root = store_with_records(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        d.sync()
        write_parquet_artifact(root, RECS[0], "velocity_events", kymflow_events(4))
        path = analysis_file(root, RECS[0], "velocity_events", "parquet")
        subprocess.run(["touch", "-d", when, str(path)], check=True)
        d.sync()
        assert d.stop() == 0
        assert d.events("state_save_failed") == []
    for _ in range(2):  # no crash loop: each start loads the state it saved
        with DaemonProcess(root) as d:
            d.sync()
            write_json_artifact(root, RECS[1], "radon_report", legacy_radon_report(3.0))
            d.sync()
            assert d.stop() == 0
            assert d.events("state_save_failed") == []
            assert "Traceback" not in d.read_output()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- an old state (format 1) migrated ------------------------------------------------------
def write_format_1_state(root: Path) -> None:
    """The state a format-1 kymwatch would have saved for ``root`` as it is now."""
    cols: dict[str, list[object]] = {
        k: [] for k in ("image_id", "file", "size", "mtime_ns", "inode")
    }
    for rec in sorted(p.name for p in (root / "images").iterdir() if p.is_dir()):
        for f in sorted((root / "images" / rec / "analysis").iterdir()):
            st = f.stat()
            for k, v in zip(
                cols, (rec, f.name, st.st_size, st.st_mtime_ns, st.st_ino), strict=True
            ):
                cols[k].append(v)
    (root / "index").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pydict(cols), root / "index" / "state-fingerprints.parquet")
    meta = {"format": 1, "schema_versions": {"velocity_events": 1, "radon_report": 1}}
    (root / "index" / "state.json").write_text(json.dumps(meta))


def test_old_state_is_migrated_and_files_touched_since_are_re_read(tmp_path: Path) -> None:
    """A format-1 state is migrated: nothing lost, and a change it could not see is re-read."""
    root = store_with_records(tmp_path / "store.zarr")
    kymwatch("rebuild", root, check=True)
    state_dir = root / "index"
    for p in state_dir.iterdir():  # keep the lock files; drop any state the rebuild made
        if p.name.startswith("kymwatch-state"):
            p.unlink()
    write_format_1_state(root)
    path = analysis_file(root, RECS[0], "velocity_events", "parquet")
    rewrite_keeping_size_and_mtime(path, parquet_bytes(kymflow_events(3, kind="pause")))
    with DaemonProcess(root) as d:
        d.sync()
        assert d.events("state_migrated")
        assert d.events("state_reset") == []
    assert kinds(root, RECS[0]) == ["pause"] * 3
    assert not (state_dir / "state.json").exists()
    assert not (state_dir / "state-fingerprints.parquet").exists()
    assert (state_dir / STATE_FILE).exists()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_a_state_that_cannot_be_saved_never_stops_the_daemon(tmp_path: Path) -> None:
    """With its state file replaced by a folder, the daemon logs, keeps indexing, and restarts."""
    root = store_with_records(tmp_path / "store.zarr")
    state = root / "index" / STATE_FILE
    with DaemonProcess(root) as d:
        d.sync()
        for p in state.parent.glob(f"{STATE_FILE}*"):
            p.unlink()
        state.mkdir()
        write_parquet_artifact(root, RECS[0], "velocity_events", kymflow_events(6))
        d.sync()
        assert d.events("state_save_failed")
        assert (live_tables(root)["velocity_events"]["image_id"] == RECS[0]).sum() == 6
        assert d.stop() == 0
    with DaemonProcess(root) as d:  # the next start resets the state and indexes in full
        d.sync()
        assert d.events("state_reset")
        write_parquet_artifact(root, RECS[1], "velocity_events", kymflow_events(2))
        d.sync()
        assert d.stop() == 0
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_a_table_that_cannot_be_rewritten_is_retried_and_the_daemon_stays_up(
    tmp_path: Path,
) -> None:
    """With ``tables/`` deleted and replaced by a file, re-creating a missing table fails
    (``table_rebuild_failed``) without stopping the daemon; once the folder can be made
    again the tables are regrown and equal a fresh rebuild."""
    root = store_with_records(tmp_path / "store.zarr")
    d = DaemonProcess(root).start()
    try:
        d.sync()
        shutil.rmtree(root / "tables")
        (root / "tables").write_text("not a folder")
        wait_until(lambda: d.events("table_rebuild_failed"), what="the failed rebuild")
        assert d.proc is not None and d.proc.poll() is None
        (root / "tables").unlink()
        wait_until(
            lambda: (root / "tables" / "velocity_events.parquet").exists(),
            what="the table to be made again",
        )
        d.sync()
    finally:
        assert d.stop() == 0
    assert_tables_match_rebuild(root, tmp_path / "scratch")
