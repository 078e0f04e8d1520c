"""The stale-analysis counts the daemon publishes in its status file.

``kymwatch status`` shows how many analysed records are stale per generation-2
indexer (see :mod:`kymwatch.index.staleness`). Computing that reads every
record's markers and params, far too slow for each ``status`` call, so the daemon
keeps the counts: all records after a reconcile, the records of each batch after
it, on a thread of its own (read-only work; the loop never waits for it), at most
once per ``min_interval_s``. The status file carries the last counts
(``stale_records``, null until the first pass is done).

The counting is pure Python and shares the interpreter with the loop: it works in
slices of ``slice_records`` records and, before each, steps aside while the loop
has work (``busy``), for at most ``max_defer_s`` at a time, so a full pass (seconds
at 10k records) never slows a sync, a burst or a single edit for longer than a slice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kymwatch._lazy import lazy_logger
from kymwatch.daemon import memory
from kymwatch.store import TABLES_DIR, iter_record_folders

if TYPE_CHECKING:
    from kymwatch.index.staleness import CachedTable

__all__ = ["StaleCounter", "tabled_gen2_indexers"]

log = lazy_logger(__name__)

_MIN_INTERVAL_S = 2.0
_SLICE_RECORDS = 1000
_MAX_DEFER_S = 30.0
_BUSY_POLL_S = 0.05


def tabled_gen2_indexers(root: Path) -> list[str]:
    """The generation-2 indexers whose table exists (the ones ``status`` counts)."""
    from kymwatch.index import GENERATION_2

    return [n for n in GENERATION_2 if (root / TABLES_DIR / f"{n}.parquet").is_file()]


class StaleCounter:
    """Per generation-2 indexer, the analysed records that are stale, kept current.

    Args:
        root: The store folder.
        publish: Called (on the counter's thread) with the new counts,
            ``{indexer: stale records}``, after each pass that changed them or
            the stale records themselves (:meth:`stale_records`).
        min_interval_s: Least time between two passes (a burst costs one pass per
            interval, not one per batch).
        busy: True while the daemon's loop has work (changes pending, indexing, a
            sync): the counter waits before each slice while it is.
        slice_records: Records judged between two looks at ``busy``.
        max_defer_s: Longest wait for the loop to be idle (continuous acquisition
            must not starve the counts).
        cached: The daemon's current in-memory tables by name (see
            :meth:`~kymwatch.index.tableaccess.TableAccess.current_cached`): a pass
            slices its records' rows out of them instead of reading the table files.
    """

    def __init__(
        self,
        root: Path,
        publish: Callable[[dict[str, int]], None],
        *,
        min_interval_s: float = _MIN_INTERVAL_S,
        busy: Callable[[], bool] = lambda: False,
        slice_records: int = _SLICE_RECORDS,
        max_defer_s: float = _MAX_DEFER_S,
        cached: CachedTable | None = None,
    ) -> None:
        self.root = root
        self._publish = publish
        self._min_interval_s = min_interval_s
        self._busy = busy
        self._slice_records = slice_records
        self._max_defer_s = max_defer_s
        self._cached = cached
        self._stale: dict[str, dict[str, str]] = {}
        self._counts: dict[str, int] | None = None
        self._dirty: set[str] = set()
        self._all = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop's side ------------------------------------------------------------------
    def mark_all(self) -> None:
        """Count every record again (after a reconcile)."""
        with self._lock:
            self._all = True
            self._dirty = set()
        self._wake.set()

    def mark(self, image_ids: Iterable[str]) -> None:
        """Judge these records again (after a batch indexed them)."""
        with self._lock:
            if not self._all:
                self._dirty.update(image_ids)
        self._wake.set()

    def start(self) -> None:
        """Start the counting thread."""
        self._thread = threading.Thread(target=self._run, name="kymwatch-stale", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pass in hand is abandoned at the daemon's exit)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the work -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            self.run_pass()
            self._stop.wait(self._min_interval_s)

    def run_pass(self) -> dict[str, int] | None:
        """Judge what was marked, publish the counts if they (or the stale records)
        changed, return them.

        A failure (a store gone, a bug) is logged as ``stale_count_failed``; the
        records stay marked for the next pass and the old counts stay published.
        """
        with self._lock:
            everything, ids = self._all, self._dirty
            self._all, self._dirty = False, set()
        if not everything and not ids:
            return self._counts
        start = time.perf_counter()
        before = self._stale
        try:
            counts = self._judge(None if everything else ids)
        except Exception as e:  # the daemon must outlive it; keep what was published
            log.warning("stale_count_failed", error=f"{type(e).__name__}: {e}")
            if everything:
                self.mark_all()
            else:
                self.mark(ids)
            self._wake.clear()  # retried with the next mark, not in a hot loop
            return self._counts
        if everything:  # hand back what reading every record and table freed
            memory.trim()
        if counts != self._counts or self._stale != before:
            self._counts = counts
            self._publish(dict(counts))
            log.debug(
                "stale_counted",
                records=None if everything else len(ids),
                stale_records=counts,
                duration_ms=round((time.perf_counter() - start) * 1000, 2),
            )
        return counts

    def _judge(self, ids: set[str] | None) -> dict[str, int]:
        from kymwatch.index.staleness import dataset_staleness

        names = tabled_gen2_indexers(self.root)
        if set(names) != set(self._stale):  # a table came or went: judge every record
            ids = None
        stale: dict[str, dict[str, str]] = {n: {} for n in names}
        if ids is not None:  # keep the others' verdicts; the judged ones are replaced
            for n in names:
                old = self._stale.get(n, {})
                stale[n] = {i: r for i, r in old.items() if i not in ids}
        if names:
            todo = sorted(
                ids if ids is not None else (i for i, _ in iter_record_folders(self.root))
            )
            for at in range(0, len(todo), self._slice_records):
                self._step_aside()
                # Only the stale verdicts are kept, slice by slice (a full pass's verdicts
                # of every record were ~20,000 objects at 10k records).
                some = todo[at : at + self._slice_records]
                for s in dataset_staleness(self.root, names, some, cached=self._cached):
                    if s.is_stale and s.analysed:
                        stale[s.indexer][s.image_id] = str(s.reason)
        self._stale = stale
        return {n: len(stale[n]) for n in names}

    def stale_records(self) -> dict[str, dict[str, str]]:
        """The stale records of the last pass: indexer → image_id → kymflow's reason
        (``STALE_PARAMS_CHANGED``, ...); a new dict, never changed afterwards."""
        return {n: dict(ids) for n, ids in self._stale.items()}

    def _step_aside(self) -> None:
        """Wait while the loop has work (at most ``max_defer_s``, or until stopped)."""
        deadline = time.monotonic() + self._max_defer_s
        while self._busy() and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(_BUSY_POLL_S)
