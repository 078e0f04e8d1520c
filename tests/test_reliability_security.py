"""Security: where the daemon writes, which links it follows, who may write its files.

- It writes only inside ``tables/`` and ``index/`` of its store: the rest of the
  store, a sibling folder, its HOME and its TMPDIR are snapshotted (paths, sizes,
  mtimes, modes) before and after a session with indexing, restarts and a crash.
- It follows no symbolic link out of the store: not a symlinked record folder, not a
  symlinked ``analysis/`` folder, not a symlinked artifact file.
- The files it creates (status, state, log, tables) are not world-writable, even
  under ``umask 000``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, live_tables
from helpers_store import (
    analysis_file,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import request_sync
from kymwatch.index import KymDataset

pytestmark = pytest.mark.integration

Snapshot = dict[str, tuple[int, int, int, int]]


def snapshot(top: Path, *, skip: tuple[str, ...] = ()) -> Snapshot:
    """Every path under ``top`` (links not followed) → (mode, size, mtime_ns, inode)."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        dirnames[:] = [
            d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip
        ]
        for name in [*dirnames, *filenames]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            st = os.lstat(os.path.join(dirpath, name))
            out[rel] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """Readable differences between two snapshots."""
    lines = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    lines += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    lines += [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return lines


def store_with_records(root: Path, n: int) -> Path:
    """A store of ``n`` records with both artifacts."""
    make_v2_store(root)
    for i in range(n):
        image_id = f"r{i}"
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(3, start_s=i))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(float(i)))
    return root


