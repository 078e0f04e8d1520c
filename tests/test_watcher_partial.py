"""The inotify watcher drops the events of partial files on its own thread.

zarr and kymflow write ``<name>.<hex>.partial`` and rename it onto ``<name>``: of the
five events of such a write (create, modify, close, the rename's two sides) only the
rename onto the final name can matter, and :func:`classify` drops the other four. The
watcher drops them before they reach the daemon's queue (a burst's loop classified
~8,000 of them), and must report the rename, hidden metadata files and folders as before.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import WAIT_S, wait_until
from helpers_loop import kym_events
from helpers_store import make_v2_store, write_parquet_artifact, write_v2_record
from kymwatch.daemon import InotifyWatcher
from kymwatch.daemon.changes import ChangeKind, FileChange, Rescan, Signal
from kymwatch.daemon.classify import classify, is_partial_file_name
from kymwatch.daemon.watcher import inotify_available

pytestmark = pytest.mark.skipif(not inotify_available(), reason="inotify only")

IMAGE_ID = str(uuid.UUID(int=7, version=4))
PARTIAL = "events.parquet.1f2e3d4c.partial"


class Collect:
    """A thread-safe sink that keeps what the watcher reports."""

    def __init__(self) -> None:
        self.reports: list[FileChange | Rescan] = []
        self._lock = threading.Lock()

    def __call__(self, report: FileChange | Rescan) -> None:
        with self._lock:
            self.reports.append(report)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.reports if isinstance(r, FileChange)]


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[tuple[InotifyWatcher, Collect, str]]:
    """A watcher never started (no thread, no watches), its sink, and a folder it
    believes watched as watch 7: events are fed by hand, in the kernel's form."""
    sink = Collect()
    watcher = InotifyWatcher(tmp_path, sink)
    folder = os.path.join(tmp_path, "images", IMAGE_ID, "analysis", "velocity_events")
    watcher._path_of[7] = folder
    try:
        yield watcher, sink, folder
    finally:
        watcher._fd.close()


def feed(watcher: InotifyWatcher, mask: int, name: str) -> None:
    """Hand one kernel event of watch 7 to the watcher, as its reader thread does."""
    from watchdog.observers.inotify_c import InotifyEvent

    watcher.on_event(InotifyEvent(7, mask, 0, name.encode()))


def test_a_partial_files_create_modify_and_close_never_reach_the_sink_but_its_rename_does(
    fed: tuple[InotifyWatcher, Collect, str],
) -> None:
    """An atomic write's create, modify, close-write and rename-away of the partial file
    are dropped and counted; the rename onto ``events.parquet`` is reported as moved."""
    from watchdog.observers.inotify_c import InotifyConstants as C

    watcher, sink, folder = fed
    for mask in (C.IN_CREATE, C.IN_MODIFY, C.IN_CLOSE_WRITE, C.IN_MOVED_FROM):
        feed(watcher, mask, PARTIAL)
    feed(watcher, C.IN_MOVED_TO, "events.parquet")
    final = os.path.join(folder, "events.parquet")
    assert sink.reports == [FileChange(final, ChangeKind.ADDED, False, Signal.MOVED)]
    assert watcher.partial_events == 4


def test_hidden_files_and_partial_named_folders_are_still_reported(
    fed: tuple[InotifyWatcher, Collect, str],
) -> None:
    """``.zattrs`` (record metadata), a hidden partial file and a folder named like a
    partial file reach the sink as before: :func:`classify` decides about them."""
    from watchdog.observers.inotify_c import InotifyConstants as C

    watcher, sink, folder = fed
    feed(watcher, C.IN_CLOSE_WRITE, ".zattrs")
    feed(watcher, C.IN_CREATE, ".events.parquet.swp")
    feed(watcher, C.IN_CREATE | C.IN_ISDIR, "radon.0a1b2c3d.partial")
    assert sink.paths() == [
        os.path.join(folder, name)
        for name in (".zattrs", ".events.parquet.swp", "radon.0a1b2c3d.partial")
    ]
    assert watcher.partial_events == 0


@pytest.mark.parametrize(
    "name",
    [
        PARTIAL,
        "events.parquet.partial",
        "radon_report.json.9a8b7c6d.partial",
        "kym_velocity_events.parquet.partial.1",
        "events.parquet.tmp",
        "events.parquet~",
        "abc.request.partial",
    ],
)
@pytest.mark.parametrize(
    "folder",
    [
        "",
        "images",
        f"images/{IMAGE_ID}",
        f"images/{IMAGE_ID}/analysis",
        f"images/{IMAGE_ID}/analysis/velocity_events",
        f"images/{IMAGE_ID}/data",
        "index/sync",
        "tables",
    ],
)
def test_every_name_the_watcher_drops_is_one_classify_drops(
    tmp_path: Path, folder: str, name: str
) -> None:
    """Dropping early loses nothing: wherever a partial file is, and whatever happened
    to it, :func:`classify` would have dropped its event too."""
    assert is_partial_file_name(name)
    path = os.path.join(tmp_path, folder, name) if folder else os.path.join(tmp_path, name)
    for kind in ChangeKind:
        assert classify(tmp_path, FileChange(path, kind)) is None


@pytest.mark.parametrize(
    "name", [".zattrs", ".zgroup", "zarr.json", "events.parquet", "radon_report.json", "x.partial/"]
)
def test_artifacts_and_metadata_are_not_partial_names(name: str) -> None:
    """Artifacts, zarr metadata (hidden or not) are never taken for partial files."""
    assert not is_partial_file_name(name)


@pytest.mark.integration
def test_a_real_atomic_write_reaches_the_sink_only_as_its_rename(tmp_path: Path) -> None:
    """On a kymflow-shaped generation-2 store, an artifact written as ``.partial`` and
    renamed reaches the sink as the rename alone; the partial file's events are counted."""
    root = tmp_path / "store.zarr"
    make_v2_store(root)
    write_v2_record(root, IMAGE_ID)
    write_parquet_artifact(root, IMAGE_ID, "velocity_events/events", kym_events(2))
    sink = Collect()
    watcher = InotifyWatcher(root, sink)
    watcher.start()
    try:
        final = write_parquet_artifact(root, IMAGE_ID, "velocity_events/events", kym_events(3))
        wait_until(lambda: str(final) in sink.paths(), WAIT_S, "the rename's event")
        wait_until(lambda: watcher.partial_events >= 4, WAIT_S, "the partial file's events")
    finally:
        watcher.stop()
    assert not [p for p in sink.paths() if p.endswith(".partial")]
    moved = [r for r in sink.reports if isinstance(r, FileChange) and r.path == str(final)]
    assert [(r.kind, r.signal) for r in moved] == [(ChangeKind.ADDED, Signal.MOVED)]
