"""The debouncer: a pure state machine on a fake clock (no threads, no sleeps)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kymwatch.daemon import Debouncer, RecordChange
from kymwatch.daemon.changes import RECORD_METADATA, ChangeKind, FileChange, Signal

REC = "3f2b8c1e-5d0a-4c47-9b1e-7a2d9e0c4f11"  # kymflow names records by UUID
REC2 = "a90c6e2d-1b4f-4e3a-8c5d-2f7b0e9d1a36"
ADDED, MODIFIED, DELETED = ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED
MOVED, CLOSED, NONE = Signal.MOVED, Signal.CLOSED, Signal.NONE


def change(image_id: str, *names: str) -> RecordChange:
    return RecordChange(image_id, frozenset(names) if names else None)


def file_event(
    image_id: str, name: str, kind: ChangeKind, signal: Signal = NONE, *, is_dir: bool = False
) -> FileChange:
    """A file event under ``images/<image_id>/`` (``name`` relative to the record)."""
    return FileChange(f"/data/exp.zarr/images/{image_id}/{name}", kind, is_dir, signal)


EVENTS = "analysis/velocity_events.parquet"
RADON = "analysis/radon_report.json"


def test_record_is_due_after_quiet_window() -> None:
    """A single change becomes due exactly when the quiet window has passed."""
    d = Debouncer(quiet=0.3, max_delay=5.0)
    d.feed(change("a", "radon_report"), now=10.0)
    assert not d.due(10.29)
    batch = d.due(10.3)
    assert batch.changes == (change("a", "radon_report"),)
    assert batch.first_seen == 10.0
    assert len(d) == 0


def test_changes_of_one_record_coalesce() -> None:
    """All changes of one record within its window merge into one change."""
    d = Debouncer(quiet=0.3, max_delay=5.0)
    d.feed(change("a", "velocity_events"), 0.0)
    d.feed(change("a", "radon_report"), 0.1)
    d.feed(change("a", "velocity_events"), 0.2)
    batch = d.due(0.5)
    assert batch.changes == (change("a", "radon_report", "velocity_events"),)


def test_whole_record_change_absorbs_named_ones() -> None:
    """A whole-record change (new or deleted record) wins over named artifacts."""
    d = Debouncer()
    d.feed(change("a", "velocity_events"), 0.0)
    d.feed(change("a"), 0.1)
    assert d.flush().changes == (change("a"),)


def test_quiet_window_restarts_on_each_change() -> None:
    """A new change pushes the record's quiet deadline back."""
    d = Debouncer(quiet=0.3, max_delay=5.0)
    d.feed(change("a", "x"), 0.0)
    d.feed(change("a", "x"), 0.25)
    assert not d.due(0.3)
    assert d.next_deadline() == pytest.approx(0.55)
    assert d.due(0.55)


def test_max_delay_bounds_a_record_written_without_pause() -> None:
    """A record changing every 0.1 s is still released at its maximum delay."""
    d = Debouncer(quiet=0.3, max_delay=1.0)
    t = 0.0
    released_at = None
    while t < 3.0 and released_at is None:
        d.feed(change("a", "x"), t)
        t = round(t + 0.1, 10)
        if d.due(t):
            released_at = t
    assert released_at == pytest.approx(1.0)


def test_records_are_independent() -> None:
    """One busy record does not hold back a quiet one."""
    d = Debouncer(quiet=0.3, max_delay=5.0)
    d.feed(change("busy", "x"), 0.0)
    d.feed(change("calm", "x"), 0.0)
    d.feed(change("busy", "x"), 0.2)
    assert [c.image_id for c in d.due(0.3).changes] == ["calm"]
    assert [c.image_id for c in d.due(0.5).changes] == ["busy"]


def test_defer_holds_a_retry_until_its_time() -> None:
    """A deferred retry is not due before its time, even if the record changes again."""
    d = Debouncer(quiet=0.3, max_delay=5.0)
    d.defer(change("a", "x"), now=0.0, until=2.0)
    d.feed(change("a", "y"), 0.5)
    assert not d.due(1.9)
    assert d.due(2.0).changes == (change("a", "x", "y"),)


def test_flush_takes_everything_and_idle_has_no_deadline() -> None:
    """flush() empties the queue regardless of windows; an idle debouncer has no deadline."""
    d = Debouncer()
    assert d.next_deadline() is None
    d.feed(change("b"), 0.0)
    d.feed(change("a"), 0.0)
    flushed = d.flush()
    assert [c.image_id for c in flushed.changes] == ["a", "b"] and flushed.due_by == ()
    assert d.next_deadline() is None and not d.flush()


def test_bad_windows_are_rejected() -> None:
    """A maximum delay shorter than the quiet window, or a negative settle, is refused."""
    with pytest.raises(ValueError):
        Debouncer(quiet=1.0, max_delay=0.5)
    with pytest.raises(ValueError):
        Debouncer(settle=-0.01)


