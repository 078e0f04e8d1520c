"""Rebuilds and first indexes on a Dask cluster (``--dask ADDRESS|local[:N]``).

The records are cut into chunks; a worker reads and conforms its chunk to Arrow with the
same function a local rebuild uses (:func:`kymwatch.index.batch.extract_batch`) and sends
back each record's outcome and typed rows. The client hands those to
:class:`~kymwatch.index.kymdataset.KymDataset` through its ``extractor`` seam, which merges
and publishes each table once, under the store lock, exactly as a local rebuild does. No
table is written here.

Workers must see the store at the same path (a shared file system) and have kymwatch
installed. A worker that dies mid-chunk is handled by Dask (its tasks run again on another
worker, up to the scheduler's ``allowed-failures``); a chunk that still fails raises
:class:`ChunkFailedError` naming its records before any table is touched.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from kymwatch.errors import KymwatchError
from kymwatch.index.base import DatasetIndexer
from kymwatch.index.batch import Extracted, extract_batch
from kymwatch.index.kymdataset import Extractor
from kymwatch.store import RecordFiles, ZarrDataset, ZarrImageRecord, scan_record

__all__ = [
    "INSTALL_HINT",
    "ChunkFailedError",
    "ChunkResult",
    "ClusterError",
    "ClusterExtractor",
    "ClusterSpec",
    "ClusterUnavailableError",
    "DaskMissingError",
    "Prefetched",
    "cluster",
    "cluster_extractor",
    "extract_chunk",
    "prefetch",
    "require_dask",
]

log = structlog.get_logger(__name__)

INSTALL_HINT = "--dask needs dask.distributed: pip install 'kymwatch[dask]'"
DEFAULT_CHUNK = 2000  # records per task: ~0.1-0.5 s of work, far above Dask's ~1 ms per task
CONNECT_TIMEOUT_S = 10.0
TASK_RETRIES = 2  # a chunk whose task raised runs again this often before the rebuild fails


class ClusterError(KymwatchError):
    """Work cannot be done on the cluster (the subclasses say why)."""


class DaskMissingError(ClusterError, ImportError):
    """``--dask`` was asked for but dask.distributed is not installed."""


class ClusterUnavailableError(ClusterError, ConnectionError):
    """The Dask scheduler cannot be reached (or a local cluster cannot start)."""


class ChunkFailedError(ClusterError, RuntimeError):
    """A chunk of records failed on the cluster after Dask's retries.

    Attributes:
        image_ids: The records of the chunk.
    """

    def __init__(self, indexer: str, image_ids: Sequence[str], error: str) -> None:
        shown = ", ".join(image_ids[:5])
        if len(image_ids) > 5:
            shown += f" and {len(image_ids) - 5} more"
        super().__init__(
            f"indexer {indexer}: a chunk of {len(image_ids)} records failed on the cluster"
            f" ({shown}): {error}"
        )
        self.image_ids = tuple(image_ids)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where to run: a scheduler ``address``, or a local cluster of ``workers`` processes.

    Attributes:
        address: ``tcp://host:8786`` (or any address ``dask.distributed.Client`` takes);
            None for a ``LocalCluster``.
        workers: Worker processes of the local cluster (None: one per core).
    """

    address: str | None
    workers: int | None = None

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        """``local``, ``local:N`` or a scheduler address.

        Raises:
            ValueError: ``local:N`` with N not a positive integer, or an empty address.
        """
        text = text.strip()
        if text == "local":
            return cls(None)
        if text.startswith("local:"):
            n = text.removeprefix("local:")
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"local:N needs a positive number of workers, not {n!r}")
            return cls(None, int(n))
        if not text:
            raise ValueError("--dask needs a scheduler address or local[:N]")
        return cls(text)

    def __str__(self) -> str:
        if self.address is not None:
            return self.address
        return "local" if self.workers is None else f"local:{self.workers}"


def require_dask() -> Any:
    """The ``dask.distributed`` module.

    Raises:
        DaskMissingError: it is not installed (the message says how to install it).
    """
    try:
        import dask.distributed as dd
    except ImportError as e:
        raise DaskMissingError(INSTALL_HINT) from e
    return dd


@contextlib.contextmanager
def cluster(spec: ClusterSpec, *, timeout_s: float | None = None) -> Iterator[Any]:
    """A connected ``dask.distributed.Client`` (closed, with its local cluster, on exit).

    Raises:
        DaskMissingError: dask.distributed is not installed.
        ClusterUnavailableError: the scheduler did not answer within ``timeout_s``.
    """
    dd = require_dask()
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    # distributed logs its life cycle (scheduler, nanny, workers) at INFO on stderr:
    # kymwatch logs what matters in its own events.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if spec.address is None:
            try:
                local = dd.LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never the 8787 of another
                )
            except Exception as e:  # e.g. "Nanny failed to start" (no ports, no memory)
                raise ClusterUnavailableError(
                    f"a local Dask cluster ({spec}) cannot start: {type(e).__name__}: {e}"
                ) from e
            stack.callback(local.close)
        try:
            if spec.address is not None:  # a malformed one fails here, not in Client's __del__
                dd.comm.get_address_host_port(spec.address)
            client = dd.Client(local if spec.address is None else spec.address, timeout=timeout_s)
        except (OSError, TimeoutError) as e:
            raise ClusterUnavailableError(
                f"no Dask scheduler answers at {spec} within {timeout_s:g} s ({e})"
            ) from e
        except ValueError as e:  # not an address Dask knows
            raise ClusterUnavailableError(f"not a Dask scheduler address: {spec} ({e})") from e
        stack.callback(client.close)
        yield client


