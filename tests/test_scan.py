"""Scanning with stamps: fingerprints carry ctime and their scan's stamp, and files changed
in the scan's own tick are waited out (fake stamps and waits: no clock, no sleep)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kymwatch.store import Fingerprint, fs_stamp, scan_record, scan_records_settled

REC = "0b6f0a52-3f5e-4b8e-9d0c-6f1f4c2f9a11"


def record(tmp_path: Path) -> tuple[Path, int]:
    """A record folder with one artifact file; returns it and the file's ctime."""
    folder = tmp_path / "images" / REC / "analysis"
    folder.mkdir(parents=True)
    path = folder / "velocity_events.parquet"
    path.write_bytes(b"PAR1 not really")
    return folder.parent, path.stat().st_ctime_ns


class FakeStamps:
    """Stamps from a script (the last one repeats), counting waits."""

    def __init__(self, *stamps: int | None) -> None:
        self._it: Iterator[int | None] = iter(stamps)
        self.last: int | None = None
        self.waits = 0

    def stamp(self, root: Path) -> int | None:
        self.last = next(self._it, self.last)
        return self.last

    def wait(self, seconds: float) -> None:
        self.waits += 1


def test_fingerprint_has_size_mtime_ctime_inode(tmp_path: Path) -> None:
    """A scanned fingerprint is the file's lstat size, mtime, ctime and inode."""
    folder, _ = record(tmp_path)
    fp = scan_record(folder, 5)["velocity_events.parquet"]
    st = os.lstat(folder / "analysis" / "velocity_events.parquet")
    assert fp == Fingerprint(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    assert fp.scanned_ns == 5


def test_a_file_changed_in_the_scans_tick_is_waited_out_and_rescanned(tmp_path: Path) -> None:
    """Racy at the first scan; once the stamp passes its ctime, the rescan is clean."""
    folder, ctime = record(tmp_path)
    fake = FakeStamps(ctime, ctime, ctime, ctime + 1)
    out = scan_records_settled(tmp_path, {REC: folder}, stamp=fake.stamp, wait=fake.wait)
    fp = out[REC]["velocity_events.parquet"]
    assert not fp.racy and fp.scanned_ns == ctime + 1
    assert fake.waits == 2


def test_a_clean_scan_does_not_wait(tmp_path: Path) -> None:
    """Files older than the stamp are taken as they are, without waiting."""
    folder, ctime = record(tmp_path)
    fake = FakeStamps(ctime + 10**9)
    out = scan_records_settled(tmp_path, {REC: folder}, stamp=fake.stamp, wait=fake.wait)
    assert not out[REC]["velocity_events.parquet"].racy
    assert fake.waits == 0


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    """A clock that never passes the file (set back) costs a bounded wait; the file stays racy."""
    folder, ctime = record(tmp_path)
    fake = FakeStamps(ctime - 5)
    out = scan_records_settled(
        tmp_path, {REC: folder}, stamp=fake.stamp, wait=fake.wait, max_waits=7
    )
    assert out[REC]["velocity_events.parquet"].racy
    assert fake.waits == 7


def test_without_a_stamp_file_nothing_is_waited_for(tmp_path: Path) -> None:
    """If index/ cannot hold the stamp, the local clock minus 2 s is used and no wait happens."""
    folder, _ = record(tmp_path)
    fake = FakeStamps(None)
    out = scan_records_settled(tmp_path, {REC: folder}, stamp=fake.stamp, wait=fake.wait)
    assert out[REC]["velocity_events.parquet"].racy  # written just now: re-read later
    assert fake.waits == 0


def test_fs_stamp_is_the_file_systems_time(tmp_path: Path) -> None:
    """The stamp is the mtime of index/.scan-stamp after a touch, minus the margin."""
    (tmp_path / "index").mkdir()
    _, ctime = record(tmp_path)
    stamp = fs_stamp(tmp_path)
    assert stamp is not None
    touched = (tmp_path / "index" / ".scan-stamp").stat().st_mtime_ns
    assert stamp < touched and touched >= ctime
    assert fs_stamp(tmp_path / "missing") is None


def test_a_settled_scan_hands_out_each_records_folder_listings(tmp_path: Path) -> None:
    """With ``listings``, each record gets the names of every folder its last scan listed
    (temporary files and non-artifacts included, as ``os.listdir`` gives them), keyed
    by the folder below ``analysis/``; a rescanned racy record gets its new listing."""
    folder, ctime = record(tmp_path)
    analysis = folder / "analysis"
    (analysis / "velocity_events").mkdir()
    (analysis / "velocity_events" / "events.parquet").write_bytes(b"x")
    (analysis / "notes.txt").write_text("n")
    (analysis / "radon_report.json.ab12.partial").write_text("{")
    fake = FakeStamps(ctime, ctime, ctime + 10**9)
    listings: dict[str, dict[str, frozenset[str]]] = {}

    def wait(seconds: float) -> None:
        fake.wait(seconds)
        (analysis / "late.json").write_text("{}")  # lands before the rescan

    scan_records_settled(tmp_path, {REC: folder}, stamp=fake.stamp, wait=wait, listings=listings)
    assert listings == {
        REC: {
            "": frozenset(os.listdir(analysis)),
            "velocity_events": frozenset({"events.parquet"}),
        }
    }
    assert "late.json" in listings[REC][""] and "notes.txt" in listings[REC][""]
