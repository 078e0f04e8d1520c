"""A backlog's chunks share their table writes (``DaemonConfig.backlog_write_s``).

While records are left to index at once after a chunk (the rest of a long piece of work,
or records the debouncer holds due), the chunk's rows are held in memory, then merged and
written by the chunk that drains the backlog, or the first one ``backlog_write_s`` after
the first held chunk began. Until then the held records are not recorded as indexed, their
outcomes are not logged and no ``batch_indexed`` line names them; the write's line
covers every chunk it wrote. A lone edit is never held. Stores are kymflow-shaped (UUID
image ids, string event ids, both generations); the oracle is a fresh rebuild.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import WAIT_S, assert_tables_match_rebuild, wait_until
from helpers_loop import running
from helpers_store import (
    events_frame,
    gen2_events_frame,
    write_json_artifact,
    write_mixed_generations,
    write_parquet_artifact,
)
from kymwatch.daemon import Daemon, DaemonConfig, DaemonState, RecordChange, request_sync
from kymwatch.daemon import indexing as indexing_module
from kymwatch.store import grouped as grouped_module
from kymwatch.store import table_fingerprint
from kymwatch.store import tables as tables_module

Logs = list[MutableMapping[str, Any]]


class _Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    root = tmp_path / "store.zarr"
    ids = write_mixed_generations(root, n, without_artifacts=-1)
    return root, ids


def _edit(store: Path, ids: list[str], image_id: str, n: int) -> RecordChange:
    """Rewrite the record's events (kymflow's atomic way, its generation's layout)."""
    if ids.index(image_id) % 2:  # generation 1 (see write_mixed_generations)
        write_parquet_artifact(store, image_id, "velocity_events", events_frame(n, start_s=9.0))
    else:
        frame = gen2_events_frame(n, start_s=9.0)
        frame["detector"] = "v2"
        write_parquet_artifact(store, image_id, "velocity_events/events", frame)
    return RecordChange(image_id)


def _indexed(tmp_path: Path, n: int, **config: Any) -> tuple[Path, list[str], _Clock, Daemon]:
    """A store of ``n`` records of both generations, a test clock, and a daemon on them
    (not running: its parts are driven by the test) with every record indexed."""
    store, ids = _store(tmp_path, n)
    clock = _Clock()
    daemon = Daemon(DaemonConfig(store=store, batch_records=1, **config), clock=clock)
    daemon._load_state()  # as at start: no table is taken for one of another schema
    daemon.reporter.set_state(DaemonState.WATCHING)
    assert daemon.indexing.index([RecordChange(i) for i in ids], 0.0, source="reconcile")
    assert not daemon.worker.holding
    return store, ids, clock, daemon


class _Spy:
    """Counts the table files renamed into place and the ``hold`` of each chunk."""

    def __init__(self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
        self.renames: list[str] = []
        self.holds: list[bool] = []
        self.step_s = 0.0  # clock time each chunk takes
        real_write = grouped_module.write_grouped
        real_process = daemon.worker.process

        def write(path: Path, *args: Any, **kwargs: Any) -> Any:
            self.renames.append(path.name)
            return real_write(path, *args, **kwargs)

        def process(batch: Any, *, final: bool = False, hold: bool = False) -> Any:
            self.holds.append(hold)
            clock.now += self.step_s
            return real_process(batch, final=final, hold=hold)

        monkeypatch.setattr(grouped_module, "write_grouped", write)
        daemon.worker.process = process  # type: ignore[method-assign]


def _batches(logs: Logs, source: str = "events") -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "batch_indexed" and e["source"] == source]


