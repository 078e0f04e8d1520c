"""The loop's pure parts: deadline scheduler, rescan backoff, reconcile planner, config.

No threads, files or sleeps: every time is a number passed in.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kymwatch.daemon import (
    Backoff,
    ChunkCosts,
    DaemonConfig,
    RecordChange,
    Schedule,
    TableInfo,
    Task,
    chunk_size,
    forget_artifacts,
    plan_reconcile,
    tables_to_rebuild,
)
from kymwatch.store import Fingerprint

UUID = "3f2b8a4e-9c1d-4e5f-8a7b-6c5d4e3f2a1b"


def fp(size: int, mtime: int = 1, inode: int = 7) -> Fingerprint:
    """A file fingerprint with the given size (mtime and inode fixed unless given)."""
    return Fingerprint(size, mtime, mtime, inode)


# -- schedule --------------------------------------------------------------------------------
def test_schedule_reports_due_tasks_in_task_order_and_keeps_them_until_reset() -> None:
    """Due tasks come in Task order; a due task stays due until the caller sets it again."""
    s = Schedule()
    s.at(Task.RECONCILE, 10.0)
    s.at(Task.HEARTBEAT, 5.0)
    s.at(Task.WATCHDOG, 7.0)
    assert s.due(4.9) == []
    assert s.due(7.0) == [Task.WATCHDOG, Task.HEARTBEAT]
    assert s.due(7.0, frozenset({Task.HEARTBEAT})) == [Task.HEARTBEAT]
    s.at(Task.HEARTBEAT, 12.0)
    assert s.due(10.0) == [Task.WATCHDOG, Task.RECONCILE]


def test_schedule_wait_is_until_the_earliest_deadline_including_outside_ones() -> None:
    """The loop sleeps until its earliest deadline or the debouncer's, never less than 0."""
    s = Schedule()
    assert s.wait_s(3.0) == 0.0
    s.at(Task.HEARTBEAT, 8.0)
    assert s.wait_s(3.0) == 5.0
    assert s.wait_s(3.0, 4.5, None) == 1.5
    assert s.wait_s(9.0) == 0.0
    s.no_later_than(Task.HEARTBEAT, 20.0)  # later: ignored
    assert s.deadline(Task.HEARTBEAT) == 8.0
    s.no_later_than(Task.HEARTBEAT, 6.0)
    assert s.deadline(Task.HEARTBEAT) == 6.0
    s.cancel(Task.HEARTBEAT)
    assert not s.pending(Task.HEARTBEAT) and s.next_deadline() is None


def test_backoff_doubles_in_a_storm_and_calms_down_after_a_quiet_spell() -> None:
    """Rescans back off 1, 2, 4, ... up to the maximum; after 2x the maximum of quiet, 1 again."""
    b = Backoff(1.0, 8.0)
    assert b.ready_at() == -math.inf
    now = 0.0
    waits = []
    for _ in range(6):
        b.fired(now)
        waits.append(b.delay)
        now = b.ready_at()
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.fired(now + 17.0)
    assert b.delay == 1.0


def test_routine_scans_do_not_lengthen_the_backoff() -> None:
    """A poll scan moves the last-scan time but never doubles the wait."""
    b = Backoff(1.0, 8.0)
    for t in range(5):
        b.fired(float(t), counts=False)
    assert b.delay == 1.0 and b.ready_at() == 5.0


# -- planner ---------------------------------------------------------------------------------
def test_plan_queues_new_deleted_and_changed_records_only() -> None:
    """New and deleted records are whole-record changes; a changed file names its artifact."""
    known = {
        "20261125_cell1": {"velocity_events.parquet": fp(10)},
        UUID: {"radon_report.json": fp(5)},
        "gone": {"radon_report.json": fp(5)},
    }
    disk = {
        "20261125_cell1": {"velocity_events.parquet": fp(10)},
        UUID: {"radon_report.json": fp(5, mtime=2)},
        "new": {},
    }
    plan = plan_reconcile(disk, known)
    assert plan == [
        RecordChange(UUID, frozenset({"radon_report"})),
        RecordChange("gone"),
        RecordChange("new"),
    ]


