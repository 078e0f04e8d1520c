"""Publishing tables: each table's in-memory copy kept equal to its files.

:class:`Publisher` reads a table (from its cache while the files did not change:
another process may write them; a table in another program's schema is adopted),
merges an indexer's extracted records into it (:mod:`~kymwatch.index.tablework`),
writes the changed tables on the writer threads (a partitioned table: the parts the
merge touched, :mod:`~kymwatch.index.parted`), keeps the cache in step with what was
written, and exports the single file of partitioned tables; :func:`report_of` tells
what a published table's records became. Callers hold the store's table lock around a
merge, its start and its finish.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kymwatch.errors import TableNotFoundError, TableUnreadableError
from kymwatch.index.arrow_schema import empty_arrow
from kymwatch.index.base import DatasetIndexer, RecordOutcome, UpdateReport
from kymwatch.index.batch import Extracted
from kymwatch.index.frames import with_pandas_metadata
from kymwatch.index.parted import ExportJob, PartedTables
from kymwatch.index.partition import PartPlan, plan_parts
from kymwatch.index.schema import Coercions
from kymwatch.index.tablework import adopt, merge_rebuild, merge_update
from kymwatch.store import (
    Fingerprint,
    SortedTable,
    ZarrDataset,
    read_table_arrow,
    start_table_writes,
    sync_table_folders,
    table_fingerprint,
)
from kymwatch.store.engine import CHUNK_ROWS
from kymwatch.store.grouped import (
    BURST_RECORDS,
    GroupedFile,
    read_layout,
    start_grouped_write,
)
from kymwatch.store.tables import LazyPool

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ONE_BY_ONE_RECORDS", "Held", "Merged", "Publisher", "Writing", "report_of"]

log = structlog.get_logger(__name__)

ONE_BY_ONE_RECORDS = BURST_RECORDS
"""A batch of at most this many records (an edit) writes its tables one after another,
smallest first (see :meth:`Publisher.publish`), and each in the row groups it touched
(:mod:`kymwatch.store.grouped`, which draws the same line)."""


@dataclass(frozen=True, slots=True)
class Merged:
    """One indexer's merged table, before it is published."""

    ix: DatasetIndexer
    ids: list[str]
    results: Sequence[Extracted]
    table: SortedTable
    changed: bool
    start: float
    previous: SortedTable
    touched: frozenset[str] | None  # records whose rows were replaced (None: all)


@dataclass(frozen=True, slots=True)
class Writing:
    """A merged table whose files are being written."""

    merged: Merged
    plan: PartPlan | None
    futures: Sequence[Future[Fingerprint]] | Sequence[Future[GroupedFile | Fingerprint]]
    paths: list[Path]


@dataclass(frozen=True, slots=True)
class Held:
    """One table's results held, not merged yet (see :meth:`Publisher.publish`)."""

    ix: DatasetIndexer
    ids: list[str]
    results: list[Extracted]
    start: float
    id_set: set[str]

    def joined(
        self, ids: list[str], results: Sequence[Extracted]
    ) -> tuple[list[str], list[Extracted]]:
        """The held ids and results followed by ``ids`` and ``results``."""
        return [*self.ids, *ids], [*self.results, *results]


