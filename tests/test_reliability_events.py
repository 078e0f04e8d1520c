"""Lost events: the daemon converges by rescanning, and keeps watching recreated folders.

The first tests run the daemon in-process on a thread and inject loss at the event
source seam (``Daemon(config, source_factory=...)``): a source that reports nothing
at all (a dead observer), or the real inotify watcher behind a sink that drops
events, followed by the signal a real overflow or observer failure produces
(``Rescan(reason)``). The last ones run the real daemon and delete and recreate a
record folder the way a zarr overwrite does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import (
    WAIT_S,
    DaemonProcess,
    assert_tables_match_rebuild,
    count_inotify_watches,
    live_tables,
    wait_until,
)
from helpers_loop import HeldSink, LossySink, running
from helpers_store import (
    analysis_file,
    delete_record,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import (
    Daemon,
    DaemonConfig,
    EventSink,
    InotifyWatcher,
    Rescan,
    request_sync,
)
from kymwatch.daemon.watcher import FolderWatcher

pytestmark = pytest.mark.integration


# -- in-process daemon with an injected source ---------------------------------------------
class SilentSource:
    """An event source that reports nothing unless the test pushes it (a dead observer)."""

    def __init__(self, root: Path, sink: EventSink) -> None:
        self.root, self.sink = root, sink
        self.rewatches = 0

    @property
    def watch_count(self) -> int:
        return 0

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def rewatch(self) -> None:
        """Count the daemon's requests to re-establish watches."""
        self.rewatches += 1


def two_record_store(root: Path) -> Path:
    """A store with records a and b, each with events and a radon report."""
    make_v2_store(root)
    for i, image_id in enumerate(("a", "b")):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(2, start_s=i))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(float(i)))
    return root


def change_behind_the_daemons_back(root: Path) -> None:
    """New record c, rewritten events of a, deleted radon report of b."""
    write_v2_record(root, "c")
    write_parquet_artifact(root, "c", "velocity_events", events_frame(5))
    write_parquet_artifact(root, "a", "velocity_events", events_frame(4, start_s=9.0))
    analysis_file(root, "b", "radon_report", "json").unlink()


def reconciles(logs: list[dict[str, Any]], reason: str) -> int:
    """How many reconcile scans with ``reason`` finished."""
    return sum(1 for e in logs if e["event"] == "reconcile_done" and e.get("reason") == reason)


def fast_config(root: Path) -> DaemonConfig:
    """Short windows and a short first rescan backoff, to keep the tests quick."""
    return DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, rescan_backoff_s=(0.05, 5.0))


@pytest.mark.parametrize("reason", ["inotify_overflow", "watcher_error", "watch_failed"])
def test_a_loss_signal_makes_the_daemon_rescan_and_converge(
    tmp_path: Path, captured_logs: list[dict[str, Any]], reason: str
) -> None:
    """Writes whose events were all lost are indexed once the source signals a loss."""
    root = two_record_store(tmp_path / "store.zarr")
    sources: list[SilentSource] = []

    def factory(r: Path, sink: EventSink) -> SilentSource:
        sources.append(SilentSource(r, sink))
        return sources[-1]

    with running(Daemon(fast_config(root), source_factory=factory)) as daemon:
        assert_tables_match_rebuild(root, tmp_path / "scratch")  # the startup reconcile
        change_behind_the_daemons_back(root)
        assert "c" not in set(live_tables(root)["velocity_events"]["image_id"])
        sources[0].sink(Rescan(reason))
        wait_until(lambda: reconciles(captured_logs, reason) >= 1, what=f"a {reason} rescan")
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        assert daemon.status.counters["lost_event_signals"] == 1
        assert any(e["event"] == "events_lost" for e in daemon.status.last_errors)
        assert sources[0].rewatches >= 1


def test_a_rescan_storm_backs_off(tmp_path: Path, captured_logs: list[dict[str, Any]]) -> None:
    """Hundreds of loss signals in a burst cost a few rescans, not hundreds, and converge."""
    root = two_record_store(tmp_path / "store.zarr")
    sources: list[SilentSource] = []

    def factory(r: Path, sink: EventSink) -> SilentSource:
        sources.append(SilentSource(r, sink))
        return sources[-1]

    config = DaemonConfig(root, quiet_s=0.05, max_delay_s=1.0, rescan_backoff_s=(0.5, 5.0))
    with running(Daemon(config, source_factory=factory)) as daemon:
        change_behind_the_daemons_back(root)
        for _ in range(300):
            sources[0].sink(Rescan("inotify_overflow"))
            time.sleep(0.003)
        wait_until(
            lambda: reconciles(captured_logs, "inotify_overflow") >= 1, what="the first rescan"
        )
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        assert daemon.status.counters["lost_event_signals"] == 300
    assert reconciles(captured_logs, "inotify_overflow") < 30


