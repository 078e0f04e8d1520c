"""macOS watches with FSEvents through watchdog's observer interface; Linux keeps inotify;
network shares keep polling. CI runs Linux: the darwin branch of the choice is tested
with the platform injected, and the observer-based source runs the same watcher and
daemon tests with watchdog's ``InotifyObserver`` behind the same interface."""

from __future__ import annotations

import os
import queue
import shutil
import sys
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.inotify import InotifyObserver

from harness import WAIT_S, assert_tables_match_rebuild, wait_until
from helpers_loop import running
from helpers_store import (
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import ChangeKind, DaemonConfig, FileChange, Rescan, Signal, request_sync
from kymwatch.daemon.mounts import Mount, decide_watch_mode, find_mount, native_watch_mode
from kymwatch.daemon.observer import ObserverWatcher, observer_class
from kymwatch.daemon.runner import Daemon
from kymwatch.daemon.sources import choose_watch_mode
from kymwatch.daemon.watcher import EventSink, EventSource, InotifyWatcher

MAC_MOUNT = """/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)
/dev/disk3s5 on /System/Volumes/Data (apfs, local, journaled, nobrowse)
//lab@nas.local/microscope on /Volumes/microscope (smbfs, nodev, nosuid, mounted by lab)
"""


# -- the choice -----------------------------------------------------------------------------
def test_native_watch_mode_per_platform() -> None:
    """inotify on Linux, FSEvents on macOS, nothing native elsewhere."""
    assert native_watch_mode("linux") == "inotify"
    assert native_watch_mode("darwin") == "fsevents"
    assert native_watch_mode("win32") is None


@pytest.mark.parametrize(
    ("fs_type", "flags", "expected"),
    [
        ("apfs", {}, ("fsevents", "local")),
        ("smbfs", {}, ("polling", "network")),
        ("nfs", {}, ("polling", "network")),
        ("afpfs", {}, ("polling", "network")),
        ("macfuse", {}, ("polling", "fuse")),
        ("smbfs", {"inotify": True}, ("fsevents", "inotify_requested")),
        ("apfs", {"polling": True}, ("polling", "polling_requested")),
        ("apfs", {"inotify_available": False}, ("polling", "inotify_unavailable")),
    ],
)
def test_macos_decision(fs_type: str, flags: dict[str, bool], expected: tuple[str, str]) -> None:
    """On macOS a local disk gets FSEvents; shares and FUSE are polled, as on Linux."""
    d = decide_watch_mode(Mount("/Volumes/x", fs_type), native="fsevents", **flags)
    assert (d.mode, d.reason) == expected


def test_darwin_mounts_come_from_the_mount_command(tmp_path: Path) -> None:
    """Without /proc, macOS's `mount` output names the store's file system."""
    listing = tmp_path / "mount.txt"
    listing.write_text(MAC_MOUNT)
    nowhere = str(tmp_path / "no-proc")

    def mount_of(path: str) -> Mount | None:
        return find_mount(
            Path(path), nowhere, nowhere, platform="darwin", mount_command=("cat", str(listing))
        )

    share = mount_of("/Volumes/microscope/exp42.zarr")
    assert share == Mount("/Volumes/microscope", "smbfs", "//lab@nas.local/microscope")
    local = mount_of("/Users/lab/exp42.zarr")
    assert local is not None and local.fs_type == "apfs" and local.mount_point == "/"
    assert find_mount(Path("/x"), nowhere, nowhere, platform="linux") is None


def test_darwin_store_is_watched_with_fsevents_linux_with_inotify(tmp_path: Path) -> None:
    """The same store: FSEvents when the platform is darwin, inotify on Linux, polling when
    the native mode cannot be loaded or polling is asked for."""
    store = make_v2_store(tmp_path / "s.zarr")
    config = DaemonConfig(store)
    yes: Callable[[str], bool] = lambda mode: True  # noqa: E731
    no: Callable[[str], bool] = lambda mode: False  # noqa: E731
    assert choose_watch_mode(store, config, platform="darwin", available=yes).mode == "fsevents"
    assert choose_watch_mode(store, config, platform="linux", available=yes).mode == "inotify"
    darwin_without = choose_watch_mode(store, config, platform="darwin", available=no)
    assert (darwin_without.mode, darwin_without.reason) == ("polling", "inotify_unavailable")
    asked = DaemonConfig(store, polling=True)
    assert choose_watch_mode(store, asked, platform="darwin", available=yes).mode == "polling"


def test_observer_class_by_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """darwin loads watchdog's FSEventsObserver (a stand-in module here: it only builds on
    macOS), Linux its InotifyObserver; another platform has none."""
    fake = types.ModuleType("watchdog.observers.fsevents")

    class FSEventsObserver:
        """Stands in for watchdog's macOS observer."""

    fake.FSEventsObserver = FSEventsObserver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "watchdog.observers.fsevents", fake)
    assert observer_class("darwin") is FSEventsObserver
    assert observer_class("linux") is InotifyObserver
    with pytest.raises(ImportError):
        observer_class("win32")


# -- the same watcher tests with both sources -----------------------------------------------
SOURCES: dict[str, Callable[[Path, EventSink], EventSource]] = {
    "inotify": InotifyWatcher,
    "observer": lambda root, sink: ObserverWatcher(root, sink, InotifyObserver),
}


