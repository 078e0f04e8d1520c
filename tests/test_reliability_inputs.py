"""Bad-input catalogue: each bad file or store state the daemon may meet, and recovery.

For each case the daemon (a real ``kymwatch run`` subprocess unless noted) must stay
up, log one explicit event naming the path and the reason, keep the rows the tables
already had, and index the record again once the cause goes away. The sync barrier is
``request_sync`` in-process (the barrier behind ``kymwatch sync``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import WAIT_S, DaemonProcess, assert_tables_match_rebuild, live_tables, wait_until
from helpers_store import (
    analysis_file,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import Daemon, DaemonConfig, request_sync
from kymwatch.daemon.sync import SyncFailedError
from kymwatch.index import KymDataset, OutcomeStatus
from test_reliability_events import running
from test_reliability_model import corrupt_bytes, parquet_bytes

# -- zero-row artifacts (found by the model-based test) ------------------------------------


@pytest.mark.parametrize(
    ("write", "table"),
    [
        (
            lambda root: write_parquet_artifact(root, "r1", "velocity_events", events_frame(0)),
            "velocity_events",
        ),
        (lambda root: write_json_artifact(root, "r1", "radon_report", []), "radon_report"),
    ],
    ids=["events-parquet-no-rows", "radon-json-empty-list"],
)
def test_zero_row_artifact_is_indexed_and_clears_old_rows(
    plain_v2_store: Path, write: Callable[[Path], Any], table: str
) -> None:
    """A valid artifact with no rows is indexed (0 rows), replacing the record's old rows."""
    root = plain_v2_store
    write_v2_record(root, "r1")
    write_parquet_artifact(root, "r1", "velocity_events", events_frame(3))
    write_json_artifact(root, "r1", "radon_report", legacy_radon_report(1.0))
    kd = KymDataset(root)
    kd.update_images(table, ["r1"])
    assert len(kd.get_table(table)) > 0
    write(root)
    outcome = kd.update_images_report(table, ["r1"]).outcomes[0]
    assert outcome.status is OutcomeStatus.INDEXED, outcome
    assert len(kd.get_table(table)) == 0


# -- the catalogue: bad artifact files -----------------------------------------------------
EVENTS = ("velocity_events", "parquet")
RADON = ("radon_report", "json")
RADON_GZ = ("radon_report", "json.gz")


def _bad_radon_mixed_list() -> bytes:
    return json.dumps([{"roi_id": 1, "vel_mean": 1.0, "note": "x"}, 2]).encode()


def _bad_radon_deep() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


# (case id, artifact, content maker, event the daemon must log)
BAD_FILES: list[tuple[str, tuple[str, str], Callable[[], bytes], str]] = [
    ("truncated-parquet", EVENTS, lambda: corrupt_bytes("velocity_events.parquet", "truncated"),
     "artifact_unreadable"),
    ("zero-byte-parquet", EVENTS, lambda: b"", "artifact_unreadable"),
    ("garbage-named-parquet", EVENTS, lambda: os.urandom(4096), "artifact_unreadable"),
    ("parquet-magic-then-garbage", EVENTS, lambda: b"PAR1" + os.urandom(100) + b"PAR1",
     "artifact_unreadable"),
    ("zero-byte-json", RADON, lambda: b"", "artifact_unreadable"),
    ("truncated-json", RADON, lambda: b'{"roi_id": 1, "vel_mean": 1.', "artifact_unreadable"),
    ("json-number", RADON, lambda: b"42", "artifact_invalid"),
    ("json-string", RADON, lambda: b'"a report"', "artifact_invalid"),
    ("json-null", RADON, lambda: b"null", "artifact_invalid"),
    ("json-list-of-numbers", RADON, lambda: b"[1, 2, 3]", "artifact_invalid"),
    ("json-list-with-a-non-object", RADON, _bad_radon_mixed_list, "artifact_invalid"),
    ("json-nested-100000-deep", RADON, _bad_radon_deep, "artifact_invalid"),
    ("json-not-utf8", RADON, lambda: b'{"note": "\xff\xfe"}', "artifact_unreadable"),
    ("legacy-json-gz-garbage", RADON_GZ, lambda: b"\x1f\x8b not gzip", "artifact_unreadable"),
]  # fmt: skip


