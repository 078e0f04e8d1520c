"""The polling folder diff: which records a poll lists, and what it reports, over a fake
file system with its own clock (no sleeps, no real files)."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kymwatch.daemon.changes import ChangeKind, FileChange, RecordChange, Rescan
from kymwatch.daemon.classify import classify
from kymwatch.daemon.pollhot import HotSet
from kymwatch.daemon.polling import SUMMARY_S, PollingWatcher, PollSettings, next_interval
from kymwatch.daemon.pollscan import PollScanner, Stat
from kymwatch.store.scan import RACY_MARGIN_NS

ROOT = Path("/s")
UUID_ID = "0b9c6c3e-6f3a-4f0e-9a8e-2d1f6c1b7a11"  # kymflow's generation-2 records have UUIDs
TICK = 4_000_000  # a coarse kernel timestamp tick (4 ms)


@dataclass
class _Node:
    is_dir: bool
    size: int
    mtime: int
    ctime: int
    ino: int


class FakeFS:
    """A file tree with POSIX folder semantics: creating, renaming or deleting an entry
    sets its folder's mtime and ctime to the clock; writing a file in place does not.
    Timestamps only move when the test advances the clock (``tick``)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000
        self._ino = itertools.count(100)
        self.nodes: dict[str, _Node] = {}
        self.calls: Counter[str] = Counter()
        self.listed: list[str] = []
        self.mkdir(str(ROOT))

    def tick(self, ticks: int = 1) -> None:
        self.now += ticks * TICK

    def _touch_parent(self, path: str) -> None:
        parent = self.nodes.get(os.path.dirname(path))
        if parent is not None:
            parent.mtime = parent.ctime = self.now

    def mkdir(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent != path and parent not in self.nodes:
            self.mkdir(parent)
        self.nodes[path] = _Node(True, 4096, self.now, self.now, next(self._ino))
        self._touch_parent(path)

    def create(self, path: str, size: int = 10) -> None:
        """A new file, or an atomic replace (a new inode renamed over the old one)."""
        if os.path.dirname(path) not in self.nodes:
            self.mkdir(os.path.dirname(path))
        self.nodes[path] = _Node(False, size, self.now, self.now, next(self._ino))
        self._touch_parent(path)

    def write_in_place(self, path: str, size: int) -> None:
        node = self.nodes[path]
        node.size, node.mtime, node.ctime = size, self.now, self.now

    def remove(self, path: str) -> None:
        for p in [p for p in self.nodes if p == path or p.startswith(path + "/")]:
            del self.nodes[p]
        self._touch_parent(path)

    # -- PollFS ------------------------------------------------------------------------
    def _stat(self, path: str, want_dir: bool) -> Stat | None:
        n = self.nodes.get(path)
        if n is None or n.is_dir != want_dir:
            return None
        return (n.size, n.mtime, n.ctime, n.ino)

    def stat_dir(self, path: str) -> Stat | None:
        self.calls["stat_dir"] += 1
        return self._stat(path, True)

    def stat_file(self, path: str) -> Stat | None:
        self.calls["stat_file"] += 1
        return self._stat(path, False)

    def list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        self.calls["list_dir"] += 1
        self.listed.append(path)
        if path not in self.nodes:
            return None
        prefix = path + "/"
        return [
            (p[len(prefix) :], n.is_dir)
            for p, n in self.nodes.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]

    def unchanged(self, folders: Sequence[tuple[str, Stat | None]]) -> int:
        for n, (path, sig) in enumerate(folders, 1):
            if self.stat_dir(path) != sig:
                return -n
        return len(folders)

    def stamp(self) -> int:
        return self.now - RACY_MARGIN_NS


def rec(image_id: str) -> str:
    return f"{ROOT}/images/{image_id}"


def ana(image_id: str) -> str:
    return f"{rec(image_id)}/analysis"


@pytest.fixture
def fs() -> FakeFS:
    """A store with three records (gen-1 names and a gen-2 UUID), each with artifacts."""
    f = FakeFS()
    f.mkdir(f"{ROOT}/images")
    for image_id in ("rec1", "rec2", UUID_ID):
        f.mkdir(ana(image_id))
        f.create(f"{ana(image_id)}/radon_report.json")
        f.create(f"{ana(image_id)}/velocity_events/events.parquet")
    f.tick(10)  # well past the racy margin
    return f


def scanner(fs: FakeFS, full_every: int = 30) -> PollScanner:
    s = PollScanner(ROOT, fs, full_every=full_every)
    s.baseline()
    fs.tick(10)
    return s


def idle_scanner(fs: FakeFS) -> PollScanner:
    """A scanner whose next polls verify no record: the fixture's three records had their
    verification polls (1-3 of a period of 1000)."""
    s = scanner(fs, full_every=1000)
    for _ in range(3):
        assert s.poll().verified == 1
    fs.listed.clear()
    fs.calls.clear()
    return s


def listed_records(fs: FakeFS) -> set[str]:
    """The records whose analysis/ folder the last polls listed (then forget them)."""
    out = {p.split("/")[3] for p in fs.listed if "/analysis" in p}
    fs.listed.clear()
    return out


def test_idle_polls_stat_folders_only_and_report_nothing(fs: FakeFS) -> None:
    """With nothing changed a poll lists no record: it stats images/ and each record's
    analysis folders (two per record here) and reports nothing."""
    s = idle_scanner(fs)
    result = s.poll()
    assert result.changes == ()
    assert (result.listed, result.verified, result.records) == (0, 0, 3)
    assert fs.calls == Counter({"stat_dir": 1 + 3 * 2})
    assert result.folders == 7


def test_new_and_deleted_records_are_reported_as_record_folders(fs: FakeFS) -> None:
    """A record that appears or disappears under images/ is reported as its folder."""
    s = scanner(fs)
    fs.create(f"{ana('rec4')}/velocity_events.parquet")
    fs.remove(rec("rec1"))
    fs.tick()
    changes = s.poll().changes
    assert changes == (
        FileChange(rec("rec1"), ChangeKind.DELETED, is_dir=True),
        FileChange(rec("rec4"), ChangeKind.ADDED, is_dir=True),
    )
    assert [classify(ROOT, c) for c in changes] == [RecordChange("rec1"), RecordChange("rec4")]


def test_atomic_replace_is_found_by_listing_only_that_record(fs: FakeFS) -> None:
    """An artifact renamed into place changes analysis/'s mtime: that record alone is
    listed and reported (as its analysis folder: every indexer of the record runs)."""
    s = idle_scanner(fs)
    fs.create(f"{ana(UUID_ID)}/radon_report.json", size=99)
    fs.tick()
    result = s.poll()
    assert result.changes == (FileChange(ana(UUID_ID), ChangeKind.MODIFIED, is_dir=True),)
    assert classify(ROOT, result.changes[0]) == RecordChange(UUID_ID)
    assert listed_records(fs) == {UUID_ID}
    assert result.listed == 1
    assert s.poll().changes == ()


def test_new_artifact_in_a_sub_folder_is_found(fs: FakeFS) -> None:
    """A file created in analysis/velocity_events/ changes only that sub-folder's mtime,
    which the poll stats too."""
    s = scanner(fs)
    fs.create(f"{ana('rec2')}/velocity_events/events.csv.gz")
    fs.tick()
    assert s.poll().changes == (FileChange(ana("rec2"), ChangeKind.MODIFIED, is_dir=True),)


def test_artifact_nested_deeper_than_eight_folders_is_found_as_by_the_reconcile_scan(
    fs: FakeFS,
) -> None:
    """Polling follows the store's one artifact-depth rule: a file ten folders below
    analysis/ (which the reconcile scan fingerprints) is found, then its rewrite too."""
    s = scanner(fs)
    deep = f"{ana('rec2')}/" + "/".join(f"d{i}" for i in range(10)) + "/radon_report.json"
    fs.create(deep)
    fs.tick()
    assert s.poll().changes == (FileChange(ana("rec2"), ChangeKind.MODIFIED, is_dir=True),)
    fs.tick(10)
    assert s.poll().changes == ()
    fs.create(deep, size=77)
    fs.tick()
    assert s.poll().changes == (FileChange(ana("rec2"), ChangeKind.MODIFIED, is_dir=True),)


def test_new_sub_folder_and_its_files_are_found_and_then_watched(fs: FakeFS) -> None:
    """A new sub-folder is found through analysis/'s mtime; a later file in it through
    the sub-folder's own mtime."""
    s = scanner(fs)
    fs.mkdir(f"{ana('rec1')}/kym")
    fs.tick()
    assert s.poll().changes == ()  # an empty folder: no artifact changed
    fs.tick(10)
    s.poll()
    fs.create(f"{ana('rec1')}/kym/radon.parquet")
    fs.tick()
    assert s.poll().changes == (FileChange(ana("rec1"), ChangeKind.MODIFIED, is_dir=True),)


def test_analysis_folder_deleted_is_reported_deleted(fs: FakeFS) -> None:
    """A record's whole analysis/ removed is reported as the folder deleted."""
    s = scanner(fs)
    fs.remove(ana("rec2"))
    fs.tick()
    change = s.poll().changes
    assert change == (FileChange(ana("rec2"), ChangeKind.DELETED, is_dir=True),)
    assert classify(ROOT, change[0]) == RecordChange("rec2")


def test_temporary_files_and_non_artifacts_report_nothing(fs: FakeFS) -> None:
    """A partial file or a non-artifact file changes the folder but no artifact: the
    record is listed and nothing is reported."""
    s = scanner(fs)
    fs.create(f"{ana('rec1')}/radon_report.json.1a2b3c4d.partial")
    fs.create(f"{ana('rec1')}/notes.txt")
    fs.tick()
    result = s.poll()
    assert (result.changes, result.listed) == ((), 1)


def test_in_place_rewrite_is_found_within_full_every_polls(fs: FakeFS) -> None:
    """A file rewritten in place changes no folder: it is found by the verification
    slice, at the latest ``full_every`` polls later, and each poll verifies about
    1/``full_every`` of the records."""
    for i in range(20):
        fs.mkdir(ana(f"r{i:02d}"))
        fs.create(f"{ana(f'r{i:02d}')}/velocity_events.parquet")
    fs.tick(10)
    s = scanner(fs, full_every=5)
    fs.write_in_place(f"{ana('r07')}/velocity_events.parquet", size=77)
    fs.tick()
    found_at, verified = None, []
    for n in range(1, 6):
        result = s.poll()
        verified.append(result.verified)
        if result.changes:
            assert result.changes == (FileChange(ana("r07"), ChangeKind.MODIFIED, is_dir=True),)
            found_at = found_at or n
    assert found_at is not None
    assert sum(verified) == 23  # every record once in 5 polls
    assert max(verified) <= 6


def test_change_in_the_same_tick_as_the_poll_is_not_missed(fs: FakeFS) -> None:
    """Racily clean: a folder that changed in the tick the poll saw it may change again
    without a new mtime; such a record is listed again at the next poll."""
    s = idle_scanner(fs)
    fs.create(f"{ana('rec1')}/radon_report.parquet")
    assert s.poll().changes != ()  # seen, in the same tick as the write
    fs.create(f"{ana('rec1')}/velocity_events.parquet")  # still the same tick: same mtime
    assert s.poll().changes == (FileChange(ana("rec1"), ChangeKind.MODIFIED, is_dir=True),)
    fs.tick(10)
    s.poll()  # clean now: listed once more, then no longer
    fs.listed.clear()
    assert s.poll().listed == 0


def test_baseline_in_the_tick_of_a_write_relists_that_record(fs: FakeFS) -> None:
    """A record written in the tick of the first picture is listed again at the first poll,
    so a second same-tick write is reported."""
    fs.create(f"{ana('rec2')}/radon_report.parquet")
    s = PollScanner(ROOT, fs, full_every=1000)
    s.baseline()
    fs.write_in_place(f"{ana('rec2')}/radon_report.parquet", size=55)
    assert s.poll().changes == (FileChange(ana("rec2"), ChangeKind.MODIFIED, is_dir=True),)


def test_images_folder_vanishing_or_replaced_asks_for_a_rescan(fs: FakeFS) -> None:
    """images/ gone (store moved or unmounted) is a rescan, not every record deleted;
    images/ back again is another rescan."""
    s = scanner(fs)
    fs.remove(f"{ROOT}/images")
    fs.tick()
    assert s.poll().changes == (Rescan("store_moved_or_deleted"),)
    assert s.poll().changes == ()
    fs.mkdir(ana("rec9"))
    fs.tick()
    assert s.poll().changes == (Rescan("store_moved_or_deleted"),)
    assert s.record_count == 1


def test_full_every_must_be_positive() -> None:
    """A verification period below one poll is refused."""
    with pytest.raises(ValueError, match="full_every"):
        PollScanner(ROOT, FakeFS(), full_every=0)


def test_interval_follows_the_cost_within_its_bounds() -> None:
    """The next interval is CPU cost ÷ budget (or four times a slow poll's wall time),
    never below the minimum nor above the maximum."""
    s = PollSettings(min_interval_s=2.0, max_interval_s=30.0, budget=0.01)
    assert next_interval(0.005, 0.005, s) == 2.0
    assert next_interval(0.05, 0.06, s) == pytest.approx(5.0)
    assert next_interval(0.01, 2.0, s) == pytest.approx(8.0)  # a slow share, little CPU
    assert next_interval(5.0, 5.0, s) == 30.0
    assert next_interval(0, 0, PollSettings(min_interval_s=60.0, max_interval_s=30.0)) == 60.0


def test_os_unchanged_stops_at_the_first_changed_folder(tmp_path: Path) -> None:
    """The real file system's hot loop: an untouched folder list counts every folder; a new
    file, a deleted folder or a folder replaced by a file is a change."""
    from kymwatch.daemon.pollscan import OsPollFS

    fs = OsPollFS(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sig = {p: fs.stat_dir(str(p)) for p in (a, b)}
    folders = [(str(a), sig[a]), (str(b), sig[b]), (str(tmp_path / "none"), None)]
    assert fs.unchanged(folders) == 3
    os.rename(tmp_path / "a", tmp_path / "a2")
    (tmp_path / "a").mkdir()  # same name, a new folder (new inode)
    assert fs.unchanged(folders) == -1
    (b / "x.parquet").write_bytes(b"1")
    assert fs.unchanged(folders[1:]) == -1
    os.rmdir(tmp_path / "a")
    (tmp_path / "a").write_bytes(b"")
    assert fs.unchanged([(str(a), fs.stat_file(str(a)))]) == -1
    assert fs.unchanged([(str(tmp_path / "gone"), sig[b])]) == -1


def test_polling_watcher_reports_changes_and_logs_each_poll_and_a_summary(
    fs: FakeFS, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    """One poll hands the scanner's changes to the sink, logs ``poll_cycle`` with its cost
    and next interval, and a ``poll_summary`` once five minutes have passed."""
    now = [100.0]
    got: list[FileChange | Rescan] = []
    settings = PollSettings(min_interval_s=0.5, max_interval_s=9.0, full_every=1000)
    w = PollingWatcher(
        ROOT, got.append, settings, scanner=PollScanner(ROOT, fs, 1000), clock=lambda: now[0]
    )
    w.scanner.baseline()
    fs.tick(10)
    fs.create(f"{ana('rec2')}/radon_report.json", size=5)
    fs.tick()
    w.poll_once()
    assert got == [FileChange(ana("rec2"), ChangeKind.MODIFIED, is_dir=True)]
    cycles = [e for e in captured_logs if e["event"] == "poll_cycle"]
    assert len(cycles) == 1 and cycles[0]["records"] == 3 and cycles[0]["changes"] == 1
    assert cycles[0]["hot"] == 1 and cycles[0]["hot_files"] == 0  # rec2 is hot from now on
    assert 0.5 <= w.interval_s <= 9.0
    assert not [e for e in captured_logs if e["event"] == "poll_summary"]
    now[0] += SUMMARY_S
    w.poll_once()
    summary = [e for e in captured_logs if e["event"] == "poll_summary"]
    assert len(summary) == 1 and summary[0]["polls"] == 2 and summary[0]["changes"] == 1


def test_record_metadata_change_is_reported_when_the_record_is_verified(fs: FakeFS) -> None:
    """A record's ``.zattrs`` replaced (only kymflow's manifest reads it) changes no analysis
    folder: it is reported as that file (so only the manifest is updated) by the record's
    verification poll, once within ``full_every`` polls."""
    fs.create(f"{rec('rec1')}/.zattrs")
    fs.create(f"{rec('rec1')}/data/.zarray")
    fs.tick(10)
    s = scanner(fs, full_every=3)
    fs.create(f"{rec('rec1')}/.zattrs", size=42)
    fs.tick()
    changes = [c for _ in range(3) for c in s.poll().changes]
    assert changes == [FileChange(f"{rec('rec1')}/.zattrs", ChangeKind.MODIFIED)]
    assert classify(ROOT, changes[0]) == RecordChange("rec1", frozenset())


def test_images_folder_that_cannot_be_listed_deletes_no_record(fs: FakeFS) -> None:
    """images/ changed but its listing fails for a moment (a share's hiccup): no record is
    reported deleted, and the next poll that can list it reports what really changed."""
    s = scanner(fs)
    fs.remove(rec("rec1"))
    fs.tick()
    real_list = fs.list_dir
    fs.list_dir = lambda p: None if p.endswith("/images") else real_list(p)  # type: ignore[method-assign]
    first = s.poll().changes  # rec1's own analysis folder is gone: that much is true
    assert all(isinstance(c, FileChange) and "/rec1/" in c.path for c in first), first
    assert s.record_count == 3
    fs.list_dir = real_list  # type: ignore[method-assign]
    assert s.poll().changes == (FileChange(rec("rec1"), ChangeKind.DELETED, is_dir=True),)


# -- the hot set: records changed recently are statted at every poll -------------------


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hot_scanner(
    fs: FakeFS, clock: FakeClock, *, hot_s: float = 300.0, hot_max: int = 100
) -> PollScanner:
    """A scanner whose rotation verifies no record in the test's polls (period 1000),
    so only folder changes and the hot set find anything."""
    s = PollScanner(ROOT, fs, 1000, hot_s=hot_s, hot_max=hot_max, clock=clock)
    s.baseline()
    fs.tick(10)
    for _ in range(3):  # the fixture's records had their verification polls
        s.poll()
    fs.listed.clear()
    return s


def analysis_change(image_id: str) -> FileChange:
    return FileChange(ana(image_id), ChangeKind.MODIFIED, is_dir=True)


def test_in_place_rewrites_of_an_active_record_are_seen_at_every_poll(fs: FakeFS) -> None:
    """Once a poll saw a record change, each in-place rewrite of its artifacts (no folder
    change) is reported by the next poll, where the rotation alone would take up to
    ``full_every`` polls."""
    clock = FakeClock()
    s = hot_scanner(fs, clock)
    events = f"{ana(UUID_ID)}/velocity_events/events.parquet"
    fs.create(f"{ana(UUID_ID)}/radon_report.json", size=20)  # atomic replace: folder mtime
    fs.tick(10)
    assert s.poll().changes == (analysis_change(UUID_ID),)
    for size in (30, 40, 50):
        clock.now += 2.0
        fs.write_in_place(events, size=size)
        fs.tick(10)
        result = s.poll()
        assert result.changes == (analysis_change(UUID_ID),)
        assert result.hot == 1 and result.hot_files == 2  # the record's two artifact files
        assert result.verified == 0


def test_in_place_rewrite_of_a_quiet_record_is_left_to_the_rotation(fs: FakeFS) -> None:
    """A record with no recent change is not hot: an in-place rewrite of it is not seen by
    the next poll (the rotation finds it at its turn), and an idle poll stats no file."""
    clock = FakeClock()
    s = hot_scanner(fs, clock)
    fs.calls.clear()
    fs.write_in_place(f"{ana('rec1')}/radon_report.json", size=33)
    fs.tick(10)
    result = s.poll()
    assert result.changes == () and result.hot == 0 and result.hot_files == 0
    assert fs.calls["stat_file"] == 0


def test_a_hot_record_expires_after_hot_s_without_a_change(fs: FakeFS) -> None:
    """A record stays hot ``hot_s`` seconds after its last seen change (each change
    restarts the hold); then its in-place rewrites are left to the rotation again."""
    clock = FakeClock()
    s = hot_scanner(fs, clock, hot_s=60.0)
    report = f"{ana('rec2')}/radon_report.json"
    fs.create(report, size=21)
    fs.tick(10)
    assert s.poll().changes == (analysis_change("rec2"),)
    clock.now += 50.0
    fs.write_in_place(report, size=22)
    fs.tick(10)
    assert s.poll().changes == (analysis_change("rec2"),)  # seen: the hold restarts
    clock.now += 59.0
    assert s.poll().hot == 1
    clock.now += 2.0  # 61 s after the last change
    fs.write_in_place(report, size=23)
    fs.tick(10)
    result = s.poll()
    assert result.changes == () and result.hot == 0 and "rec2" not in s.hot


def test_the_hot_set_keeps_only_the_most_recently_changed_records(fs: FakeFS) -> None:
    """With ``hot_max`` records hot, a further changed record pushes out the one changed
    longest ago, whose in-place rewrites are then left to the rotation."""
    clock = FakeClock()
    s = hot_scanner(fs, clock, hot_max=2)
    for image_id in ("rec1", "rec2", UUID_ID):
        clock.now += 1.0
        fs.create(f"{ana(image_id)}/radon_report.json", size=44)
        fs.tick(10)
        assert s.poll().changes == (analysis_change(image_id),)
    assert len(s.hot) == 2 and "rec1" not in s.hot
    for image_id in ("rec1", "rec2", UUID_ID):
        fs.write_in_place(f"{ana(image_id)}/velocity_events/events.parquet", size=55)
    fs.tick(10)
    assert set(s.poll().changes) == {analysis_change("rec2"), analysis_change(UUID_ID)}


def test_a_new_record_is_hot_and_a_deleted_one_leaves_the_hot_set(fs: FakeFS) -> None:
    """A record that appears is usually being written: its in-place rewrites are seen at
    the next poll; a deleted record leaves the hot set."""
    clock = FakeClock()
    s = hot_scanner(fs, clock)
    new_id = "5f0c2a9e-1b7d-4c3e-8a6f-0d9e8c7b6a55"
    fs.mkdir(ana(new_id))
    fs.create(f"{ana(new_id)}/velocity_events.parquet", size=10)
    fs.tick(10)
    assert s.poll().changes == (FileChange(rec(new_id), ChangeKind.ADDED, is_dir=True),)
    fs.write_in_place(f"{ana(new_id)}/velocity_events.parquet", size=11)
    fs.tick(10)
    assert s.poll().changes == (analysis_change(new_id),)
    fs.remove(rec(new_id))
    fs.tick(10)
    assert s.poll().changes == (FileChange(rec(new_id), ChangeKind.DELETED, is_dir=True),)
    assert new_id not in s.hot and len(s.hot) == 0


def test_a_hot_file_deleted_in_place_is_reported_once_listed(fs: FakeFS) -> None:
    """A hot record's artifact file that vanishes makes the record listed again and
    reported, and the hot set then holds the files listed (no repeated listing)."""
    clock = FakeClock()
    s = hot_scanner(fs, clock)
    fs.create(f"{ana('rec1')}/radon_report.json", size=12)
    fs.tick(10)
    s.poll()
    del fs.nodes[f"{ana('rec1')}/radon_report.json"]  # gone without a folder change
    fs.tick(10)
    assert s.poll().changes == (analysis_change("rec1"),)
    fs.listed.clear()
    assert s.poll().changes == () and listed_records(fs) == set()


def test_hot_set_marks_refreshes_and_validates() -> None:
    """``mark`` restarts a record's hold and moves it last, ``refresh`` keeps its hold,
    zero disables the set, and negative settings are refused."""
    hot = HotSet(hold_s=10.0, limit=5)
    hot.mark("e1", [("/a", (1, 1, 1, 1))], now=0.0)
    hot.mark("e2", [("/b", (1, 1, 1, 1))], now=5.0)
    hot.refresh("e1", [("/a", (2, 2, 2, 2))])
    assert hot.changed(lambda p: (2, 2, 2, 2), now=10.0) == ({"e2"}, 2)
    assert hot.changed(lambda p: (2, 2, 2, 2), now=10.5) == ({"e2"}, 1)  # e1 expired
    hot.mark("e2", [], now=20.0)
    hot.expire(29.0)
    assert "e2" in hot
    off = HotSet(hold_s=0.0, limit=5)
    off.mark("e1", [("/a", (1, 1, 1, 1))], now=0.0)
    assert len(off) == 0
    with pytest.raises(ValueError, match="negative"):
        HotSet(hold_s=-1.0)
