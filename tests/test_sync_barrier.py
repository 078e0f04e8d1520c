"""The sync barrier: answered from in-order events when they prove it, else by a full scan.

The daemons here wait a minute before indexing on their own (quiet, settle and
maximum delay of 60 s), so the tables can only reflect a write if the sync itself
indexed it: a daemon that answered without flushing what it held, or that trusted
its events after a loss, fails these tests.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from harness import WAIT_S, assert_tables_match_rebuild, live_tables, wait_until
from helpers_loop import LossySink, add_kym_record, kym_events, running
from helpers_store import (
    gen2_events_frame,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import (
    Daemon,
    DaemonConfig,
    EventSink,
    InotifyWatcher,
    PollingWatcher,
    PollSettings,
    request_sync,
)
from kymwatch.daemon.sync import choose_sync_path

Logs = list[MutableMapping[str, Any]]

_CLEAN = {
    "ordered_source": True,
    "loss_pending": None,
    "tables_changed": False,
    "journaled": False,
    "store_available": True,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, ("events", "events_in_order")),
        ({"ordered_source": False}, ("full", "source_unordered")),
        ({"loss_pending": "inotify_overflow"}, ("full", "inotify_overflow")),
        ({"loss_pending": "watch_failed"}, ("full", "watch_failed")),
        ({"tables_changed": True}, ("full", "tables_changed")),
        ({"journaled": True}, ("full", "journal")),
        ({"store_available": False, "ordered_source": False}, ("full", "store_unavailable")),
    ],
)
def test_the_sync_path_trusts_events_only_without_any_sign_of_loss(
    change: dict[str, Any], expected: tuple[str, str]
) -> None:
    """Only an ordered source with no loss, no replaced table, no journal and the store
    present answers from its events; anything else takes the full scan, naming why."""
    assert choose_sync_path(**{**_CLEAN, **change}) == expected


# -- real daemons ---------------------------------------------------------------------------
def slow_config(root: Path, **kw: Any) -> DaemonConfig:
    """A daemon that indexes nothing on its own for a minute: only a sync does."""
    return DaemonConfig(root, quiet_s=60.0, settle_s=60.0, max_delay_s=60.0, **kw)


def answers(logs: Logs) -> list[MutableMapping[str, Any]]:
    """The ``sync_answered`` lines logged so far."""
    return [e for e in logs if e["event"] == "sync_answered"]


def rows(root: Path, table: str, image_id: str) -> int:
    """Rows of ``image_id`` in ``table`` on disk."""
    df = live_tables(root)[table]
    return int((df["image_id"] == image_id).sum())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A kymflow-shaped store: two indexed records, one with a UUID id."""
    from helpers_store import make_v2_store

    root = make_v2_store(tmp_path / "store.zarr")
    add_kym_record(root, "20261125_cell1")
    add_kym_record(root, str(uuid.UUID(int=7)), n_events=4)
    return root


def inotify_daemon(root: Path) -> Daemon:
    """A daemon on the real inotify watcher (whatever the mount), slow to index alone."""
    return Daemon(slow_config(root), source_factory=InotifyWatcher)


def add_gen2_record(root: Path, image_id: str, n_events: int) -> None:
    """A generation-2 record: events under ``analysis/velocity_events/events.parquet``."""
    write_v2_record(root, image_id)
    write_parquet_artifact(root, image_id, "velocity_events/events", gen2_events_frame(n_events))


@pytest.mark.integration
def test_sync_right_after_fresh_record_folders_are_written(
    store: Path, tmp_path: Path, captured_logs: Logs
) -> None:
    """Record folders created and written just before a sync (nested artifact folders,
    both generations) are in the tables when the sync returns, answered without a scan."""
    add_gen2_record(store, str(uuid.UUID(int=8)), 2)
    with running(inotify_daemon(store)):
        for i in range(6):
            image_id = str(uuid.uuid4())
            if i % 2:  # generation 2: events in a nested folder, created just now
                add_gen2_record(store, image_id, i + 1)
            else:
                write_v2_record(store, image_id)
                write_parquet_artifact(store, image_id, "velocity_events", kym_events(i + 1))
            write_json_artifact(store, image_id, "radon_report", {"mean_velocity": float(i)})
            request_sync(store, WAIT_S)
            table = "kym_velocity_events" if i % 2 else "velocity_events"
            assert rows(store, table, image_id) == i + 1
            assert rows(store, "radon_report", image_id) == 1
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    done = answers(captured_logs)
    assert len(done) == 6 and {(e["path"], e["reason"]) for e in done} == {
        ("events", "events_in_order")
    }
    assert not [e for e in captured_logs if e.get("reason") == "sync"]  # no scan for them


