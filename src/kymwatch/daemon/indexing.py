"""Chunked indexing: a piece of work cut into chunks with the loop's duties between them.

:class:`ChunkedIndexing` indexes a sequence of record changes (a debounced batch, a
reconcile's difference, a sync's held changes) in chunks sized by the planner from the
measured seconds per record, so the heartbeat, the watchdog ping and a stop request
get their turn between two chunks. It is the one place where work goes back into the
debouncer (retries, a chunk interrupted by a stop, a store that vanished, a table lock
never obtained).
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog

from kymwatch.daemon import memory, planner
from kymwatch.daemon.changes import Batch, RecordChange
from kymwatch.daemon.choice import IndexerChoice
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.schedule import Schedule, Task
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.daemon.status import DaemonState
from kymwatch.daemon.tables import TableKeeper
from kymwatch.daemon.worker import BatchResult, Worker
from kymwatch.store import IMAGES_DIR

__all__ = ["ChunkedIndexing"]

log = structlog.get_logger(__name__)

_SMALLEST_CHUNK = 20
_TRIM_AFTER = 50  # records in a chunk after which freed heap memory is returned
_PROGRESS_AFTER = 100  # reconcile work of at least this many records shows progress
HOLD_MOST_RECORDS = 1000
"""A backlog's held chunks are written once they hold this many records, whatever the
time (``backlog_write_s``): held rows are memory (a 10k store's first index held ~8,000
records at once, peak RSS 221 MiB against 179 with no holding)."""
GC_PAUSED_UP_TO = 16
"""Records in a chunk (an edit) during whose work Python's cyclic garbage collector
waits (:func:`gc_paused`)."""
_QUIET_STATE_UP_TO = _SMALLEST_CHUNK
"""Chunks of at most this many records do not publish the ``indexing`` state before
their work: they take milliseconds, and the status write (~1-2 ms) would sit between a
record becoming due and its table's replacement. Their status is written once, after
the tables (state ``watching`` again, with the chunk's outcomes); a heartbeat during a
long wait (a table lock held by another process) shows ``indexing``."""


class ChunkedIndexing:
    """Indexes record changes in chunks, with the loop's duties between chunks.

    Args:
        root: The store folder.
        config: The daemon's settings (chunk target, largest batch).
        clock: Monotonic clock.
        debouncer: Where work goes back (retries, interrupted work).
        worker: Indexes one chunk.
        reporter: Logs each chunk, shows progress, records errors.
        choice: Picks the indexers as the store reveals its data.
        tables: Regrows a table that vanished.
        schedule: The loop's deadlines (a reconcile to grow new tables).
        stale: Told which records were just indexed.
        stopping: Set when the daemon is asked to stop.
        table_lock: Takes the store's table lock; yields False if it was not
            obtained (the daemon is stopping).
        between: The loop's duties between two chunks, told whether chunks are left.
        request_rescan: Asks for a rescan (a failed chunk, a vanished store).
    """

    def __init__(
        self,
        root: Path,
        config: DaemonConfig,
        clock: Callable[[], float],
        debouncer: Debouncer,
        worker: Worker,
        reporter: Reporter,
        choice: IndexerChoice,
        tables: TableKeeper,
        schedule: Schedule,
        stale: StaleCounter,
        stopping: threading.Event,
        *,
        table_lock: Callable[[], contextlib.AbstractContextManager[bool]],
        between: Callable[[bool], None],
        request_rescan: Callable[[str], None],
    ) -> None:
        self.root, self.config, self.clock, self.debouncer = root, config, clock, debouncer
        self.worker, self.reporter, self.choice, self.tables = worker, reporter, choice, tables
        self.schedule, self.stale, self._stop = schedule, stale, stopping
        self._table_lock, self._between = table_lock, between
        self._request_rescan = request_rescan
        self.costs = planner.ChunkCosts()
        # Chunks whose rows are held, not written (Worker.process(hold=True)): their
        # batches (reported with the chunk that writes), since when, and the table lock
        # held from the first of them to that write.
        self._held: list[Batch] = []
        self._held_source = ""
        self._held_since: float | None = None
        self._held_lock: contextlib.ExitStack | None = None

    def index(
        self,
        changes: Sequence[RecordChange],
        first_seen: float,
        *,
        source: str,
        final: bool = False,
        due_by: Sequence[str] = (),
        progress: str | None = None,
        keep_held: bool = False,
    ) -> bool:
        """Index ``changes`` in chunks, with the loop's duties between chunks.

        ``due_by`` (from the debouncer: why each change became due, in their order) is
        reported on each chunk's ``batch_indexed`` line. Work of at least
        ``_PROGRESS_AFTER`` records named by ``progress`` (a first index, a reconcile)
        reports its progress after each chunk (status file, metrics, terminal bar).

        A stop request ends the work after the chunk in hand; the rest goes back to
        the debouncer, whose content is journaled at shutdown and re-indexed at the
        next start. Returns False if a chunk failed or the store vanished.

        While more records are due after a chunk (the rest of ``changes``, or records
        the debouncer holds due), the chunk's rows are held, not merged nor written, for at
        most ``config.backlog_write_s`` from the first such chunk: a burst writes each
        table once per that time, not once per chunk; the chunk that drains the backlog
        (or passes that time) writes them all, and its ``batch_indexed`` line reports
        every record they hold. Tables held at the end are written, unless
        ``keep_held`` (the loop indexes again at once: records are due) and records
        are due; otherwise a later call, or :meth:`flush`, writes them.
        """
        ok = True
        if changes:
            track = progress is not None and len(changes) >= _PROGRESS_AFTER
            if track:
                self.reporter.progress_start(str(progress), len(changes))
            try:
                ok = self._chunks(changes, first_seen, source, final, due_by, track)
            finally:
                if track:
                    self.reporter.progress_end()
        if not (keep_held and self._may_hold(more=False)):
            ok &= self.flush()
        return ok

    def flush(self) -> bool:
        """Write the tables of held chunks (if any), report them and release the table
        lock held for them; False if the write failed (a rescan then finds the records)."""
        if self._held_lock is None:
            return True
        batches, self._held = self._held, []
        try:
            try:
                result = self.worker.flush()
            except Exception as e:  # the records stay due: a rescan finds them
                self.reporter.batch_failed(e, sum(len(b) for b in batches))
                self._request_rescan("batch_failed")
                return False
            finally:
                self._release_held()
            if result is not None:
                self._report(batches, result, self._held_source)
            return True
        finally:
            self._held_since = None

    def _may_hold(self, *, more: bool) -> bool:
        """Whether a chunk's rows may be held, its tables unwritten: records are left to
        index at once (``more``, or due in the debouncer) and the first held chunk began
        less than ``backlog_write_s`` ago."""
        if self.config.backlog_write_s <= 0 or self._stop.is_set():
            return False
        now = self.clock()
        if self._held_since is not None and now - self._held_since >= self.config.backlog_write_s:
            return False
        if sum(len(b) for b in self._held) >= HOLD_MOST_RECORDS:
            return False
        if more:
            return True
        due = self.debouncer.next_deadline()
        return due is not None and due <= now

    def _release_held(self) -> None:
        stack, self._held_lock = self._held_lock, None
        if stack is not None:
            stack.close()

    def push_back(
        self, changes: Sequence[RecordChange], first_seen: float, *, delay_s: float = 0.0
    ) -> None:
        """The one place where work goes back into the debouncer: retries, a chunk
        interrupted by a stop, a store that vanished, a lock never obtained."""
        until = self.clock() + delay_s
        for change in changes:
            self.debouncer.defer(change, first_seen, until)

    def store_unavailable(self, changes: Sequence[RecordChange], first_seen: float) -> None:
        """images/ is gone (store moved, deleted, unmounted): absent records are not
        deleted ones. Keep the changes and the tables as they are; rescan with backoff."""
        log.error("store_unavailable", store=str(self.root), reason="images/ is missing")
        self.reporter.error("store_unavailable", store=str(self.root))
        self.reporter.set_state(DaemonState.STORE_UNAVAILABLE)
        self.push_back(changes, first_seen, delay_s=1.0)
        self._request_rescan("store_unavailable")

    def _chunks(
        self,
        changes: Sequence[RecordChange],
        first_seen: float,
        source: str,
        final: bool,
        due_by: Sequence[str],
        track: bool,
    ) -> bool:
        ok, i = True, 0
        while True:
            size = planner.chunk_size(
                self.costs,
                target_s=self.config.chunk_target_s,
                smallest=min(_SMALLEST_CHUNK, self.config.batch_records),
                largest=self.config.batch_records,
            )
            chunk = tuple(changes[i : i + size])
            if self._stop.is_set():
                self.push_back(changes[i:], first_seen)
                return False
            why = tuple(due_by[i : i + len(chunk)])
            hold = self._may_hold(more=i + len(chunk) < len(changes))
            batch = Batch(chunk, first_seen, why)
            ok &= self._chunk(batch, source=source, final=final, hold=hold)
            i += len(chunk)
            if track:
                self.reporter.progress_step(i)
            if len(chunk) >= _TRIM_AFTER:  # hand back what a big chunk freed (a few ms)
                memory.trim()
            self._between(i < len(changes))
            if i >= len(changes):
                return ok

    def _chunk(self, batch: Batch, *, source: str, final: bool, hold: bool) -> bool:
        if not (self.root / IMAGES_DIR).is_dir():
            self.store_unavailable(batch.changes, batch.first_seen)
            return False
        self.choice.decide(batch.changes)
        if self.tables.regrow():  # a table vanished between two reconciles
            self.schedule.at(Task.RECONCILE, self.clock())
        prev = self.reporter.state
        if prev is DaemonState.WATCHING:
            loud = len(batch) > _QUIET_STATE_UP_TO
            self.reporter.set_state(DaemonState.INDEXING, publish=loud)
        try:
            return self._work_on(batch, source=source, final=final, hold=hold)
        finally:  # back to watching: publishes the status with this chunk's outcomes
            if prev is DaemonState.WATCHING:
                self.reporter.set_state(DaemonState.WATCHING)

    def _work_on(self, batch: Batch, *, source: str, final: bool, hold: bool) -> bool:
        try:
            if hold and self._held_lock is None:  # held until the tables are written
                stack = contextlib.ExitStack()
                if not stack.enter_context(self._table_lock()):
                    stack.close()
                    self.push_back(batch.changes, batch.first_seen)
                    return False
                self._held_lock = stack
                self._held_since = self.clock()
            with self._table_lock() as locked:
                if not locked:  # stopping while a rebuild held the lock
                    self.push_back(batch.changes, batch.first_seen)
                    return False
                start = time.perf_counter()
                with gc_paused(len(batch) <= GC_PAUSED_UP_TO):
                    result = self.worker.process(batch, final=final, hold=hold)
        except Exception as e:  # one failed batch must not take the daemon down
            self.reporter.batch_failed(e, len(batch))
            self._request_rescan("batch_failed")
            if not self.worker.holding:  # the held rows were lost with it
                self._held.clear()
                self._release_held()
                self._held_since = None
            return False
        self.costs = self.costs.add(len(batch), time.perf_counter() - start)
        now = self.clock()
        for retry in result.retry:
            self.push_back((retry.change,), now, delay_s=retry.delay_s)
        if self.choice.widen(result.artifacts) and self.tables.regrow():
            self.schedule.at(Task.RECONCILE, self.clock())  # grow the new tables
        if result.held:
            if not self._held:
                self._held_source = source
            self._held.append(batch)
            return True
        batches, self._held = [*self._held, batch], []
        self._release_held()
        self._held_since = None
        self._report(batches, result, source)
        return True

    def _report(self, batches: Sequence[Batch], result: BatchResult, source: str) -> None:
        """Report the written chunks ``batches`` as one batch (``result`` covers them)."""
        if len(batches) == 1:
            batch = batches[0]
        else:
            changes = tuple(c for b in batches for c in b.changes)
            first = min(b.first_seen for b in batches)
            batch = Batch(changes, first, tuple(w for b in batches for w in b.due_by))
        self.reporter.batch_done(batch, result, source, len(self.debouncer))
        self.stale.mark(c.image_id for c in batch.changes)


@contextlib.contextmanager
def gc_paused(pause: bool) -> Iterator[None]:
    """With ``pause``, hold off Python's cyclic garbage collector for the block (it runs
    at the next allocation after it, if due).

    A full collection scans every object the process keeps and has not frozen: ~40,000
    in a ``kymwatch run`` daemon at 10k records until
    :func:`~kymwatch.daemon.memory.daemon_up` freezes them once it is up (15-43 ms with
    the GIL held; 90,000-170,000 and 40-100 ms in a process that also holds pandas and
    test code), a few hundred to ~2,000 after (1-6 ms; ``bench/ANALYSIS.md``, "Garbage
    collector, session 6"). A watching daemon allocates mostly while a batch works,
    so that is where a collection falls due; paused, it runs once the batch's tables are
    written. An edit allocates little; a long chunk (a burst, a reconcile) keeps the
    collector on: its garbage could grow.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