def test_plan_adds_stale_table_rows_suspects_and_pending_once_each() -> None:
    """Rows of records neither on disk nor known, journaled suspects and pending changes are
    merged into one change per record."""
    files = {"velocity_events/events.parquet": fp(3)}
    disk = {"e1": files, "e2": files}
    known = {"e1": files, "e2": files}
    plan = plan_reconcile(
        disk,
        known,
        table_ids={"e1", "orphan"},
        suspects={"e2"},
        pending=[
            RecordChange("e2", frozenset({"radon_report"})),
            RecordChange("e3", frozenset({"velocity_events/events"})),
        ],
    )
    assert plan == [
        RecordChange("e2"),  # whole record: the suspect wins over the pending artifact
        RecordChange("e3", frozenset({"velocity_events/events"})),
        RecordChange("orphan"),
    ]


def test_nothing_to_plan_when_disk_equals_the_state() -> None:
    """An unchanged store plans no work."""
    disk = {"e1": {"radon_report.json": fp(1)}}
    assert plan_reconcile(disk, dict(disk), table_ids={"e1"}) == []


def test_tables_rebuilt_only_with_a_state_and_for_a_reason() -> None:
    """A missing table or another schema version is rebuilt; a never-indexed store rebuilds
    nothing (its first reconcile indexes every record)."""
    tables = [
        TableInfo("velocity_events", 2, published=fp(1), current=None),
        TableInfo("radon_report", 1, published=fp(1), current=fp(1)),
        TableInfo("kym_radon", 3, published=fp(1), current=fp(1)),
    ]
    versions = {"velocity_events": 2, "radon_report": 1, "kym_radon": 2}
    assert tables_to_rebuild(tables, versions, has_state=False) == []
    assert tables_to_rebuild(tables, versions, has_state=True) == [
        ("velocity_events", "table_missing"),
        ("kym_radon", "schema_changed"),
    ]


def costs(*observed: tuple[int, float]) -> ChunkCosts:
    """Chunk costs that measured ``observed`` (records, seconds), oldest first."""
    out = ChunkCosts()
    for records, seconds in observed:
        out = out.add(records, seconds)
    return out


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ((), 20),  # nothing measured yet: the smallest chunk
        (((50, 0.25),), 100),  # one size only: all on the records (5 ms each)
        (((20, 0.0),), 80),  # free records, one size: no more than 4x what was seen
        (((20, 2.0),), 20),  # slow records: never below the smallest
        (((500, 0.05), (1000, 0.1)), 1000),  # fast records: at most the largest
    ],
)
def test_chunk_size_targets_a_duration_within_bounds(
    observed: tuple[tuple[int, float], ...], expected: int
) -> None:
    """Chunks aim at the target duration, bounded by the smallest and largest sizes."""
    assert chunk_size(costs(*observed), target_s=0.5, smallest=20, largest=1000) == expected


def test_chunk_size_pays_a_chunks_fixed_cost_once() -> None:
    """A chunk's fixed cost (its table writes) is not spread over its records: after a
    one-record batch of 150 ms and a 20-record chunk of 188 ms (2 ms a record), the next
    chunk is the 175 records that fill 0.5 s, not 0.5 s / 9.4 ms = 53."""
    model = costs((1, 0.150), (20, 0.188)).model()
    assert model is not None
    assert model == pytest.approx((0.148, 0.002))
    c = costs((1, 0.150), (20, 0.188))
    assert chunk_size(c, target_s=0.5, smallest=20, largest=1000) == 80  # 4x the largest seen
    c = c.add(80, 0.308)
    assert chunk_size(c, target_s=0.5, smallest=20, largest=1000) == 176


def test_chunk_size_keeps_a_third_of_a_chunk_for_records_when_writes_alone_take_long() -> None:
    """With writes of 0.6 s per chunk (a huge table) and a target of 0.5 s, a chunk still
    gets 0.3 s of records (never just the smallest chunk, each paying 0.6 s of writes)."""
    c = costs((20, 0.62), (100, 0.70), (400, 1.0))
    fixed, per_record = c.model() or (0.0, 0.0)
    assert (fixed, per_record) == pytest.approx((0.6, 0.001))
    assert chunk_size(c, target_s=0.5, smallest=20, largest=1000) == 300