@pytest.mark.integration
def test_sync_grows_the_table_of_a_generation_seen_first_just_before_it(
    store: Path, tmp_path: Path, captured_logs: Logs
) -> None:
    """The first generation-2 record of a generation-1 store, written just before a sync:
    the new table holds its rows when the sync returns (grown by a scan, said so)."""
    image_id = str(uuid.uuid4())
    with running(inotify_daemon(store)):
        add_gen2_record(store, image_id, 3)
        request_sync(store, WAIT_S)
        assert rows(store, "kym_velocity_events", image_id) == 3
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert [(e["path"], e["reason"]) for e in answers(captured_logs)] == [("full", "new_tables")]


@pytest.mark.integration
def test_sync_right_after_writes_in_an_existing_record(
    store: Path, tmp_path: Path, captured_logs: Logs
) -> None:
    """Atomic rewrites of an indexed record's artifacts are in the tables when the sync
    returns, though the daemon would have waited a minute."""
    image_id = str(uuid.UUID(int=7))
    with running(inotify_daemon(store)):
        assert rows(store, "velocity_events", image_id) == 4
        write_parquet_artifact(store, image_id, "velocity_events", kym_events(9))
        write_json_artifact(store, image_id, "radon_report", {"mean_velocity": 3.25})
        request_sync(store, WAIT_S)
        assert rows(store, "velocity_events", image_id) == 9
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert [e["path"] for e in answers(captured_logs)] == ["events"]


@pytest.mark.integration
def test_sync_right_after_in_place_writes(store: Path, tmp_path: Path, captured_logs: Logs) -> None:
    """Artifacts rewritten in place (truncate, write, close; no folder changes) are in
    the tables when the sync returns."""
    with running(inotify_daemon(store)):
        for n in (1, 6, 2):
            write_parquet_artifact(
                store, "20261125_cell1", "velocity_events", kym_events(n), atomic=False
            )
            request_sync(store, WAIT_S)
            assert rows(store, "velocity_events", "20261125_cell1") == n
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert [e["path"] for e in answers(captured_logs)] == ["events"] * 3


@pytest.mark.integration
def test_sync_after_an_overflow_takes_the_full_scan(
    store: Path, tmp_path: Path, captured_logs: Logs
) -> None:
    """Events dropped, then an overflow signalled: the next sync does not trust the events
    but scans, and finds the writes whose events were lost."""
    lossy: list[LossySink] = []
    watchers: list[InotifyWatcher] = []

    def factory(r: Path, sink: EventSink) -> InotifyWatcher:
        lossy.append(LossySink(sink))
        watchers.append(InotifyWatcher(r, lossy[-1]))
        return watchers[-1]

    # The first rescan runs at once; the second waits 30 s: the sync comes first.
    config = slow_config(store, rescan_backoff_s=(30.0, 60.0))
    with running(Daemon(config, source_factory=factory)):
        watchers[0].on_queue_overflow()
        wait_until(
            lambda: any(e.get("reason") == "inotify_overflow" for e in captured_logs),
            what="the first rescan",
        )
        lossy[0].dropping.set()
        write_v2_record(store, "lost_record")
        write_parquet_artifact(store, "lost_record", "velocity_events", kym_events(3))
        write_parquet_artifact(store, "20261125_cell1", "velocity_events", kym_events(7))
        wait_until(lambda: lossy[0].dropped > 0, what="events to be dropped")
        lossy[0].dropping.clear()
        watchers[0].on_queue_overflow()
        request_sync(store, WAIT_S)
        assert rows(store, "velocity_events", "lost_record") == 3
        assert rows(store, "velocity_events", "20261125_cell1") == 7
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert [(e["path"], e["reason"]) for e in answers(captured_logs)] == [
        ("full", "inotify_overflow")
    ]


@pytest.mark.integration
def test_sync_on_a_polled_store_takes_the_full_scan(
    store: Path, tmp_path: Path, captured_logs: Logs
) -> None:
    """With polling (here never due during the test), a sync scans: an in-place rewrite
    and a new record are in the tables when it returns."""

    def factory(r: Path, sink: EventSink) -> PollingWatcher:
        return PollingWatcher(r, sink, PollSettings(min_interval_s=600, max_interval_s=600))

    with running(Daemon(slow_config(store), source_factory=factory)):
        write_parquet_artifact(
            store, "20261125_cell1", "velocity_events", kym_events(5), atomic=False
        )
        add_kym_record(store, "20261126_cell2", n_events=2)
        request_sync(store, WAIT_S)
        assert rows(store, "velocity_events", "20261125_cell1") == 5
        assert rows(store, "velocity_events", "20261126_cell2") == 2
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert [(e["path"], e["reason"]) for e in answers(captured_logs)] == [
        ("full", "source_unordered")
    ]