def test_real_watcher_recovers_from_dropped_events_and_keeps_watching(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """After an overflow the real watcher re-watches folders created while events were lost."""
    root = two_record_store(tmp_path / "store.zarr")
    watchers: list[InotifyWatcher] = []
    lossy: list[LossySink] = []

    def factory(r: Path, sink: EventSink) -> InotifyWatcher:
        lossy.append(LossySink(sink))
        watchers.append(InotifyWatcher(r, lossy[-1]))
        return watchers[-1]

    with running(Daemon(fast_config(root), source_factory=factory)):
        lossy[0].dropping.set()
        change_behind_the_daemons_back(root)  # record c and its analysis/ appear unseen
        wait_until(lambda: lossy[0].dropped > 0, what="events to be dropped")
        lossy[0].dropping.clear()
        watchers[0].on_queue_overflow()  # what watchdog calls on IN_Q_OVERFLOW
        wait_until(lambda: reconciles(captured_logs, "inotify_overflow") >= 1, what="the rescan")
        assert_tables_match_rebuild(root, tmp_path / "scratch")
        # Record c's folders were created while events were lost: they are watched now.
        write_json_artifact(root, "c", "radon_report", legacy_radon_report(7.0))
        wait_until(
            lambda: "c" in set(live_tables(root)["radon_report"]["image_id"]),
            what="the new artifact of record c to be indexed from its event",
        )
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- the real daemon: a record folder deleted and recreated -------------------------------
def rows_for(root: Path, table: str, image_id: str) -> int:
    """Rows of one record in a table on disk."""
    df = live_tables(root)[table]
    return int((df["image_id"] == image_id).sum())


def test_recreated_record_folder_is_watched_again(tmp_path: Path) -> None:
    """Zarr-overwrite style delete and recreate of a record: later writes are still seen."""
    root = two_record_store(tmp_path / "store.zarr")
    with DaemonProcess(root) as d:
        d.sync()
        assert d.proc is not None
        watches = count_inotify_watches(d.proc.pid)
        for n in range(1, 6):
            delete_record(root, "a")
            write_v2_record(root, "a")
            d.sync()
            assert rows_for(root, "velocity_events", "a") == 0
            # No sync from here: only the watch on the new folders can bring this in.
            write_parquet_artifact(root, "a", "velocity_events", events_frame(n))
            wait_until(
                lambda n=n: rows_for(root, "velocity_events", "a") == n,
                what=f"cycle {n}: the recreated record's new events, from its events",
            )
            assert count_inotify_watches(d.proc.pid) == watches
        assert d.proc.poll() is None
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_rm_rf_of_a_watched_store_removes_it_whole(tmp_path: Path) -> None:
    """``rm -rf`` of a store a daemon watches succeeds every time and nothing comes back:
    the daemon creates nothing (log, status, state) in a store being deleted, where a
    file written meanwhile made ``rm`` fail with "Directory not empty"."""
    import subprocess

    for n in range(5):
        root = two_record_store(tmp_path / f"store{n}.zarr")
        for i in range(20):
            write_parquet_artifact(root, f"r{i:02d}", "velocity_events", events_frame(2))
        with DaemonProcess(root) as d:
            d.sync()
            removed = subprocess.run(["rm", "-rf", str(root)], capture_output=True, text=True)
            assert removed.returncode == 0, f"round {n}: {removed.stderr}"
            assert d.stop() == 0
        assert not root.exists(), f"round {n}: {sorted(p.name for p in root.rglob('*'))}"


def test_recreated_analysis_folder_and_subfolder_are_watched_again(tmp_path: Path) -> None:
    """Deleting and recreating analysis/ (and a velocity_events/ sub-folder) keeps watching."""
    import shutil

    root = two_record_store(tmp_path / "store.zarr")
    kve = "kym_velocity_events"  # velocity_events/events is a generation-2 artifact
    with DaemonProcess(root, "--indexers", f"velocity_events,radon_report,{kve}") as d:
        d.sync()
        shutil.rmtree(root / "images" / "b" / "analysis")
        d.sync()
        assert rows_for(root, "velocity_events", "b") == 0
        write_parquet_artifact(root, "b", "velocity_events/events", events_frame(3))
        wait_until(
            lambda: rows_for(root, kve, "b") == 3,
            what="events in a recreated analysis/velocity_events/ sub-folder",
        )
        write_parquet_artifact(root, "b", "velocity_events/events", events_frame(6))
        wait_until(
            lambda: rows_for(root, kve, "b") == 6,
            what="a rewrite inside the recreated sub-folder",
        )
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_sync_request_lost_with_the_events_is_answered_after_the_rescan(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A ``kymwatch sync`` whose request event was dropped is answered once the daemon rescans."""
    root = two_record_store(tmp_path / "store.zarr")
    watchers: list[InotifyWatcher] = []
    lossy: list[LossySink] = []

    def factory(r: Path, sink: EventSink) -> InotifyWatcher:
        lossy.append(LossySink(sink))
        watchers.append(InotifyWatcher(r, lossy[-1]))
        return watchers[-1]

    answers: list[dict[str, Any]] = []
    with running(Daemon(fast_config(root), source_factory=factory)):
        lossy[0].dropping.set()
        change_behind_the_daemons_back(root)

        def ask() -> None:
            try:
                answers.append(request_sync(root, WAIT_S))
            except Exception as e:  # reported by the assertion below
                answers.append({"ok": False, "error": repr(e)})

        client = threading.Thread(target=ask)
        client.start()
        wait_until(lambda: any((root / "index" / "sync").glob("*.request")), what="the request")
        wait_until(lambda: lossy[0].dropped > 0, what="events to be dropped")
        lossy[0].dropping.clear()
        watchers[0].on_queue_overflow()
        client.join(WAIT_S + 10)
        assert answers and answers[0]["ok"], answers
        assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- the real watcher alone: watches that must follow what happened on disk -----------------
def test_a_record_renamed_while_events_wait_is_watched_under_its_new_name(
    tmp_path: Path,
) -> None:
    """A rename the watcher has not read yet, then a rewatch (what an overflow brings):
    the kernel hands back the renamed folder's old watch, which the watcher replaces,
    and writes in the renamed record are reported under its new name."""
    root = two_record_store(tmp_path / "store.zarr")
    sink = HeldSink()
    watcher = InotifyWatcher(root, sink)
    watcher.start()
    try:
        write_json_artifact(root, "b", "radon_report", legacy_radon_report(1.0))
        assert sink.held.wait(WAIT_S), "the watcher reported nothing"
        (root / "images" / "a").rename(root / "images" / "c")
        watcher.rewatch()  # while the rename's events wait behind the held report
        sink.release.set()
        write_json_artifact(root, "c", "radon_report", legacy_radon_report(2.0))
        new_file = str(analysis_file(root, "c", "radon_report", "json"))
        wait_until(lambda: new_file in sink.paths(), what="the write in the renamed record")
        assert not [p for p in sink.paths() if "/images/a/" in p]
        assert sink.rescans() == []
    finally:
        sink.release.set()
        watcher.stop()


def test_folders_created_during_rewatches_are_each_watched_once(tmp_path: Path) -> None:
    """The watcher's thread adds watches for new records while rewatches (after overflows)
    add the same folders from another thread: every folder is watched once, nothing fails,
    and a later write in every record is reported."""
    root = two_record_store(tmp_path / "store.zarr")
    sink = HeldSink()
    sink.held.set()  # never hold
    watcher = InotifyWatcher(root, sink)
    watcher.start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def rewatch_until_stopped() -> None:
        try:
            while not stop.is_set():
                watcher.rewatch()
        except BaseException as e:
            errors.append(e)

    rewatcher = threading.Thread(target=rewatch_until_stopped, name="rewatcher")
    rewatcher.start()
    names = [f"r{i:03d}" for i in range(60)]
    # root, images/, index/, index/sync/, and a record folder + analysis/ per record
    expected = 4 + 2 * (2 + len(names))
    try:
        for name in names:
            write_parquet_artifact(root, name, "velocity_events", events_frame(1))
        # The record folder's creation is reported (the daemon reads such a record whole).
        last = str(root / "images" / names[-1])
        wait_until(lambda: last in sink.paths(), what="the last record's folder")
        wait_until(lambda: watcher.watch_count >= expected, what="every folder's watch")
        stop.set()
        rewatcher.join(WAIT_S)
        assert not errors, errors
        assert watcher.watch_count == expected
        for name in names:
            write_json_artifact(root, name, "radon_report", legacy_radon_report(1.0))
        files = {str(analysis_file(root, n, "radon_report", "json")) for n in names}
        wait_until(lambda: files <= set(sink.paths()), what="a write in every record")
        assert sink.rescans() == []
    finally:
        stop.set()
        rewatcher.join(WAIT_S)
        watcher.stop()


def test_a_folder_of_stores_renamed_and_replaced_is_watched_at_both_places(
    tmp_path: Path,
) -> None:
    """``run ROOT``'s folder watcher: a folder renamed away and a new one made under its
    old name are both watched on the next scan, each where it is now."""
    changes: list[int] = []
    lock = threading.Lock()

    def on_change() -> None:
        with lock:
            changes.append(1)

    def seen() -> int:
        with lock:
            return len(changes)

    old, moved = tmp_path / "lab", tmp_path / "lab-2025"
    old.mkdir()
    watcher = FolderWatcher(on_change)
    watcher.start()
    try:
        watcher.watch([old])
        old.rename(moved)
        old.mkdir()
        watcher.watch([old, moved])  # the kernel would hand back the old watch for "moved"
        assert watcher.watch_count == 2
        for folder in (old, moved):
            before = seen()
            (folder / "exp43.zarr").mkdir()
            wait_until(lambda b=before: seen() > b, what=f"a store made in {folder.name}")
    finally:
        watcher.stop()
