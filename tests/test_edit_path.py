"""What lies between a record becoming due and its table being replaced (issue 14).

A single edit's way to its table carries only the work a published table needs: no
status write before it, one folder fsync per batch, the crash journal committed beside
the extraction and merge but before any rename. Records are kymflow-shaped (UUID image
ids, string event ids, both generations); the oracle is a fresh rebuild.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import WAIT_S, assert_tables_match_rebuild
from helpers_loop import add_kym_record, kym_events
from helpers_store import (
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_mixed_generations,
    write_parquet_artifact,
)
from kymwatch.daemon import (
    Batch,
    Daemon,
    DaemonConfig,
    DaemonState,
    DaemonStatus,
    IndexState,
    RecordChange,
)
from kymwatch.index import publish
from kymwatch.index.publish import Publisher
from kymwatch.store import tables as tables_module


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0xA1B2C3D4 << 96 | i, version=4)) for i in range(n)]


class _Order:
    """Records, in order, the status files written and the table files renamed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_write = DaemonStatus.write
        real_replace = Path.replace

        def write(status: DaemonStatus, root: Path) -> None:
            self.calls.append(f"status:{status.state.value}")
            real_write(status, root)

        def replace(path: Path, target: Any) -> Any:
            if Path(target).parent.name == "tables":
                self.calls.append(f"table:{Path(target).name}")
            return real_replace(path, target)

        monkeypatch.setattr(DaemonStatus, "write", write)
        monkeypatch.setattr(Path, "replace", replace)


def _daemon(tmp_path: Path, ids: list[str]) -> tuple[Path, Daemon]:
    store = make_v2_store(tmp_path / "store.zarr")
    for i, image_id in enumerate(ids):
        add_kym_record(store, image_id, n_events=1 + i % 3)
    daemon = Daemon(DaemonConfig(store=store, indexers=("velocity_events", "radon_report")))
    daemon.reporter.set_state(DaemonState.WATCHING)
    assert daemon.indexing.index([RecordChange(i) for i in ids], 0.0, source="reconcile")
    return store, daemon


def _edit(store: Path, image_id: str) -> RecordChange:
    """Rewrite the record's events (kymflow's atomic way) and name the change."""
    write_parquet_artifact(store, image_id, "velocity_events", kym_events(4, start_s=7.0))
    return RecordChange(image_id)


def test_a_single_edit_writes_its_status_after_its_tables_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-record chunk publishes no ``indexing`` status ahead of its table writes: the
    status is written once, after them, as ``watching``."""
    store, daemon = _daemon(tmp_path, _ids(3))
    order = _Order(monkeypatch)
    assert daemon.indexing.index([_edit(store, _ids(3)[1])], 0.0, source="events")
    tables = [i for i, c in enumerate(order.calls) if c.startswith("table:")]
    statuses = [i for i, c in enumerate(order.calls) if c.startswith("status:")]
    assert tables and statuses, order.calls
    assert min(statuses) > max(tables), order.calls
    assert "status:indexing" not in order.calls
    assert order.calls[-1] == "status:watching"
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_large_chunk_still_publishes_indexing_before_its_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of many records (a burst, a reconcile) shows ``indexing`` in the status
    file while it works, then ``watching``."""
    ids = _ids(25)
    store, daemon = _daemon(tmp_path, ids)
    order = _Order(monkeypatch)
    changes = [_edit(store, i) for i in ids]
    assert daemon.indexing.index(changes, 0.0, source="events")
    first_table = next(i for i, c in enumerate(order.calls) if c.startswith("table:"))
    assert "status:indexing" in order.calls[:first_table], order.calls
    assert order.calls[-1] == "status:watching"
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_heartbeat_during_a_quiet_chunk_shows_indexing(tmp_path: Path) -> None:
    """The state of a quiet chunk is set, only not written: the loop's duties (run
    between two waits for a table lock held elsewhere) write it, ``indexing``."""
    store, daemon = _daemon(tmp_path, _ids(2))
    seen: list[str] = []
    real = daemon.worker.process

    def process(batch: Any, *, final: bool = False, hold: bool = False) -> Any:
        daemon.duties.run()  # what runs between two waits for a table lock held elsewhere
        seen.append(json.loads((store / "index" / "status.json").read_text())["state"])
        return real(batch, final=final, hold=hold)

    daemon.worker.process = process  # type: ignore[method-assign]
    assert daemon.indexing.index([_edit(store, _ids(2)[0])], 0.0, source="events")
    assert seen == ["indexing"]
    daemon.state.close()


