"""Permissions: the daemon runs as an unprivileged user (``nobody``), so modes bite.

The suite usually runs as root, which no ``chmod`` stops; these tests then start the
real daemon through ``setpriv`` (or ``su``) as ``nobody`` on a store that user owns,
while the test itself plays the lab's writer, another user. They are skipped (with
the reason) only where no unprivileged user can be switched to.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import (
    DaemonProcess,
    assert_tables_match_rebuild,
    live_tables,
    unprivileged_prefix,
    wait_until,
)
from helpers_store import (
    analysis_file,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)

pytestmark = pytest.mark.integration

REC = "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11"
OTHER = "5d1c7e0f-8a43-4f5a-b6a2-31c9e8d0b7aa"


def _unprivileged() -> tuple[list[str], int, int] | str:
    """(command prefix, uid, gid) to run the daemon unprivileged, or why that is impossible."""
    prefix = unprivileged_prefix()
    if isinstance(prefix, str):
        return prefix
    if not prefix:
        return [], os.getuid(), os.getgid()
    user = pwd.getpwnam("nobody")
    return prefix, user.pw_uid, user.pw_gid


AS_USER = _unprivileged()
if isinstance(AS_USER, str):
    pytest.skip(AS_USER, allow_module_level=True)
PREFIX, UID, GID = AS_USER


def kymflow_events(n: int, *, kind: str = "stall") -> pd.DataFrame:
    """``n`` velocity events with text event ids, as kymflow writes them."""
    df = events_frame(n)
    df["event_id"] = [str(i + 1) for i in range(n)]
    df["kind"] = kind
    return df


def chown_tree(path: Path) -> None:
    """Give ``path`` and everything below it to the daemon's user."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, UID, GID)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), UID, GID, follow_symlinks=False)


@pytest.fixture
def store() -> Iterator[Path]:
    """A two-record store in a folder the unprivileged user can reach (not under the
    root-only pytest tmp folder), owned by that user."""
    base = Path(tempfile.mkdtemp(prefix="kymwatch-perm-"))
    try:
        base.chmod(0o755)
        root = make_v2_store(base / "store.zarr")
        for rec in (REC, OTHER):
            write_v2_record(root, rec)
            write_parquet_artifact(root, rec, "velocity_events", kymflow_events(3))
            write_json_artifact(root, rec, "radon_report", legacy_radon_report(1.5))
        chown_tree(base)
        yield root
    finally:
        for dirpath, dirnames, _ in os.walk(base):  # undo chmod 000 so it can be removed
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(base, ignore_errors=True)


def daemon(root: Path) -> DaemonProcess:
    """The real daemon on ``root``, as the unprivileged user."""
    return DaemonProcess(root, prefix=PREFIX)


def rows_of(root: Path, rec: str, table: str = "velocity_events") -> pd.DataFrame:
    """A record's rows in a table."""
    df = live_tables(root)[table]
    return df[df["image_id"] == rec].reset_index(drop=True)


def events_about(d: DaemonProcess, name: str, path: Path) -> list[dict[str, Any]]:
    """Log events named ``name`` whose path is at or below ``path``."""
    return [e for e in d.events(name) if str(e.get("path", "")).startswith(str(path))]


def test_the_daemon_really_runs_unprivileged(store: Path) -> None:
    """The daemon's process belongs to the unprivileged user, so modes apply to it."""
    with daemon(store) as d:
        d.sync()
        assert d.proc is not None
        assert os.stat(f"/proc/{d.proc.pid}").st_uid == UID
        assert (store / "index" / "kymwatch-state.sqlite").stat().st_uid == UID


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_file_published_0600_then_chmod_644_is_indexed(store: Path, when: str) -> None:
    """A file the daemon could not read (0600, another user's) is read once made 0644."""
    path = analysis_file(store, REC, "velocity_events", "parquet")
    d = daemon(store).start()
    try:
        d.sync()
        write_parquet_artifact(store, REC, "velocity_events", kymflow_events(5, kind="pause"))
        os.chown(path, 0, 0)  # the writer is another user ...
        path.chmod(0o600)  # ... who publishes it private first
        d.sync()
        assert len(rows_of(store, REC)) == 3  # unreadable: the old rows stay
        unreadable = events_about(d, "artifact_unreadable", path)
        assert unreadable and unreadable[-1]["kept_rows"] == 3
        if when == "stopped":
            assert d.stop() == 0
        path.chmod(0o644)  # only the ctime changes
        if when == "stopped":
            d.start()
        else:  # seen through IN_ATTRIB, without a sync
            wait_until(lambda: len(rows_of(store, REC)) == 5, what="the chmod to be seen")
        d.sync()
        assert list(rows_of(store, REC)["kind"]) == ["pause"] * 5
    finally:
        d.stop()
    assert_tables_match_rebuild(store, store.parent / "scratch")


def missing_indexers(d: DaemonProcess) -> set[str]:
    """The indexers that logged ``artifact_missing`` for the record so far."""
    return {e["indexer"] for e in d.events("artifact_missing") if e.get("image_id") == REC}


@pytest.mark.parametrize(
    ("folder", "mode"),
    [("analysis", 0o000), ("analysis", 0o600), ("analysis/velocity_events", 0o000)],
)
@pytest.mark.parametrize("when", ["running", "stopped"])
def test_unreadable_analysis_folder_keeps_the_rows(
    store: Path, folder: str, mode: int, when: str
) -> None:
    """An analysis folder (or sub-folder) the daemon cannot search keeps the record's rows,
    is reported ``artifact_unreadable``, and is indexed again once readable."""
    if folder == "analysis/velocity_events":  # the later kymflow layout
        analysis_file(store, REC, "velocity_events", "parquet").unlink()
        write_parquet_artifact(store, REC, "velocity_events/events", kymflow_events(3))
        chown_tree(store / "images" / REC)
    target = store / "images" / REC / folder
    d = daemon(store).start()
    try:
        d.sync()
        before = live_tables(store)
        missing_before = missing_indexers(d)
        if when == "stopped":
            assert d.stop() == 0
        target.chmod(mode)
        if when == "stopped":
            d.start()
        d.sync()
        now = live_tables(store)
        for table, df in before.items():
            assert now[table].equals(df), f"{table} lost rows of the unreadable record"
        unreadable = events_about(d, "artifact_unreadable", target)
        assert unreadable, d.events("artifact_missing")
        assert all(e["image_id"] == REC and e["kept_rows"] > 0 for e in unreadable)
        # Only indexers that had nothing to read before (another generation) say missing.
        assert missing_indexers(d) <= missing_before
        write_parquet_artifact(store, REC, "velocity_events", kymflow_events(4, kind="pause"))
        target.chmod(0o755)
        d.sync()
        assert list(rows_of(store, REC)["kind"]) == ["pause"] * 4
    finally:
        d.stop()
    assert_tables_match_rebuild(store, store.parent / "scratch")
