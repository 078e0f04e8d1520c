"""End-to-end: the real daemon (``kymwatch run``) keeps the tables of a store right.

Every store write here is plain file I/O (tests/helpers_store.py), the way other
programs write into a dataset. Each test ends with ``kymwatch sync`` and the
oracle: every table equals a fresh rebuild of the same store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import (
    DaemonProcess,
    assert_tables_match_rebuild,
    count_inotify_watches,
    kymwatch,
    live_tables,
    wait_until,
)
from helpers_store import (
    analysis_file,
    delete_record,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_csv_gz_artifact,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)

pytestmark = pytest.mark.integration

KVE = "kym_velocity_events"  # the generation-2 table: velocity_events/events feeds it


# -- fixtures and small helpers --------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty zarr-format-2 dataset written with plain file I/O."""
    return make_v2_store(tmp_path / "store.zarr")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """Where the oracle copies the store for its fresh rebuild."""
    return tmp_path / "rebuild"


@pytest.fixture
def daemon(store: Path) -> Iterator[DaemonProcess]:
    """``kymwatch run`` on the store, ready (first reconcile done); stopped afterwards."""
    with DaemonProcess(store) as d:
        yield d


@pytest.fixture
def daemon_both(store: Path) -> Iterator[DaemonProcess]:
    """``kymwatch run`` with both generations' indexers (flat and nested event files)."""
    both = "velocity_events,radon_report,kym_velocity_events,kym_radon"
    with DaemonProcess(store, "--indexers", both) as d:
        yield d


def add_record(store: Path, image_id: str, *, n_events: int = 3, mean: float = 1.0) -> None:
    """A record with a velocity-events parquet and a (legacy-keyed) radon JSON report."""
    write_v2_record(store, image_id)
    write_parquet_artifact(store, image_id, "velocity_events", events_frame(n_events))
    write_json_artifact(store, image_id, "radon_report", legacy_radon_report(mean))


def rows(store: Path, table: str, image_id: str) -> pd.DataFrame:
    """The rows a reader sees now in ``table`` for ``image_id``."""
    df = live_tables(store)[table]
    return df[df["image_id"] == image_id].reset_index(drop=True)


