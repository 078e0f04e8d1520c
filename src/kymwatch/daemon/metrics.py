"""Prometheus metrics (the official ``prometheus_client``), fed by the reporter.

One :class:`Metrics` per process owns a registry whose metrics all carry a
``store`` label, so a process watching several stores exports them side by side;
:meth:`Metrics.for_store` gives the :class:`StoreMetrics` one daemon's reporter
feeds. The loop never touches them with the table lock held: the reporter is
called after each batch is published, and at each status publish (the heartbeat).
They are exported over HTTP (``--metrics-port``; a thread of ``prometheus_client``
answers scrapes) and/or to a node-exporter textfile (``--metrics-textfile``,
rewritten atomically at most every :data:`TEXTFILE_MIN_INTERVAL_S`).

This module is imported only when metrics are asked for: the quick commands and a
daemon without metrics never load ``prometheus_client``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
    write_to_textfile,
)

from kymwatch.errors import KymwatchError

__all__ = ["TEXTFILE_MIN_INTERVAL_S", "Metrics", "MetricsServeError", "StoreMetrics"]

log = structlog.get_logger(__name__)

TEXTFILE_MIN_INTERVAL_S = 5.0
"""The textfile is rewritten at most this often (and once more at stop)."""

LAG_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
PROBLEM_KINDS = ("artifact_missing", "artifact_unreadable", "artifact_invalid")
STATES = (
    "starting",
    "reconciling",
    "watching",
    "indexing",
    "store_unavailable",
    "stopping",
    "stopped",
)


class MetricsServeError(KymwatchError, OSError):
    """The metrics endpoint cannot listen (port in use, address not local, ...)."""


class Metrics:
    """The metrics of one kymwatch process.

    Args:
        registry: Where the metrics are registered (default: a new one, not the
            process-global default, so tests can make several).
        clock: Monotonic clock, for the textfile's rate limit.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        r, s = self.registry, ("store",)
        self.queue_depth = Gauge(
            "kymwatch_queue_depth", "Records waiting in the debouncer.", s, registry=r
        )
        self.records_pending = Gauge(
            "kymwatch_records_pending",
            "Records changed and not yet indexed: the queue plus the rest of the work in hand.",
            s,
            registry=r,
        )
        self.lag = Histogram(
            "kymwatch_lag_seconds",
            "Time from a record's first change to its table being published.",
            s,
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "kymwatch_batches", "Batches indexed, by what started them.", (*s, "source"), registry=r
        )
        self.records = Counter(
            "kymwatch_records_indexed", "Records indexed (every outcome).", s, registry=r
        )
        self.rows = Counter("kymwatch_rows_written", "Table rows written.", s, registry=r)
        self.outcomes = Counter(
            "kymwatch_outcomes",
            "Final per-record outcomes by kind (record_indexed, artifact_missing, ...).",
            (*s, "outcome"),
            registry=r,
        )
        self.batch_failures = Counter(
            "kymwatch_batch_failures", "Batches that raised (retried).", s, registry=r
        )
        self.problems = Gauge(
            "kymwatch_problems",
            "Records that are not right now, by problem (one per record and indexer).",
            (*s, "problem"),
            registry=r,
        )
        self.last_update = Gauge(
            "kymwatch_last_table_update_timestamp_seconds",
            "Unix time of the last table publish (0: none since start).",
            s,
            registry=r,
        )
        self.watches = Gauge(
            "kymwatch_watches", "inotify watches held (polling: 0).", s, registry=r
        )
        self.reconcile = Histogram(
            "kymwatch_reconcile_duration_seconds",
            "Duration of reconcile scans (with the indexing they caused), by reason.",
            (*s, "reason"),
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.events_lost = Counter(
            "kymwatch_events_lost",
            "Signs that the event source lost events (each is followed by a rescan).",
            (*s, "reason"),
            registry=r,
        )
        self.state = Gauge(
            "kymwatch_state", "1 for the daemon's current state.", (*s, "state"), registry=r
        )
        self._textfile: Path | None = None
        self._textfile_at: float | None = None
        self._textfile_failing = False
        self._textfile_lock = threading.Lock()
        self._server: WSGIServer | None = None

    def for_store(self, store: Path) -> StoreMetrics:
        """The metrics of one store (its ``store`` label: the absolute path)."""
        return StoreMetrics(self, str(store))

    # -- export ---------------------------------------------------------------------------
    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Answer scrapes on ``address:port`` from a background thread.

        Returns:
            The port listened on (``port`` 0 picks a free one).

        Raises:
            MetricsServeError: The address cannot be bound.
        """
        try:
            server, _thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as e:
            raise MetricsServeError(
                f"cannot serve metrics on {address}:{port}: {e.strerror or e}"
            ) from e
        self._server = server
        bound = int(server.server_port)
        log.info("metrics_serving", address=address, port=bound, path="/metrics")
        return bound

    def textfile(self, path: Path) -> None:
        """Also write the metrics to ``path`` (node-exporter's textfile collector)."""
        self._textfile = path

    def flush(self, *, force: bool = False) -> None:
        """Rewrite the textfile if one is set and the last write is old enough (or
        ``force``). Atomic (temporary file + rename); a failure is logged once."""
        if self._textfile is None or not self._textfile_lock.acquire(blocking=force):
            return
        try:
            now = self.clock()
            last = self._textfile_at
            if not force and last is not None and now - last < TEXTFILE_MIN_INTERVAL_S:
                return
            self._textfile_at = now
            try:
                write_to_textfile(str(self._textfile), self.registry)
            except OSError as e:
                if not self._textfile_failing:
                    log.warning("metrics_textfile_failed", path=str(self._textfile), error=str(e))
                self._textfile_failing = True
                return
            self._textfile_failing = False
        finally:
            self._textfile_lock.release()

    def close(self) -> None:
        """Stop answering scrapes and write the textfile a last time."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.flush(force=True)


class StoreMetrics:
    """What one daemon's reporter feeds: the metrics with its ``store`` label."""

    def __init__(self, metrics: Metrics, store: str) -> None:
        self.m, self.store = metrics, store
        for kind in PROBLEM_KINDS:  # present at 0 from the start: alerts need a series
            metrics.problems.labels(store, kind).set(0)
        metrics.last_update.labels(store).set(0)
        metrics.batch_failures.labels(store)
        metrics.records.labels(store)
        metrics.rows.labels(store)

    def batch(
        self,
        source: str,
        *,
        records: int,
        rows: int,
        outcomes: Mapping[str, int],
        lag_s: float,
        published: bool,
    ) -> None:
        """A batch was indexed (``published``: it wrote a table)."""
        m, s = self.m, self.store
        m.batches.labels(s, source).inc()
        m.records.labels(s).inc(records)
        m.rows.labels(s).inc(rows)
        for outcome, n in outcomes.items():
            m.outcomes.labels(s, outcome).inc(n)
        m.lag.labels(s).observe(max(lag_s, 0.0))
        if published:
            m.last_update.labels(s).set_to_current_time()

    def batch_failed(self) -> None:
        """A batch raised."""
        self.m.batch_failures.labels(self.store).inc()

    def reconciled(self, reason: str, duration_s: float) -> None:
        """A reconcile scan finished."""
        self.m.reconcile.labels(self.store, reason).observe(duration_s)

    def events_lost(self, reason: str) -> None:
        """The event source lost events."""
        self.m.events_lost.labels(self.store, reason).inc()

    def publish(
        self,
        *,
        state: str,
        queue_depth: int,
        pending: int,
        watches: int,
        problems: Mapping[str, int],
    ) -> None:
        """The gauges, at each status publish; then the textfile, rate-limited."""
        m, s = self.m, self.store
        for name in STATES:
            m.state.labels(s, name).set(1 if name == state else 0)
        m.queue_depth.labels(s).set(queue_depth)
        m.records_pending.labels(s).set(pending)
        m.watches.labels(s).set(watches)
        for kind in {*PROBLEM_KINDS, *problems}:
            m.problems.labels(s, kind).set(problems.get(kind, 0))
        m.flush()
