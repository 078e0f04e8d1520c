"""The daemon's configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kymwatch.daemon.worker import DEFAULT_RETRY_DELAYS
from kymwatch.index.distributed import ClusterSpec

__all__ = ["DaemonConfig"]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How a daemon watches one store.

    Every duration is validated: finite, and positive where zero means nothing
    (a nan or infinite interval would spin the loop or switch a safety net off).

    Attributes:
        store: The dataset folder.
        quiet_s: A record is indexed after this long without a new change, unless
            its writer said it is done (see ``settle_s``).
        settle_s: A record whose writes are all complete (renamed into place, or
            closed after writing: inotify only) is indexed after this long without
            a new change.
        max_delay_s: ... and at the latest this long after its first pending change.
        polling: Poll instead of using inotify; also chosen automatically on FUSE
            and network file systems, where inotify cannot see writes made elsewhere.
        inotify: Use inotify even on a FUSE or network file system (``--inotify``:
            one known to see only local writes).
        poll_interval_s: Shortest time between polls; the interval grows with the
            measured cost of a poll (about 1 % of the wall time), up to
            ``poll_max_interval_s``.
        poll_max_interval_s: Longest time between polls.
        poll_full_every: When polling, every record's artifacts are fingerprinted
            once every this many polls (a file rewritten in place changes no
            folder's mtime).
        reconcile_interval_s: Seconds between periodic full reconcile scans.
        rescan_backoff_s: (first, maximum) delay between rescans in a storm.
        state_save_interval_s: Minimum seconds between state saves while busy.
        batch_records: Largest number of records indexed in one table write.
        chunk_target_s: Long work (a first index, a big reconcile or burst) is cut
            into chunks of about this duration; between chunks the loop sends its
            heartbeat and watchdog ping and honours a stop request.
        backlog_write_s: While records stay due after a chunk (a burst, a first
            index), its rows are held in memory, not merged nor written, until the backlog
            is drained or this long after the first such chunk began: one table write
            for several chunks (the table lock is held meanwhile). 0: every chunk
            writes its tables.
        table_lock_wait_s: Longest single wait for the table lock (held by a
            ``kymwatch rebuild`` in another process); the loop keeps its heartbeat
            between waits.
        watcher_check_s: Seconds between checks that the event source still runs.
        retry_delays_s: Backoff before each retry of an unreadable artifact.
        manifest: Create kymflow's ``index/manifest.json.gz`` if the store has
            none (a manifest the store has is always kept up to date).
        indexers: Names of the indexers to run (``--indexers``); None chooses them
            from what the store holds (see ``kymwatch.index.select_indexers``).
        dask: A Dask cluster (``--dask``) that reads the records of a first index or
            a reconcile of at least ``dask_threshold`` records (None: always local).
        dask_threshold: Fewest changed records read on the cluster.
        partition_rows: A table of at least this many rows is kept as parts
            (``tables/<name>/part-*.parquet``), one edit rewriting one part; 0: never.
        part_rows: Rows per part when a table is (re)partitioned.
        export_interval_s: Least time between two rewrites of a partitioned table's
            single file ``tables/<name>.parquet`` while edits go on (it is also
            rewritten once the daemon has been idle for ``export_idle_s``, on sync
            and at stop).
        export_idle_s: How long the daemon must have been idle (no batch) before a
            partitioned table's single file is exported ahead of ``export_interval_s``:
            under a steady stream of edits the export's encode (~150-250 ms at 500k
            rows) would otherwise follow every edit and hold up the next.

    Raises:
        ValueError: A number is nan, infinite, negative, or zero where that is
            meaningless, ``max_delay_s < quiet_s``, or both ``polling`` and ``inotify``.
    """

    store: Path
    quiet_s: float = 0.3
    settle_s: float = 0.02
    max_delay_s: float = 5.0
    polling: bool = False
    inotify: bool = False
    poll_interval_s: float = 2.0
    poll_max_interval_s: float = 30.0
    poll_full_every: int = 30
    reconcile_interval_s: float = 600.0
    rescan_backoff_s: tuple[float, float] = (1.0, 60.0)
    state_save_interval_s: float = 2.0
    batch_records: int = 1000
    chunk_target_s: float = 0.5
    backlog_write_s: float = 1.5
    table_lock_wait_s: float = 0.25
    watcher_check_s: float = 1.0
    retry_delays_s: tuple[float, ...] = field(default=DEFAULT_RETRY_DELAYS)
    manifest: bool = False
    indexers: tuple[str, ...] | None = None
    dask: ClusterSpec | None = None
    dask_threshold: int = 10_000
    partition_rows: int = 0
    part_rows: int = 25_000
    export_interval_s: float = 5.0
    export_idle_s: float = 1.0

    def __post_init__(self) -> None:
        positive = {
            "max_delay_s": self.max_delay_s,
            "poll_interval_s": self.poll_interval_s,
            "poll_max_interval_s": self.poll_max_interval_s,
            "poll_full_every": self.poll_full_every,
            "reconcile_interval_s": self.reconcile_interval_s,
            "chunk_target_s": self.chunk_target_s,
            "table_lock_wait_s": self.table_lock_wait_s,
            "watcher_check_s": self.watcher_check_s,
            "batch_records": self.batch_records,
            "dask_threshold": self.dask_threshold,
            "part_rows": self.part_rows,
        }
        not_negative = {
            "quiet_s": self.quiet_s,
            "settle_s": self.settle_s,
            "state_save_interval_s": self.state_save_interval_s,
            "backlog_write_s": self.backlog_write_s,
            "partition_rows": self.partition_rows,
            "export_interval_s": self.export_interval_s,
            "export_idle_s": self.export_idle_s,
            **{f"rescan_backoff_s[{i}]": v for i, v in enumerate(self.rescan_backoff_s)},
            **{f"retry_delays_s[{i}]": v for i, v in enumerate(self.retry_delays_s)},
        }
        for name, value in (positive | not_negative).items():
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        for name, value in not_negative.items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
        if self.polling and self.inotify:
            raise ValueError("polling and inotify cannot both be asked for")
        if self.max_delay_s < self.quiet_s:
            raise ValueError("max_delay_s must be at least quiet_s")
        if len(self.rescan_backoff_s) != 2 or self.rescan_backoff_s[0] > self.rescan_backoff_s[1]:
            raise ValueError("rescan_backoff_s must be (first, maximum) with first <= maximum")
