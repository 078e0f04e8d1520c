"""The reporter is the one home of outcomes: the same facts reach the status file, the
Prometheus metrics and the progress display, with a fake clock and no threads."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from helpers_store import make_v2_store
from kymwatch.daemon.changes import Batch, RecordChange
from kymwatch.daemon.metrics import TEXTFILE_MIN_INTERVAL_S, Metrics
from kymwatch.daemon.progress import Progress, describe
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.sdnotify import SystemdNotifier
from kymwatch.daemon.status import DaemonStatus
from kymwatch.daemon.worker import BatchResult
from kymwatch.index import OutcomeStatus, RecordOutcome
from kymwatch.progressbar import TerminalBar, bars_wanted

UUID = "5ab79a09-b1e7-405e-8f53-6e171f9ea6cd"


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Bar:
    """A progress sink that remembers what it was shown."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, int, int]] = []
        self.closed = 0

    def update(self, progress: Progress) -> None:
        self.shown.append((progress.what, progress.done, progress.total))

    def close(self) -> None:
        self.closed += 1


def _reporter(
    root: Path, clock: Clock, metrics: Metrics | None = None, bar: Bar | None = None
) -> Reporter:
    make_v2_store(root)  # a whole store: the status file is written into nothing else
    (root / "index").mkdir(exist_ok=True)
    return Reporter(
        root,
        DaemonStatus(store=str(root)),
        SystemdNotifier.from_env({}),
        clock,
        metrics=metrics.for_store(root) if metrics else None,
        bar=bar,
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _value_in(text: str, family: str) -> float:
    """The one sample of ``family`` in an exposition text."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families[family].samples
    return float(sample.value)


def _result() -> BatchResult:
    """Two kymflow-shaped records: one indexed (event ids "e1", "e2"), one unreadable."""
    bad = RecordOutcome(
        UUID,
        "kym_velocity_events",
        OutcomeStatus.UNREADABLE,
        path=f"/s/images/{UUID}/analysis/velocity_events.parquet",
        error="Parquet magic bytes not found",
    )
    good = RecordOutcome("acq001", "kym_velocity_events", OutcomeStatus.INDEXED, rows=2)
    return BatchResult(
        records=2,
        rows_written=2,
        tables=["kym_velocity_events"],
        outcomes=Counter({"record_indexed": 1, "artifact_unreadable": 1}),
        problems=[bad],
        settled=[good, bad],
    )


def test_a_batch_moves_counters_lag_and_problem_gauges(tmp_path: Path) -> None:
    """batch_done feeds batches, records, rows, outcomes, lag and, at publish, problems."""
    clock, metrics = Clock(), Metrics()
    reporter = _reporter(tmp_path, clock, metrics)
    store = str(tmp_path)
    batch = Batch((RecordChange("acq001"), RecordChange(UUID)), first_seen=99.25)
    reporter.batch_done(batch, _result(), "events", queue_depth=3)
    reporter.publish()
    assert _value(metrics, "kymwatch_batches_total", store=store, source="events") == 1
    assert _value(metrics, "kymwatch_records_indexed_total", store=store) == 2
    assert _value(metrics, "kymwatch_rows_written_total", store=store) == 2
    assert (
        _value(metrics, "kymwatch_outcomes_total", store=store, outcome="artifact_unreadable") == 1
    )
    assert _value(metrics, "kymwatch_lag_seconds_sum", store=store) == pytest.approx(0.75)
    assert _value(metrics, "kymwatch_lag_seconds_bucket", store=store, le="1.0") == 1
    assert _value(metrics, "kymwatch_lag_seconds_bucket", store=store, le="0.5") == 0
    assert _value(metrics, "kymwatch_problems", store=store, problem="artifact_unreadable") == 1
    assert _value(metrics, "kymwatch_problems", store=store, problem="artifact_missing") == 0
    assert (_value(metrics, "kymwatch_last_table_update_timestamp_seconds", store=store) or 0) > 0
    assert _value(metrics, "kymwatch_state", store=store, state="starting") == 1


def test_a_fixed_record_leaves_the_problem_gauge(tmp_path: Path) -> None:
    """Problems are 'now': the gauge drops back to 0 once the record is indexed."""
    clock, metrics = Clock(), Metrics()
    reporter = _reporter(tmp_path, clock, metrics)
    reporter.batch_done(Batch((RecordChange(UUID),), 99.0), _result(), "events", 0)
    fixed = RecordOutcome(UUID, "kym_velocity_events", OutcomeStatus.INDEXED, rows=1)
    reporter.batch_done(
        Batch((RecordChange(UUID),), 99.0),
        BatchResult(records=1, outcomes=Counter({"record_indexed": 1}), settled=[fixed]),
        "events",
        0,
    )
    reporter.publish()
    labels = {"store": str(tmp_path), "problem": "artifact_unreadable"}
    assert metrics.registry.get_sample_value("kymwatch_problems", labels) == 0


def test_reconcile_and_lost_events_are_counted_by_reason(tmp_path: Path) -> None:
    """reconciled() observes the duration by reason; events_lost() counts by reason."""
    metrics = Metrics()
    reporter = _reporter(tmp_path, Clock(), metrics)
    reporter.reconciled("startup", records=10, changed=10, duration_s=0.2)
    reporter.events_lost("inotify_overflow")
    store = str(tmp_path)
    count = _value(
        metrics, "kymwatch_reconcile_duration_seconds_count", store=store, reason="startup"
    )
    assert count == 1
    lost = _value(metrics, "kymwatch_events_lost_total", store=store, reason="inotify_overflow")
    assert lost == 1


def test_two_stores_share_one_registry_apart(tmp_path: Path) -> None:
    """A process watching two stores exports both, told apart by the store label."""
    metrics = Metrics()
    a = _reporter(tmp_path / "a.zarr", Clock(), metrics)
    _reporter(tmp_path / "b.zarr", Clock(), metrics)
    a.batch_done(Batch((RecordChange("acq001"),), 99.0), _result(), "startup", 0)
    assert _value(metrics, "kymwatch_records_indexed_total", store=str(tmp_path / "a.zarr")) == 2
    assert _value(metrics, "kymwatch_records_indexed_total", store=str(tmp_path / "b.zarr")) == 0


def test_textfile_is_written_at_a_bounded_rate_and_at_close(tmp_path: Path) -> None:
    """The textfile is rewritten at most every few seconds, parses, and is final at close."""
    clock = Clock()
    metrics = Metrics(clock=clock)
    path = tmp_path / "kymwatch.prom"
    metrics.textfile(path)
    reporter = _reporter(tmp_path / "s.zarr", clock, metrics)
    reporter.publish()
    first = path.read_text()
    reporter.batch_done(Batch((RecordChange("acq001"),), 99.0), _result(), "events", 0)
    clock.now += TEXTFILE_MIN_INTERVAL_S / 2
    reporter.publish()
    assert path.read_text() == first  # too soon
    clock.now += TEXTFILE_MIN_INTERVAL_S
    reporter.publish()
    assert _value_in(path.read_text(), "kymwatch_records_indexed") == 2
    reporter.batch_done(Batch((RecordChange("acq002"),), 99.0), _result(), "events", 0)
    metrics.close()
    final = _value_in(path.read_text(), "kymwatch_records_indexed")
    assert final == 4
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["kymwatch.prom"]


def test_textfile_failure_is_logged_not_raised(tmp_path: Path) -> None:
    """A textfile in a missing folder costs a warning, never the daemon."""
    metrics = Metrics()
    metrics.textfile(tmp_path / "no" / "such" / "kymwatch.prom")
    reporter = _reporter(tmp_path / "s.zarr", Clock(), metrics)
    with capture_logs() as logs:
        reporter.publish()
        metrics.close()
    assert [e["event"] for e in logs] == ["metrics_textfile_failed"]  # once, not per write


def test_progress_reaches_status_bar_and_pending_gauge(tmp_path: Path) -> None:
    """Long work shows done/total/ETA in status.json, on the bar and as records pending."""
    clock, metrics, bar = Clock(), Metrics(), Bar()
    reporter = _reporter(tmp_path, clock, metrics, bar)
    reporter.queue_depth = lambda: 5
    reporter.progress_start("first index", 10_000)
    clock.now += 3.0
    reporter.progress_step(4_200)
    doc = json.loads((tmp_path / "index" / "status.json").read_text())
    assert doc["progress"]["done"] == 4_200 and doc["progress"]["total"] == 10_000
    assert doc["progress"]["eta_s"] == pytest.approx(5.8 / 1.4, abs=0.1)
    assert describe(doc["progress"]) == "first index 4,200 / 10,000, ETA 4 s"
    assert bar.shown == [("first index", 4_200, 10_000)]
    assert _value(metrics, "kymwatch_records_pending", store=str(tmp_path)) == 5 + 5_800
    reporter.progress_end()
    doc = json.loads((tmp_path / "index" / "status.json").read_text())
    assert doc["progress"] is None and bar.closed == 1
    assert _value(metrics, "kymwatch_records_pending", store=str(tmp_path)) == 5


def test_progress_eta_is_unknown_before_the_first_chunk() -> None:
    """No ETA without a rate; long ETAs read in minutes or hours."""
    assert Progress("first index", 0, 10, 0.0, 0.0).eta_s is None
    assert describe(Progress("x", 0, 10, 0.0, 5.0).to_json()) == "x 0 / 10, ETA unknown"
    assert describe(Progress("x", 1, 601, 0.0, 1.0).to_json()) == "x 1 / 601, ETA 10 min"


def test_terminal_bar_draws_on_its_stream_and_bars_need_a_terminal() -> None:
    """TerminalBar writes tqdm's bar to its stream; a non-terminal stream gets none."""
    out = io.StringIO()
    bar = TerminalBar(out)
    bar.update(Progress("first index", 3, 3, 0.0, 1.0))
    bar.close()
    assert "first index" in out.getvalue() and "3/3" in out.getvalue()
    assert not bars_wanted(True, io.StringIO())
    assert not bars_wanted(False, io.StringIO())


def test_terminal_bar_routes_console_logs_above_itself_while_shown() -> None:
    """While a bar is shown the console log handler writes through tqdm; after, as before."""
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    saved = list(root.handlers)
    root.handlers = [console]
    try:
        bar = TerminalBar(io.StringIO())
        bar.update(Progress("first index", 1, 3, 0.0, 1.0))
        assert console not in root.handlers
        assert [type(h).__name__ for h in root.handlers] == ["_TqdmLoggingHandler"]
        bar.close()
        assert root.handlers == [console]
    finally:
        root.handlers = saved
