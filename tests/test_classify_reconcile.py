"""Pure daemon logic: path classification, the reconcile diff, routing and state updates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_store import make_v2_store
from kymwatch.daemon import (
    ChangeKind,
    FileChange,
    IndexState,
    RecordChange,
    SyncRequest,
    classify,
    diff_fingerprints,
    route,
)
from kymwatch.daemon.planner import TableInfo, plan_reconcile, tables_to_rebuild
from kymwatch.store import UNKNOWN_CTIME, Fingerprint

ROOT = Path("/data/store.zarr")


def fc(rel: str, kind: ChangeKind = ChangeKind.MODIFIED, is_dir: bool = False) -> FileChange:
    return FileChange(str(ROOT / rel), kind, is_dir)


@pytest.mark.parametrize(
    ("rel", "is_dir", "expected"),
    [
        (
            "images/r1/analysis/radon_report.json",
            False,
            RecordChange("r1", frozenset({"radon_report"})),
        ),
        (
            "images/r1/analysis/radon_report.json.gz",
            False,
            RecordChange("r1", frozenset({"radon_report"})),
        ),
        (
            "images/r1/analysis/velocity_events.parquet",
            False,
            RecordChange("r1", frozenset({"velocity_events"})),
        ),
        (
            "images/r1/analysis/velocity_events/events.csv.gz",
            False,
            RecordChange("r1", frozenset({"velocity_events/events"})),
        ),
        ("images/r1", True, RecordChange("r1")),
        ("images/r1/analysis", True, RecordChange("r1")),
        ("images/r1/analysis/velocity_events", True, RecordChange("r1")),
        ("images/r1/.zattrs", False, RecordChange("r1", frozenset())),
        ("images/r1/.zgroup", False, RecordChange("r1", frozenset())),
        ("images/r1/data/0.0", False, None),
        ("images/r1/data/c/0/0", False, None),
        ("images/r1/data/.zarray", False, RecordChange("r1", frozenset())),
        ("images/r1/data/zarr.json", False, RecordChange("r1", frozenset())),
        ("images/r1/data", True, RecordChange("r1", frozenset())),
        ("images/r1/analysis/radon_report.3f2a9c.partial", False, None),
        ("images/r1/analysis/.radon_report.json.1234abcd.tmp", False, None),
        ("images/r1/analysis/notes.txt", False, RecordChange("r1", frozenset())),
        ("tables/velocity_events.parquet", False, None),
        ("index/status.json", False, None),
        (".zattrs", False, None),
        ("images/..evil", True, None),
    ],
)
def test_classify(rel: str, is_dir: bool, expected: RecordChange | None) -> None:
    """Artifacts name record and artifact; folders mean the whole record; record
    metadata names the record and no artifact; chunks and own files are noise."""
    assert classify(ROOT, fc(rel, is_dir=is_dir)) == expected


def test_classify_sync_requests() -> None:
    """A request file in index/sync is a sync request, but its deletion is not."""
    assert classify(ROOT, fc("index/sync/tok1.request", ChangeKind.ADDED)) == SyncRequest("tok1")
    assert classify(ROOT, fc("index/sync/tok1.request", ChangeKind.DELETED)) is None
    assert classify(ROOT, fc("index/sync/tok1.done", ChangeKind.ADDED)) is None


def test_classify_ignores_paths_outside_the_store() -> None:
    """Events for paths outside the dataset root are ignored."""
    assert (
        classify(ROOT, FileChange("/elsewhere/images/r1/analysis/a.json", ChangeKind.ADDED)) is None
    )


FP1, FP2 = Fingerprint(10, 1, 1, 100), Fingerprint(10, 1, 1, 101)


def test_diff_new_changed_deleted_and_unchanged() -> None:
    """The diff lists exactly the new, changed and deleted records, naming changed artifacts."""
    known = {
        "same": {"radon_report.json": FP1},
        "edited": {"radon_report.json": FP1, "velocity_events.parquet": FP1},
        "gone": {"radon_report.json": FP1},
        "lost_file": {"velocity_events/events.csv.gz": FP1},
    }
    disk = {
        "same": {"radon_report.json": FP1},
        "edited": {"radon_report.json": FP1, "velocity_events.parquet": FP2},
        "lost_file": {},
        "new": {},
    }
    assert diff_fingerprints(disk, known) == [
        RecordChange("edited", frozenset({"velocity_events"})),
        RecordChange("gone"),
        RecordChange("lost_file", frozenset({"velocity_events/events"})),
        RecordChange("new"),
    ]


def test_diff_sees_an_atomic_replace_with_same_size_and_mtime() -> None:
    """A replace that keeps size and mtime still differs by inode."""
    assert diff_fingerprints({"r": {"a.json": FP2}}, {"r": {"a.json": FP1}}) == [
        RecordChange("r", frozenset({"a"}))
    ]


# -- fingerprints with ctime, and racily clean files (synthetic stats, no clock) ----------
S = 10**18  # a scan start, as a file-system time in ns
E = "velocity_events.parquet"


def fp(size: int = 100, mtime: int = S - 10**9, ctime: int = S - 10**9, inode: int = 7,
       scanned: int = S) -> Fingerprint:  # fmt: skip
    return Fingerprint(size, mtime, ctime, inode, scanned)


def changed(before: Fingerprint, now: Fingerprint) -> bool:
    return diff_fingerprints({"r": {E: now}}, {"r": {E: before}}) != []


def test_diff_sees_an_in_place_rewrite_whose_mtime_was_restored() -> None:
    """Same size, inode and (restored) mtime: the new ctime still makes it a change."""
    assert changed(fp(), fp(ctime=S + 5 * 10**9, scanned=0))


def test_diff_sees_a_copy_that_reused_the_freed_inode_number() -> None:
    """rm -rf + cp -a with the inode number reused: only the ctime differs, and it counts."""
    assert changed(fp(inode=12), fp(inode=12, ctime=S + 60 * 10**9, scanned=0))


def test_diff_sees_a_chmod() -> None:
    """A chmod changes only the ctime, which is enough to re-read the file."""
    assert changed(fp(), fp(ctime=S + 1))


def test_scan_stamp_is_not_part_of_equality() -> None:
    """Two scans of an untouched file, at different times, give equal fingerprints."""
    assert fp(scanned=S) == fp(scanned=S + 10**12)
    assert not changed(fp(scanned=S), fp(scanned=S + 10**12))


@pytest.mark.parametrize(
    ("mtime", "ctime", "racy"),
    [
        (S - 10**9, S - 10**9, False),  # changed well before the scan: clean
        (S - 1, S - 1, False),  # just before the scan's start (the stamp has the margin)
        (S, S, True),  # in the scan's own tick: a later write may look identical
        (S - 10**9, S + 10**6, True),  # mtime restored, but the change is recent
        (S + 10**6, S + 10**6, True),  # changed while the scan ran
        (10**19, S - 10**9, False),  # mtime set to the year 2300 by utime: ctime rules
    ],
)
def test_racily_clean_files_are_re_read(mtime: int, ctime: int, racy: bool) -> None:
    """A file changed within the granularity of its scan is re-read even if unchanged."""
    known = fp(mtime=mtime, ctime=ctime)
    assert known.racy is racy
    assert changed(known, fp(mtime=mtime, ctime=ctime, scanned=S + 10**10)) is racy


def test_a_re_read_racy_file_becomes_clean() -> None:
    """Once re-scanned by a later scan, a racy fingerprint is trusted again."""
    known = fp(ctime=S, mtime=S)
    assert changed(known, known)
    rescanned = fp(ctime=S, mtime=S, scanned=S + 10**10)
    assert not changed(rescanned, rescanned)


@pytest.mark.parametrize(
    ("now", "trusted"),
    [
        (fp(ctime=S - 10**9, scanned=0), True),  # untouched since the old state was saved
        (fp(ctime=S + 10**9, scanned=0), False),  # touched since (cp -p over it, chmod): re-read
        (fp(size=101, ctime=S - 10**9, scanned=0), False),
        (fp(inode=8, ctime=S - 10**9, scanned=0), False),
    ],
)
def test_migrated_fingerprints_without_ctime_are_trusted_only_if_untouched_since(
    now: Fingerprint, trusted: bool
) -> None:
    """A format-1 fingerprint (no ctime) is trusted only if the file's ctime predates that state."""
    legacy = fp(ctime=UNKNOWN_CTIME, scanned=S)
    assert changed(legacy, now) is not trusted


