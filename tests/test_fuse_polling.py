"""A store on a FUSE mount (bindfs): writes made through the backing folder, which raise
no inotify event on the mount, reach the tables because the daemon polls there.

The test bed reproduces "another machine wrote to the share" on one machine: bindfs
mounts a temporary backing folder on a temporary mount point; the daemon watches
``MOUNT/store.zarr`` and the test writes to ``BACKING/store.zarr`` (and through the
mount). Skips with the reason only where bindfs or ``/dev/fuse`` is unusable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch, live_tables, wait_until
from helpers_store import (
    delete_record,
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon.mounts import find_mount

pytestmark = pytest.mark.integration

BOTH = "velocity_events,radon_report,kym_velocity_events,kym_radon"
UUID_ID = "5f0e8a52-9d7c-4c61-8f0b-3a9d2e61c4b7"


@dataclass(frozen=True)
class FuseStore:
    """One dataset seen two ways: through the FUSE mount and through its backing folder."""

    mount_point: Path
    mounted: Path  # MOUNT/store.zarr: what the daemon watches
    backing: Path  # BACKING/store.zarr: "another machine"


def _unmount(mount_point: Path) -> None:
    for cmd in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount"], ["umount", "-l"]):
        if shutil.which(cmd[0]) is None:
            continue
        done = subprocess.run([*cmd, str(mount_point)], capture_output=True, timeout=60)
        if done.returncode == 0:
            return


@pytest.fixture
def fuse_store(tmp_path: Path) -> Iterator[FuseStore]:
    """An empty dataset in a backing folder, bindfs-mounted on a mount point."""
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (Debian package bindfs; .ci/run installs it)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("/dev/fuse is missing or not usable by this user")
    backing, mount_point = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount_point.mkdir()
    make_v2_store(backing / "store.zarr")
    done = subprocess.run(
        ["bindfs", "--no-allow-other", str(backing), str(mount_point)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {done.stderr.strip()[:300]}")
    try:
        mount = find_mount(mount_point)
        assert mount is not None and mount.fs_type.startswith("fuse"), mount
        yield FuseStore(mount_point, mount_point / "store.zarr", backing / "store.zarr")
    finally:
        _unmount(mount_point)


def _table(store: Path, table: str) -> pd.DataFrame | None:
    """``table`` as a reader through the mount sees it now; None while the daemon replaces
    it: libfuse forgets the node a rename replaced, so a reader that looked the file up
    just before gets ENOENT on open (any reader through a FUSE mount can; it reads again)."""
    try:
        return live_tables(store)[table]
    except FileNotFoundError:
        return None


def n_rows(store: Path, table: str, image_id: str) -> int | None:
    """Rows of ``image_id`` a reader sees now in ``table`` (None: being replaced)."""
    df = _table(store, table)
    return None if df is None else int((df["image_id"] == image_id).sum())


def mean_velocity(store: Path, image_id: str) -> list[float] | None:
    """The radon_report table's mean velocities of ``image_id`` (None: being replaced)."""
    df = _table(store, "radon_report")
    return None if df is None else df.loc[df["image_id"] == image_id, "mean_velocity"].tolist()