class Publisher:
    """The tables of one store as cached, merged and written.

    Args:
        store: The dataset whose ``tables/`` are read and written.
        parted: Its partitioned tables.
        indexers: The indexers now in use (read at each call: they may change).
        export_all: Exports every partitioned table; called after each write when
            the policy exports at once (``export_interval_s`` 0: a library's tables).
    """

    def __init__(
        self,
        store: ZarrDataset,
        parted: PartedTables,
        indexers: Callable[[], Sequence[DatasetIndexer]],
        export_all: Callable[[], object],
    ) -> None:
        self.store, self.parted, self._indexers = store, parted, indexers
        self._export_all = export_all
        self.tables: dict[str, SortedTable] = {}
        self.frames: dict[str, tuple[Fingerprint | None, pd.DataFrame]] = {}
        self.stamps: dict[str, Fingerprint | None] = {}
        self.part_stamps: dict[str, Fingerprint | None] = {}
        self.foreign: set[str] = set()  # tables read in another program's schema
        # The single file of each partitioned table as the last export wrote it (it may
        # land on the exporter thread, before the daemon's state has noted it).
        self.exported: dict[str, Fingerprint] = {}
        # The row groups of each single-file table as last written here (valid while
        # its stamp is the table's): an edit re-encodes only the groups it touched.
        self.layouts: dict[str, GroupedFile] = {}
        # Results held for a table, not merged yet (``publish(hold=True)``), by table
        # name: the next publish without ``hold`` merges them, with its own, and writes.
        self.held: dict[str, Held] = {}
        self.written_held: list[str] = []  # held tables the last publish wrote

    def indexer_for_table(self, name: str) -> DatasetIndexer | None:
        """The indexer that owns table ``name`` (None: no indexer in use does)."""
        return next((ix for ix in self._indexers() if ix.table_name == name), None)

    def read(self, name: str) -> SortedTable:
        """The table as on disk now (typed and sorted), from cache when the file did not
        change."""
        path = self.store.table_path(name)
        stamp, parts = table_fingerprint(path), self.parted.stamp(name)
        if (
            name in self.tables
            and stamp == self.stamps.get(name)
            and parts == self.part_stamps.get(name)
        ):
            return self.tables[name]
        ix = self.indexer_for_table(name)
        self.foreign.discard(name)
        self.frames.pop(name, None)
        self.layouts.pop(name, None)
        raw = self.parted.read(name)
        self.part_stamps[name] = self.parted.stamp(name)
        if raw is not None:
            st, _ = adopt(raw, ix, Coercions())
        elif stamp is None:
            if ix is None:
                raise TableNotFoundError(f"no table {name!r} in {self.store.path}")
            st = SortedTable.of(empty_arrow(ix.columns), (), (0,))
        else:
            coerced = Coercions()
            on_disk = read_table_arrow(path, chunk_rows=CHUNK_ROWS)
            st, foreign = adopt(on_disk, ix, coerced)
            coerced.log(table=name, path=str(path))
            if foreign:
                # e.g. kymflow's object columns or appended rows: adopted (typed, sorted
                # once), rewritten in our schema by the next update even if no row changes.
                self.foreign.add(name)
            elif ix is not None:
                # the rows as in the file: its row groups may be copied by the next edit
                layout = read_layout(path, st, stamp, on_disk.schema)
                if layout is not None:
                    self.layouts[name] = layout
        self.tables[name], self.stamps[name] = st, stamp
        return st

    def read_for_update(self, ix: DatasetIndexer, *, replace_all: bool) -> SortedTable:
        """The current table; for a rebuild, an unparseable table file counts as empty."""
        try:
            return self.read(ix.table_name)
        except MemoryError:
            raise
        except Exception as e:  # any parse failure: the file is not a table we can read
            path = str(self.store.table_path(ix.table_name))
            if not replace_all:
                raise TableUnreadableError(f"table file {path} cannot be read: {e}") from e
            log.warning("table_unreadable", table=ix.table_name, path=path, error=str(e))
            return SortedTable.of(empty_arrow(ix.columns), (), (0,))

    def merge(
        self,
        ix: DatasetIndexer,
        ids: list[str],
        results: Sequence[Extracted],
        *,
        replace_all: bool,
        start: float,
    ) -> Merged:
        """The new table of ``ix`` (under the table lock) and whether to write it."""
        current = self.read_for_update(ix, replace_all=replace_all)
        if replace_all:
            table = merge_rebuild(current, results, ix)
            return Merged(ix, ids, results, table, True, start, current, None)
        # Rewrite only when the content differs: re-indexing unchanged records is a no-op.
        name = ix.table_name
        must = name in self.foreign
        must = must or (self.stamps.get(name) is None and self.part_stamps.get(name) is None)
        touched = frozenset(o.image_id for o, _ in results if not o.keeps_old_rows)
        if not must and _no_rows_before_or_after(current, results):
            # e.g. kym_radon for a generation-1 radon edit (both read radon_report): no
            # merge, whose typing pass over the table would hold the GIL while the other
            # table's writer thread waits to start
            return Merged(ix, ids, results, current, False, start, current, touched)
        table, changed = merge_update(current, results, ix)
        changed = changed or must
        table = table if changed else current
        return Merged(ix, ids, results, table, changed, start, current, touched)

    def start(self, m: Merged) -> Writing | None:
        """Start writing a changed table on the writer threads (a partitioned one: the
        parts the merge touched, after raising its layout version; a single file: the
        row groups holding the records the merge touched, the others copied from the
        file as last written here, :mod:`kymwatch.store.grouped`)."""
        if not m.changed:
            return None
        name = m.ix.table_name
        layout = self.parted.layout(name)
        plan = None
        if self.parted.policy.wants_parts(len(m.table), layout):
            schema_changed = not m.table.table.schema.equals(m.previous.table.schema)
            plan = plan_parts(
                m.table, layout, m.touched, schema_changed=schema_changed,
                policy=self.parted.policy,
            )  # fmt: skip
            self.parted.begin(name, plan)
            files = self.parted.files(name, plan)
            futures = start_table_writes(files, within=self.store.path)
            return Writing(m, plan, futures, [path for path, _ in files])
        path = self.store.table_path(name)
        previous = self.layouts.get(name)
        if previous is not None and previous.stamp != self.stamps.get(name):
            previous = None  # another writer's file (or an export) replaced ours
        st = SortedTable(with_pandas_metadata(m.table.table), m.table.ids, m.table.offsets)
        future = start_grouped_write(
            path, st, touched=m.touched, previous=previous, within=self.store.path
        )
        return Writing(m, None, [future], [path])

    def finish(self, writing: Sequence[Writing | None]) -> None:
        """Wait for every write, then sync the written files' folders (once each: the
        batch's tables share ``tables/``); the cache follows each table whose files were
        all written, then the first failure is raised (else the tables are exported if
        the policy exports at once)."""
        error: Exception | None = None
        done: list[tuple[Writing, list[Fingerprint | GroupedFile]]] = []
        for w in writing:
            if w is None:
                continue
            try:
                done.append((w, [f.result() for f in w.futures]))
            except Exception as e:
                for f in w.futures:  # every write of the table has ended
                    f.exception()
                error = error or e
        try:  # the renames survive a power cut from here on (a layout may name them)
            sync_table_folders([p for w, _ in done for p in w.paths])
        except Exception as e:  # the cache stays behind: the next read takes the files
            if error is not None:
                raise error from e
            raise
        for w, stamps in done:
            name = w.merged.ix.table_name
            self.layouts.pop(name, None)
            if w.plan is not None:
                self.parted.commit(name, w.plan)
                if not self.store.table_path(name).exists():
                    self.parted.unexported[name] = float("-inf")  # no single file yet
            elif isinstance(stamps[0], GroupedFile):
                self.layouts[name] = stamps[0]
                self.stamps[name] = stamps[0].stamp
            else:
                self.stamps[name] = stamps[0]
            self.part_stamps[name] = self.parted.stamp(name)
            # compacted now that it is written (an edit's merge leaves that for later)
            self.tables[name] = w.merged.table.compacted()
            self.frames.pop(name, None)
            self.foreign.discard(name)
        if error is not None:
            raise error
        if self.parted.policy.export_interval_s <= 0:
            self._export_all()

    def publish(
        self,
        extracted: Sequence[tuple[DatasetIndexer, list[str], Sequence[Extracted]]],
        start: float,
        *,
        before_write: Callable[[], object] | None = None,
        hold: bool = False,
    ) -> tuple[list[Merged], dict[str, TableUnreadableError]]:
        """Merge each indexer's results into its table (as an update) and write each
        changed table once it is merged, under one hold of the table lock.

        The tables are merged smallest first (by the rows of their cached copy): the
        smallest one is the one the user of an edited record waits for when a record
        feeds two (a generation-1 events artifact feeds ``velocity_events`` and, as
        kymflow's generation-2 lookup falls back on it, ``kym_velocity_events``, which
        holds the records of both generations), and its write is the shortest. In a
        batch of at most :data:`ONE_BY_ONE_RECORDS` records (an edit) each write starts
        once the previous one ended, the next table merged meanwhile: the first table's
        encode has the CPU to itself (10k records, in process, p50: ``velocity_events``
        renamed 15 ms after the call instead of 27 largest first and at the same time,
        ``kym_velocity_events`` 45 instead of 42; ``bench/edit_order.py``). A larger
        batch writes its tables at the same time (throughput).

        With ``hold`` nothing is merged nor written: the results are kept
        (:attr:`held`) and the next call without ``hold`` (:meth:`write_held`) merges
        them with its own, in order (a record's last result wins, as if merged one after
        the other), and writes each table once: a daemon's backlog pays one merge (an
        O(rows) splice and compaction) and one write per table for several chunks. The
        returned merges of a held call are the tables as they are (``changed`` False).

        ``before_write`` is called once, before the first write starts (none if no
        table changed): the daemon's crash journal is committed beside the merges.

        Returns:
            The merged tables, in the order of ``extracted``, and the error of each
            indexer whose table file cannot be parsed (nothing of theirs is written).
        """
        merged: dict[int, Merged] = {}
        unreadable: dict[str, TableUnreadableError] = {}
        writing: list[Writing | None] = []
        order = sorted(range(len(extracted)), key=lambda k: self._cached_rows(extracted[k][0]))
        one_by_one = len({i for _, ids, _ in extracted for i in ids}) <= ONE_BY_ONE_RECORDS
        with self.store.table_lock():
            if not hold:
                self.written_held = []
            try:
                try:
                    for k in order:
                        ix, ids, results = extracted[k]
                        if hold:
                            try:
                                merged[k] = self._hold(ix, ids, results, start)
                            except TableUnreadableError as e:
                                unreadable[ix.name] = e
                            continue
                        held = self.held.pop(ix.table_name, None)
                        both = (ids, results) if held is None else held.joined(ids, results)
                        try:
                            m = self.merge(ix, *both, replace_all=False, start=start)
                        except TableUnreadableError as e:
                            unreadable[ix.name] = e
                            continue
                        if held is not None and m.changed:
                            self.written_held.append(ix.table_name)
                        merged[k] = dataclasses.replace(m, ids=ids, results=results)
                        if m.changed and before_write is not None:
                            before_write()
                            before_write = None
                        if one_by_one:  # the previous write ends first (a failure: in finish)
                            for f in (f for w in writing if w is not None for f in w.futures):
                                f.exception()
                        writing.append(self.start(m))
                    for name in list(self.held) if not hold else ():  # held, not merged now
                        held = self.held.pop(name)
                        m = self.merge(
                            held.ix, held.ids, held.results, replace_all=False, start=held.start
                        )
                        if not m.changed:
                            continue
                        if before_write is not None:
                            before_write()
                            before_write = None
                        self.written_held.append(name)
                        writing.append(self.start(m))
                finally:
                    self.finish(writing)
            except BaseException:  # held results not written are lost (the caller's records
                self.held.clear()  # stay due)
                raise
        return [merged[k] for k in sorted(merged)], unreadable

    def write_held(self, start: float, *, before_write: Callable[[], object] | None = None) -> None:
        """Merge and write every held table (see :meth:`publish`); nothing if none is."""
        if self.held:
            self.publish([], start, before_write=before_write)

    def held_rows_of(self, table_name: str, image_id: str) -> bool:
        """Whether results held for ``table_name`` name record ``image_id``."""
        held = self.held.get(table_name)
        return held is not None and image_id in held.id_set

    def _hold(
        self, ix: DatasetIndexer, ids: list[str], results: Sequence[Extracted], start: float
    ) -> Merged:
        """Keep ``results`` for ``ix``'s table, after those held; the table as it is."""
        current = self.read_for_update(ix, replace_all=False)  # a damaged file: raised now
        name = ix.table_name
        held = self.held.get(name)
        if held is None:
            held = self.held[name] = Held(ix, [], [], start, set())
        held.ids.extend(ids)
        held.results.extend(results)
        held.id_set.update(ids)
        return Merged(ix, ids, results, current, False, start, current, frozenset())

    def _cached_rows(self, ix: DatasetIndexer) -> int:
        """Rows of the cached copy of the table of ``ix`` (0 if it is not cached)."""
        st = self.tables.get(ix.table_name)
        return 0 if st is None else len(st)

    def export(self, *, force: bool = False) -> list[str]:
        """Write the single file of each partitioned table whose export is due (all of
        them with ``force``), from the cached table; returns their names. An indexer's
        partitioned table not read yet is read first: an export older than its parts
        (a crash between the two) is due at once.
        """
        return self._write_exports(self._export_jobs(force=force))

    def start_export(
        self, *, force: bool = False, executor: Executor | None = None
    ) -> Future[list[str]] | None:
        """Start :meth:`export` on the exporter thread (or ``executor``); None when no
        export is due. The jobs are made now, from the cached tables: edits published
        meanwhile do not wait for the encode, and an export they make stale stays due.
        """
        jobs = self._export_jobs(force=force)
        if not jobs:
            return None
        return (executor or _exporter()).submit(self._write_exports, jobs, _EXPORT_LOCK_WAIT_S)

    def _export_jobs(self, *, force: bool) -> list[ExportJob]:
        for ix in self._indexers():  # parts on disk not read yet: is their export stale?
            if ix.table_name not in self.tables and self.parted.layout(ix.table_name):
                self.read(ix.table_name)
        names = [n for n in self.parted.due(force=force) if n not in self.held]
        if not names:
            return []
        self.store.check_writable()
        with self.store.table_lock():
            return [self.parted.export_job(name, self.read(name).table) for name in names]

    def _write_exports(self, jobs: Sequence[ExportJob], lock_wait_s: float = -1) -> list[str]:
        """Encode each export without the table lock, replace each file under it (a job
        whose lock was not had within ``lock_wait_s`` is left due)."""
        written = []
        for job in jobs:
            with self.parted.staged_export(job) as commit:
                try:
                    lock = self.store.table_lock(timeout=lock_wait_s)
                    lock.__enter__()
                except TimeoutError:  # another process holds it (a rebuild): later
                    continue
                try:  # the cache's stamp follows before the loop can read the table
                    stamp = commit()
                    if stamp is not None:
                        self.stamps[job.name] = self.exported[job.name] = stamp
                        self.frames.pop(job.name, None)
                        written.append(job.name)
                finally:
                    lock.__exit__(None, None, None)
        return written


