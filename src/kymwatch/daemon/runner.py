"""The daemon: event source → classify → debounce → worker, with reconcile as the truth."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import structlog

from kymwatch.daemon.changes import RECORD_METADATA, Batch, FileChange, RecordChange, Rescan
from kymwatch.daemon.classify import SyncRequest, classify
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.instance import DaemonLock
from kymwatch.daemon.reconcile import diff_fingerprints
from kymwatch.daemon.sdnotify import Notifier, SystemdNotifier
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonStatus
from kymwatch.daemon.sync import answer_sync
from kymwatch.daemon.watcher import (
    EventSink,
    EventSource,
    InotifyWatcher,
    PollingWatcher,
    inotify_available,
    network_fs_type,
)
from kymwatch.daemon.worker import BatchResult, Worker
from kymwatch.errors import UnsafeStoreError
from kymwatch.index import (
    UNDECIDED,
    DatasetIndexer,
    KymDataset,
    ManifestIndexer,
    decide_from_artifacts,
    make_indexers,
    record_artifact_names,
    select_indexers,
)
from kymwatch.store import (
    IMAGES_DIR,
    INDEX_DIR,
    TABLES_DIR,
    remove_stale_temporaries,
    scan_dataset,
    utc_now_iso,
)

__all__ = ["Daemon", "SourceFactory"]

log = structlog.get_logger(__name__)

SourceFactory = Callable[[Path, EventSink], EventSource]
_Item = FileChange | Rescan | None


class Daemon:
    """Keeps one store's tables equal to a fresh rebuild while writers change it.

    Args:
        config: What to watch and how.
        source_factory: Builds the event source (default: inotify, or polling when
            asked or when the store is on a network file system). Tests pass a
            scripted source here.
        clock: Monotonic clock.
        notifier: systemd notifications (default: from the environment; no-op
            outside systemd).
        indexers: Indexers to run (default: ``config.indexers``, else chosen from what
            the store holds).
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        source_factory: SourceFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
        indexers: list[DatasetIndexer] | None = None,
    ) -> None:
        self.config = config
        self.root = Path(config.store).resolve()
        self.clock = clock
        for own in (TABLES_DIR, INDEX_DIR):
            if (self.root / own).is_symlink():
                raise UnsafeStoreError(
                    f"{self.root / own} is a symbolic link; kymwatch writes only inside "
                    "the store and will not follow it"
                )
        self.notifier: Notifier = notifier or SystemdNotifier.from_env()
        if indexers is None:
            selection = select_indexers(self.root, config.indexers)
            indexers, reason = make_indexers(selection), selection.reason
        else:
            reason = "given"
        self._undecided = reason == UNDECIDED  # narrowed by the first artifacts
        self.kd = KymDataset(self.root, "a", indexers=indexers)
        self.status = DaemonStatus(store=str(self.root))
        self.status.indexers = [ix.name for ix in self.kd.indexers]
        self.status.indexers_reason = reason
        self.debouncer = Debouncer(config.quiet_s, config.max_delay_s)
        self.state = IndexState()
        self.worker = Worker(
            self.kd,
            self.state,
            self.debouncer,
            clock,
            retry_delays=config.retry_delays_s,
            manifest=ManifestIndexer(self.root, create=config.manifest),
        )
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._source_factory = source_factory
        self._source: EventSource | None = None
        self._rescan_reason: str | None = None
        self._rescan_backoff = config.rescan_backoff_s[0]
        self._last_rescan = -1e18
        self._last_reconcile = 0.0
        self._last_state_save = 0.0
        self._last_status = -1e18
        self._last_ping = -1e18
        self._syncs: list[str] = []
        self._reported_skips: set[str] = set()
        self._lock = DaemonLock(self.root)

    # -- public ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and exit (thread- and signal-safe)."""
        self._stop.set()
        self._queue.put(None)

    def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when on the main thread).

        Raises:
            DaemonRunningError: another daemon already watches this store.
        """
        self._lock.acquire()
        try:
            with self._signals():
                self._run_locked()
        finally:
            self._lock.release()

    # -- lifecycle ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("stop_requested", signal=signal.Signals(signum).name)
            self.stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _run_locked(self) -> None:
        self._set_state("starting")
        with self.kd.store.table_lock():
            for tmp in remove_stale_temporaries(self.kd.store.tables_path):
                log.info("stale_temporary_removed", path=str(tmp))
        self._load_state()
        self._source = self._make_source()
        try:
            self._source.start()
            self.status.watches = self._source.watch_count
            log.info(
                "daemon_started",
                store=str(self.root),
                pid=os.getpid(),
                watch_mode=self.status.watch_mode,
                watches=self.status.watches,
                indexers=self.status.indexers,
                indexers_reason=self.status.indexers_reason,
                quiet_ms=round(self.config.quiet_s * 1000),
                max_delay_ms=round(self.config.max_delay_s * 1000),
            )
            self._set_state("reconciling")
            self._reconcile("startup")
            self._set_state("watching")
            self.notifier.ready(self._status_line())
            self._loop()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._set_state("stopping")
        self.notifier.stopping()
        if self._source is not None:
            self._source.stop()
        self._save_state(force=True)
        self.status.state = "stopped"
        self.status.queue_depth = len(self.debouncer)
        self.status.write(self.root)
        log.info("daemon_stopped", pending=len(self.debouncer), **self.status.counters)

    def _make_source(self) -> EventSource:
        sink = self._queue.put
        if self._source_factory is not None:
            self.status.watch_mode = "custom"
            return self._source_factory(self.root, sink)
        fs_type = network_fs_type(self.root)
        reason = (
            "requested" if self.config.polling
            else f"network file system ({fs_type})" if fs_type
            else "inotify unavailable" if not inotify_available()
            else None
        )  # fmt: skip
        if reason is None:
            self.status.watch_mode = "inotify"
            return InotifyWatcher(self.root, sink)
        if reason != "requested":
            log.warning("polling_fallback", reason=reason, interval_s=self.config.poll_interval_s)
        self.status.watch_mode = "polling"
        return PollingWatcher(self.root, sink, self.config.poll_interval_s)

    def _load_state(self) -> None:
        loaded = IndexState.load(self.root)
        self.state.records, self.state.schema_versions = loaded.records, loaded.schema_versions
        self.state.suspects = loaded.suspects
        for ix in self.kd.indexers:
            known = self.state.schema_versions.get(ix.name)
            if self.state.records and known != ix.schema_version:
                self._rebuild(ix, "schema_changed")
            self.state.schema_versions[ix.name] = ix.schema_version

    def _rebuild_missing_tables(self) -> None:
        """A table deleted behind our back is rebuilt whole, not re-grown from one batch."""
        for ix in self.kd.indexers:
            if self.state.records and not self.kd.store.table_path(ix.table_name).exists():
                self._rebuild(ix, "table_missing")

    def _rebuild(self, ix: DatasetIndexer, reason: str) -> None:
        report = self.kd.rebuild_report(ix)
        log.info(
            "table_rebuilt",
            table=ix.table_name,
            indexer=ix.name,
            reason=reason,
            rows=report.table_rows,
        )

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            items = self._wait(self._timeout())
            now = self.clock()
            for item in items:
                self._accept(item, now)
            if self._stop.is_set():
                break
            if self._syncs:
                self._answer_syncs()
            elif (
                self._rescan_reason is not None and now - self._last_rescan >= self._rescan_backoff
            ):
                self._rescan(now)
            elif now - self._last_reconcile >= self.config.reconcile_interval_s:
                self._reconcile("periodic")
            batch = self.debouncer.due(self.clock())
            if batch:
                self._process(batch)
            self._housekeeping()

    def _timeout(self) -> float:
        now = self.clock()
        deadlines = [
            self._last_status + self.status.heartbeat_s,
            self._last_reconcile + self.config.reconcile_interval_s,
        ]
        if (d := self.debouncer.next_deadline()) is not None:
            deadlines.append(d)
        if self._rescan_reason is not None:
            deadlines.append(self._last_rescan + self._rescan_backoff)
        if (ping := self.notifier.watchdog_interval()) is not None:
            deadlines.append(self._last_ping + ping)
        return max(0.0, min(deadlines) - now)

    def _wait(self, timeout: float) -> list[_Item]:
        items: list[_Item] = []
        try:
            items.append(
                self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            )
        except queue.Empty:
            return items
        with contextlib.suppress(queue.Empty):
            while len(items) < 100_000:
                items.append(self._queue.get_nowait())
        return items

    def _accept(self, item: _Item, now: float) -> None:
        if item is None:
            return
        if isinstance(item, Rescan):
            if item.reason != "poll":
                self.status.counters["lost_event_signals"] += 1
                self.status.error("events_lost", reason=item.reason)
            self._rescan_reason = self._rescan_reason or item.reason
            return
        self.status.counters["events"] += 1
        what = classify(self.root, item)
        if isinstance(what, SyncRequest):
            self._syncs.append(what.token)
        elif isinstance(what, RecordChange) and (
            what.artifacts != RECORD_METADATA or self.worker.wants_record_metadata()
        ):
            log.debug(
                "artifact_changed", image_id=what.image_id, path=item.path, kind=item.kind.value
            )
            self.debouncer.feed(what, now)

    # -- reconcile ------------------------------------------------------------------------
    def _rescan(self, now: float) -> None:
        reason, self._rescan_reason = self._rescan_reason or "rescan", None
        if reason != "poll":
            quiet_since = now - self._last_rescan
            low, high = self.config.rescan_backoff_s
            calm = quiet_since > high * 2
            self._rescan_backoff = low if calm else min(self._rescan_backoff * 2, high)
            if self._source is not None:
                self._source.rewatch()
                self.status.watches = self._source.watch_count
        self._last_rescan = now
        self._reconcile(reason)

    def _reconcile(self, reason: str, *, pending: Batch | None = None) -> bool:
        """Scan the disk, diff with the state and index the difference.

        ``pending`` (debounced changes taken out for a sync) is merged in, so each
        record is indexed once. Returns False if the store was unavailable or a
        batch failed.
        """
        start = time.perf_counter()
        self._last_reconcile = self.clock()
        if not (self.root / IMAGES_DIR).is_dir():
            log.error("store_unavailable", store=str(self.root), reason="images/ is missing")
            self.status.error("store_unavailable", store=str(self.root))
            self._set_state("store_unavailable")
            self._rescan_reason = self._rescan_reason or "store_unavailable"
            if pending:  # keep them for when the store is back
                for c in pending.changes:
                    self.debouncer.feed(c, pending.first_seen)
            return False
        self._rebuild_missing_tables()
        skipped: list[str] = []
        disk = scan_dataset(self.root, skipped)
        changes = diff_fingerprints(disk, self.state.records)
        # Rows of records that exist neither on disk nor in the state (e.g. the state
        # was lost while they were deleted) are stale too.
        queued = {c.image_id for c in changes}
        stale = (self._table_image_ids() - disk.keys() | self.state.suspects) - queued
        self.state.suspects = set()
        changes = sorted([*changes, *(RecordChange(i) for i in stale)], key=lambda c: c.image_id)
        self.status.counters["reconciles"] += 1
        final = pending is not None
        if pending:
            merged = {c.image_id: c for c in pending.changes}
            for c in changes:
                merged[c.image_id] = merged[c.image_id].merge(c) if c.image_id in merged else c
            changes = [merged[i] for i in sorted(merged)]
        first_seen = pending.first_seen if pending else self.clock()
        ok = True
        for i in range(0, len(changes), self.config.batch_records):
            if self._stop.is_set() and pending is None:
                break  # the rest is picked up by the next start's reconcile
            chunk = tuple(changes[i : i + self.config.batch_records])
            ok &= self._process(Batch(chunk, first_seen), source=reason, final=final)
            self._housekeeping()
        self.worker.reconcile_manifest()
        if self.status.state == "store_unavailable":
            self._set_state("watching")
            self._relock()
        for path in skipped:
            if path not in self._reported_skips:
                self._reported_skips.add(path)
                log.warning("record_folder_skipped", path=path, reason=_skip_reason(path))
        level = log.info if changes or reason not in ("poll", "periodic") else log.debug
        level(
            "reconcile_done",
            reason=reason,
            records=len(disk),
            changed=len(changes),
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
        )
        return ok

    def _relock(self) -> None:
        """Take the daemon lock again if its file vanished with a deleted store that
        was then restored: otherwise a second daemon could start on it."""
        if not self._lock.retake():
            log.error("daemon_lock_lost", store=str(self.root))
            self.status.error("daemon_lock_lost")
            self.stop()

    def _table_image_ids(self) -> set[str]:
        """Every image_id present in any table (tables are cached between changes)."""
        ids: set[str] = set()
        for ix in self.kd.indexers:
            try:
                ids.update(str(i) for i in self.kd.get_table(ix.table_name)["image_id"].dropna())
            except MemoryError:
                raise
            except Exception:  # noqa: S112 - unreadable: the worker rebuilds it, logging why
                continue
        return ids

    # -- indexing -------------------------------------------------------------------------
    def _process(self, batch: Batch, *, source: str = "events", final: bool = False) -> bool:
        if not (self.root / IMAGES_DIR).is_dir():
            # The store is gone or moved: absent records are not deleted ones. Keep the
            # changes for when it is back, and keep the tables as they are.
            for change in batch.changes:
                self.debouncer.defer(change, batch.first_seen, self.clock() + 1.0)
            self._rescan_reason = self._rescan_reason or "store_unavailable"
            return False
        if self._undecided:
            self._decide_indexers(batch)
        prev_state = self.status.state
        self._set_state("indexing")
        try:
            result = self.worker.process(batch, final=final)
        except Exception as e:  # one failed batch must not take the daemon down
            log.exception("batch_failed", records=len(batch), error=str(e))
            self.status.counters["batch_failures"] += 1
            self.status.error("batch_failed", error=str(e), records=len(batch))
            self._rescan_reason = self._rescan_reason or "batch_failed"
            return False
        finally:
            self._set_state(prev_state if prev_state != "indexing" else "watching")
        self._record(batch, result, source)
        return True

    def _decide_indexers(self, batch: Batch) -> None:
        """On a store that had no data at start, switch to the generation(s) its first
        artifacts belong to (see ``kymwatch.index.registry``)."""
        names: set[str] = set()
        for change in batch.changes:
            if change.artifacts is None:
                names |= record_artifact_names(self.root / IMAGES_DIR / change.image_id)
            else:
                names |= change.artifacts
        selection = decide_from_artifacts(names)
        if selection is None:
            return
        self._undecided = False
        current = {ix.name: ix for ix in self.kd.indexers}
        self.kd.indexers = [current.get(n) or make_indexers([n])[0] for n in selection]
        for ix in self.kd.indexers:
            self.state.schema_versions[ix.name] = ix.schema_version
        self.worker.refresh_indexers()
        self.status.indexers = [ix.name for ix in self.kd.indexers]
        self.status.indexers_reason = selection.reason
        log.info("indexers_selected", indexers=self.status.indexers, reason=selection.reason)
        self.status.write(self.root)

    def _record(self, batch: Batch, result: BatchResult, source: str) -> None:
        c = self.status.counters
        c["batches"] += 1
        c["records_indexed"] += result.records
        c["rows_written"] += result.rows_written
        c.update(result.outcomes)
        for o in result.problems:
            self.status.error(o.status.value, image_id=o.image_id, indexer=o.indexer, path=o.path)
        if result.tables:
            self.status.last_update_utc = utc_now_iso()
        self.status.queue_depth = len(self.debouncer)
        log.info(
            "batch_indexed",
            source=source,
            records=result.records,
            rows=result.rows_written,
            tables=result.tables,
            duration_ms=result.duration_ms,
            lag_ms=round((self.clock() - batch.first_seen) * 1000, 1),
            queue_depth=len(self.debouncer),
            retries=result.retries,
            **dict(result.outcomes),
        )

    def _answer_syncs(self) -> None:
        tokens, self._syncs = list(dict.fromkeys(self._syncs)), []
        ok = self._reconcile("sync", pending=self.debouncer.flush())
        self._save_state(force=True)
        errors = self.status.last_errors
        error = None if ok else (errors[-1]["event"] if errors else "failed")
        for token in tokens:
            answer_sync(self.root, token, ok=ok, error=error)
        log.info("sync_answered", requests=len(tokens), ok=ok)

    # -- bookkeeping ----------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = self.clock()
        self._save_state()
        if (
            ping := self.notifier.watchdog_interval()
        ) is not None and now - self._last_ping >= ping:
            self.notifier.watchdog()
            self._last_ping = now
        if now - self._last_status >= self.status.heartbeat_s:
            self._publish_status(now)

    def _save_state(self, *, force: bool = False) -> None:
        now = self.clock()
        if self.state.dirty and (
            force or now - self._last_state_save >= self.config.state_save_interval_s
        ):
            self.state.save(self.root)
            self._last_state_save = now

    def _set_state(self, state: str) -> None:
        if state != self.status.state:
            self.status.state = state
            self._publish_status(self.clock())

    def _publish_status(self, now: float) -> None:
        self.status.queue_depth = len(self.debouncer)
        if self._source is not None:
            self.status.watches = self._source.watch_count
        self.status.write(self.root)
        self.notifier.status(self._status_line())
        self._last_status = now

    def _status_line(self) -> str:
        s = self.status
        last = s.last_update_utc or "never"
        indexed = s.counters["records_indexed"]
        return f"{s.state}; queue {s.queue_depth}; last update {last}; indexed {indexed}"


def _skip_reason(path: str) -> str:
    name = os.path.basename(path)
    if os.path.islink(path):
        return "symbolic links are not followed"
    if not os.path.isdir(path):
        return "not a folder"
    return f"{name!r} is not a valid image id (letters, digits, '.', '_', '-'; no leading '.')"