def test_a_backlog_writes_each_table_once_for_all_its_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """Chunks with more of the same work after them are held; the last one writes each
    table once and its ``batch_indexed`` line covers all of them."""
    store, ids, clock, daemon = _indexed(tmp_path, 6)
    spy = _Spy(daemon, monkeypatch, clock)
    captured_logs.clear()
    changes = [_edit(store, ids, i, 3) for i in ids[:4]]
    assert daemon.indexing.index(changes, clock.now, source="events")
    assert spy.holds == [True, True, True, False]
    assert sorted(spy.renames) == ["kym_velocity_events.parquet", "velocity_events.parquet"]
    [line] = _batches(captured_logs)
    assert line["chunks"] == 4 and line["records"] == 4
    assert sorted(line["tables"]) == ["kym_velocity_events", "velocity_events"]
    indexed = [e["image_id"] for e in captured_logs if e["event"] == "record_indexed"]
    assert set(indexed) == set(ids[:4])
    assert not daemon.worker.holding
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_held_chunks_are_written_once_they_hold_the_most_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """However little time has passed, a backlog holds at most ``HOLD_MOST_RECORDS``
    records (held rows are memory): the chunk that starts with that many held writes
    them all, and the next chunks are held again."""
    monkeypatch.setattr(indexing_module, "HOLD_MOST_RECORDS", 2)
    store, ids, clock, daemon = _indexed(tmp_path, 6)
    spy = _Spy(daemon, monkeypatch, clock)
    captured_logs.clear()
    changes = [_edit(store, ids, i, 3) for i in ids[:5]]
    assert daemon.indexing.index(changes, clock.now, source="events")
    assert spy.holds == [True, True, False, True, False]
    assert [line["chunks"] for line in _batches(captured_logs)] == [3, 2]
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_held_tables_are_written_once_backlog_write_s_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """A chunk that starts ``backlog_write_s`` or more after the first held one writes
    the tables, so records of the first chunks wait at most about that long."""
    store, ids, clock, daemon = _indexed(tmp_path, 6, backlog_write_s=1.5)
    spy = _Spy(daemon, monkeypatch, clock)
    spy.step_s = 1.0
    captured_logs.clear()
    changes = [_edit(store, ids, i, 2) for i in ids[:5]]
    assert daemon.indexing.index(changes, clock.now, source="events")
    assert spy.holds == [True, True, False, True, False]
    assert [(e["chunks"], e["records"]) for e in _batches(captured_logs)] == [(3, 3), (2, 2)]
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_zero_backlog_write_s_writes_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """``backlog_write_s`` 0 holds nothing: each chunk writes its tables and has its line."""
    store, ids, clock, daemon = _indexed(tmp_path, 4, backlog_write_s=0.0)
    spy = _Spy(daemon, monkeypatch, clock)
    captured_logs.clear()
    assert daemon.indexing.index([_edit(store, ids, i, 2) for i in ids[:3]], 0.0, source="events")
    assert spy.holds == [False, False, False]
    assert [e["chunks"] for e in _batches(captured_logs)] == [1, 1, 1]
    daemon.state.close()


