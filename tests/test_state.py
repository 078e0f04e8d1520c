"""The daemon's state database: round trips, O(changed) saves, the crash journal, table
fingerprints, migration from format 1, and values or failures that must never raise."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kymwatch.daemon import IndexState
from kymwatch.daemon.state import STATE_FILE
from kymwatch.store import UNKNOWN_CTIME, Fingerprint

YEAR_2300_NS = 10_413_792_000 * 10**9  # touch -d 2300-01-01: beyond int64 nanoseconds
FP = Fingerprint(10, 1_700_000_000 * 10**9, 1_700_000_001 * 10**9, 42, 1_700_000_002 * 10**9)
REC = "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11"


@pytest.fixture(autouse=True)
def whole_store(tmp_path: Path) -> None:
    """``tmp_path`` (and ``tmp_path/store.zarr``) look like stores: a group marker and
    ``images/`` (the state creates nothing in a folder that is no whole store)."""
    for root in (tmp_path, tmp_path / "store.zarr"):
        (root / "images").mkdir(parents=True)
        (root / ".zgroup").write_text('{"zarr_format": 2}')


def reloaded(state: IndexState, root: Path) -> IndexState:
    """Save ``state``, close it and load it back."""
    assert state.save(root)
    state.close()
    return IndexState.load(root)


def test_fingerprints_round_trip_with_values_beyond_int64(tmp_path: Path) -> None:
    """An mtime in 2300, a negative mtime and a huge size are stored and read back exactly."""
    files = {
        "radon_report.json": Fingerprint(2**63 + 5, YEAR_2300_NS, YEAR_2300_NS, 1, 2),
        "velocity_events.parquet": Fingerprint(3, -(10**18), 5, 2**64, 0),
    }
    state = IndexState({REC: files, "empty": {}}, {"velocity_events": 1})
    loaded = reloaded(state, tmp_path)
    assert loaded.records == {REC: files, "empty": {}}
    scanned = {f: fp.scanned_ns for f, fp in loaded.records[REC].items()}
    assert scanned == {"radon_report.json": 2, "velocity_events.parquet": 0}
    loaded.close()


def test_file_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    """An artifact name decoded with surrogate escapes (non-UTF-8 bytes) is stored and read back."""
    name = os.fsdecode(b"velocity_events/\xff.csv.gz")
    loaded = reloaded(IndexState({REC: {name: FP}}), tmp_path)
    assert loaded.records == {REC: {name: FP}}


def test_saves_write_only_changed_records_and_keep_the_others(tmp_path: Path) -> None:
    """After the first save, a save rewrites only the records updated since; all load back."""
    state = IndexState({f"r{i}": {"radon_report.json": FP} for i in range(50)})
    assert state.save(tmp_path)
    fresh = {"radon_report.json": Fingerprint(11, 2, 3, 43, 4)}
    state.update_record("r7", fresh, {"radon_report"}, lambda name: {"radon_report"})
    state.update_record("r8", None, set(), lambda name: set())
    db = state._connect(tmp_path)
    before = db.total_changes
    assert state.save(tmp_path)
    assert db.total_changes - before <= 6  # two deletes, one insert, meta, no 50-row rewrite
    loaded = reloaded(state, tmp_path)
    assert loaded.records["r7"] == fresh and "r8" not in loaded.records
    assert len(loaded.records) == 49


def test_journal_is_durable_at_once_and_cleared_by_a_save(tmp_path: Path) -> None:
    """Journaled records are readable by the next start until a save covers them."""
    state = IndexState({REC: {}})
    assert state.save(tmp_path)
    state.note_publishing(tmp_path, [REC, "other"])
    state.close()  # a crash: nothing saved since
    assert IndexState.load(tmp_path).suspects == {REC, "other"}
    again = IndexState.load(tmp_path)
    assert again.save(tmp_path)
    again.close()
    assert IndexState.load(tmp_path).suspects == set()


def test_published_table_fingerprint_is_durable_at_once(tmp_path: Path) -> None:
    """The fingerprint of a table the daemon published survives a crash before the next save."""
    state = IndexState({REC: {}})
    assert state.save(tmp_path)
    state.note_table(tmp_path, "velocity_events", FP)
    state.close()
    assert IndexState.load(tmp_path).tables == {"velocity_events": FP}


def test_database_files_are_not_world_writable_under_umask_000(tmp_path: Path) -> None:
    """The state database (and its WAL) deny others write whatever the umask."""
    old = os.umask(0)
    try:
        state = IndexState({REC: {}})
        assert state.save(tmp_path)
        files = list((tmp_path / "index").glob(f"{STATE_FILE}*"))
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
        state.close()
    finally:
        os.umask(old)
    assert modes and all(not int(m, 8) & 0o002 for m in modes.values()), modes


def test_a_state_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A state save or journal write that fails (index/ is a file here) logs and stays dirty."""
    (tmp_path / "index").write_text("not a folder")
    state = IndexState({REC: {"radon_report.json": FP}})
    state.update_record(REC, {}, set(), lambda name: set())
    state.note_publishing(tmp_path, [REC])
    state.note_table(tmp_path, "velocity_events", FP)
    assert state.save(tmp_path) is False
    assert state.dirty
    failed = [e for e in captured_logs if e["event"] == "state_save_failed"]
    assert len(failed) == 3 and all(e["error"] for e in failed)


@pytest.mark.parametrize("damage", [b"", b"garbage" * 100, b"SQLite format 3\x00" + b"\x01" * 200])
def test_a_damaged_database_resets_the_state(
    tmp_path: Path, damage: bytes, captured_logs: list[dict[str, Any]]
) -> None:
    """A damaged state file gives an empty state (a full reconcile), logged, and is replaced."""
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / STATE_FILE).write_bytes(damage)
    state = IndexState.load(tmp_path)
    assert state.records == {}
    assert any(e["event"] == "state_reset" for e in captured_logs)
    state.records[REC] = {"radon_report.json": FP}
    assert reloaded(state, tmp_path).records == {REC: {"radon_report.json": FP}}


