"""Dataset tables: ``tables/<name>.parquet``, written atomically under a store lock."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from kymwatch.store.atomic import atomic_write, fsync_dir
from kymwatch.store.encoding import write_options
from kymwatch.store.layout import INDEX_DIR, TABLES_DIR, validate_table_name
from kymwatch.store.scan import Fingerprint

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "read_table_arrow",
    "read_table_file",
    "start_table_writes",
    "sync_table_folders",
    "table_fingerprint",
    "table_lock",
    "table_path",
    "write_table_arrow",
    "write_table_file",
    "writer_pool",
]

_LOCK_NAME = "tables.lock"


def table_path(root: Path, name: str) -> Path:
    """The file of table ``name``."""
    return root / TABLES_DIR / f"{validate_table_name(name)}.parquet"


_locks: dict[str, FileLock] = {}  # one lock object per lock file, as is_singleton does
_locks_guard = threading.Lock()
_held = threading.local()  # per thread: lock file → how deep this thread holds it


def _lock_of(path: str) -> FileLock:
    """The lock object of a lock file (made once: filelock's singleton lookup resolves
    the path anew on every call, ~0.15 ms)."""
    with _locks_guard:
        lock = _locks.get(path)
        if lock is None:
            lock = _locks[path] = FileLock(path, is_singleton=True)
        return lock


@contextlib.contextmanager
def table_lock(root: Path, timeout: float = -1) -> Iterator[FileLock]:
    """Hold the inter-process lock that serialises table read-modify-writes on one dataset.

    A context manager. It is re-entrant within a thread (a thread that holds it already
    goes on at once, without filelock's bookkeeping: the daemon's batch takes it around
    the publisher, which takes it again), excludes other threads and processes, and is
    released by the OS if the holder dies.

    Args:
        root: The dataset folder; the lock file is ``index/tables.lock``.
        timeout: Seconds to wait for the lock (negative: forever); on expiry
            ``filelock.Timeout`` is raised.
    """
    lock_dir = root / INDEX_DIR
    path = str(lock_dir / _LOCK_NAME)
    depths: dict[str, int] = _held.__dict__.setdefault("depths", {})
    if depths.get(path, 0) > 0:  # held by this thread: re-entered
        depths[path] += 1
        try:
            yield _lock_of(path)
        finally:
            depths[path] -= 1
        return
    lock_dir.mkdir(exist_ok=True)  # never the store itself: it may be gone
    lock = _lock_of(path)
    with lock.acquire(timeout=timeout):
        depths[path] = 1
        try:
            yield lock
        finally:
            depths[path] = 0


def table_fingerprint(path: Path) -> Fingerprint | None:
    """The fingerprint of a table file, or None if it does not exist (also when
    ``tables/`` itself is missing or not a folder)."""
    try:
        return Fingerprint.of(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_table_arrow(
    path: Path, columns: Sequence[str] | None = None, *, chunk_rows: int | None = None
) -> pa.Table:
    """Read one table file as Arrow (raises FileNotFoundError if absent); only
    ``columns`` of it when given (those the file has).

    The file is opened once and parsed through that handle: given a path, pyarrow may
    open it again for the row groups, and an atomic replace in between would mix the
    footer of one version with the pages of another. With ``chunk_rows`` the table is
    read in chunks of that many rows, each in buffers of its own (a table kept in
    memory and edited: see :func:`kymwatch.store.engine.compact`).

    Without Arrow's thread pool: with pyarrow 26 a process that exits within a few
    milliseconds of a threaded read aborted ("terminate called without an active
    exception", 10-15 of 40 runs of a read-then-exit script; none without threads, and
    none with a 0.2 s pause before the exit), and a quick command (``kymwatch stale``)
    exits right after its reads. A single thread read a 500k-row table as fast here.
    """
    with pa.OSFile(str(path)) as f:
        pf = pq.ParquetFile(f)
        names = None
        if columns is not None:
            have = set(pf.schema_arrow.names)
            names = [c for c in columns if c in have]
        if chunk_rows is None:
            return pf.read(columns=names, use_threads=False)
        schema = pf.schema_arrow
        if names is not None:
            schema = pa.schema([schema.field(c) for c in names], metadata=schema.metadata)
        batches = pf.iter_batches(batch_size=chunk_rows, columns=names, use_threads=False)
        return pa.Table.from_batches(list(batches), schema=schema)


def read_table_file(path: Path) -> pd.DataFrame:
    """Read one table file as a DataFrame (see :func:`read_table_arrow`)."""
    df: pd.DataFrame = read_table_arrow(path).to_pandas()
    return df


class LazyPool:
    """A thread pool of the process, created on first use (calling the object gives it)."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers, self._name = workers, name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
            return self._pool


_writers = LazyPool(4, "kymwatch-write")
"""The threads that write a batch's tables."""


def writer_pool() -> ThreadPoolExecutor:
    """The threads that write a batch's tables (made on first use)."""
    return _writers()


def write_table_arrow(
    path: Path,
    table: pa.Table,
    *,
    within: Path | None = None,
    sync_folder: bool = True,
    options: dict[str, object] | None = None,
) -> Fingerprint:
    """Replace one table file atomically with an Arrow table; returns its fingerprint.

    ``within``: the store folder, which must exist (``tables/`` is created below it when
    missing, the store never: see :func:`kymwatch.store.atomic.make_folder`).
    ``sync_folder`` False: the folder is not fsynced after the rename; the caller does
    it (:func:`sync_table_folders`) before relying on the new file. ``options``: the
    encoder's options as :func:`~kymwatch.store.encoding.write_options` gives them for
    ``table`` (None: chosen here).
    """
    if options is None:
        options = write_options(table)  # per column: a dictionary only where values repeat

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp, **options)

    atomic_write(path, write, within=within, sync_folder=sync_folder)
    fp = table_fingerprint(path)
    assert fp is not None
    return fp


def start_table_writes(
    files: Sequence[tuple[Path, pa.Table]], *, within: Path | None = None
) -> list[Future[Fingerprint]]:
    """Start replacing table files on writer threads, each atomically (as
    :func:`write_table_arrow`); the caller waits on the futures (a future's result is
    the file's new fingerprint, or raises what stopped its write). Encoding and fsync
    release the GIL, so the caller's own work (the next table's merge) goes on meanwhile.

    Each file's data is fsynced before its rename, but not its folder after it: once
    the futures are done, the caller syncs each folder once
    (:func:`sync_table_folders`), not once per file, before relying on the renames.

    The encoder's options are chosen here, on the caller's thread: the choice is a few
    dozen short Arrow calls, each of which a writer thread would have to win the GIL
    back for from the caller's next merge (up to 4 ms from the start of an edit's
    write to its encode, measured in the daemon; ~0.6 ms of work).
    """
    pool = _writers()
    futures = []
    for path, table in files:
        options = write_options(table)
        write = partial(write_table_arrow, within=within, sync_folder=False, options=options)
        futures.append(pool.submit(write, path, table))
    return futures


def sync_table_folders(paths: Sequence[Path]) -> None:
    """Flush the folders of the files just written by :func:`start_table_writes`, each
    folder once (a batch's tables share ``tables/``): after it their renames survive a
    power cut."""
    for folder in dict.fromkeys(p.parent for p in paths):
        fsync_dir(folder)


def write_table_file(path: Path, df: pd.DataFrame) -> Fingerprint:
    """Replace one table file atomically with a DataFrame; returns its fingerprint."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    return write_table_arrow(path, table)