def base_store(root: Path, *, legacy_radon: bool = False) -> Path:
    """Records r1 and r2 with 3 events and a radon report each (JSON, or legacy .json.gz)."""
    make_v2_store(root)
    for i, image_id in enumerate(("r1", "r2")):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(3, start_s=i))
        report = legacy_radon_report(float(i + 1))
        write_json_artifact(root, image_id, "radon_report", report, gz=legacy_radon)
    return root


def sync(root: Path) -> None:
    """The sync barrier (``kymwatch sync``), in-process."""
    request_sync(root, timeout=WAIT_S)


def events_for(d: DaemonProcess, path: Path) -> list[dict[str, Any]]:
    """The warning-level outcome events that name ``path``."""
    names = ("artifact_unreadable", "artifact_invalid")
    return [e for e in d.events() if e["event"] in names and e.get("path") == str(path)]


def assert_alive(d: DaemonProcess) -> None:
    """The daemon process is still running."""
    assert d.proc is not None and d.proc.poll() is None, d.read_output()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("artifact", "make", "event"),
    [pytest.param(a, m, e, id=i) for i, a, m, e in BAD_FILES],
)
def test_bad_artifact_is_reported_once_keeps_rows_and_recovers(
    tmp_path: Path, artifact: tuple[str, str], make: Callable[[], bytes], event: str
) -> None:
    """A bad artifact: daemon up, one event naming path and reason, old rows kept, recovery."""
    name, ext = artifact
    root = base_store(tmp_path / "store.zarr", legacy_radon=ext == "json.gz")
    path = analysis_file(root, "r1", name, ext)
    with DaemonProcess(root) as d:
        sync(root)
        before = live_tables(root)
        write_file(path, make())
        sync(root)
        assert_alive(d)
        reported = events_for(d, path)
        assert [e["event"] for e in reported] == [event], reported
        assert reported[0]["error"] and reported[0]["image_id"] == "r1"
        after = live_tables(root)
        for table in before:
            assert after[table].equals(before[table]), f"{table} lost its old rows"
        sync(root)  # nothing changed: no second report
        assert len(events_for(d, path)) == 1
        # The cause goes away: a good file replaces the bad one.
        if name == "velocity_events":
            write_parquet_artifact(root, "r1", name, events_frame(5, start_s=50.0))
        else:
            write_json_artifact(root, "r1", name, legacy_radon_report(42.0), gz=ext == "json.gz")
        sync(root)
        assert_alive(d)
    assert_tables_match_rebuild(root, tmp_path / "scratch")
    if name == "velocity_events":
        assert (live_tables(root)[name]["image_id"] == "r1").sum() == 5


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink-loop", "dangling-symlink"])
def test_artifact_that_is_not_a_regular_file_is_reported(tmp_path: Path, kind: str) -> None:
    """A folder, FIFO or symlink (a loop, or dangling) named like an artifact is reported."""
    root = base_store(tmp_path / "store.zarr")
    path = analysis_file(root, "r1", "velocity_events", "parquet")
    with DaemonProcess(root) as d:
        sync(root)
        before = live_tables(root)
        path.unlink()
        if kind == "directory":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)  # a naive reader would block here forever
        elif kind == "symlink-loop":
            path.symlink_to(path.name)
        else:
            path.symlink_to(tmp_path / "nowhere.parquet")
        sync(root)
        assert_alive(d)
        reported = events_for(d, path)
        assert [e["event"] for e in reported] == ["artifact_unreadable"], reported
        assert live_tables(root)["velocity_events"].equals(before["velocity_events"])
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(4))
        sync(root)
        assert_alive(d)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_symlink_loops_under_analysis_are_harmless(tmp_path: Path) -> None:
    """Folder symlink loops under analysis/ neither hang the scan nor the watcher."""
    root = base_store(tmp_path / "store.zarr")
    analysis = root / "images" / "r1" / "analysis"
    with DaemonProcess(root) as d:
        sync(root)
        (analysis / "loop").symlink_to(".")  # analysis/loop -> analysis
        (analysis / "velocity_events").mkdir()
        (analysis / "velocity_events" / "up").symlink_to("..")
        (analysis / "ping").symlink_to("pong")
        (analysis / "pong").symlink_to("ping")
        sync(root)
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(6))
        sync(root)
        assert_alive(d)
        assert (live_tables(root)["velocity_events"]["image_id"] == "r1").sum() == 6
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_huge_string_values_are_indexed(tmp_path: Path) -> None:
    """Artifacts with multi-megabyte strings are indexed like any other (no crash, no cut)."""
    root = base_store(tmp_path / "store.zarr")
    huge = "x" * (8 * 1024 * 1024)
    df = events_frame(2).assign(kind=[huge, "stall"])
    with DaemonProcess(root) as d:
        sync(root)
        write_parquet_artifact(root, "r1", "velocity_events", df)
        write_json_artifact(root, "r2", "radon_report", legacy_radon_report(1.0, note=huge))
        sync(root)
        assert_alive(d)
        tables = live_tables(root)
    assert tables["velocity_events"]["kind"].str.len().max() == len(huge)
    assert tables["radon_report"]["notes"].str.len().max() == len(huge)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: chmod 000 does not deny root")