def test_journaled_records_become_whole_record_changes() -> None:
    """A journaled record is re-read by every indexer, also when only one artifact differs."""
    disk = {"a": {"radon_report.json": fp(size=1)}, "b": {"radon_report.json": fp(size=1)}}
    known = {"a": {"radon_report.json": fp()}, "b": {"radon_report.json": fp()}}
    assert plan_reconcile(disk, known, suspects={"a", "z"}) == [
        RecordChange("a"),
        RecordChange("b", frozenset({"radon_report"})),
        RecordChange("z"),
    ]


@pytest.mark.parametrize(
    ("published", "now", "records", "migrated", "reason"),
    [
        (fp(), fp(), True, False, None),
        (fp(), None, True, False, "table_missing"),
        (None, None, False, False, None),  # nothing indexed yet: nothing to miss
        (fp(), fp(ctime=S + 1), True, False, "table_changed_externally"),  # cp over it
        (fp(), fp(inode=8), True, False, "table_changed_externally"),  # replaced
        (None, fp(), True, False, None),  # a fresh state adopts the table
        (None, fp(), True, True, "state_migrated"),  # an old state never knew it
    ],
)
def test_table_check(
    published: Fingerprint | None,
    now: Fingerprint | None,
    records: bool,
    migrated: bool,
    reason: str | None,
) -> None:
    """A table is rebuilt when missing, replaced behind the daemon's back, or never known."""
    tables = [TableInfo("velocity_events", 1, published, now)]
    got = tables_to_rebuild(tables, {"velocity_events": 1}, has_state=records, migrated=migrated)
    assert got == ([] if reason is None else [("velocity_events", reason)])