_EXPORT_LOCK_WAIT_S = 1.0
"""Longest wait of the exporter thread for the table lock; the export then stays due."""
_exporter = LazyPool(1, "kymwatch-export")
"""The thread that writes exports beside the daemon's loop."""


def report_of(m: Merged, on_outcome: Callable[[RecordOutcome], None] | None) -> UpdateReport:
    """The report of a published table (``table_updated``); each outcome goes to
    ``on_outcome`` first (a record whose old rows were kept: with their count)."""
    ix, table = m.ix, m.table
    rows_written = sum(rows.count for _, rows in m.results if rows is not None)
    outcomes = tuple(_with_kept_rows(o, table) if o.keeps_old_rows else o for o, _ in m.results)
    if on_outcome is not None:
        for o in outcomes:
            on_outcome(o)
    duration_ms = round((time.perf_counter() - m.start) * 1000, 2)
    log.debug(
        "table_updated",
        table=ix.table_name,
        indexer=ix.name,
        records=len(m.ids),
        rows=len(table),
        written=m.changed,
        duration_ms=duration_ms,
    )
    return UpdateReport(
        ix.name, ix.table_name, outcomes, len(table), rows_written, m.changed, duration_ms
    )


def _no_rows_before_or_after(current: SortedTable, results: Sequence[Extracted]) -> bool:
    """True when no re-indexed record has rows, in the table or in its new extraction
    (its artifact is missing, or holds no rows), so a merge would change nothing."""
    for o, span in results:
        if o.keeps_old_rows:
            continue
        if (span is not None and span.count > 0) or current.range_of(o.image_id)[1] > 0:
            return False
    return True


def _with_kept_rows(o: RecordOutcome, table: SortedTable) -> RecordOutcome:
    n = table.rows_of(o.image_id).num_rows
    return RecordOutcome(o.image_id, o.indexer, o.status, n, o.keys, o.path, o.error)
