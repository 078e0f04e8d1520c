"""The daemon's cluster reads, with an in-process stand-in for a Dask client."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from helpers_store import (
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon.scaleout import cluster_reads, wait_in_slices
from kymwatch.index import KymDataset
from kymwatch.index.distributed import ClusterSpec, ClusterUnavailableError

IDS = [f"5b1e{n:04d}-1c2d-4e3f-8a9b-0c1d2e3f{n:04d}" for n in range(6)]
SPEC = ClusterSpec(None, 2)


class _Future:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def result(self) -> Any:
        return self.fn(*self.args)


class _Client:
    """Runs each task here, when its result is asked for (what a Dask client returns)."""

    def __init__(self) -> None:
        self.tasks = 0

    def scatter(self, data: list[Any], broadcast: bool = False) -> list[Any]:
        return data

    def submit(self, fn: Callable[..., Any], *args: Any, **_: Any) -> _Future:
        self.tasks += 1
        return _Future(fn, args)

    def cancel(self, futures: list[_Future]) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Generation-1 records with string event ids ("e0", ...) and legacy radon reports."""
    root = make_v2_store(tmp_path / "store.zarr")
    for n, image_id in enumerate(IDS):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(n + 1))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(0.5 * n))
    return root


def _connect(client: _Client) -> Callable[[ClusterSpec], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def connect(spec: ClusterSpec) -> Iterator[Any]:
        yield client

    return connect


def _reads(kd: KymDataset, **kw: Any) -> contextlib.AbstractContextManager[Any]:
    options: dict[str, Any] = {
        "threshold": 3,
        "slice_s": 5.0,
        "between": lambda: None,
        "stopping": threading.Event(),
    }
    return cluster_reads(kd, SPEC, IDS, **(options | kw))


def test_records_read_on_the_cluster_give_the_table_of_a_rebuild(store: Path) -> None:
    """Records read ahead on the cluster are used as read, and the table equals a rebuild."""
    kd, client = KymDataset(store), _Client()
    with _reads(kd, connect=_connect(client)) as used:
        assert kd.extractor is used and used is not None
        kd.update_images_report("velocity_events", IDS)
    assert client.tasks == 2  # one chunk per indexer
    assert (used.reused, used.reread) == (len(IDS), 0)
    assert kd.extractor is None
    got = pq.read_table(store / "tables" / "velocity_events.parquet")
    KymDataset(store).rebuild_report("velocity_events")
    assert got.equals(pq.read_table(store / "tables" / "velocity_events.parquet"))


def test_a_record_changed_after_the_cluster_read_it_is_read_again(store: Path) -> None:
    """A record written after the cluster read it is read again here: its new rows win."""
    kd = KymDataset(store)
    with _reads(kd, connect=_connect(_Client())) as used:
        write_parquet_artifact(store, IDS[2], "velocity_events", events_frame(7))
        kd.update_images_report("velocity_events", IDS)
    assert used is not None and (used.reused, used.reread) == (len(IDS) - 1, 1)
    table = kd.get_arrow("velocity_events")
    assert table.filter(_of_record(table, IDS[2])).num_rows == 7


def _of_record(table: Any, image_id: str) -> Any:
    import pyarrow.compute as pc

    return pc.equal(table.column("image_id"), image_id)


def test_below_the_threshold_nothing_goes_to_the_cluster(store: Path) -> None:
    """Fewer records than the threshold are read here, without connecting."""
    kd, calls = KymDataset(store), []

    def connect(spec: ClusterSpec) -> contextlib.AbstractContextManager[Any]:
        calls.append(spec)
        raise AssertionError("connected")

    with _reads(kd, connect=connect, threshold=len(IDS) + 1) as used:
        assert used is None and kd.extractor is None
    assert calls == []


def test_an_unreachable_cluster_falls_back_with_a_warning(store: Path) -> None:
    """A cluster that cannot be reached leaves the records to the local path, with one
    ``cluster_fallback`` warning."""
    kd = KymDataset(store)

    def connect(spec: ClusterSpec) -> contextlib.AbstractContextManager[Any]:
        raise ClusterUnavailableError("no Dask scheduler answers at tcp://x:1")

    with capture_logs() as logs, _reads(kd, connect=connect) as used:
        assert used is None and kd.extractor is None
    [warning] = [e for e in logs if e["event"] == "cluster_fallback"]
    assert warning["log_level"] == "warning"
    assert warning["error"] == "no Dask scheduler answers at tcp://x:1"


def test_the_loop_keeps_its_duties_while_the_cluster_reads(store: Path) -> None:
    """While the cluster reads, the loop thread runs its duties (heartbeat, watchdog)
    between slices of its wait."""
    kd, client = KymDataset(store), _Client()
    duties = threading.Semaphore(0)
    calls: list[int] = []

    def between() -> None:
        calls.append(1)
        duties.release()

    @contextlib.contextmanager
    def slow_connect(spec: ClusterSpec) -> Iterator[Any]:
        for _ in range(3):  # the cluster answers only after three rounds of duties
            assert duties.acquire(timeout=60)
        yield client

    with _reads(kd, connect=slow_connect, slice_s=0.001, between=between) as used:
        assert used is not None
    assert len(calls) >= 3


def test_a_stop_request_ends_the_wait() -> None:
    """A stop request ends the wait for the cluster after the slice in hand."""
    stopping, done = threading.Event(), threading.Event()
    calls: list[int] = []

    def between() -> None:
        calls.append(1)
        if len(calls) == 2:
            stopping.set()

    assert not wait_in_slices(done, slice_s=0.001, between=between, stopping=stopping)
    assert len(calls) == 2
    done.set()
    assert wait_in_slices(done, slice_s=0.001, between=between, stopping=stopping)