# -- completion signals: settle instead of quiet ---------------------------------------------
def debouncer() -> Debouncer:
    return Debouncer(quiet=0.3, max_delay=5.0, settle=0.02)


def test_rename_onto_an_artifact_is_due_after_the_settle() -> None:
    """A partial file renamed onto its artifact name (zarr, kymflow) is due after the settle."""
    d = debouncer()
    d.feed(change(REC, "velocity_events"), 1.0, file_event(REC, EVENTS, ADDED, MOVED))
    assert d.next_deadline() == pytest.approx(1.02)
    assert not d.due(1.019)
    batch = d.due(1.02)
    assert batch.changes == (change(REC, "velocity_events"),)
    assert batch.due_by == ("moved",)


def test_close_after_an_in_place_write_is_due_after_the_settle() -> None:
    """``df.to_parquet(path)``: created, modified several times, closed -> due after the settle."""
    d = debouncer()
    c = change(REC, "velocity_events")
    d.feed(c, 1.0, file_event(REC, EVENTS, ADDED))
    for i in range(1, 5):
        d.feed(c, 1.0 + i * 0.001, file_event(REC, EVENTS, MODIFIED))
    assert d.next_deadline() == pytest.approx(1.304)  # still being written: quiet window
    d.feed(c, 1.005, file_event(REC, EVENTS, MODIFIED, CLOSED))
    assert not d.due(1.024)
    batch = d.due(1.025)
    assert batch.changes == (c,) and batch.due_by == ("closed",)


def test_a_plain_modification_alone_waits_for_the_quiet_window() -> None:
    """A modification with no completion signal (polling, scripted sources) waits for quiet."""
    d = debouncer()
    d.feed(change(REC, "radon_report"), 2.0, file_event(REC, RADON, MODIFIED))
    assert not d.due(2.29)
    assert d.due(2.3).due_by == ("quiet",)
    d.feed(change(REC, "radon_report"), 3.0)  # no file event at all: the same
    assert not d.due(3.29)
    assert d.due(3.3).due_by == ("quiet",)


def test_deletions_and_new_folders_wait_for_the_quiet_window() -> None:
    """A deleted artifact or a new record folder is no completion signal: quiet window."""
    d = debouncer()
    d.feed(change(REC, "radon_report"), 0.0, file_event(REC, RADON, DELETED))
    d.feed(change(REC2), 0.0, FileChange(f"/data/exp.zarr/images/{REC2}", ADDED, True))
    assert not d.due(0.29)
    assert [c.image_id for c in d.due(0.3).changes] == sorted([REC, REC2])


def test_completion_then_plain_modification_goes_back_to_quiet() -> None:
    """A writer that reopens the file it closed (two-phase writer) pushes the record back to
    the quiet window, and a second close settles it again."""
    d = debouncer()
    c = change(REC, "velocity_events")
    d.feed(c, 0.0, file_event(REC, EVENTS, MODIFIED, CLOSED))
    d.feed(c, 0.01, file_event(REC, EVENTS, MODIFIED))  # reopened, writing again
    assert not d.due(0.3)
    assert d.next_deadline() == pytest.approx(0.31)
    d.feed(c, 0.2, file_event(REC, EVENTS, MODIFIED, CLOSED))
    assert not d.due(0.219)
    assert d.due(0.22).due_by == ("closed",)


def test_completion_then_another_file_written_in_place_waits_for_it() -> None:
    """A rename of one artifact while another file of the record is being written in place
    waits for the quiet window until that file is closed too."""
    d = debouncer()
    d.feed(change(REC, "radon_report"), 0.0, file_event(REC, RADON, ADDED))  # in place
    d.feed(change(REC, "velocity_events"), 0.01, file_event(REC, EVENTS, ADDED, MOVED))
    assert not d.due(0.1)
    assert d.next_deadline() == pytest.approx(0.31)
    d.feed(change(REC, "radon_report"), 0.05, file_event(REC, RADON, MODIFIED, CLOSED))
    batch = d.due(0.07)
    assert batch.changes == (change(REC, "radon_report", "velocity_events"),)
    assert batch.due_by == ("closed",)


def test_modification_then_completion_of_the_same_file_settles() -> None:
    """Modifications followed by the close of the same file settle from the close."""
    d = debouncer()
    c = change(REC, "velocity_events")
    d.feed(c, 0.0, file_event(REC, EVENTS, MODIFIED))
    d.feed(c, 0.1, file_event(REC, EVENTS, MODIFIED, CLOSED))
    assert not d.due(0.119)
    assert d.due(0.1201).due_by == ("closed",)


