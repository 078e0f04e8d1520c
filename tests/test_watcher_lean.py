"""The inotify watcher's memory per watch, and its watches after events were lost.

A store of 10,000 records holds ~30,000 watches for the daemon's life; each keeps only
its folder's path (watchdog's reader without its ``Watch`` objects,
:mod:`kymwatch.daemon.inotify`). Which folder a watch belongs to the kernel says, so
the watcher must follow folders renamed or replaced while events were lost without maps
of its own: these tests overflow the real kernel queue.
"""

from __future__ import annotations

import gc
import shutil
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import WAIT_S, wait_until
from helpers_loop import HeldSink
from helpers_store import (
    analysis_file,
    gen2_events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import InotifyWatcher
from kymwatch.daemon.watcher import inotify_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not inotify_available(), reason="inotify only"),
]

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")


def kymflow_store(root: Path, n: int) -> list[str]:
    """A store of ``n`` generation-2 records named by UUIDs, each with events in
    ``analysis/velocity_events/`` and a radon report; returns the image ids."""
    make_v2_store(root)
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(n)]
    for image_id in ids:
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events/events", gen2_events_frame(2))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(1.0))
    return ids


def test_a_watch_costs_the_watcher_its_path_and_little_more(tmp_path: Path) -> None:
    """Watching a kymflow-shaped store allocates under 400 bytes of Python memory per
    watch (watchdog's own bookkeeping cost ~770 with ours: 22 MiB at 30,000 watches)."""
    root = tmp_path / "store.zarr"
    n = 400
    kymflow_store(root, n)
    watcher = InotifyWatcher(root, lambda report: None)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        watcher.start()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        watcher.stop()
    # root, images/, index/, index/sync/; per record its folder, analysis/, velocity_events/
    assert watcher.watch_count == 4 + 3 * n
    assert held / watcher.watch_count < 400, f"{held / watcher.watch_count:.0f} B per watch"


def overflow_while_held(root: Path, image_id: str, sink: HeldSink) -> None:
    """Fill the watcher's inotify queue past its limit while ``sink`` holds the thread:
    every event after that is lost (the kernel queues one overflow event instead)."""
    limit = int(QUEUE_LIMIT.read_text())
    if limit > 1 << 17:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it")
    assert sink.held.wait(WAIT_S), "the watcher reported nothing"
    flood = root / "images" / image_id / "analysis"
    for i in range(limit // 2 + 100):
        (flood / f"f{i}.tmp").touch()  # IN_CREATE + IN_CLOSE_WRITE each


@contextmanager
def overflowed(root: Path) -> Iterator[tuple[InotifyWatcher, HeldSink, str, int]]:
    """A store of two kymflow records watched by a real watcher whose thread is held on
    its first report (a write in the first record) while its queue overflows; gives the
    watcher, its sink, the second record and the watch count before the overflow. The
    block makes its changes, then releases the sink."""
    first, second = kymflow_store(root, 2)
    sink = HeldSink()
    watcher = InotifyWatcher(root, sink)
    watcher.start()
    try:
        count = watcher.watch_count
        write_json_artifact(root, first, "radon_report", legacy_radon_report(2.0))
        overflow_while_held(root, first, sink)
        yield watcher, sink, second, count
    finally:
        sink.release.set()
        watcher.stop()


def test_an_analysis_folder_replaced_while_events_were_lost_is_watched_again(
    tmp_path: Path,
) -> None:
    """analysis/ of a record deleted and made anew after the queue overflowed: the rewatch
    the overflow brings watches the new folder (the old watch, whose end was lost too, is
    forgotten), and a later write in it is reported."""
    root = tmp_path / "store.zarr"
    with overflowed(root) as (watcher, sink, second, count):
        shutil.rmtree(root / "images" / second / "analysis")
        write_json_artifact(root, second, "radon_report", legacy_radon_report(3.0))
        sink.release.set()
        wait_until(lambda: "inotify_overflow" in sink.rescans(), what="the overflow")
        watcher.rewatch()  # what the daemon does on the overflow's Rescan
        assert watcher.watch_count == count - 1  # velocity_events/ went with analysis/
        later = write_json_artifact(root, second, "radon_report", legacy_radon_report(4.0))
        wait_until(lambda: str(later) in sink.paths(), what="the write in the new analysis/")


def test_a_record_renamed_while_events_were_lost_is_watched_under_its_new_name(
    tmp_path: Path,
) -> None:
    """A record folder renamed after the queue overflowed keeps its watches (the kernel
    hands them back for the new name): after the rewatch they report the new name, none
    is counted twice, and nothing is reported under the old name."""
    root = tmp_path / "store.zarr"
    with overflowed(root) as (watcher, sink, second, count):
        renamed = str(uuid.UUID(int=99, version=4))
        (root / "images" / second).rename(root / "images" / renamed)
        sink.release.set()
        wait_until(lambda: "inotify_overflow" in sink.rescans(), what="the overflow")
        watcher.rewatch()
        assert watcher.watch_count == count
        write_parquet_artifact(root, renamed, "velocity_events/events", gen2_events_frame(3))
        new_file = str(analysis_file(root, renamed, "velocity_events/events", "parquet"))
        wait_until(lambda: new_file in sink.paths(), what="the write in the renamed record")
        assert not [p for p in sink.paths() if f"/{second}/" in p]
