"""kymflow-shaped records for the daemon-loop tests (string event ids, UUID record ids)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from harness import WAIT_S, wait_until
from helpers_store import write_json_artifact, write_parquet_artifact, write_v2_record
from kymwatch.daemon import Daemon, EventSink, FileChange, Rescan

__all__ = ["HeldSink", "LossySink", "add_kym_record", "kym_events", "running"]


def kym_events(n: int, *, start_s: float = 0.0) -> pd.DataFrame:
    """``n`` velocity events with a string ``event_id`` column, as kymflow writes it.

    The ids are numeric-looking strings ("1", "2", ...), which kymflow keeps as
    strings: they are valid both for this branch's events indexer (which still casts
    ``event_id`` to Int64) and for the kymflow-conformant one (string ids such as
    "e1" or a UUID); the record ids of these tests carry the UUIDs.
    """
    ids = [str(i + 1) for i in range(n)]
    t0 = [start_s + i for i in range(n)]
    return pd.DataFrame(
        {
            "roi_id": [1] * n,
            "event_id": ids,
            "t0_s": t0,
            "t1_s": [t + 0.5 for t in t0],
            "kind": ["stall"] * n,
            "score": [0.9] * n,
        }
    )


def add_kym_record(store: Path, image_id: str, *, n_events: int = 3) -> None:
    """A record with an events parquet (string event ids) and a radon JSON report."""
    write_v2_record(store, image_id)
    write_parquet_artifact(store, image_id, "velocity_events", kym_events(n_events))
    write_json_artifact(store, image_id, "radon_report", {"mean_velocity": 1.5, "n_valid": 4})


@contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Run ``daemon`` on a thread until the block ends; fail if it dies."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, name="daemon", daemon=True)
    thread.start()
    wait_until(
        lambda: daemon.status.state == "watching" or not thread.is_alive(), what="daemon ready"
    )
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the daemon thread did not stop"
        assert not errors, errors


class LossySink:
    """Passes events to the daemon, except file changes while ``dropping`` is set."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.dropping = threading.Event()
        self.dropped = 0

    def __call__(self, item: FileChange | Rescan) -> None:
        if isinstance(item, FileChange) and self.dropping.is_set():
            self.dropped += 1
            return
        self.sink(item)


class HeldSink:
    """Collects what a watcher reports; holds the watcher's thread on the first report
    until released, so that later kernel events wait in the inotify queue meanwhile."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, report: Any) -> None:
        with self._lock:
            self.reports.append(report)
        if not self.held.is_set():
            self.held.set()
            self.release.wait(WAIT_S)

    def paths(self) -> list[str]:
        with self._lock:
            return [str(r.path) for r in self.reports if not isinstance(r, Rescan)]

    def rescans(self) -> list[str]:
        with self._lock:
            return [r.reason for r in self.reports if isinstance(r, Rescan)]