def test_permission_denied_artifact_is_reported_and_recovers(tmp_path: Path) -> None:
    """An artifact the daemon may not read is reported, keeps old rows, and recovers."""
    root = base_store(tmp_path / "store.zarr")
    path = analysis_file(root, "r1", "velocity_events", "parquet")
    with DaemonProcess(root) as d:
        sync(root)
        before = live_tables(root)
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(9))
        path.chmod(0)
        sync(root)
        reported = events_for(d, path)
        assert [e["event"] for e in reported] == ["artifact_unreadable"], reported
        assert "ermission" in reported[0]["error"]
        assert live_tables(root)["velocity_events"].equals(before["velocity_events"])
        path.chmod(0o644)
        sync(root)
        assert_alive(d)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- names the daemon must not trust --------------------------------------------------------
NOT_IDS = ["..foo", ".hidden", "has space", "ünïcödé", "-dash", "x" * 220]


def add_not_id_records(root: Path) -> list[Path]:
    """Record-like folders whose names are not valid image ids, each with events."""
    folders = []
    for name in NOT_IDS:
        folder = root / "images" / name
        write_parquet_artifact(root, name, "velocity_events", events_frame(2))
        folders.append(folder)
    raw = os.fsencode(root / "images") + b"/bad\xffname"
    os.makedirs(raw + b"/analysis")
    with open(raw + b"/analysis/velocity_events.parquet", "wb") as f:
        f.write(parquet_bytes(events_frame(2)))
    folders.append(Path(os.fsdecode(raw)))
    return folders