@pytest.mark.parametrize(("fixed", "per_record"), [(0.1, 0.001), (0.15, 0.002), (0.3, 0.001)])
def test_a_burst_backlog_takes_two_chunks_more_than_the_fewest_that_fit_the_target(
    fixed: float, per_record: float
) -> None:
    """A backlog of 2,000 records (after a one-record batch) takes at most two chunks
    more than the fewest that fit the 0.5 s target (5 when each chunk costs 0.1 s plus
    1 ms a record: a handful), none above the target (chunks that cost ``fixed +
    per_record * records``, as measured in a burst at 10k records)."""
    c = costs((1, fixed + per_record))
    left, chunks = 2000, []
    while left:
        size = min(left, chunk_size(c, target_s=0.5, smallest=20, largest=1000))
        seconds = fixed + per_record * size
        c = c.add(size, seconds)
        chunks.append(seconds)
        left -= size
    fewest = math.ceil(2000 / int((0.5 - fixed) / per_record))
    assert len(chunks) <= fewest + 2, chunks
    assert max(chunks) <= 0.5 + 1e-9


def test_chunk_costs_fit_the_recent_chunks_and_distrust_a_falling_line() -> None:
    """The model follows the last eight chunks; a noisy line where more records cost less
    puts every second on the records (the cautious reading: smaller chunks); empty or
    nonsense measurements are ignored."""
    c = costs(*[(10, 1.0)] * 5, *[(k, 0.1 + 0.001 * k) for k in (50, 100, 150, 200) * 2])
    assert len(c.observed) == 8
    assert c.model() == pytest.approx((0.1, 0.001))
    falling = costs((10, 0.5), (100, 0.2))
    assert falling.model() == pytest.approx((0.0, 0.7 / 110))
    assert costs((0, 1.0), (5, math.nan)).observed == ()


# -- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"quiet_s": math.nan},
        {"quiet_s": -1.0},
        {"max_delay_s": math.inf},
        {"max_delay_s": 0.1, "quiet_s": 0.2},
        {"settle_s": math.nan},
        {"settle_s": -0.02},
        {"poll_interval_s": math.nan},
        {"poll_interval_s": 0.0},
        {"reconcile_interval_s": math.nan},
        {"reconcile_interval_s": math.inf},
        {"reconcile_interval_s": -600.0},
        {"state_save_interval_s": math.nan},
        {"rescan_backoff_s": (2.0, 1.0)},
        {"rescan_backoff_s": (math.nan, 1.0)},
        {"retry_delays_s": (0.1, math.inf)},
        {"batch_records": 0},
        {"chunk_target_s": 0.0},
        {"table_lock_wait_s": math.nan},
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_config_refuses_numbers_that_mean_nothing(tmp_path: Path, bad: dict[str, object]) -> None:
    """nan, inf, negative and meaningless zero values are refused when the config is made."""
    with pytest.raises(ValueError):
        DaemonConfig(store=tmp_path, **bad)  # type: ignore[arg-type]


def test_config_accepts_the_defaults_and_zero_windows(tmp_path: Path) -> None:
    """The defaults and a zero quiet window or settle (index at once) are valid."""
    assert DaemonConfig(store=tmp_path).settle_s == pytest.approx(0.02)
    DaemonConfig(store=tmp_path, quiet_s=0.0)
    DaemonConfig(store=tmp_path, settle_s=0.0)


def test_forgetting_a_tables_artifacts_makes_the_plan_re_index_them_everywhere() -> None:
    """Once the state forgets the events artifacts, the reconcile plans exactly those
    artifacts in every record that has them, and nothing for the radon report."""
    disk = {
        "e1": {"velocity_events.parquet": fp(3), "radon_report.json": fp(1)},
        UUID: {"velocity_events/events.parquet": fp(4)},
        "radon-only": {"radon_report.json": fp(2)},
    }
    forgotten = forget_artifacts(disk, {"velocity_events", "velocity_events/events"})
    assert forgotten["e1"] == {"radon_report.json": fp(1)} and forgotten[UUID] == {}
    assert plan_reconcile(disk, forgotten) == [
        RecordChange(UUID, frozenset({"velocity_events/events"})),
        RecordChange("e1", frozenset({"velocity_events"})),
    ]
