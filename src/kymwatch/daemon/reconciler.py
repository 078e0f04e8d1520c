"""Reconcile passes: scan the disk, diff with the state, index the difference.

:class:`Reconciler` runs the reconciles that make the tables true whatever the events
said (at startup, periodically, for a sync, after lost events) and the rescans asked
for after a sign of loss (an overflow, a dead watcher, a failed batch, a vanished
store), spaced by a backoff. The diff is :mod:`~kymwatch.daemon.planner`'s; the
indexing, in chunks, is :class:`~kymwatch.daemon.indexing.ChunkedIndexing`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from kymwatch.daemon import planner
from kymwatch.daemon.changes import Batch
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.duties import Duties
from kymwatch.daemon.fingerprints import RecordFingerprints
from kymwatch.daemon.indexing import ChunkedIndexing
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.scaleout import cluster_reads
from kymwatch.daemon.schedule import Backoff, Schedule, Task
from kymwatch.daemon.sources import SourceKeeper
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonState, DaemonStatus
from kymwatch.daemon.tables import TableKeeper
from kymwatch.daemon.worker import Worker
from kymwatch.index import KymDataset
from kymwatch.store import IMAGES_DIR, iter_record_folders, scan_record

__all__ = ["Reconciler"]


class Reconciler:
    """Runs reconciles and the rescans asked for after a sign of loss.

    Args:
        root: The store folder.
        config: The daemon's settings (reconcile interval, rescan backoff, Dask).
        clock: Monotonic clock.
        kd: The dataset (read on a cluster when a reconcile is large).
        schedule: The loop's deadlines (the next reconcile and rescan).
        state: What the daemon indexed (the diff's other side).
        status: Counts the reconciles.
        tables: The tables' image ids; regrows a table that vanished.
        worker: Reconciles the manifest after each pass.
        reporter: Logs each pass.
        stale: Marked after a startup or periodic pass.
        source: The event source (watches renewed before a rescan).
        indexing: Indexes the difference in chunks.
        duties: The loop's duties, run between cluster reads.
        stopping: Set when the daemon is asked to stop.
        relock: Locks the store folder again if it was replaced.
    """

    def __init__(
        self,
        root: Path,
        config: DaemonConfig,
        clock: Callable[[], float],
        kd: KymDataset,
        schedule: Schedule,
        state: IndexState,
        status: DaemonStatus,
        tables: TableKeeper,
        worker: Worker,
        reporter: Reporter,
        stale: StaleCounter,
        source: SourceKeeper,
        indexing: ChunkedIndexing,
        duties: Duties,
        stopping: threading.Event,
        *,
        relock: Callable[[], None],
    ) -> None:
        self.root, self.config, self.clock, self.kd = root, config, clock, kd
        self.schedule, self.state, self.status, self.tables = schedule, state, status, tables
        self.worker, self.reporter, self.stale, self.source = worker, reporter, stale, source
        self.indexing, self.duties, self._stop, self._relock = indexing, duties, stopping, relock
        self._rescans = Backoff(*config.rescan_backoff_s)
        self.rescan_reason: str | None = None
        """Why a rescan was asked for and not yet done (None: no sign of loss)."""

    def request_rescan(self, reason: str) -> None:
        """Ask for a rescan (as soon as the backoff allows; the first reason is kept)."""
        self.rescan_reason = self.rescan_reason or reason
        self.schedule.no_later_than(Task.RESCAN, self._rescans.ready_at())

    def rescan(self, now: float) -> None:
        """Renew the event source's watches and reconcile (a rescan that became due)."""
        reason, self.rescan_reason = self.rescan_reason or "rescan", None
        self.schedule.cancel(Task.RESCAN)
        self._rescans.fired(now)
        self.source.rewatch()
        self.reconcile(reason)

    def reconcile(self, reason: str, *, pending: Batch | None = None) -> bool:
        """Scan the disk, diff with the state and index the difference.

        ``pending`` (debounced changes taken out for a sync) is merged in, so each
        record is indexed once, and makes the pass final (no retries). Returns False
        if the store was unavailable or a chunk failed.
        """
        start = time.perf_counter()
        now = self.clock()
        self.schedule.at(Task.RECONCILE, now + self.config.reconcile_interval_s)
        first_seen = pending.first_seen if pending else now
        if not (self.root / IMAGES_DIR).is_dir():
            self.indexing.store_unavailable(pending.changes if pending else (), first_seen)
            return False
        self._relock()
        self.tables.regrow()
        skipped: list[str] = []
        disk = _scan(self.root, skipped)
        changes = planner.plan_reconcile(
            disk,
            self.state.records,
            table_ids=self.tables.image_ids(),
            suspects=self.state.suspects,
            pending=pending.changes if pending else (),
        )
        on_disk = len(disk)
        del disk  # not held while the changes are indexed
        self.state.suspects = set()
        self.status.counters["reconciles"] += 1
        what = "first index" if not self.state.records else f"reconcile ({reason})"
        with cluster_reads(
            self.kd,
            self.config.dask,
            [c.image_id for c in changes],
            threshold=self.config.dask_threshold,
            slice_s=self.config.chunk_target_s,
            between=self.duties.run,
            stopping=self._stop,
        ):
            ok = self.indexing.index(
                changes, first_seen, source=reason, final=pending is not None, progress=what
            )
        self.worker.reconcile_manifest()
        if reason in ("startup", "periodic"):  # (the changes of others are marked per batch)
            self.stale.mark_all()
        if self.reporter.state is DaemonState.STORE_UNAVAILABLE and ok:
            self.reporter.set_state(DaemonState.WATCHING)
        self.reporter.folders_skipped(skipped)
        self.reporter.reconciled(
            reason,
            records=on_disk,
            changed=len(changes),
            duration_s=time.perf_counter() - start,
        )
        return ok


def _scan(root: Path, skipped: list[str]) -> RecordFingerprints:
    """Fingerprints of every artifact on disk, held packed as the state's are (a 10k
    store's as dicts of fingerprint objects were ~15 MiB at the reconcile's peak)."""
    disk = RecordFingerprints()
    for image_id, path in iter_record_folders(root, skipped):
        disk[image_id] = scan_record(Path(path))
    return disk
