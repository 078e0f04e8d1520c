"""The daemon's use of a Dask cluster (``kymwatch run --dask``): a first index or a
reconcile of at least ``dask_threshold`` records is read on the cluster first.

The cluster reads on a thread of its own while the loop thread waits for it in slices,
sending its heartbeat and watchdog ping between them (the loop never blocks without a
deadline). The records are then indexed by the worker as usual, chunk by chunk: each
table write, fingerprint and outcome is the local path's; only the reading is done
already (a record whose files changed since is read again here). An unreachable
cluster, or one that fails, leaves the work to the local path, with a warning.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import structlog

from kymwatch.index import KymDataset
from kymwatch.index.distributed import ClusterError, ClusterSpec, Prefetched, cluster, prefetch

__all__ = ["Job", "cluster_reads", "wait_in_slices"]

log = structlog.get_logger(__name__)


class Job:
    """A function run on a thread of its own; its result or error is kept.

    Args:
        fn: What to run.
        name: The thread's name.
    """

    def __init__(self, fn: Callable[[], Prefetched], name: str) -> None:
        self.done = threading.Event()
        self.result: Prefetched | None = None
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Job:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as e:  # handed to the loop thread, which decides
            self.error = e
        finally:
            self.done.set()


def wait_in_slices(
    done: threading.Event,
    *,
    slice_s: float,
    between: Callable[[], None],
    stopping: threading.Event,
) -> bool:
    """Wait for ``done`` at most ``slice_s`` at a time, calling ``between`` after each
    slice; give up when ``stopping`` is set. Returns whether ``done`` was set."""
    while not done.wait(slice_s):
        between()
        if stopping.is_set():
            return False
    return True


@contextlib.contextmanager
def cluster_reads(
    kd: KymDataset,
    spec: ClusterSpec | None,
    ids: Sequence[str],
    *,
    threshold: int,
    slice_s: float,
    between: Callable[[], None],
    stopping: threading.Event,
    connect: Callable[[ClusterSpec], contextlib.AbstractContextManager[object]] = cluster,
) -> Iterator[Prefetched | None]:
    """Within the block, ``kd`` reads ``ids`` from what the cluster read beforehand
    (when there is a cluster and at least ``threshold`` records); yields what it uses.

    Args:
        kd: The daemon's dataset (its ``extractor`` is set for the block only).
        spec: The cluster (None: always local).
        ids: The records about to be indexed.
        threshold: Fewest records worth a cluster round trip.
        slice_s: Longest single wait of the loop thread.
        between: The loop's duties (heartbeat, watchdog), run between waits.
        stopping: Set when the daemon is asked to stop: the wait ends.
        connect: Opens the cluster (tests pass a stand-in).
    """
    if spec is None or len(ids) < threshold:
        yield None
        return
    start = time.perf_counter()

    def read() -> Prefetched:
        with connect(spec) as client:
            return prefetch(client, kd.store, kd.indexers, ids, kd.extract_here)

    job = Job(read, "kymwatch-cluster").start()
    log.info("cluster_reading", cluster=str(spec), records=len(ids))
    if not wait_in_slices(job.done, slice_s=slice_s, between=between, stopping=stopping):
        yield None  # stopping: the records go back to the debouncer, unread
        return
    ms = round((time.perf_counter() - start) * 1000, 2)
    if job.result is None:  # unreachable, dask missing, a chunk failed: read here
        e = job.error
        error = str(e) if isinstance(e, ClusterError) else f"{type(e).__name__}: {e}"
        log.warning(
            "cluster_fallback", cluster=str(spec), records=len(ids), error=error, duration_ms=ms
        )
        yield None
        return
    log.info("cluster_read", cluster=str(spec), records=len(ids), duration_ms=ms)
    kd.extractor = job.result
    try:
        yield job.result
    finally:
        kd.extractor = None
        log.info(
            "cluster_reads_used",
            reused=job.result.reused,
            read_again=job.result.reread,
        )
