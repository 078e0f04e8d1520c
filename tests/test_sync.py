"""``kymwatch sync`` is a barrier that also reports when it cannot be honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch
from helpers_store import events_frame, make_v2_store, write_parquet_artifact, write_v2_record

pytestmark = pytest.mark.integration


def test_sync_fails_while_the_store_is_unavailable_and_recovers(tmp_path: Path) -> None:
    """With images/ gone, sync exits 1 naming the problem and no rows are dropped; once it
    is back, sync succeeds and the tables equal a fresh rebuild."""
    store = make_v2_store(tmp_path / "s.zarr")
    write_v2_record(store, "r1")
    write_parquet_artifact(store, "r1", "velocity_events", events_frame(4))
    with DaemonProcess(store) as daemon:
        daemon.sync()
        (store / "images").rename(tmp_path / "images-away")
        proc = kymwatch("sync", store, "--timeout", "60")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.count("\n") == 1 and "store_unavailable" in proc.stderr
        assert daemon.events("store_unavailable")
        (tmp_path / "images-away").rename(store / "images")
        write_v2_record(store, "r2")
        write_parquet_artifact(store, "r2", "velocity_events", events_frame(2))
        daemon.sync()
        assert_tables_match_rebuild(store, tmp_path / "scratch")