def test_a_lone_edit_is_written_by_its_own_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """With nothing else due, an edit's chunk is not held: its tables are written before
    ``index`` returns (a single edit never waits for a backlog's bound)."""
    store, ids, clock, daemon = _indexed(tmp_path, 4)
    spy = _Spy(daemon, monkeypatch, clock)
    captured_logs.clear()
    change = _edit(store, ids, ids[2], 5)
    assert daemon.indexing.index([change], 0.0, source="events", keep_held=True)
    assert spy.holds == [False] and spy.renames
    [line] = _batches(captured_logs)
    assert line["chunks"] == 1 and line["records"] == 1
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_tables_stay_held_while_records_are_due_until_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """With records due in the debouncer, a chunk's rows stay held, its tables unwritten (the
    record not in the state, no outcome logged, the table lock held); ``flush`` writes
    them and reports the chunk."""
    store, ids, clock, daemon = _indexed(tmp_path, 4)
    spy = _Spy(daemon, monkeypatch, clock)
    before = daemon.state.records[ids[1]]
    daemon.debouncer.feed(RecordChange(ids[3]), clock.now - 60.0)  # due now
    captured_logs.clear()
    stamp = table_fingerprint(store / "tables" / "velocity_events.parquet")
    change = _edit(store, ids, ids[1], 4)
    assert daemon.indexing.index([change], clock.now, source="events", keep_held=True)
    assert spy.holds == [True] and not spy.renames and daemon.worker.holding
    assert table_fingerprint(store / "tables" / "velocity_events.parquet") == stamp
    assert daemon.state.records[ids[1]] == before
    assert not _batches(captured_logs)
    assert not [e for e in captured_logs if e["event"] == "record_indexed"]
    assert tables_module._held.depths[str(store / "index" / "tables.lock")] == 1
    assert daemon.indexing.flush()
    assert sorted(spy.renames) == ["kym_velocity_events.parquet", "velocity_events.parquet"]
    assert tables_module._held.depths[str(store / "index" / "tables.lock")] == 0
    [line] = _batches(captured_logs)
    assert line["chunks"] == 1
    assert sorted(line["tables"]) == ["kym_velocity_events", "velocity_events"]
    assert daemon.state.records[ids[1]] != before
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_stop_writes_the_held_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """Asked to stop with tables held, the loop's next look writes them (nothing is held
    past a stop request, so no record stays unwritten at the exit)."""
    store, ids, clock, daemon = _indexed(tmp_path, 4)
    _Spy(daemon, monkeypatch, clock)
    daemon.debouncer.feed(RecordChange(ids[3]), clock.now - 60.0)
    assert daemon.indexing.index(
        [_edit(store, ids, ids[0], 2)], 0.0, keep_held=True, source="events"
    )
    assert daemon.worker.holding
    daemon.stop()
    assert daemon.indexing.index((), 0.0, source="events", keep_held=True)
    assert not daemon.worker.holding
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_failed_held_write_leaves_the_records_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """A held table whose write fails is not recorded: its records keep their old state
    (a rescan is asked for and re-reads them), the cache rereads the file, and the
    tables end equal to a rebuild once the disk works again."""
    store, ids, clock, daemon = _indexed(tmp_path, 4)
    before = daemon.state.records[ids[0]]
    daemon.debouncer.feed(RecordChange(ids[3]), clock.now - 60.0)
    assert daemon.indexing.index(
        [_edit(store, ids, ids[0], 6)], 0.0, keep_held=True, source="events"
    )
    real = grouped_module.write_grouped

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grouped_module, "write_grouped", fail)
    assert not daemon.indexing.flush()
    assert not daemon.worker.holding and not daemon.kd.held_tables()
    assert daemon.state.records[ids[0]] == before
    assert any(e["event"] == "batch_failed" for e in captured_logs)
    monkeypatch.setattr(grouped_module, "write_grouped", real)
    assert daemon.indexing.index([RecordChange(ids[0])], 0.0, source="events")
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_held_table_deleted_meanwhile_loses_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: Logs
) -> None:
    """A table deleted while rows for it are held is regrown from every record (the held
    rows are merged into the regrown table): after the next reconcile the tables equal a
    rebuild, the held record's new rows included."""
    store, ids, clock, daemon = _indexed(tmp_path, 6)
    daemon.debouncer.feed(RecordChange(ids[5]), clock.now - 60.0)
    change = _edit(store, ids, ids[1], 4)
    assert daemon.indexing.index([change], clock.now, source="events", keep_held=True)
    assert "velocity_events" in daemon.kd.held_tables()
    (store / "tables" / "velocity_events.parquet").unlink()
    assert daemon.tables.regrow()
    assert daemon.indexing.flush()
    daemon.reconciler.reconcile("periodic")
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_held_results_count_as_rows_when_routing(tmp_path: Path, captured_logs: Logs) -> None:
    """A record whose held ``radon_report.parquet`` (read by ``kym_radon`` too) gives way to
    a ``radon_report.json`` before the write still reaches ``kym_radon``: the held rows
    are replaced, and the tables end equal to a rebuild."""
    store, ids, clock, daemon = _indexed(tmp_path, 6)
    rec, radon = ids[1], frozenset({"radon_report"})  # a generation-1 record
    daemon.debouncer.feed(RecordChange(ids[5]), clock.now - 60.0)
    report = pd.DataFrame({"roi_id": [1], "mean_velocity": [2.0], "n_valid": [4], "notes": ["p"]})
    write_parquet_artifact(store, rec, "radon_report", report)
    change = RecordChange(rec, radon)
    assert daemon.indexing.index([change], clock.now, source="events", keep_held=True)
    assert daemon.worker.holding and daemon.kd.has_rows("kym_radon", rec)
    (store / "images" / rec / "analysis" / "radon_report.parquet").unlink()
    assert daemon.indexing.index([change], clock.now, source="events")
    assert not daemon.worker.holding and not daemon.kd.has_rows("kym_radon", rec)
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


@pytest.mark.integration
def test_a_burst_then_a_lone_edit_end_equal_to_a_rebuild(
    tmp_path: Path, captured_logs: Logs
) -> None:
    """A running daemon under a burst of both generations writes its tables for several
    chunks at once, ends equal to a fresh rebuild at the sync barrier, and a lone edit
    after the burst is written by its own chunk without any sync."""
    store, ids = _store(tmp_path, 60)
    config = DaemonConfig(store, quiet_s=0.3, max_delay_s=5.0, batch_records=5)
    with running(Daemon(config)):
        captured_logs.clear()
        for n, image_id in enumerate(ids):
            _edit(store, ids, image_id, 1 + n % 4)
            if n % 3 == 0:
                write_json_artifact(store, image_id, "velocity_events/params", {"thr": n})
        request_sync(store, timeout=WAIT_S)
        assert_tables_match_rebuild(store, tmp_path / "scratch")
        burst = [e for e in captured_logs if e["event"] == "batch_indexed"]  # events, sync
        assert sum(e["records"] for e in burst) >= len(ids)
        assert any(e["chunks"] > 1 for e in burst), burst
        captured_logs.clear()
        lone = ids[7]
        stamp = table_fingerprint(store / "tables" / "velocity_events.parquet")
        _edit(store, ids, lone, 6)
        wait_until(
            lambda: table_fingerprint(store / "tables" / "velocity_events.parquet") != stamp,
            what="the lone edit's table written",
        )
        wait_until(lambda: _batches(captured_logs), what="the lone edit's batch_indexed")
        [line] = _batches(captured_logs)
        assert line["records"] == 1 and line["chunks"] == 1
    assert_tables_match_rebuild(store, tmp_path / "scratch")