def test_daemon_writes_only_tables_and_index(tmp_path: Path) -> None:
    """A session of indexing, restarts and a crash changes nothing outside tables/ and index/."""
    root = store_with_records(tmp_path / "store.zarr", 6)
    churn = "r0"  # the one record the "writer" keeps changing during the session
    sibling = tmp_path / "sibling"
    write_v2_record(sibling, "x")
    write_parquet_artifact(sibling, "x", "velocity_events", events_frame(2))
    home, tmpdir = tmp_path / "home", tmp_path / "tmpdir"
    home.mkdir()
    tmpdir.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(tmpdir), "XDG_CACHE_HOME": str(home / ".cache")}
    own = ("tables", "index", f"images/{churn}")
    watched = {
        "store": (root, own),
        "sibling": (sibling, ()),
        "home": (home, ()),
        "tmpdir": (tmpdir, ()),
    }
    before = {k: snapshot(p, skip=s) for k, (p, s) in watched.items()}
    top_before = sorted(os.listdir(tmp_path))

    d = DaemonProcess(root, env=env).start()
    for n in range(1, 4):
        write_parquet_artifact(root, churn, "velocity_events", events_frame(n))
        request_sync(root)
    d.kill()  # a crash, then a restart that cleans up after it
    d = DaemonProcess(root, env=env).start()
    (root / "tables" / "radon_report.parquet").unlink()  # rebuilt while running
    write_json_artifact(root, churn, "radon_report", legacy_radon_report(9.0))
    request_sync(root)
    assert d.stop() == 0
    d = DaemonProcess(root, env=env).start()
    request_sync(root)
    assert d.stop() == 0

    after = {k: snapshot(p, skip=s) for k, (p, s) in watched.items()}
    for k in watched:
        assert diff(before[k], after[k]) == [], (
            f"the daemon changed {k}: {diff(before[k], after[k])}"
        )
    # tmp_path itself gains only the harness's capture of the daemon's stdout.
    assert sorted(os.listdir(tmp_path)) == sorted([*top_before, d.output.name])
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- links out of the store ----------------------------------------------------------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store holding a record with artifacts an attacker points at."""
    top = tmp_path / "outside"
    write_v2_record(top, "ext")
    write_parquet_artifact(top, "ext", "velocity_events", events_frame(2, start_s=666.0))
    write_json_artifact(top, "ext", "radon_report", legacy_radon_report(666.0))
    return top


def test_symlinked_record_folder_out_of_the_store_is_not_indexed(
    tmp_path: Path, outside: Path
) -> None:
    """images/<id> as a symlink to a folder outside the store is not a record."""
    root = store_with_records(tmp_path / "store.zarr", 1)
    with DaemonProcess(root) as d:
        request_sync(root)
        (root / "images" / "evil").symlink_to(outside / "images" / "ext")
        request_sync(root)
        write_parquet_artifact(outside, "ext", "velocity_events", events_frame(4, start_s=666.0))
        before = snapshot(outside)
        request_sync(root)
        assert d.proc is not None and d.proc.poll() is None
        for df in live_tables(root).values():
            assert "evil" not in set(df["image_id"])
        skipped = [e for e in d.events("record_folder_skipped") if e["path"].endswith("/evil")]
        assert len(skipped) == 1 and "symbolic link" in skipped[0]["reason"], skipped
    assert snapshot(outside) == before  # nothing written through the link
    kd = KymDataset(root)  # rebuild (the library path) agrees
    assert "evil" not in kd.store.list_image_ids()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.parametrize("link", ["analysis", "artifact"])
def test_symlinked_analysis_or_artifact_out_of_the_store_is_not_read(
    tmp_path: Path, outside: Path, link: str
) -> None:
    """A symlinked analysis/ folder or artifact file is reported unreadable, never read."""
    root = store_with_records(tmp_path / "store.zarr", 2)
    target = outside / "images" / "ext" / "analysis"
    rec = root / "images" / "r1"
    with DaemonProcess(root) as d:
        request_sync(root)
        before = live_tables(root)
        if link == "analysis":
            os.rename(rec / "analysis", tmp_path / "moved-analysis")
            (rec / "analysis").symlink_to(target)
        else:
            analysis_file(root, "r1", "velocity_events", "parquet").unlink()
            analysis_file(root, "r1", "velocity_events", "parquet").symlink_to(
                target / "velocity_events.parquet"
            )
        request_sync(root)
        assert d.proc is not None and d.proc.poll() is None
        tables = live_tables(root)
        for df in tables.values():
            assert not (df["t0_s" if "t0_s" in df else "mean_velocity"] >= 666.0).any()
        assert tables["velocity_events"].equals(before["velocity_events"])  # old rows kept
        reasons = [
            e["error"]
            for e in d.events("artifact_unreadable")
            if e.get("image_id") == "r1" and e.get("indexer") == "velocity_events"
        ]
        assert reasons and "symbolic link" in reasons[-1], reasons
    assert_tables_match_rebuild(root, tmp_path / "scratch", keep_old_rows_for=["r1"])


@pytest.mark.parametrize("folder", ["tables", "index"])
def test_daemon_does_not_write_through_a_symlinked_own_folder(tmp_path: Path, folder: str) -> None:
    """A tables/ or index/ symlinked out of the store receives no file from the daemon."""
    root = store_with_records(tmp_path / "store.zarr", 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / folder).symlink_to(elsewhere)
    d = DaemonProcess(root)
    try:
        d.start(wait_ready=False)
        assert d.proc is not None
        try:
            d.wait_ready(timeout=60)
            request_sync(root)
        except AssertionError:
            pass  # refusing to start is fine
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
    assert list(elsewhere.iterdir()) == []


# -- file modes -----------------------------------------------------------------------------
@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block (and the subprocesses it starts) under ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_status_state_log_and_tables_are_not_world_writable(tmp_path: Path) -> None:
    """Even under umask 000 the daemon's status, state, log and table files deny others write."""
    root = store_with_records(tmp_path / "store.zarr", 2)
    with umask(0o000), DaemonProcess(root) as d:
        request_sync(root)
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(5))
        request_sync(root)
        assert d.stop() == 0
    files = [
        root / "index" / "status.json",
        root / "index" / "kymwatch-state.sqlite",
        root / "index" / ".scan-stamp",
        root / "index" / "kymwatch.log",
        root / "tables" / "velocity_events.parquet",
        root / "tables" / "radon_report.parquet",
    ]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    writable = {name: oct(m) for name, m in modes.items() if m & stat.S_IWOTH}
    assert writable == {}, f"world-writable: {writable}"
