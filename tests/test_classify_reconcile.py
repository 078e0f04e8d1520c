"""Pure daemon logic: path classification, the reconcile diff, routing and state updates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from kymwatch.store import Fingerprint

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


FP1, FP2 = Fingerprint(10, 1, 100), Fingerprint(10, 1, 101)


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


fingerprints = st.builds(Fingerprint, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
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
    state.save(tmp_path)
    loaded = IndexState.load(tmp_path)
    assert loaded.records == state.records
    assert loaded.schema_versions == state.schema_versions


def test_corrupt_state_starts_empty(tmp_path: Path) -> None:
    """An unreadable state file is replaced by an empty state (a full reindex), not a crash."""
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "state.json").write_text("{not json")
    assert IndexState.load(tmp_path).records == {}