@pytest.mark.integration
def test_folders_that_are_not_image_ids_are_never_indexed(tmp_path: Path) -> None:
    """Traversal-like, hidden, spaced, unicode, over-long and non-UTF-8 folder names are skipped."""
    root = base_store(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        sync(root)
        add_not_id_records(root)
        # Non-UTF-8 and non-artifact file names inside a real record, too.
        analysis = os.fsencode(root / "images" / "r1" / "analysis")
        for raw in (b"/velocity_events\xff.parquet", b"/\xff\xfe.json", b"/radon report.json"):
            with open(analysis + raw, "wb") as f:
                f.write(b"not read")
        sync(root)
        write_parquet_artifact(root, "r2", "velocity_events", events_frame(7))
        sync(root)
        assert_alive(d)
        ids = set(live_tables(root)["velocity_events"]["image_id"])
        assert ids == {"r1", "r2"}
        for line in d.log_path.read_text(encoding="utf-8").splitlines():
            json.loads(line)  # every log line is still valid JSON
        json.loads((root / "index" / "status.json").read_bytes())
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_folder_that_is_not_an_image_id_is_reported(tmp_path: Path) -> None:
    """A skipped record folder is reported once with its path and the reason."""
    root = base_store(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        sync(root)
        folder = root / "images" / "has space"
        write_parquet_artifact(root, "has space", "velocity_events", events_frame(2))
        sync(root)
        named = [e for e in d.events() if e.get("path") == str(folder)]
        assert named and named[0]["level"] == "warning" and named[0].get("reason"), named


def test_api_rejects_traversal_in_image_ids(new_dataset: Any) -> None:
    """Image ids that would leave images/ are refused by the store API."""
    from kymwatch.errors import InvalidNameError
    from kymwatch.store import ZarrImageRecord

    for bad in ("../outside", "..", "a/b", "/abs", "", "x\x00y"):
        with pytest.raises(InvalidNameError):
            ZarrImageRecord(new_dataset, bad)


# -- the store itself goes away -------------------------------------------------------------
def output_events(d: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """Events named ``name`` from the daemon's stdout (JSON lines; survives the log file)."""
    out = []
    for line in d.read_output().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


def remove_store(root: Path) -> None:
    """``rm -rf`` the store, again if the running daemon wrote into it meanwhile."""

    def gone() -> bool:
        shutil.rmtree(root, ignore_errors=True)
        return not root.exists()

    wait_until(gone, what=f"{root} to be removed")


def rows_for(root: Path, table: str, image_id: str) -> int:
    """Rows of one record in a table on disk (0 if the store cannot be read now)."""
    try:
        df = live_tables(root)[table]
    except (OSError, ValueError):
        return 0
    return int((df["image_id"] == image_id).sum())


@pytest.mark.integration
def test_store_renamed_while_running_is_reported_and_recovers(tmp_path: Path) -> None:
    """A store moved away is reported and not recreated; moved back, it is indexed again."""
    root = base_store(tmp_path / "store.zarr")
    moved = tmp_path / "moved.zarr"
    with DaemonProcess(root) as d:
        sync(root)
        os.rename(root, moved)
        wait_until(lambda: len(output_events(d, "store_unavailable")) >= 2, what="two rescans")
        assert_alive(d)
        event = output_events(d, "store_unavailable")[0]
        assert event["store"] == str(root) and event["reason"]
        assert not root.exists(), f"the daemon recreated {root}: {sorted(root.rglob('*'))}"
        os.rename(moved, root)
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(8))
        sync(root)
        assert rows_for(root, "velocity_events", "r1") == 8
        assert_alive(d)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_store_deleted_while_running_is_reported_and_recovers(tmp_path: Path) -> None:
    """A deleted store is reported and not recreated; restored from a copy, it is indexed."""
    root = base_store(tmp_path / "store.zarr")
    backup = tmp_path / "backup.zarr"
    with DaemonProcess(root) as d:
        sync(root)
        shutil.copytree(root, backup, ignore=shutil.ignore_patterns("index"))
        remove_store(root)
        wait_until(lambda: len(output_events(d, "store_unavailable")) >= 2, what="two rescans")
        assert_alive(d)
        assert not root.exists(), f"the daemon recreated {root}: {sorted(root.rglob('*'))}"
        shutil.copytree(backup, root)
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(8))
        wait_until(
            lambda: rows_for(root, "velocity_events", "r1") == 8,
            what="the restored store to be indexed again",
        )
        assert_alive(d)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_store_restored_after_deletion_is_still_locked_by_the_daemon(tmp_path: Path) -> None:
    """After a deleted store is restored, the running daemon owns it again (sync works)."""
    root = base_store(tmp_path / "store.zarr")
    backup = tmp_path / "backup.zarr"
    with DaemonProcess(root) as d:
        sync(root)
        shutil.copytree(root, backup, ignore=shutil.ignore_patterns("index"))
        remove_store(root)
        wait_until(lambda: len(output_events(d, "store_unavailable")) >= 1, what="a rescan")
        before = len(output_events(d, "reconcile_done"))
        shutil.copytree(backup, root)
        wait_until(lambda: len(output_events(d, "reconcile_done")) > before, what="a rescan of it")
        sync(root)


# -- the disk fills up ----------------------------------------------------------------------
class DiskFull:
    """Makes atomic writes of matching files fail with ENOSPC half-way, while ``on`` is set.

    It wraps ``kymwatch.store.atomic._replacing``, the one place every atomic write of
    kymwatch (tables, state, status, sync answers) goes through, but the export of a
    partitioned table (``staged_write``: encoded first, replaced later under the lock).
    """

    def __init__(self, match: Callable[[Path], bool]) -> None:
        self.match = match
        self.on = threading.Event()
        self.failed: list[Path] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route kymwatch's atomic writes through this simulated disk."""
        from kymwatch.store import atomic

        real = atomic._replacing

        @contextlib.contextmanager
        def replacing(path: Path, *, fsync: bool, **options: bool) -> Iterator[Path]:
            with real(path, fsync=fsync, **options) as tmp:
                yield tmp
                if self.on.is_set() and self.match(Path(path)):
                    os.truncate(tmp, os.path.getsize(tmp) // 2)
                    self.failed.append(Path(path))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

        monkeypatch.setattr(atomic, "_replacing", replacing)


@pytest.mark.integration
def test_disk_full_while_writing_a_table_keeps_old_tables_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """ENOSPC during a table write: daemon up, batch_failed names it, old table kept, retried."""
    root = base_store(tmp_path / "store.zarr")
    disk = DiskFull(lambda p: p.parent.name == "tables")
    disk.install(monkeypatch)
    config = DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, rescan_backoff_s=(0.2, 2.0))
    with running(Daemon(config)) as daemon:
        sync(root)
        before = live_tables(root)
        disk.on.set()
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(6))
        with pytest.raises(SyncFailedError):
            sync(root)
        assert disk.failed
        failed = [e for e in captured_logs if e["event"] == "batch_failed"]
        assert failed and "No space left on device" in failed[0]["error"]
        assert str(root / "tables") in failed[0]["error"]
        assert live_tables(root)["velocity_events"].equals(before["velocity_events"])
        # The daemon keeps retrying meanwhile: a retry's temporary may exist for a moment.
        tables = sorted(p.name for p in (root / "tables").iterdir() if not p.name.startswith("."))
        assert tables == ["radon_report.parquet", "velocity_events.parquet"]
        assert daemon.status.counters["batch_failures"] >= 1
        disk.on.clear()  # space freed: the retry (rescan with back-off) or a sync succeeds
        wait_until(
            lambda: (live_tables(root)["velocity_events"]["image_id"] == "r1").sum() == 6,
            what="the table write to be retried",
        )
        sync(root)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_disk_full_for_every_daemon_write_does_not_kill_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """ENOSPC for tables, state and status alike: the daemon survives and catches up."""
    root = base_store(tmp_path / "store.zarr")
    disk = DiskFull(lambda p: not p.name.endswith(".request"))
    disk.install(monkeypatch)
    config = DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, rescan_backoff_s=(0.2, 2.0))
    with running(Daemon(config)) as daemon:
        sync(root)
        disk.on.set()
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(6))
        wait_until(lambda: len(disk.failed) >= 3, what="a few failed writes")
        assert daemon.status.state != "stopped"
        disk.on.clear()
        wait_until(
            lambda: (live_tables(root)["velocity_events"]["image_id"] == "r1").sum() == 6,
            what="the daemon to catch up once space is back",
        )
        sync(root)
    assert_tables_match_rebuild(root, tmp_path / "scratch")


@pytest.mark.integration
def test_sync_while_the_disk_is_full_does_not_kill_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """A sync asked while nothing can be written fails or times out; the daemon survives."""
    root = base_store(tmp_path / "store.zarr")
    disk = DiskFull(lambda p: not p.name.endswith(".request"))
    disk.install(monkeypatch)
    config = DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, rescan_backoff_s=(0.2, 2.0))
    with running(Daemon(config)) as daemon:
        sync(root)
        disk.on.set()
        write_parquet_artifact(root, "r1", "velocity_events", events_frame(6))
        with contextlib.suppress(SyncFailedError, TimeoutError):
            request_sync(root, timeout=5.0)
        assert daemon.status.state != "stopped"
        disk.on.clear()
        sync(root)
    assert_tables_match_rebuild(root, tmp_path / "scratch")
