"""Waiting for the table lock without starving the loop.

Another process (a ``kymwatch rebuild``, a program calling
``ZarrDataset.table_lock``) may hold the table lock for a long time. The daemon
waits for it in short slices and runs its duties (heartbeat, watchdog ping)
between them, and gives up when asked to stop.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import structlog

from kymwatch.store import ZarrDataset

__all__ = ["hold_table_lock"]

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def hold_table_lock(
    store: ZarrDataset,
    *,
    slice_s: float,
    stopping: threading.Event,
    between: Callable[[], None],
) -> Iterator[bool]:
    """Hold the store's table lock for the block; yields False (lock not held) if
    ``stopping`` was set first.

    The lock is re-entrant per thread, so work inside the block that takes it again
    (``KymDataset.update_images``) does not wait.

    Args:
        store: The dataset.
        slice_s: Longest single wait.
        stopping: Set when the daemon is asked to stop.
        between: Called between waits (the loop's duties).
    """
    first = True
    while not stopping.is_set():
        lock = store.table_lock(timeout=slice_s)
        try:
            lock.__enter__()
        except TimeoutError:
            between()  # first: a status written before the log line tells of the wait
            if first:
                log.info("table_lock_wait", path=str(store.index_path))
                first = False
            continue
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)
        return
    yield False