class Collect:
    """A sink that queues what the source reports."""

    def __init__(self) -> None:
        self.q: queue.Queue[FileChange | Rescan] = queue.Queue()

    def __call__(self, item: FileChange | Rescan) -> None:
        self.q.put(item)

    def until(self, match: Callable[[FileChange | Rescan], bool]) -> list[FileChange | Rescan]:
        """Everything reported up to and including the first item that matches."""
        got = []
        while True:
            item = self.q.get(timeout=WAIT_S)
            got.append(item)
            if match(item):
                return got


def _save_like_kymflow(folder: Path, name: str, data: bytes) -> Path:
    """zarr's write: ``<name>.<hex>.partial``, then a rename onto the name."""
    final = folder / name
    partial = folder / f"{name}.{uuid.uuid4().hex}.partial"
    partial.write_bytes(data)
    os.replace(partial, final)
    return final


def _named(name: str, kind: ChangeKind, signal: Signal | None = None) -> Any:
    def match(item: FileChange | Rescan) -> bool:
        return (
            isinstance(item, FileChange)
            and os.path.basename(item.path) == name
            and item.kind is kind
            and signal in (None, item.signal)
        )

    return match


@pytest.mark.integration
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_watcher_reports_renames_writes_deletes_and_a_vanished_store(
    tmp_path: Path, source: str
) -> None:
    """A rename onto a name is `added`+`moved`, a file written in place ends `closed`, a
    deletion is `deleted`, a new record's files are seen, and images/ vanishing asks for a
    rescan — with kymwatch's inotify watcher and with watchdog's observer interface."""
    store = make_v2_store(tmp_path / "s.zarr")
    write_v2_record(store, "e1")
    analysis = store / "images" / "e1" / "analysis"
    analysis.mkdir()
    sink = Collect()
    watcher = SOURCES[source](store, sink)
    watcher.start()
    try:
        assert watcher.watch_count >= 1
        _save_like_kymflow(analysis, "velocity_events.parquet", b"PAR1")
        sink.until(_named("velocity_events.parquet", ChangeKind.ADDED, Signal.MOVED))
        with open(analysis / "radon_report.json", "w") as f:
            f.write("{}")
        sink.until(_named("radon_report.json", ChangeKind.MODIFIED, Signal.CLOSED))
        (analysis / "radon_report.json").unlink()
        sink.until(_named("radon_report.json", ChangeKind.DELETED))
        record = store / "images" / "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
        write_v2_record(store, record.name)
        sink.until(_named(record.name, ChangeKind.ADDED))
        (record / "analysis").mkdir()
        sink.until(_named("analysis", ChangeKind.ADDED))  # watched once reported
        _save_like_kymflow(record / "analysis", "radon_report.json", b"{}")
        sink.until(_named("radon_report.json", ChangeKind.ADDED, Signal.MOVED))
        shutil.rmtree(store / "images")
        sink.until(lambda item: isinstance(item, Rescan))
    finally:
        watcher.stop()


@pytest.mark.integration
def test_observer_source_reports_paths_under_the_stores_own_name(tmp_path: Path) -> None:
    """A store reached through a symbolic link (macOS's /tmp is /private/tmp, and FSEvents
    reports real paths): changes are reported under the path the daemon was given."""
    real = make_v2_store(tmp_path / "real" / "s.zarr")
    write_v2_record(real, "e1")
    (real / "images" / "e1" / "analysis").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    store = tmp_path / "link" / "s.zarr"
    sink = Collect()
    watcher = ObserverWatcher(store, sink, InotifyObserver)
    watcher.start()
    try:
        _save_like_kymflow(store / "images" / "e1" / "analysis", "radon_report.json", b"{}")
        got = sink.until(_named("radon_report.json", ChangeKind.ADDED, Signal.MOVED))
    finally:
        watcher.stop()
    paths = [item.path for item in got if isinstance(item, FileChange)]
    assert paths and all(p.startswith(str(store) + os.sep) for p in paths), paths


# -- the real daemon on the observer source -------------------------------------------------
@pytest.mark.integration
def test_daemon_on_the_observer_source_keeps_tables_right_and_answers_sync(
    tmp_path: Path,
) -> None:
    """The daemon fed by the observer-based source (watchdog's interface, as on macOS)
    indexes new records, rewrites and deletions from their events, answers a sync, and its
    tables equal a fresh rebuild."""
    root = make_v2_store(tmp_path / "store.zarr")
    for i, image_id in enumerate(("e1", "a3c2c1d0-7f5e-4b8a-9c1d-2e3f4a5b6c7d")):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(2, start_s=i))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(float(i)))
    config = DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, reconcile_interval_s=3600)
    sources: list[ObserverWatcher] = []

    def factory(r: Path, sink: EventSink) -> ObserverWatcher:
        sources.append(ObserverWatcher(r, sink, InotifyObserver))
        return sources[-1]

    with running(Daemon(config, source_factory=factory)) as daemon:
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        write_v2_record(root, "edited")
        write_parquet_artifact(root, "edited", "velocity_events", events_frame(5))
        write_parquet_artifact(root, "e1", "velocity_events", events_frame(4, start_s=9.0))
        (root / "images" / "e1" / "analysis" / "radon_report.json").unlink()

        def right() -> bool:
            try:
                assert_tables_match_rebuild(root, tmp_path / "scratch")
            except AssertionError:
                return False
            return True

        wait_until(right, what="tables == rebuild from the observer's events")
        assert daemon.status.counters["reconciles"] == 1  # the startup one only: events did it
        write_json_artifact(root, "edited", "radon_report", legacy_radon_report(3.0))
        answer = request_sync(root, timeout=WAIT_S)
        assert answer["ok"] is not False
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        assert sources[0].is_alive() and sources[0].watch_count == 1
