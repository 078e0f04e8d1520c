"""Partitioned tables: parts by image_id range, one edit one part, the coalesced export."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers_store import events_frame, gen2_events_frame, write_parquet_artifact
from kymwatch.index import KymDataset, PartitionPolicy, make_indexers
from kymwatch.store.parts import EXPORT_VERSION_KEY, export_version, parts_folder, read_layout

VE, KVE = "velocity_events", "kym_velocity_events"
# A daemon's policy, scaled down: 4 rows per record, parts of ~8 rows, export only when asked.
POLICY = PartitionPolicy(partition_rows=20, part_rows=8, export_interval_s=3600.0)


def _records(root: Path, n: int) -> list[str]:
    """``n`` records of both generations (string event ids, UUID event ids), 4 rows each."""
    ids = sorted(str(uuid.uuid4()) for _ in range(n))
    for k, image_id in enumerate(ids):
        (root / "images" / image_id).mkdir()
        if k % 2:
            write_parquet_artifact(root, image_id, "velocity_events/events", gen2_events_frame(4))
        else:
            write_parquet_artifact(root, image_id, VE, events_frame(4, start_s=k))
    return ids


def _daemon_kd(root: Path) -> KymDataset:
    return KymDataset(root, indexers=make_indexers([VE, KVE]), partitions=POLICY)


def _fresh(root: Path, name: str) -> pd.DataFrame:
    """The table a fresh rebuild (never partitioned) of a copy of the store gives."""
    copy = root.with_name(f"fresh-{uuid.uuid4().hex[:8]}.zarr")
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("tables", "index"))
    return KymDataset(copy, indexers=make_indexers([VE, KVE])).rebuild(name)


def _parts(root: Path, name: str) -> dict[str, tuple[int, int]]:
    """Part file → (inode, mtime_ns)."""
    folder = parts_folder(root, name)
    return {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in folder.glob("part-*")}


def _export(root: Path, name: str) -> pd.DataFrame:
    df: pd.DataFrame = pq.read_table(root / "tables" / f"{name}.parquet").to_pandas()
    return df


def _exported_then_edited(root: Path, ids: list[str], name: str, rows: int) -> KymDataset:
    """A daemon's dataset: ``name`` rebuilt as parts and exported, then record ``ids[0]``
    re-analysed (``rows`` generation-1 events) and updated, its export left due."""
    kd = _daemon_kd(root)
    kd.rebuild_report(name)
    kd.export_tables(force=True)
    write_parquet_artifact(root, ids[0], VE, events_frame(rows, start_s=50.0 + rows))
    kd.update_images_report(name, [ids[0]])
    return kd


def test_export_equals_the_parts_and_a_fresh_rebuild(plain_v2_store: Path) -> None:
    """A table past the threshold is written as several parts; the exported single file,
    the parts read as a dataset and a fresh rebuild are the same table."""
    root = plain_v2_store
    _records(root, 12)
    kd = _daemon_kd(root)
    kd.rebuild_report(KVE)
    assert len(_parts(root, KVE)) >= 3
    assert kd.export_tables(force=True) == [KVE]

    fresh = _fresh(root, KVE)
    pd.testing.assert_frame_equal(_export(root, KVE), fresh)
    as_dataset = pq.read_table(parts_folder(root, KVE)).to_pandas()
    pd.testing.assert_frame_equal(as_dataset, fresh)
    layout = read_layout(parts_folder(root, KVE))
    assert layout is not None
    assert export_version(root / "tables" / f"{KVE}.parquet") == layout.version


def test_one_edit_rewrites_one_part(plain_v2_store: Path) -> None:
    """Re-indexing one record replaces only the part holding it (the others keep their
    inode and mtime), and the export is left for later."""
    root = plain_v2_store
    ids = _records(root, 12)
    kd = _daemon_kd(root)
    kd.rebuild_report(KVE)
    kd.export_tables(force=True)
    export_before = (root / "tables" / f"{KVE}.parquet").read_bytes()
    before = _parts(root, KVE)

    write_parquet_artifact(root, ids[5], "velocity_events/events", gen2_events_frame(6))
    report = kd.update_images_report(KVE, [ids[5]])

    after = _parts(root, KVE)
    assert report.table_written
    assert set(after) == set(before)
    assert [name for name in before if before[name] != after[name]] != []
    assert len([name for name in before if before[name] != after[name]]) == 1
    assert (root / "tables" / f"{KVE}.parquet").read_bytes() == export_before
    assert kd.parted.due(force=True) == [KVE]
    kd.export_tables(force=True)
    pd.testing.assert_frame_equal(_export(root, KVE), _fresh(root, KVE))


def test_a_crash_between_part_write_and_export_is_recovered(plain_v2_store: Path) -> None:
    """Parts written but not exported (the daemon died): the next dataset reads the
    parts, sees the export is stale, and exports at once; nothing is lost."""
    root = plain_v2_store
    kd = _exported_then_edited(root, _records(root, 10), VE, rows=7)
    del kd  # "crash": the export was never made

    again = _daemon_kd(root)
    pd.testing.assert_frame_equal(again.get_table(VE), _fresh(root, VE))
    assert again.export_tables() == [VE]  # due at once, not after the interval
    pd.testing.assert_frame_equal(_export(root, VE), _fresh(root, VE))


def test_a_crash_after_the_version_bump_marks_the_export_stale(plain_v2_store: Path) -> None:
    """A layout whose version moved past the export's (a crash before the part write)
    makes the export due again from the parts."""
    root = plain_v2_store
    _records(root, 10)
    kd = _daemon_kd(root)
    kd.rebuild_report(VE)
    kd.export_tables(force=True)
    layout_file = parts_folder(root, VE) / "_parts.json"
    doc = json.loads(layout_file.read_bytes())
    doc["version"] += 1
    layout_file.write_text(json.dumps(doc))

    again = _daemon_kd(root)
    assert again.export_tables() == [VE]  # found without reading the table first
    assert export_version(root / "tables" / f"{VE}.parquet") == doc["version"]


def test_an_export_written_by_kymflow_drops_the_parts(plain_v2_store: Path) -> None:
    """kymflow rewriting tables/<name>.parquet (pandas, no kymwatch version) makes that
    file the table again: the parts are dropped, its rows kept."""
    root = plain_v2_store
    _records(root, 10)
    kd = _daemon_kd(root)
    kd.rebuild_report(VE)
    kd.export_tables(force=True)
    df = _export(root, VE).iloc[:6]
    df.to_parquet(root / "tables" / f"{VE}.parquet", index=False)

    reader = KymDataset(root, "r", indexers=make_indexers([VE]))
    assert len(reader.get_table(VE)) == 6
    assert parts_folder(root, VE).exists()  # a read-only dataset deletes nothing
    again = _daemon_kd(root)
    assert len(again.get_table(VE)) == 6
    assert not parts_folder(root, VE).exists()


def test_library_use_exports_in_the_same_call(plain_v2_store: Path) -> None:
    """A KymDataset without a policy (kymflow's API) never leaves a partitioned table's
    single file behind: the export is written before the call returns."""
    root = plain_v2_store
    ids = _records(root, 10)
    _daemon_kd(root).rebuild_report(VE)
    write_parquet_artifact(root, ids[2], VE, events_frame(1, start_s=9.0))
    KymDataset(root, indexers=make_indexers([VE])).update_image(VE, ids[2])
    pd.testing.assert_frame_equal(_export(root, VE), _fresh(root, VE))
    meta = pq.read_schema(root / "tables" / f"{VE}.parquet").metadata
    assert EXPORT_VERSION_KEY in meta


@pytest.mark.parametrize("part_rows", [4, 1000])
def test_parts_split_on_record_boundaries(plain_v2_store: Path, part_rows: int) -> None:
    """No record's rows are split across parts, whatever the part size."""
    root = plain_v2_store
    _records(root, 9)
    policy = PartitionPolicy(partition_rows=1, part_rows=part_rows, export_interval_s=0.0)
    KymDataset(root, indexers=make_indexers([VE]), partitions=policy).rebuild_report(VE)
    seen: set[str] = set()
    for part in sorted(parts_folder(root, VE).glob("part-*")):
        ids = set(pq.read_table(part).column("image_id").to_pylist())
        assert not ids & seen
        seen |= ids
    assert len(seen) == 5


@pytest.mark.integration
def test_daemon_sync_promises_the_export_of_a_partitioned_table(tmp_path: Path) -> None:
    """With tables past --partition-rows the daemon writes parts, and a sync still
    promises that tables/<name>.parquet reflects every earlier write (the oracle holds
    on the single files, also after the daemon stopped); a part's temporary left by a
    crash is removed at the next start."""
    from harness import DaemonProcess, assert_tables_match_rebuild
    from helpers_loop import add_kym_record, kym_events
    from helpers_store import make_v2_store

    root = make_v2_store(tmp_path / "store.zarr")
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for image_id in ids:
        add_kym_record(root, image_id, n_events=3)
    with DaemonProcess(root, "--partition-rows", "5") as daemon:
        daemon.sync()
        assert read_layout(parts_folder(root, VE)) is not None
        write_parquet_artifact(root, ids[1], VE, kym_events(8, start_s=70.0))
        daemon.sync()
        export = _export(root, VE)
        assert (export["image_id"] == ids[1]).sum() == 8
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        write_parquet_artifact(root, ids[2], VE, kym_events(2, start_s=80.0))
        daemon.sync()
        assert daemon.stop() == 0
    assert (_export(root, VE)["image_id"] == ids[2]).sum() == 2
    assert_tables_match_rebuild(root, tmp_path / "scratch2")
    stale = parts_folder(root, VE) / ".part-000001-00000.parquet.0123456789ab.tmp"
    stale.write_bytes(b"PAR1 half a part")
    with DaemonProcess(root, "--partition-rows", "5") as daemon:
        daemon.sync()
        assert not stale.exists()
        assert any(e.get("path") == str(stale) for e in daemon.events("stale_temporary_removed"))


@pytest.mark.integration
def test_chunked_work_exports_once_when_idle(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A first index cut into chunks writes parts chunk by chunk; the single file is
    written at once when there is none, then once when the work is done, not after
    every chunk."""
    from harness import assert_tables_match_rebuild
    from helpers_loop import add_kym_record, running
    from helpers_store import make_v2_store
    from kymwatch.daemon import Daemon, DaemonConfig

    root = make_v2_store(tmp_path / "store.zarr")
    for k in range(60):
        add_kym_record(root, f"20261126_{k:03d}-{uuid.uuid4().hex[:8]}", n_events=5)
    config = DaemonConfig(
        root,
        quiet_s=0.05,
        max_delay_s=1.0,
        batch_records=10,
        partition_rows=50,
        part_rows=40,
        backlog_write_s=0.0,  # every chunk writes its parts (not held for the backlog)
    )
    with running(Daemon(config)):
        pass
    chunks = [e for e in captured_logs if e["event"] == "batch_indexed" and e["records"]]
    exported = [e["table"] for e in captured_logs if e["event"] == "table_exported"]
    assert len(chunks) >= 6
    assert exported.count(VE) == 2  # the first file at once (there was none), then once idle
    assert len(list(parts_folder(root, VE).glob("part-*"))) >= 5
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_export_is_planned_now_only_when_the_loop_is_idle(tmp_path: Path) -> None:
    """With a change pending, an unexported partitioned table is planned for its age
    deadline (the loop never spins on it); once idle, for now; a failed export is
    retried export_interval_s later."""
    from helpers_store import make_v2_store
    from kymwatch.daemon import Daemon, DaemonConfig
    from kymwatch.daemon.changes import RecordChange
    from kymwatch.daemon.schedule import Task

    now = [100.0]
    root = make_v2_store(tmp_path / "store.zarr")
    config = DaemonConfig(root, partition_rows=1, export_interval_s=5.0)
    daemon = Daemon(config, clock=lambda: now[0])
    daemon.kd.parted.unexported[VE] = 100.0  # a part written now, not exported
    daemon.debouncer.feed(RecordChange("rec1"), 100.0)

    daemon.duties.plan_export()
    assert daemon.schedule.deadline(Task.EXPORT) == 105.0
    daemon.debouncer.flush()
    daemon.duties.plan_export()
    assert daemon.schedule.deadline(Task.EXPORT) == 100.0

    def failing(*, force: bool = False) -> list[str]:
        raise OSError(28, "No space left on device")

    daemon.kd.export_tables = failing  # type: ignore[method-assign]
    now[0] = 101.0
    daemon.duties.export(force=True)
    assert daemon.schedule.deadline(Task.EXPORT) == 106.0


def test_a_steady_stream_of_edits_exports_by_age_not_after_each_edit(tmp_path: Path) -> None:
    """Chunks ending 0.3 s apart: the export is planned at most export_idle_s ahead and
    never forced while they go on (the first part write's age makes it due after
    export_interval_s); once the stream stops, it is forced export_idle_s later."""
    from helpers_store import make_v2_store
    from kymwatch.daemon import Daemon, DaemonConfig
    from kymwatch.daemon.schedule import Task

    now = [100.0]
    root = make_v2_store(tmp_path / "store.zarr")
    config = DaemonConfig(root, partition_rows=1, export_interval_s=5.0, export_idle_s=1.0)
    daemon = Daemon(config, clock=lambda: now[0])
    daemon.kd.parted.unexported[VE] = 100.0  # the first part write, not exported
    ends = [100.0 + 0.3 * k for k in range(12)]
    for end in ends:
        now[0] = end
        daemon.duties.between_chunks(False)  # runs the export planned before, unforced
        deadline = daemon.schedule.deadline(Task.EXPORT)
        assert deadline is not None and end < deadline <= end + 1.0
        assert not daemon.duties.idle_for_export(end + 0.29)
    assert VE in daemon.kd.parted.unexported
    daemon.schedule.cancel(Task.EXPORT)  # as Duties.export does before planning again
    daemon.duties.plan_export()
    assert daemon.schedule.deadline(Task.EXPORT) == pytest.approx(ends[-1] + 1.0)
    assert daemon.duties.idle_for_export(ends[-1] + 1.0)
    daemon.kd.parted.unexported[VE] = 99.0  # older than export_interval_s at the next plan
    now[0] = 104.5
    daemon.duties.between_chunks(False)  # due by age: started on the exporter thread
    assert daemon.worker.export_ended(wait=True)
    assert VE not in daemon.kd.parted.unexported


class _Deferred(Executor):
    """An executor that runs what it is given only when told (the exporter thread,
    held between the moment its jobs are made and the moment they are written)."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.calls.append(lambda: future.set_result(fn(*args, **kwargs)))
        return future

    def run(self) -> None:
        for call in self.calls:
            call()
        self.calls.clear()


def test_an_export_started_before_an_edit_leaves_the_export_due(plain_v2_store: Path) -> None:
    """An export made from the cached table, then an edit published before the exporter
    writes it: the edit does not wait for the export; the export that lands reflects the
    table before the edit and stays due; the next one equals a fresh rebuild."""
    root = plain_v2_store
    ids = _records(root, 12)
    kd = _daemon_kd(root)
    kd.rebuild_report(KVE)
    held = _Deferred()
    future = kd.start_export(force=True, executor=held)
    assert future is not None and not future.done()

    write_parquet_artifact(root, ids[3], "velocity_events/events", gen2_events_frame(9))
    assert kd.update_images_report(KVE, [ids[3]]).table_written
    held.run()
    assert future.result() == [KVE]
    exported = _export(root, KVE)
    assert (exported["image_id"] == ids[3]).sum() == 4  # the rows before the edit
    layout = read_layout(parts_folder(root, KVE))
    version = export_version(root / "tables" / f"{KVE}.parquet")
    assert layout is not None and version is not None and version < layout.version
    assert kd.parted.due(force=True) == [KVE]
    assert kd.export_tables(force=True) == [KVE]
    pd.testing.assert_frame_equal(_export(root, KVE), _fresh(root, KVE))
    assert kd.parted.due(force=True) == []


def test_an_export_does_not_overwrite_a_file_replaced_meanwhile(plain_v2_store: Path) -> None:
    """kymflow rewriting tables/<name>.parquet while an export is being encoded wins: the
    export is dropped (its temporary removed), and the next read takes kymflow's file."""
    root = plain_v2_store
    kd = _exported_then_edited(root, _records(root, 10), VE, rows=3)
    held = _Deferred()
    future = kd.start_export(force=True, executor=held)
    assert future is not None
    theirs = _export(root, VE).iloc[:5]
    theirs.to_parquet(root / "tables" / f"{VE}.parquet", index=False)
    held.run()
    assert future.result() == []
    pd.testing.assert_frame_equal(_export(root, VE), theirs)
    assert not list((root / "tables").glob(".*.tmp"))
    assert len(_daemon_kd(root).get_table(VE)) == 5


@pytest.mark.integration
def test_a_deleted_export_of_a_partitioned_table_is_made_again_from_its_parts(
    tmp_path: Path,
) -> None:
    """Deleting tables/<name>.parquet of a partitioned table makes the daemon export it
    again from its parts (they are the table), not rebuild the table from every record;
    the file is back by the next sync and equals a fresh rebuild."""
    from harness import DaemonProcess, assert_tables_match_rebuild
    from helpers_store import make_v2_store

    root = make_v2_store(tmp_path / "store.zarr")
    _records(root, 12)
    with DaemonProcess(root, "--partition-rows", "20") as daemon:
        daemon.sync()
        assert read_layout(parts_folder(root, KVE)) is not None
        (root / "tables" / f"{KVE}.parquet").unlink()
        daemon.sync()
        assert (root / "tables" / f"{KVE}.parquet").exists()
        assert daemon.events("table_rebuilt") == []
    assert_tables_match_rebuild(root, tmp_path / "scratch")