fingerprints = st.builds(
    Fingerprint, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)
)
record_files = st.dictionaries(
    st.sampled_from(
        ["radon_report.json", "velocity_events.parquet", "velocity_events/events.csv.gz"]
    ),
    fingerprints,
    max_size=3,
)
datasets = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), record_files, max_size=4)


@settings(max_examples=300, deadline=None)
@given(disk=datasets, known=datasets)
def test_property_applying_the_diff_reaches_the_disk(
    disk: dict[str, dict[str, Fingerprint]], known: dict[str, dict[str, Fingerprint]]
) -> None:
    """Re-reading every record the diff names, and nothing else, makes the state equal the disk."""
    state = {k: dict(v) for k, v in known.items()}
    for change in diff_fingerprints(disk, known):
        if change.image_id in disk:
            state[change.image_id] = dict(disk[change.image_id])
        else:
            del state[change.image_id]
    assert state == disk
    assert diff_fingerprints(disk, state) == []


READS = [("velocity_events", frozenset({"velocity_events", "velocity_events/events"})),
         ("radon_report", frozenset({"radon_report"}))]  # fmt: skip


def test_route_runs_only_affected_indexers() -> None:
    """A change to one artifact runs only its indexer; a whole-record change runs all."""
    assert route(RecordChange("r", frozenset({"radon_report"})), READS) == ["radon_report"]
    assert route(RecordChange("r", frozenset({"velocity_events/events"})), READS) == [
        "velocity_events"
    ]
    assert route(RecordChange("r", frozenset({"unrelated"})), READS) == []
    assert route(RecordChange("r"), READS) == ["velocity_events", "radon_report"]


def readers_of(name: str) -> set[str]:
    return {n for n, reads in READS if name in reads}


def test_state_update_settles_only_finished_indexers() -> None:
    """Fingerprints of an artifact whose indexer is still retrying keep their old value."""
    state = IndexState({"r": {"radon_report.json": FP1, "velocity_events.parquet": FP1}})
    fresh = {"radon_report.json": FP2, "velocity_events.parquet": FP2, "notes.json": FP2}
    state.update_record("r", fresh, {"radon_report"}, readers_of)
    assert state.records["r"] == {
        "radon_report.json": FP2,
        "velocity_events.parquet": FP1,
        "notes.json": FP2,
    }
    state.update_record("r", {}, {"radon_report", "velocity_events"}, readers_of)
    assert state.records["r"] == {}
    state.update_record("r", None, set(), readers_of)
    assert "r" not in state.records


def test_state_round_trips_through_disk(tmp_path: Path) -> None:
    """Saved state loads back equal, including records with no artifact files."""
    state = IndexState(
        {"a": {"radon_report.json": FP1, "velocity_events/events.csv.gz": FP2}, "empty": {}},
        {"velocity_events": 1, "radon_report": 1},
    )
    make_v2_store(tmp_path)  # the state is saved into a whole store only
    assert state.save(tmp_path)
    state.close()
    loaded = IndexState.load(tmp_path)
    assert loaded.records == state.records
    assert loaded.schema_versions == state.schema_versions


def test_corrupt_state_starts_empty(tmp_path: Path) -> None:
    """An unreadable state file is replaced by an empty state (a full reindex), not a crash."""
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "kymwatch-state.sqlite").write_text("{not a database")
    assert IndexState.load(tmp_path).records == {}
