"""Power-loss durability: what is fsynced, and in which order, counted through ``os.fsync``.

kill -9 keeps the page cache; a power cut does not. So a table, state or journal
write must reach the disk (file data *and* the folder entry of its rename) before
anything that relies on it, and the journal before the table it protects.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers_store import events_frame, make_v2_store, write_parquet_artifact, write_v2_record
from kymwatch.daemon import Batch, IndexState, RecordChange, Worker
from kymwatch.daemon.status import DaemonStatus
from kymwatch.daemon.sync import answer_sync
from kymwatch.index import KymDataset
from kymwatch.store import ZarrDataset, atomic, atomic_write_bytes, write_table_file
from kymwatch.store.tables import table_lock


class FsyncLog:
    """Records every ``os.fsync`` as ("dir" | "file", path) and passes it on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.calls.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_fsyncs_the_file_then_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is synced before the rename and the folder after it (the rename itself)."""
    log = FsyncLog(monkeypatch)
    target = tmp_path / "sub" / "state.bin"
    atomic_write_bytes(target, b"x" * 100)
    kinds = [k for k, _ in log.calls]
    assert kinds == ["file", "dir"], log.calls
    assert log.calls[1][1] == str(target.parent)
    assert target.read_bytes() == b"x" * 100


def test_table_writes_fsync_the_tables_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing a table syncs tables/ after the rename."""
    log = FsyncLog(monkeypatch)
    path = tmp_path / "tables" / "velocity_events.parquet"
    write_table_file(path, pd.DataFrame({"image_id": ["a"]}))
    assert ("dir", str(path.parent)) in log.calls


def test_no_fsync_asked_means_none_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fsync=False`` (scratch files) syncs neither file nor folder."""
    log = FsyncLog(monkeypatch)
    atomic_write_bytes(tmp_path / "scratch.bin", b"x", fsync=False)
    assert log.calls == []


def test_folder_that_cannot_be_synced_is_tolerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses fsync on folders (EINVAL) still gets its files written."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.atomic_write_bytes(tmp_path / "f.bin", b"y")
    assert (tmp_path / "f.bin").read_bytes() == b"y"


def test_the_journal_is_durable_before_the_table_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """The worker commits the crash journal (synchronous=FULL) before it writes a table."""
    store = make_v2_store(tmp_path / "s.zarr")
    write_v2_record(store, "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11")
    write_parquet_artifact(store, "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11", "velocity_events",
                           events_frame(3))  # fmt: skip
    kd, state = KymDataset(store), IndexState()
    worker = Worker(kd, state)
    order: list[str] = []
    real_note = IndexState.note_publishing

    def note_publishing(self: IndexState, root: Path, ids: Any) -> None:
        real_note(self, root, ids)
        db = self._connect(root)
        assert db.execute("PRAGMA synchronous").fetchone() == (2,)
        journaled = {i for (i,) in db.execute("SELECT image_id FROM journal")}
        order.append(f"journal:{sorted(journaled)}")

    real_write = atomic._replacing

    def replacing(path: Path, *, fsync: bool, **kw: Any) -> Any:
        order.append(f"write:{Path(path).parent.name}/{Path(path).name}:fsync={fsync}")
        return real_write(path, fsync=fsync, **kw)

    monkeypatch.setattr(IndexState, "note_publishing", note_publishing)
    monkeypatch.setattr(atomic, "_replacing", replacing)
    worker.process(Batch((RecordChange("0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11"),), 0.0))
    state.close()
    tables = [i for i, o in enumerate(order) if o.startswith("write:tables/")]
    assert order[0] == "journal:['0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11']", order
    assert tables and all(i > 0 for i in tables)
    assert all(o.endswith("fsync=True") for o in order if o.startswith("write:"))


# -- a store that vanished is never created again -----------------------------------------
def test_write_within_a_vanished_store_fails_instead_of_recreating_it(tmp_path: Path) -> None:
    """A daemon's write into a store deleted meanwhile raises; nothing appears at its path."""
    root = tmp_path / "store.zarr"
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(root / "index" / "status.json", b"{}", within=root)
    assert not root.exists()


def test_write_within_a_store_creates_the_missing_folders_below_it(tmp_path: Path) -> None:
    """Below an existing store, missing folders (index/sync) are created as before."""
    root = tmp_path / "store.zarr"
    root.mkdir()
    atomic_write_bytes(root / "index" / "sync" / "t.done", b"{}", fsync=False, within=root)
    assert (root / "index" / "sync" / "t.done").read_bytes() == b"{}"


def test_daemon_writes_never_recreate_a_deleted_store(tmp_path: Path) -> None:
    """Status, sync answers, table writes and the table lock never recreate a deleted
    store folder: a removed store stays removed, so restoring it from a backup works."""
    root = make_v2_store(tmp_path / "store.zarr")
    store = ZarrDataset(root)
    shutil.rmtree(root)
    DaemonStatus(store=str(root)).write(root)
    assert answer_sync(root, "t", ok=True) is False
    with pytest.raises(FileNotFoundError):
        store.save_table("velocity_events", pd.DataFrame({"image_id": ["a"]}))
    with pytest.raises(FileNotFoundError), table_lock(root):
        pass
    assert not root.exists()