def test_deleting_a_file_being_written_does_not_hold_the_record() -> None:
    """A file deleted while written in place (no close will come under its name) no longer
    holds the record on the quiet window once another file completes."""
    d = debouncer()
    d.feed(change(REC, "radon_report"), 0.0, file_event(REC, RADON, ADDED))
    d.feed(change(REC, "radon_report"), 0.01, file_event(REC, RADON, DELETED))
    d.feed(change(REC, "velocity_events"), 0.02, file_event(REC, EVENTS, ADDED, MOVED))
    assert d.due(0.04).due_by == ("moved",)


def test_kymflow_save_with_zattrs_updates_coalesces_into_one_change() -> None:
    """kymflow's save (artifact partial + rename, then the record's .zgroup/.zattrs
    partial + rename) is one change, due a settle after the last rename."""
    d = debouncer()
    d.feed(change(REC, "velocity_events"), 0.0, file_event(REC, EVENTS, ADDED, MOVED))
    meta = RecordChange(REC, RECORD_METADATA)
    d.feed(meta, 0.004, file_event(REC, ".zgroup", ADDED, MOVED))
    d.feed(meta, 0.008, file_event(REC, ".zattrs", ADDED, MOVED))
    assert not d.due(0.027)
    batch = d.due(0.028)
    assert batch.changes == (change(REC, "velocity_events"),)
    assert batch.due_by == ("moved",)


def test_a_zattrs_rewritten_in_place_after_a_rename_settles_at_its_close() -> None:
    """An artifact renamed into place followed by an in-place .zattrs rewrite waits for the
    .zattrs close, then settles."""
    d = debouncer()
    d.feed(change(REC, "velocity_events"), 0.0, file_event(REC, EVENTS, ADDED, MOVED))
    meta = RecordChange(REC, RECORD_METADATA)
    d.feed(meta, 0.005, file_event(REC, ".zattrs", MODIFIED))
    assert d.next_deadline() == pytest.approx(0.305)
    d.feed(meta, 0.006, file_event(REC, ".zattrs", MODIFIED, CLOSED))
    assert not d.due(0.025)
    assert d.due(0.0261).due_by == ("closed",)


def test_a_change_after_the_record_was_taken_makes_it_due_again() -> None:
    """A writer that reopens the file after the record was taken (being read) makes the
    record due again: nothing is forgotten."""
    d = debouncer()
    c = change(REC, "velocity_events")
    d.feed(c, 0.0, file_event(REC, EVENTS, MODIFIED, CLOSED))
    assert d.due(0.02).changes == (c,)
    d.feed(c, 0.025, file_event(REC, EVENTS, MODIFIED))  # seen while the worker reads
    assert len(d) == 1
    assert d.due(0.325).due_by == ("quiet",)


def test_max_delay_bounds_a_writer_that_keeps_reopening() -> None:
    """A file modified and closed again and again is still released at the maximum delay."""
    d = Debouncer(quiet=0.3, max_delay=1.0, settle=0.02)
    c = change(REC, "velocity_events")
    t, released = 0.0, None
    while t < 3.0 and released is None:
        d.feed(c, t, file_event(REC, EVENTS, MODIFIED))
        d.feed(c, t + 0.005, file_event(REC, EVENTS, MODIFIED, CLOSED))
        d.feed(c, t + 0.01, file_event(REC, EVENTS, MODIFIED))  # reopened at once
        t = round(t + 0.1, 10)
        batch = d.due(t)
        if batch:
            released = (t, batch.due_by)
    assert released == (pytest.approx(1.0), ("max_delay",))


def test_a_retry_keeps_its_backoff_even_after_a_completion() -> None:
    """A deferred retry is not released by a completion signal before its time."""
    d = debouncer()
    d.defer(change(REC, "velocity_events"), now=0.0, until=0.5)
    d.feed(change(REC, "velocity_events"), 0.1, file_event(REC, EVENTS, ADDED, MOVED))
    assert not d.due(0.49)
    assert d.due(0.5).due_by == ("retry",)


def test_records_settled_while_the_worker_was_busy_come_as_one_batch() -> None:
    """Under load, records whose events were taken after a long batch are due together."""
    d = debouncer()
    ids = [f"{i:08x}-5d0a-4c47-9b1e-7a2d9e0c4f11" for i in range(2000)]
    for n, image_id in enumerate(ids):  # all accepted in one loop turn, after the worker
        now = 10.0 + n * 1e-6
        d.feed(change(image_id, "velocity_events"), now, file_event(image_id, EVENTS, ADDED))
        d.feed(
            change(image_id, "velocity_events"),
            now,
            file_event(image_id, EVENTS, MODIFIED, CLOSED),
        )
    deadline = d.next_deadline()
    assert deadline is not None
    assert not d.due(deadline - 1e-9)
    batch = d.due(deadline + 0.002)
    assert len(batch) == 2000 and set(batch.due_by) == {"closed"}
    assert batch.first_seen == 10.0 and len(d) == 0