def test_fuse_store_is_polled_and_writes_through_backing_and_mount_reach_the_tables(
    fuse_store: FuseStore, tmp_path: Path
) -> None:
    """On a FUSE mount the daemon polls (reason fuse, shown by status and the log); a new
    record, an atomic rewrite and a delete made through the backing folder, and a record
    written through the mount, all reach the tables without a sync; the tables then equal
    a fresh rebuild."""
    store, backing = fuse_store.mounted, fuse_store.backing
    write_v2_record(backing, "old")
    write_json_artifact(backing, "old", "radon_report", legacy_radon_report(1.0))
    with DaemonProcess(store, "--indexers", BOTH, "--poll-interval", "0.5") as d:
        status = kymwatch("status", store, "--json", check=True)
        doc = json.loads(status.stdout)["status"]
        assert (doc["watch_mode"], doc["watch_reason"]) == ("polling", "fuse")
        assert doc["fs_type"] == "fuse"
        assert doc["mount_point"] == os.path.realpath(fuse_store.mount_point)
        text = kymwatch("status", store, check=True).stdout
        assert "watching with polling (FUSE mount" in text, text
        chosen = d.events("watch_mode_chosen")
        assert [(e["watch_mode"], e["reason"]) for e in chosen] == [("polling", "fuse")]
        assert d.events("polling_fallback")
        wait_until(lambda: mean_velocity(store, "old") == [1.0], what="the first index")

        write_v2_record(backing, UUID_ID)
        write_parquet_artifact(backing, UUID_ID, "velocity_events/events", gen2_events_frame(4))
        wait_until(
            lambda: n_rows(store, "kym_velocity_events", UUID_ID) == 4,
            what="a record written through the backing folder to reach the table",
        )
        write_json_artifact(backing, "old", "radon_report", legacy_radon_report(2.5))
        wait_until(
            lambda: mean_velocity(store, "old") == [2.5],
            what="an atomic rewrite through the backing folder to reach the table",
        )
        write_v2_record(store, "through-mount")
        write_parquet_artifact(store, "through-mount", "velocity_events", events_frame(3))
        wait_until(
            lambda: n_rows(store, "velocity_events", "through-mount") == 3,
            what="a record written through the mount to reach the table",
        )
        delete_record(backing, UUID_ID)
        wait_until(
            lambda: n_rows(store, "kym_velocity_events", UUID_ID) == 0,
            what="a record deleted through the backing folder to leave the table",
        )
        d.sync()
        assert_tables_match_rebuild(store, tmp_path / "scratch", indexers=BOTH.split(","))
        assert d.stop() == 0


def test_in_place_rewrite_through_the_backing_folder_is_found_by_verification_polls(
    fuse_store: FuseStore, tmp_path: Path
) -> None:
    """A parquet rewritten in place changes no folder's mtime: the polls that verify each
    record's artifact fingerprints find it without a sync."""
    store, backing = fuse_store.mounted, fuse_store.backing
    write_v2_record(backing, "rec")
    write_parquet_artifact(backing, "rec", "velocity_events", events_frame(2))
    with DaemonProcess(store, "--indexers", BOTH, "--poll-interval", "0.2") as d:
        wait_until(lambda: n_rows(store, "velocity_events", "rec") == 2, what="the first index")
        write_parquet_artifact(backing, "rec", "velocity_events", events_frame(6), atomic=False)
        wait_until(
            lambda: n_rows(store, "velocity_events", "rec") == 6,
            what="an in-place rewrite to be found by a verification poll",
        )
        d.sync()
        assert_tables_match_rebuild(store, tmp_path / "scratch", indexers=BOTH.split(","))
        assert d.stop() == 0


def test_inotify_option_overrides_the_fuse_decision(fuse_store: FuseStore, tmp_path: Path) -> None:
    """``--inotify`` watches a FUSE store with inotify (reason inotify_requested, in status
    and log), which still sees writes made through the mount itself."""
    store = fuse_store.mounted
    with DaemonProcess(store, "--indexers", BOTH, "--inotify") as d:
        doc = json.loads(kymwatch("status", store, "--json", check=True).stdout)["status"]
        assert (doc["watch_mode"], doc["watch_reason"]) == ("inotify", "inotify_requested")
        assert "--inotify" in kymwatch("status", store, check=True).stdout
        assert not d.events("polling_fallback")
        write_v2_record(store, "rec")
        write_parquet_artifact(store, "rec", "velocity_events", events_frame(3))
        wait_until(
            lambda: n_rows(store, "velocity_events", "rec") == 3,
            what="a write through the mount to reach the table by an inotify event",
        )
        d.sync()
        assert_tables_match_rebuild(store, tmp_path / "scratch", indexers=BOTH.split(","))
        assert d.stop() == 0