def write_format_1(root: Path, records: dict[str, dict[str, tuple[int, int, int]]]) -> None:
    """A state as kymwatch format 1 saved it (parquet fingerprints without ctime)."""
    index = root / "index"
    index.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list[Any]] = {k: [] for k in ("image_id", "file", "size", "mtime_ns", "inode")}
    for image_id, files in records.items():
        for name, (size, mtime, inode) in (files or {"": (0, 0, 0)}).items():
            for k, v in zip(cols, (image_id, name, size, mtime, inode), strict=True):
                cols[k].append(v)
    pq.write_table(pa.Table.from_pydict(cols), index / "state-fingerprints.parquet")
    meta = {"format": 1, "schema_versions": {"velocity_events": 1, "radon_report": 1}}
    (index / "state.json").write_text(json.dumps(meta))
    (index / "state-journal.txt").write_text("journaled\n")


def test_format_1_state_is_migrated_without_trusting_ctime(tmp_path: Path) -> None:
    """An old state loads with unknown ctimes, its journal, and is replaced at the first save."""
    write_format_1(tmp_path, {REC: {"radon_report.json": (10, 5, 42)}, "empty": {}})
    state = IndexState.load(tmp_path)
    assert state.migrated
    saved_ns = (tmp_path / "index" / "state.json").stat().st_mtime_ns
    assert state.records == {
        REC: {"radon_report.json": Fingerprint(10, 5, UNKNOWN_CTIME, 42, saved_ns)},
        "empty": {},
    }
    assert state.records[REC]["radon_report.json"].scanned_ns == saved_ns
    assert state.suspects == {"journaled"}
    assert state.schema_versions == {"velocity_events": 1, "radon_report": 1}
    loaded = reloaded(state, tmp_path)
    assert not loaded.migrated and loaded.records == state.records
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [STATE_FILE]


def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    """The database runs in WAL mode with synchronous=FULL (commits survive a power cut)."""
    state = IndexState({REC: {}})
    assert state.save(tmp_path)
    db = state._connect(tmp_path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    state.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "index" / STATE_FILE)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_database_deleted_while_open_is_recreated_in_full(tmp_path: Path) -> None:
    """If index/ (and the database) is deleted while the daemon runs, the next save writes
    every record into a new file, not just the ones changed since."""
    state = IndexState({f"r{i}": {"radon_report.json": FP} for i in range(5)})
    assert state.save(tmp_path)
    shutil.rmtree(tmp_path / "index")
    state.update_record("r1", {}, {"radon_report"}, lambda name: {"radon_report"})
    assert state.save(tmp_path)
    loaded = reloaded(state, tmp_path)
    assert len(loaded.records) == 5 and loaded.records["r1"] == {}


def test_a_save_never_recreates_a_deleted_store(tmp_path: Path) -> None:
    """A save after the whole store was deleted fails (logged) instead of recreating it."""
    root = tmp_path / "store.zarr"
    state = IndexState({REC: {}})
    (root / "index").mkdir()
    assert state.save(root)
    state.close()
    shutil.rmtree(root)
    state.update_record(REC, {}, set(), lambda name: set())
    assert state.save(root) is False
    assert not root.exists()


def test_a_save_at_50k_records_writes_only_the_changed_rows(tmp_path: Path) -> None:
    """With 50,000 records saved, a save after five records changed runs statements for
    those five only (traced by SQLite), whatever the number of records kept."""
    files = {"velocity_events/events.parquet": FP, "velocity_events/params.json": FP}
    state = IndexState({f"{i:08x}-3f5e-4b8e-9d0c-6f1f4c2f9a11": dict(files) for i in range(50_000)})
    assert state.save(tmp_path)
    changed = sorted(state.records)[100:105]
    fresh = {name: Fingerprint(11, 2, 3, 43, 4) for name in files}
    for image_id in changed:
        state.update_record(image_id, fresh, {"ve"}, lambda name: {"ve"})
    statements: list[str] = []
    db = state._connect(tmp_path)
    db.set_trace_callback(statements.append)
    before = db.total_changes
    assert state.save(tmp_path)
    db.set_trace_callback(None)
    on_files = [s for s in statements if " files" in s]
    deletes = [s for s in on_files if s.startswith("DELETE")]
    inserts = [s for s in on_files if s.startswith("INSERT")]
    assert len(deletes) == 5 and all(any(i in s for i in changed) for s in deletes)
    assert len(inserts) == 2 * 5  # the five records' two files each, not 100,000 rows
    assert db.total_changes - before < 40
    loaded = reloaded(state, tmp_path)
    assert len(loaded.records) == 50_000
    assert all(loaded.records[i] == fresh for i in changed)
    assert loaded.records[sorted(loaded.records)[0]] == files


def test_a_save_creates_nothing_in_a_store_being_deleted(tmp_path: Path) -> None:
    """Once ``images/`` is gone (an ``rm -rf`` under way) a save whose file was deleted
    fails (logged) instead of creating the database again in the emptied ``index/``."""
    state = IndexState({REC: {}})
    assert state.save(tmp_path)
    state.close()
    (tmp_path / STATE_FILE).unlink(missing_ok=True)
    for name in list((tmp_path / "index").iterdir()):
        name.unlink()
    (tmp_path / "images").rmdir()
    state.update_record(REC, {}, {"radon_report"}, lambda name: {"radon_report"})
    assert not state.save(tmp_path)
    assert list((tmp_path / "index").iterdir()) == []