def test_a_batch_syncs_the_tables_folder_once_after_every_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch writing two tables fsyncs each file's data before its rename and the
    ``tables/`` folder once, after both renames and before the batch returns."""
    ids = _ids(3)
    store, daemon = _daemon(tmp_path, ids)
    write_json_artifact(store, ids[2], "radon_report", legacy_radon_report(2.25))
    change = _edit(store, ids[2])  # both tables change
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        if "tables" in path.parts:
            calls.append(f"{kind}:{path.name if kind == 'dir' else 'data'}")
        real_fsync(fd)

    def replace(path: Path, target: Any) -> Any:
        if Path(target).parent.name == "tables":
            calls.append(f"rename:{Path(target).name}")
        return real_replace(path, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    result = daemon.worker.process(Batch((change,), 0.0))
    assert sorted(result.tables) == ["radon_report", "velocity_events"]
    renames = [i for i, c in enumerate(calls) if c.startswith("rename:")]
    assert len(renames) == 2, calls
    assert calls.count("dir:tables") == 1, calls
    assert calls.index("dir:tables") > max(renames), calls
    assert calls.count("file:data") == 2 and calls.index("file:data") < min(renames), calls
    for i in renames:  # each rename follows a data fsync (its own file's, on its thread)
        assert "file:data" in calls[:i], calls
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_folder_that_cannot_be_synced_fails_the_batch_and_the_cache_rereads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync of ``tables/`` that fails (EIO) fails the batch; the in-memory copy does
    not follow, and the next batch reads the renamed files, ending equal to a rebuild."""
    ids = _ids(3)
    store, daemon = _daemon(tmp_path, ids)

    def broken(folder: Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(folder))

    monkeypatch.setattr(tables_module, "fsync_dir", broken)
    with pytest.raises(OSError, match="Input/output"):
        daemon.worker.process(Batch((_edit(store, ids[0]),), 0.0))
    monkeypatch.undo()
    daemon.worker.process(Batch((_edit(store, ids[1]),), 0.0))
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_the_journal_commits_beside_the_merge_and_before_any_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash journal is committed on its own thread while the batch is extracted and
    merged, and every table rename of the batch waits for that commit."""
    ids = _ids(3)
    store, daemon = _daemon(tmp_path, ids)
    order: list[str] = []
    merging, renamed = threading.Event(), threading.Event()
    real_note, real_merge, real_replace = IndexState.note_publishing, Publisher.merge, Path.replace

    def note_publishing(self: IndexState, root: Path, image_ids: Any) -> None:
        assert threading.current_thread() is not threading.main_thread()
        assert merging.wait(WAIT_S)  # the loop thread went on to the merge meanwhile
        renamed.wait(0.5)  # a rename not held back by the journal would come here
        real_note(self, root, image_ids)
        order.append("journal")

    def merge(self: Publisher, *a: Any, **k: Any) -> Any:
        merging.set()
        return real_merge(self, *a, **k)

    def replace(path: Path, target: Any) -> Any:
        if Path(target).parent.name == "tables":
            order.append("rename")
            renamed.set()
        return real_replace(path, target)

    monkeypatch.setattr(IndexState, "note_publishing", note_publishing)
    monkeypatch.setattr(Publisher, "merge", merge)
    monkeypatch.setattr(Path, "replace", replace)
    result = daemon.worker.process(Batch((_edit(store, ids[1]),), 0.0))
    assert result.tables == ["velocity_events"]
    assert order == ["journal", "rename"], order
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def _mixed(tmp_path: Path) -> tuple[Path, list[str], Daemon]:
    store = tmp_path / "mixed.zarr"
    ids = write_mixed_generations(store, 6, without_artifacts=4)
    daemon = Daemon(DaemonConfig(store=store))  # chooses all four indexers
    assert daemon.indexing.index([RecordChange(i) for i in ids], 0.0, source="reconcile")
    return store, ids, daemon


def _count_merges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    merged: list[str] = []
    real = publish.merge_update

    def merge_update(current: Any, results: Any, ix: Any) -> Any:
        merged.append(ix.table_name)
        return real(current, results, ix)

    monkeypatch.setattr(publish, "merge_update", merge_update)
    return merged


def test_a_table_without_rows_of_the_record_before_or_after_is_not_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation-1 radon edit also runs kym_radon (both read ``radon_report``), which
    finds no artifact of its own: with no rows of that record before or after, its table
    is neither merged nor written, and every table still equals a rebuild."""
    store, ids, daemon = _mixed(tmp_path)
    gen1 = ids[1]
    radon = {"roi_id": 1, "mean_velocity": 9.75, "n_valid": 5, "notes": "redone"}
    write_json_artifact(store, gen1, "radon_report", radon)
    merged = _count_merges(monkeypatch)
    result = daemon.worker.process(Batch((RecordChange(gen1, frozenset({"radon_report"})),), 0.0))
    assert result.tables == ["radon_report"]
    assert merged == ["radon_report"]
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_record_losing_its_rows_is_still_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation-2 record whose radon results are deleted had rows in kym_radon: its
    table is merged and rewritten without them."""
    store, ids, daemon = _mixed(tmp_path)
    gen2 = ids[2]
    (store / "images" / gen2 / "analysis" / "radon" / "results.parquet").unlink()
    merged = _count_merges(monkeypatch)
    result = daemon.worker.process(Batch((RecordChange(gen2),), 0.0))
    assert "kym_radon" in merged and "kym_radon" in result.tables
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_the_garbage_collector_waits_out_an_edit_but_not_a_burst(tmp_path: Path) -> None:
    """Python's cyclic collector is off while a one-record chunk is indexed and on again
    after it; a chunk of more records than an edit keeps it on; tables match a rebuild."""
    import gc

    from kymwatch.daemon.indexing import GC_PAUSED_UP_TO

    ids = _ids(GC_PAUSED_UP_TO + 1)
    store, daemon = _daemon(tmp_path, ids)
    seen: list[tuple[int, bool]] = []
    real = daemon.worker.process

    def process(batch: Any, *, final: bool = False, hold: bool = False) -> Any:
        seen.append((len(batch), gc.isenabled()))
        return real(batch, final=final, hold=hold)

    daemon.worker.process = process  # type: ignore[method-assign]
    assert gc.isenabled()
    assert daemon.indexing.index([_edit(store, ids[1])], 0.0, source="events")
    assert gc.isenabled()
    assert daemon.indexing.index([_edit(store, i) for i in ids], 0.0, source="events")
    assert seen == [(1, False), (len(ids), True)]
    assert gc.isenabled()
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_paused_collector_is_left_as_the_caller_had_it() -> None:
    """Pausing restores the collector even when the block raises, and leaves a collector
    the caller had turned off turned off."""
    import gc

    from kymwatch.daemon.indexing import gc_paused

    with pytest.raises(RuntimeError), gc_paused(True):
        assert not gc.isenabled()
        raise RuntimeError("batch failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused(True):
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
