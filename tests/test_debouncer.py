"""The debouncer: a pure state machine on a fake clock (no threads, no sleeps)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kymwatch.daemon import Debouncer, RecordChange


def change(image_id: str, *names: str) -> RecordChange:
    return RecordChange(image_id, frozenset(names) if names else None)


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
    assert [c.image_id for c in d.flush().changes] == ["a", "b"]
    assert d.next_deadline() is None and not d.flush()


def test_bad_windows_are_rejected() -> None:
    """A maximum delay shorter than the quiet window is a configuration error."""
    with pytest.raises(ValueError):
        Debouncer(quiet=1.0, max_delay=0.5)


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
