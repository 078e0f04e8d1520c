"""Deaths that used to be silent (issue 10, part 9).

watchdog's inotify reader thread ends without a word when reading raises: the
daemon notices (a liveness check in its loop), logs ``watcher_died``, starts a new
watcher and rescans. SIGHUP reopens the log file and leaves the daemon running.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, live_tables, wait_until
from helpers_loop import add_kym_record, running
from helpers_store import make_v2_store
from kymwatch.daemon import Daemon, DaemonConfig

pytestmark = pytest.mark.integration


def rows(store: Path, table: str, image_id: str) -> int:
    """Rows ``table`` holds for ``image_id`` now."""
    df = live_tables(store)[table]
    return int((df["image_id"] == image_id).sum())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_inotify_thread_is_restarted_and_changes_are_indexed_without_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """The inotify reader raises once and dies: watcher_died is logged, a new watcher runs,
    a rescan picks up what was missed, and later writes are indexed from events alone."""
    from watchdog.observers import inotify_c

    store = make_v2_store(tmp_path / "store.zarr")
    add_kym_record(store, "20261125_cell1")
    boom = threading.Event()
    real = inotify_c.InotifyFD.read_events

    def read_events(self: Any, **kwargs: Any) -> Any:
        if boom.is_set():
            boom.clear()
            raise RuntimeError("inotify reader failed")
        return real(self, **kwargs)

    monkeypatch.setattr(inotify_c.InotifyFD, "read_events", read_events)
    config = DaemonConfig(store, quiet_s=0.05, max_delay_s=1.0, watcher_check_s=0.2)
    with running(Daemon(config, source_factory=None)) as daemon:
        boom.set()
        add_kym_record(store, "missed-while-dying", n_events=2)  # wakes the reader: it dies
        wait_until(
            lambda: any(e["event"] == "watcher_restarted" for e in captured_logs),
            what="the watcher to be restarted",
        )
        wait_until(lambda: rows(store, "velocity_events", "missed-while-dying") == 2)
        add_kym_record(store, "c0ffee00-1111-4222-8333-444455556666", n_events=5)
        wait_until(
            lambda: rows(store, "velocity_events", "c0ffee00-1111-4222-8333-444455556666") == 5,
            what="a write after the restart to be indexed from its events",
        )
        assert daemon.status.counters["watcher_restarts"] == 1
    names = [e["event"] for e in captured_logs]
    assert names.count("watcher_died") == 1
    assert any(
        e["event"] == "reconcile_done" and e["reason"] == "watcher_died" for e in captured_logs
    )
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_sighup_reopens_the_log_and_the_daemon_stays_up(tmp_path: Path) -> None:
    """After logrotate moves the log away, SIGHUP makes the daemon log into a new file; it
    keeps indexing and still stops cleanly (daemon_stopped, exit 0)."""
    store = make_v2_store(tmp_path / "store.zarr")
    add_kym_record(store, "20261125_cell1")
    with DaemonProcess(store) as daemon:
        assert daemon.proc is not None
        daemon.sync()
        rotated = daemon.log_path.with_name("kymwatch.log.1")
        daemon.log_path.rename(rotated)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.events("log_reopened"), what="log_reopened in the new log")
        assert daemon.proc.poll() is None
        add_kym_record(store, "after-hup", n_events=4)
        daemon.sync()
        assert rows(store, "velocity_events", "after-hup") == 4
        assert daemon.stop() == 0
    assert daemon.events("daemon_stopped")
    assert "log_reopened" not in rotated.read_text()
    assert_tables_match_rebuild(store, tmp_path / "scratch")