def n_rows(store: Path, table: str, image_id: str) -> int:
    """How many rows ``table`` holds for ``image_id`` now."""
    return len(rows(store, table, image_id))


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` serialised as a parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    return bytes(sink.getvalue().to_pybytes())


def events_about(d: DaemonProcess, name: str, image_id: str) -> list[dict[str, Any]]:
    """The daemon's ``name`` log events that concern record ``image_id``."""
    return [ev for ev in d.events(name) if ev.get("image_id") == image_id]


# -- new records, edits, deletes ---------------------------------------------------------------
def test_new_records_with_artifacts_are_indexed(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """Records written while the daemon runs appear in both tables with their artifacts' rows."""
    for i, n in enumerate((1, 3, 5)):
        add_record(store, f"rec{i}", n_events=n, mean=float(i))
    daemon.sync()
    assert [n_rows(store, "velocity_events", f"rec{i}") for i in range(3)] == [1, 3, 5]
    radon = rows(store, "radon_report", "rec2")
    assert radon["mean_velocity"].tolist() == [2.0]
    assert_tables_match_rebuild(store, scratch)


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in_place"])
def test_overwritten_parquet_is_reindexed(
    daemon: DaemonProcess, store: Path, scratch: Path, atomic: bool
) -> None:
    """Overwriting an artifact (atomic rename or in place) replaces the record's rows."""
    add_record(store, "rec", n_events=4)
    add_record(store, "other", n_events=2)
    daemon.sync()
    assert n_rows(store, "velocity_events", "rec") == 4
    write_parquet_artifact(
        store, "rec", "velocity_events", events_frame(7, start_s=100.0), atomic=atomic
    )
    daemon.sync()
    got = rows(store, "velocity_events", "rec")
    assert got["t0_s"].tolist() == [100.0 + i for i in range(7)]
    assert n_rows(store, "velocity_events", "other") == 2
    assert_tables_match_rebuild(store, scratch)


def test_deleted_artifacts_remove_their_rows(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """Deleting an artifact file removes the record's rows from that table only."""
    add_record(store, "a", n_events=3)
    add_record(store, "b", n_events=2)
    daemon.sync()
    analysis_file(store, "a", "velocity_events", "parquet").unlink()
    analysis_file(store, "b", "radon_report", "json").unlink()
    daemon.sync()
    assert n_rows(store, "velocity_events", "a") == 0
    assert n_rows(store, "radon_report", "a") == 1
    assert n_rows(store, "velocity_events", "b") == 2
    assert n_rows(store, "radon_report", "b") == 0
    assert_tables_match_rebuild(store, scratch)


def test_deleted_record_leaves_every_table(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """Removing a record folder removes its rows from every table and keeps the others."""
    for name in ("keep", "gone"):
        add_record(store, name)
    daemon.sync()
    delete_record(store, "gone")
    daemon.sync()
    tables = live_tables(store)
    for name, df in tables.items():
        assert set(df["image_id"]) == {"keep"}, name
    assert_tables_match_rebuild(store, scratch)


def test_legacy_artifact_names_are_indexed(
    daemon_both: DaemonProcess, store: Path, scratch: Path
) -> None:
    """``velocity_events/events.csv.gz`` feeds kym_velocity_events and
    ``radon_report.json.gz`` feeds radon_report."""
    write_v2_record(store, "legacy")
    write_csv_gz_artifact(store, "legacy", "velocity_events/events", events_frame(4))
    write_json_artifact(store, "legacy", "radon_report", legacy_radon_report(3.0), gz=True)
    daemon_both.sync()
    assert n_rows(store, KVE, "legacy") == 4
    radon = rows(store, "radon_report", "legacy")
    assert radon[["mean_velocity", "median_velocity", "n_valid"]].values.tolist() == [
        [3.0, 1.5, 10]
    ]
    write_csv_gz_artifact(store, "legacy", "velocity_events/events", events_frame(6))
    daemon_both.sync()
    assert n_rows(store, KVE, "legacy") == 6
    assert_tables_match_rebuild(store, scratch)


def test_burst_of_200_records(daemon: DaemonProcess, store: Path, scratch: Path) -> None:
    """200 records with two artifacts each, written without pause, all end up indexed
    (through events alone, then confirmed after a sync)."""
    ids = [f"burst{i:03d}" for i in range(200)]
    for i, image_id in enumerate(ids):
        add_record(store, image_id, n_events=1 + i % 4, mean=float(i))

    def all_indexed() -> bool:
        tables = live_tables(store)
        return all(set(df["image_id"]) == set(ids) for df in tables.values())

    wait_until(all_indexed, what="the burst to reach the tables through events")
    daemon.sync()
    tables = live_tables(store)
    assert set(tables["velocity_events"]["image_id"]) == set(ids)
    assert set(tables["radon_report"]["image_id"]) == set(ids)
    assert_tables_match_rebuild(store, scratch)


# -- a half-written artifact ------------------------------------------------------------------
@pytest.mark.parametrize(
    "seen_as",
    [("artifact_retry", "artifact_unreadable"), ("artifact_unreadable",)],
    ids=["while_retrying", "after_retries_gave_up"],
)
def test_torn_artifact_keeps_old_rows_until_complete(
    daemon: DaemonProcess, store: Path, scratch: Path, seen_as: tuple[str, ...]
) -> None:
    """A parquet file written in place in two halves keeps the record's old rows while it
    is torn (during the retries and after they gave up), then gets the full new rows."""
    add_record(store, "torn", n_events=3)
    add_record(store, "bystander", n_events=2)
    daemon.sync()
    old = rows(store, "velocity_events", "torn")
    assert len(old) == 3
    data = parquet_bytes(events_frame(8, start_s=50.0))
    half = len(data) // 2
    path = analysis_file(store, "torn", "velocity_events", "parquet")
    with path.open("wb") as f:
        f.write(data[:half])
        f.flush()
        wait_until(
            lambda: any(events_about(daemon, name, "torn") for name in seen_as),
            what=f"the daemon to log {' or '.join(seen_as)} for the half-written artifact",
        )
        assert rows(store, "velocity_events", "torn").equals(old)
        assert n_rows(store, "velocity_events", "bystander") == 2
        f.write(data[half:])
    wait_until(
        lambda: n_rows(store, "velocity_events", "torn") == 8,
        what="the completed artifact to reach the table through events",
    )
    daemon.sync()
    got = rows(store, "velocity_events", "torn")
    assert got["t0_s"].tolist() == [50.0 + i for i in range(8)]
    assert_tables_match_rebuild(store, scratch)


# -- restart ---------------------------------------------------------------------------------
def test_restart_indexes_only_what_changed_while_down(store: Path, scratch: Path) -> None:
    """After SIGTERM (exit 0) and a restart, the startup reconcile indexes exactly the
    records changed while the daemon was down, and the tables are right."""
    for i in range(6):
        add_record(store, f"r{i}", n_events=2)
    d = DaemonProcess(store).start()
    try:
        d.sync()
        assert d.stop() == 0
        add_record(store, "r_new", n_events=5)
        write_parquet_artifact(store, "r1", "velocity_events", events_frame(9))
        delete_record(store, "r2")
        d.start()
        startups = [ev for ev in d.events("reconcile_done") if ev.get("reason") == "startup"]
        assert len(startups) == 2, startups
        assert startups[0]["changed"] == 6
        assert startups[-1]["changed"] == 3, startups[-1]
        d.sync()
        assert n_rows(store, "velocity_events", "r_new") == 5
        assert n_rows(store, "velocity_events", "r1") == 9
        assert n_rows(store, "velocity_events", "r2") == 0
        assert_tables_match_rebuild(store, scratch)
    finally:
        assert d.stop() == 0


def test_changes_pending_at_stop_are_indexed_after_restart(store: Path, scratch: Path) -> None:
    """Writes still waiting out the quiet window when SIGTERM arrives (exit 0) are in the
    tables after the restart."""
    with DaemonProcess(store, "--max-delay-ms", "60000", quiet_ms=30000) as d:
        add_record(store, "pending0")
        add_record(store, "pending1", n_events=4)
        assert d.stop() == 0
        d.start()
        d.sync()
        assert n_rows(store, "velocity_events", "pending1") == 4
        assert_tables_match_rebuild(store, scratch)


def test_record_deleted_while_down_and_state_lost_leaves_the_tables(
    store: Path, scratch: Path
) -> None:
    """With ``index/`` (a derived cache) removed while the daemon was down, a record deleted
    meanwhile still leaves the tables after the restart."""
    for i in range(3):
        add_record(store, f"r{i}")
    with DaemonProcess(store) as d:
        d.sync()
        assert d.stop() == 0
        shutil.rmtree(store / "index")
        delete_record(store, "r1")
        d.start()
        d.sync()
        assert_tables_match_rebuild(store, scratch)


def test_record_deleted_after_a_crash_leaves_the_tables(store: Path, scratch: Path) -> None:
    """A record indexed just before a crash (SIGKILL) and deleted before the restart leaves
    the tables after the restart."""
    add_record(store, "base")
    with DaemonProcess(store) as d:
        add_record(store, "doomed")
        wait_until(lambda: n_rows(store, "velocity_events", "doomed") == 3, what="indexing")
        d.kill()
        delete_record(store, "doomed")
        d.start()
        d.sync()
        assert_tables_match_rebuild(store, scratch)


def test_table_file_deleted_while_running_is_rebuilt(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """A table file removed while the daemon runs comes back whole after the next sync."""
    for i in range(3):
        add_record(store, f"r{i}")
    daemon.sync()
    (store / "tables" / "velocity_events.parquet").unlink()
    add_record(store, "after")
    daemon.sync()
    assert_tables_match_rebuild(store, scratch)


# -- logging of missing artifacts --------------------------------------------------------------
def test_missing_artifacts_are_logged_per_record_and_indexer(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """A record without artifacts logs ``artifact_missing`` naming the record and each
    indexer; a record missing one artifact names only that indexer."""
    write_v2_record(store, "bare")
    write_v2_record(store, "half")
    write_parquet_artifact(store, "half", "velocity_events", events_frame(2))
    daemon.sync()
    bare = events_about(daemon, "artifact_missing", "bare")
    assert {ev["indexer"] for ev in bare} == {"velocity_events", "radon_report"}, bare
    assert all(ev["looked_for"] for ev in bare), bare
    half = events_about(daemon, "artifact_missing", "half")
    assert {ev["indexer"] for ev in half} == {"radon_report"}, half
    assert_tables_match_rebuild(store, scratch)


# -- events are delivered (no sync) -------------------------------------------------------------
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in_place"])
def test_edit_is_indexed_without_sync(
    daemon: DaemonProcess, store: Path, scratch: Path, atomic: bool
) -> None:
    """An edit reaches the table through file events alone, without any sync barrier."""
    add_record(store, "live", n_events=2)
    daemon.sync()
    write_parquet_artifact(store, "live", "velocity_events", events_frame(6), atomic=atomic)
    wait_until(
        lambda: n_rows(store, "velocity_events", "live") == 6,
        what="the edit to show in the table",
    )
    write_json_artifact(store, "live", "radon_report", legacy_radon_report(9.0), atomic=atomic)
    wait_until(
        lambda: rows(store, "radon_report", "live")["mean_velocity"].tolist() == [9.0],
        what="the radon edit to show in the table",
    )
    daemon.sync()
    assert_tables_match_rebuild(store, scratch)


def test_new_record_with_nested_artifact_is_indexed_without_sync(
    daemon_both: DaemonProcess, store: Path, scratch: Path
) -> None:
    """A record created while running, whose artifact lands in a new ``analysis/`` sub-folder,
    is indexed through file events alone (new folders get watched)."""
    write_v2_record(store, "fresh")
    write_parquet_artifact(store, "fresh", "velocity_events/events", events_frame(4))
    wait_until(
        lambda: n_rows(store, KVE, "fresh") == 4,
        what="the new record to show in the table",
    )
    write_parquet_artifact(store, "fresh", "velocity_events/events", events_frame(1))
    wait_until(
        lambda: n_rows(store, KVE, "fresh") == 1,
        what="the edit in the new sub-folder to show in the table",
    )
    daemon_both.sync()
    assert_tables_match_rebuild(store, scratch)


def test_record_deleted_and_recreated_under_the_same_id(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """A record removed and written again under the same id gets the new content, through
    events alone (the new folder is watched again)."""
    add_record(store, "phoenix", n_events=2, mean=1.0)
    daemon.sync()
    delete_record(store, "phoenix")
    add_record(store, "phoenix", n_events=5, mean=7.0)
    wait_until(
        lambda: n_rows(store, "velocity_events", "phoenix") == 5,
        what="the re-created record to show in the table",
    )
    write_parquet_artifact(store, "phoenix", "velocity_events", events_frame(1))
    wait_until(
        lambda: n_rows(store, "velocity_events", "phoenix") == 1,
        what="an edit in the re-created record to show in the table",
    )
    daemon.sync()
    assert rows(store, "radon_report", "phoenix")["mean_velocity"].tolist() == [7.0]
    assert_tables_match_rebuild(store, scratch)


def test_record_folders_moved_in_and_out(
    daemon_both: DaemonProcess, store: Path, scratch: Path, tmp_path: Path
) -> None:
    """A record prepared elsewhere and renamed into ``images/`` is indexed and then watched;
    a record renamed out of ``images/`` leaves the tables; both through events alone."""
    staging = make_v2_store(tmp_path / "staging.zarr")
    add_record(staging, "moved_in", n_events=4)
    write_parquet_artifact(staging, "moved_in", "velocity_events/events", events_frame(1))
    add_record(store, "moved_out", n_events=2)
    daemon_both.sync()
    os.rename(staging / "images" / "moved_in", store / "images" / "moved_in")
    os.rename(store / "images" / "moved_out", staging / "images" / "moved_out")
    wait_until(
        lambda: (
            n_rows(store, "velocity_events", "moved_in") == 4
            and n_rows(store, KVE, "moved_in") == 1
            and n_rows(store, "velocity_events", "moved_out") == 0
        ),
        what="the moved records to show in (and leave) the tables",
    )
    analysis_file(store, "moved_in", "velocity_events", "parquet").unlink()
    wait_until(
        lambda: n_rows(store, "velocity_events", "moved_in") == 0,
        what="the deleted artifact of the moved-in record to leave the table",
    )
    assert n_rows(store, KVE, "moved_in") == 1
    daemon_both.sync()
    assert_tables_match_rebuild(store, scratch)


def test_zarr3_partial_names_and_dropped_partials(
    daemon: DaemonProcess, store: Path, scratch: Path
) -> None:
    """Artifacts written the zarr-3 way (``<name>.<hex>.partial`` replacing the suffix, then
    renamed) are indexed; partial files left behind or deleted never reach a table."""
    write_v2_record(store, "z3")
    folder = store / "images" / "z3" / "analysis"
    folder.mkdir(parents=True)
    partial = folder / "radon_report.0a1b2c3d.partial"
    partial.write_bytes(json.dumps(legacy_radon_report(4.0)).encode())
    os.rename(partial, folder / "radon_report.json")
    abandoned = folder / "velocity_events.9f8e7d6c.partial"
    abandoned.write_bytes(parquet_bytes(events_frame(3)))
    dropped = folder / "velocity_events.11223344.partial"
    dropped.write_bytes(parquet_bytes(events_frame(2)))
    dropped.unlink()
    wait_until(
        lambda: rows(store, "radon_report", "z3")["mean_velocity"].tolist() == [4.0],
        what="the renamed radon report to show in the table",
    )
    daemon.sync()
    assert n_rows(store, "velocity_events", "z3") == 0
    assert_tables_match_rebuild(store, scratch)


def test_deleted_artifact_subfolder_removes_its_rows(
    daemon_both: DaemonProcess, store: Path, scratch: Path
) -> None:
    """Removing an ``analysis/`` sub-folder holding an artifact removes that artifact's rows."""
    write_v2_record(store, "nested")
    write_parquet_artifact(store, "nested", "velocity_events/events", events_frame(3))
    write_json_artifact(store, "nested", "radon_report", legacy_radon_report(2.0))
    daemon_both.sync()
    assert n_rows(store, KVE, "nested") == 3
    shutil.rmtree(store / "images" / "nested" / "analysis" / "velocity_events")
    wait_until(
        lambda: n_rows(store, KVE, "nested") == 0,
        what="the rows of the removed sub-folder's artifact to leave the table",
    )
    daemon_both.sync()
    assert n_rows(store, "radon_report", "nested") == 1
    assert_tables_match_rebuild(store, scratch)


# -- lost events -------------------------------------------------------------------------------
def _max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def test_folders_created_during_an_event_overflow_are_watched_afterwards(
    daemon_both: DaemonProcess, store: Path, scratch: Path
) -> None:
    """After an inotify queue overflow the rescan indexes what was lost and watches the
    folders created meanwhile, so later edits in them arrive as events again."""
    assert daemon_both.proc is not None
    limit = _max_queued_events()
    if limit > 200_000:
        pytest.skip(f"inotify queue of {limit} events is too large to overflow quickly")
    add_record(store, "old", n_events=2)
    add_record(store, "noisy")
    daemon_both.sync()
    # Freeze the daemon so the kernel queue fills up, then change things whose events
    # are dropped: a new analysis sub-folder in a watched record, and a new record.
    os.kill(daemon_both.proc.pid, signal.SIGSTOP)
    try:
        flip = store / "images" / "noisy" / "analysis" / "flip.tmp"
        flop = flip.with_name("flop.tmp")
        flip.write_bytes(b"")
        for _ in range(limit // 4 + 1000):  # 4 events a round: more than the queue holds
            os.rename(flip, flop)
            os.rename(flop, flip)
        flip.unlink()
        write_parquet_artifact(store, "old", "velocity_events/events", events_frame(4))
        analysis_file(store, "old", "velocity_events", "parquet").unlink()
        write_v2_record(store, "new")
        write_parquet_artifact(store, "new", "velocity_events/events", events_frame(3))
    finally:
        os.kill(daemon_both.proc.pid, signal.SIGCONT)
    wait_until(
        lambda: any(
            ev.get("reason") == "inotify_overflow" for ev in daemon_both.events("reconcile_done")
        ),
        what="the daemon to rescan after the overflow",
    )
    assert n_rows(store, KVE, "old") == 4
    assert n_rows(store, KVE, "new") == 3
    write_parquet_artifact(store, "new", "velocity_events/events", events_frame(1))
    write_parquet_artifact(store, "old", "velocity_events/events", events_frame(6))
    wait_until(
        lambda: n_rows(store, KVE, "new") == 1,
        what="an edit in a record created during the overflow to arrive as an event",
    )
    wait_until(
        lambda: n_rows(store, KVE, "old") == 6,
        what="an edit in a sub-folder created during the overflow to arrive as an event",
    )
    daemon_both.sync()
    assert_tables_match_rebuild(store, scratch)


# -- polling -----------------------------------------------------------------------------------
def test_polling_mode_keeps_tables_right(store: Path, scratch: Path) -> None:
    """With ``--polling`` new records, edits and deletes are indexed, no inotify watch is
    held, and status reports watch_mode polling."""
    add_record(store, "old", n_events=2)
    add_record(store, "doomed", n_events=2)
    with DaemonProcess(store, "--polling", "--poll-interval", "0.5") as d:
        assert d.proc is not None
        status = kymwatch("status", store, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"]["watch_mode"] == "polling"
        assert count_inotify_watches(d.proc.pid) == 0
        add_record(store, "new", n_events=3)
        wait_until(
            lambda: n_rows(store, "velocity_events", "new") == 3,
            what="a poll to index the new record",
        )
        write_parquet_artifact(store, "old", "velocity_events", events_frame(5))
        delete_record(store, "doomed")
        d.sync()
        assert n_rows(store, "velocity_events", "old") == 5
        assert n_rows(store, "velocity_events", "doomed") == 0
        assert_tables_match_rebuild(store, scratch)
        assert d.stop() == 0


def test_daemon_exits_zero_on_sigterm(daemon: DaemonProcess, store: Path, scratch: Path) -> None:
    """SIGTERM stops the daemon cleanly: exit code 0, a final ``stopped`` status and tables
    that stay right."""
    add_record(store, "last")
    daemon.sync()
    assert daemon.stop() == 0
    status = json.loads((store / "index" / "status.json").read_bytes())
    assert status["state"] == "stopped"
    assert [ev["event"] for ev in daemon.events()][-1] == "daemon_stopped"
    assert_tables_match_rebuild(store, scratch)