def test_zero_settle_makes_completed_records_due_at_once() -> None:
    """With a zero settle a completed record is due at the time of its completion."""
    d = Debouncer(quiet=0.3, max_delay=5.0, settle=0.0)
    d.feed(change(REC, "velocity_events"), 4.0, file_event(REC, EVENTS, ADDED, MOVED))
    assert d.due(4.0).due_by == ("moved",)


events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.5),  # time since the previous event
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["velocity_events", "radon_report", None]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    events=events,
    quiet=st.floats(min_value=0.01, max_value=1.0),
    extra=st.floats(min_value=0.0, max_value=3.0),
    step=st.floats(min_value=0.01, max_value=0.7),
)
def test_property_nothing_dropped_and_max_delay_holds(
    events: list[tuple[float, str, str | None]], quiet: float, extra: float, step: float
) -> None:
    """No change is ever dropped, and no record waits past max_delay after its first change."""
    max_delay = quiet + extra
    d = Debouncer(quiet=quiet, max_delay=max_delay)
    first_pending: dict[str, float] = {}
    fed: dict[str, set[str | None]] = {}
    released: dict[str, set[str | None]] = {}
    now = 0.0

    def poll(t: float) -> None:
        for c in d.due(t).changes:
            # Polled every `step`, so a record may be seen up to one step late.
            assert t - first_pending.pop(c.image_id) <= max_delay + step + 1e-9
            names = {None} if c.artifacts is None else set(c.artifacts)
            released.setdefault(c.image_id, set()).update(names)

    for gap, image_id, name in events:
        target = now + gap
        while now + step < target:  # the daemon loop polls at least every `step`
            now += step
            poll(now)
        now = target
        d.feed(RecordChange(image_id, None if name is None else frozenset({name})), now)
        first_pending.setdefault(image_id, now)
        fed.setdefault(image_id, set()).add(name)
        poll(now)
    deadline = d.next_deadline()
    while deadline is not None:
        now = max(now + step, deadline)
        poll(now)
        deadline = d.next_deadline()
    assert not first_pending and len(d) == 0
    for image_id, names in fed.items():
        got = released[image_id]
        assert None in got or names <= got, (image_id, names, got)


signalled_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.2),  # time since the previous event
        st.sampled_from([REC, REC2]),
        st.sampled_from([EVENTS, RADON, ".zattrs"]),
        st.sampled_from(
            [(ADDED, NONE), (MODIFIED, NONE), (MODIFIED, CLOSED), (ADDED, MOVED), (DELETED, NONE)]
        ),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    events=signalled_events,
    settle=st.floats(min_value=0.0, max_value=0.05),
    quiet=st.floats(min_value=0.06, max_value=0.5),
    extra=st.floats(min_value=0.0, max_value=1.0),
    step=st.floats(min_value=0.005, max_value=0.1),
)
def test_property_settle_only_when_every_write_is_complete(
    events: list[tuple[float, str, str, tuple[ChangeKind, Signal]]],
    settle: float,
    quiet: float,
    extra: float,
    step: float,
) -> None:
    """Interleaved renames, closes, in-place writes and deletions: a record is released no
    sooner than a settle after its last change, no sooner than the quiet window while one of
    its files is written in place and not closed, and within a settle (plus one poll step)
    once every write is complete; the maximum delay bounds it all."""
    max_delay = quiet + extra
    d = Debouncer(quiet=quiet, max_delay=max_delay, settle=settle)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    open_files: dict[str, set[str]] = {}
    completed: set[str] = set()
    now = 0.0
    eps = 1e-9

    def poll(t: float) -> None:
        for c in d.due(t).changes:
            i = c.image_id
            bound = first[i] + max_delay
            assert t >= min(last[i] + settle, bound) - eps
            if open_files[i] or i not in completed:
                assert t >= min(last[i] + quiet, bound) - eps
            else:  # every write complete: released within a settle of its last change
                assert t <= last[i] + settle + step + eps
            assert t <= bound + step + eps
            del first[i], last[i], open_files[i]
            completed.discard(i)

    for gap, image_id, name, (kind, signal) in events:
        target = now + gap
        while now + step < target:
            now += step
            poll(now)
        now = target
        ev = file_event(image_id, name, kind, signal)
        d.feed(change(image_id, "velocity_events"), now, ev)
        first.setdefault(image_id, now)
        last[image_id] = now
        files = open_files.setdefault(image_id, set())
        if signal is not NONE:
            files.discard(name)
            completed.add(image_id)
        elif kind is DELETED:
            files.discard(name)
        else:
            files.add(name)
        poll(now)
    deadline = d.next_deadline()
    while deadline is not None:
        now = max(now + step, deadline)
        poll(now)
        deadline = d.next_deadline()
    assert not first and len(d) == 0