@contextlib.contextmanager
def cluster_extractor(
    spec: ClusterSpec, store_path: Path, *, chunk_records: int = DEFAULT_CHUNK
) -> Iterator[ClusterExtractor]:
    """A :class:`ClusterExtractor` on ``spec`` for ``KymDataset.extractor`` (``kymwatch
    rebuild --dask``); the cluster connection is closed on exit.

    Raises:
        DaskMissingError: dask.distributed is not installed.
        ClusterUnavailableError: the scheduler did not answer.
    """
    with cluster(spec) as client:
        log.info("cluster_connected", cluster=str(spec), workers=_worker_count(client))
        yield ClusterExtractor(client, store_path, chunk_records)


def _worker_count(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What a worker sends back for one chunk: each record's outcome and rows.

    One object on purpose: Dask serializes the items of a returned list one by one,
    which would copy the chunk's shared Arrow table once per record; an object is
    pickled whole, the table once.
    """

    items: list[Extracted]


def extract_chunk(ix: DatasetIndexer, store_path: str, ids: Sequence[str]) -> ChunkResult:
    """On a worker: read and conform ``ids`` with ``ix`` (what a local rebuild does)."""
    return ChunkResult(extract_batch(ix, ZarrDataset(store_path, "r"), ids))


def _chunks(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


class ClusterExtractor:
    """Reads records on a cluster, one task per chunk: an ``Extractor`` for
    ``KymDataset.extractor``.

    Args:
        client: A connected ``dask.distributed.Client``.
        store_path: The store, as the workers see it (the same path on a shared file system).
        chunk_records: Records per task.
    """

    def __init__(self, client: Any, store_path: Path, chunk_records: int = DEFAULT_CHUNK) -> None:
        if chunk_records < 1:
            raise ValueError("chunk_records must be positive")
        self.client = client
        self.store_path = str(store_path)
        self.chunk_records = chunk_records
        self.chunks_done = 0
        self.seconds_in_tasks = 0.0

    def __call__(self, ix: DatasetIndexer, ids: Sequence[str]) -> list[Extracted]:
        """Every record of ``ids`` read on the cluster, in the order of ``ids``.

        Raises:
            ChunkFailedError: a chunk still failed after Dask's retries.
        """
        if not ids:
            return []
        start = time.perf_counter()
        chunks = _chunks(ids, self.chunk_records)
        try:
            [ix_future] = self.client.scatter([ix], broadcast=True)
        except Exception as e:  # e.g. a plug-in indexer holding a lock or an open file
            raise ClusterError(
                f"indexer {ix.name} cannot be sent to the workers: {type(e).__name__}: {e}"
            ) from e
        futures = [
            self.client.submit(
                extract_chunk, ix_future, self.store_path, chunk, pure=False, retries=TASK_RETRIES
            )
            for chunk in chunks
        ]
        out: list[Extracted] = []
        try:
            for chunk, future in zip(chunks, futures, strict=True):
                try:
                    part: ChunkResult = future.result()
                except Exception as e:  # KilledWorker, or the task's own error after retries
                    raise ChunkFailedError(ix.name, chunk, f"{type(e).__name__}: {e}") from e
                out.extend(part.items)
        finally:
            self.client.cancel(futures)
        elapsed = time.perf_counter() - start
        self.chunks_done += len(chunks)
        self.seconds_in_tasks += elapsed
        log.info(
            "cluster_extracted",
            indexer=ix.name,
            records=len(ids),
            chunks=len(chunks),
            duration_ms=round(elapsed * 1000, 2),
        )
        return out


class Prefetched:
    """Records read on a cluster ahead of a daemon's chunked indexing: an ``extractor``
    that hands out a record's prefetched result only while its artifact files are
    unchanged since just before the cluster read them (otherwise it is read here again).

    Args:
        store: The dataset.
        stamps: Each record's artifact fingerprints, taken before the cluster read it.
        results: Per indexer name, per record, what the cluster read.
        local: How records are read here (``KymDataset``'s own chunked read).
    """

    def __init__(
        self,
        store: ZarrDataset,
        stamps: dict[str, RecordFiles | None],
        results: dict[str, dict[str, Extracted]],
        local: Extractor,
    ) -> None:
        self.store, self.stamps, self.results, self.local = store, stamps, results, local
        self.reused = 0
        self.reread = 0

    def __call__(self, ix: DatasetIndexer, ids: Sequence[str]) -> list[Extracted]:
        """The prefetched result of each unchanged record of ``ids``; the others read here."""
        have = self.results.get(ix.name, {})
        found: dict[str, Extracted] = {}
        for image_id in ids:
            got = have.pop(image_id, None)
            if got is not None and _stamp(self.store, image_id) == self.stamps.get(image_id):
                found[image_id] = got
        again = [i for i in ids if i not in found]
        found.update(zip(again, self.local(ix, again), strict=True))
        self.reused += len(ids) - len(again)
        self.reread += len(again)
        return [found[i] for i in ids]


def _stamp(store: ZarrDataset, image_id: str) -> RecordFiles | None:
    rec = ZarrImageRecord(store, image_id)
    return scan_record(rec.path) if rec.exists() else None


def prefetch(
    client: Any,
    store: ZarrDataset,
    indexers: Sequence[DatasetIndexer],
    ids: Sequence[str],
    local: Extractor,
    *,
    chunk_records: int = DEFAULT_CHUNK,
) -> Prefetched:
    """Read ``ids`` with every indexer on the cluster (fingerprinting each record first).

    Raises:
        ChunkFailedError: a chunk still failed after Dask's retries.
    """
    stamps = {i: _stamp(store, i) for i in ids}
    remote = ClusterExtractor(client, store.path, chunk_records)
    results = {ix.name: dict(zip(ids, remote(ix, ids), strict=True)) for ix in indexers}
    return Prefetched(store, stamps, results, local)
