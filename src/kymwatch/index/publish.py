"""Publishing tables: each table's in-memory copy kept equal to its files.

:class:`Publisher` reads a table (from its cache while the files did not change:
another process may write them; a table in another program's schema is adopted),
merges an indexer's extracted records into it (:mod:`~kymwatch.index.tablework`),
writes the changed tables on the writer threads (a partitioned table: the parts the
merge touched, :mod:`~kymwatch.index.parted`) and keeps the cache in step with what was
written; :func:`report_of` tells what a published table's records became. Callers hold
the store's table lock around a merge, its start and its finish. Results held back
for a later publish are :mod:`~kymwatch.index.held`'s; the single file of a
partitioned table is exported by :mod:`~kymwatch.index.exporter`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kymwatch.errors import TableNotFoundError, TableUnreadableError
from kymwatch.index.arrow_schema import empty_arrow
from kymwatch.index.base import DatasetIndexer, RecordOutcome, UpdateReport
from kymwatch.index.batch import Extracted, HeldResults
from kymwatch.index.frames import with_pandas_metadata
from kymwatch.index.parted import PartedTables
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

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ONE_BY_ONE_RECORDS", "Earlier", "Merged", "Publisher", "Writing", "report_of"]

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
class Earlier:
    """One table's results read before a publish's own (see :meth:`Publisher.publish`)."""

    ix: DatasetIndexer
    ids: list[str]
    results: Sequence[Extracted]
    start: float

    def joined(
        self, ids: list[str], results: Sequence[Extracted]
    ) -> tuple[list[str], list[Extracted]]:
        """The earlier ids and results followed by ``ids`` and ``results``."""
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
        self.store, self.parted, self.indexers = store, parted, indexers
        self._export_all = export_all
        self.tables: dict[str, SortedTable] = {}
        self.frames: dict[str, tuple[Fingerprint | None, pd.DataFrame]] = {}
        self.stamps: dict[str, Fingerprint | None] = {}
        self.part_stamps: dict[str, Fingerprint | None] = {}
        self.foreign: set[str] = set()  # tables read in another program's schema
        # The row groups of each single-file table as last written here (valid while
        # its stamp is the table's): an edit re-encodes only the groups it touched.
        self.layouts: dict[str, GroupedFile] = {}

    def indexer_for_table(self, name: str) -> DatasetIndexer | None:
        """The indexer that owns table ``name`` (None: no indexer in use does)."""
        return next((ix for ix in self.indexers() if ix.table_name == name), None)

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
        earlier: Mapping[str, Earlier] | None = None,
    ) -> tuple[list[Merged], dict[str, TableUnreadableError], list[str]]:
        """Merge each indexer's results into its table (as an update) and write each
        changed table once it is merged, under one hold of the table lock.

        The tables are merged smallest first (:meth:`smallest_first`): the smallest one
        is the one the user of an edited record waits for when a record feeds two (a
        generation-1 events artifact feeds ``velocity_events`` and, as kymflow's
        generation-2 lookup falls back on it, ``kym_velocity_events``, which holds the
        records of both generations), and its write is the shortest. In a batch of at
        most :data:`ONE_BY_ONE_RECORDS` records (an edit) each write starts once the
        previous one ended, the next table merged meanwhile: the first table's encode
        has the CPU to itself (10k records, in process, p50: ``velocity_events``
        renamed 15 ms after the call instead of 27 largest first and at the same time,
        ``kym_velocity_events`` 45 instead of 42; ``bench/edit_order.py``). A larger
        batch writes its tables at the same time (throughput).

        ``earlier`` holds results read before these, by table name (a daemon's held
        backlog, :class:`~kymwatch.index.held.HeldTables`): a table's earlier results
        are merged with its own, before them (a record's last result wins, as if merged
        one after the other), and the table is written once; an earlier table that
        ``extracted`` does not name is merged and written after the others.

        ``before_write`` is called once, before the first write starts (none if no
        table changed): the daemon's crash journal is committed beside the merges.

        Returns:
            The merged tables, in the order of ``extracted`` (each with its own ids and
            results only), the error of each indexer whose table file cannot be parsed
            (nothing of theirs is written, their earlier results are dropped), and the
            names of the ``earlier`` tables written.
        """
        rest = dict(earlier or {})
        merged: dict[int, Merged] = {}
        unreadable: dict[str, TableUnreadableError] = {}
        written_earlier: list[str] = []
        writing: list[Writing | None] = []
        one_by_one = len({i for _, ids, _ in extracted for i in ids}) <= ONE_BY_ONE_RECORDS
        with self.store.table_lock():
            try:
                for k in self.smallest_first(extracted):
                    ix, ids, results = extracted[k]
                    before = rest.pop(ix.table_name, None)
                    both = (ids, results) if before is None else before.joined(ids, results)
                    try:
                        m = self.merge(ix, *both, replace_all=False, start=start)
                    except TableUnreadableError as e:
                        unreadable[ix.name] = e
                        continue
                    if before is not None and m.changed:
                        written_earlier.append(ix.table_name)
                    merged[k] = dataclasses.replace(m, ids=ids, results=results)
                    if m.changed and before_write is not None:
                        before_write()
                        before_write = None
                    if one_by_one:  # the previous write ends first (a failure: in finish)
                        for f in (f for w in writing if w is not None for f in w.futures):
                            f.exception()
                    writing.append(self.start(m))
                for name, before in rest.items():  # earlier results of no table named here
                    m = self.merge(
                        before.ix, before.ids, before.results, replace_all=False, start=before.start
                    )
                    if not m.changed:
                        continue
                    if before_write is not None:
                        before_write()
                        before_write = None
                    written_earlier.append(name)
                    writing.append(self.start(m))
            finally:
                self.finish(writing)
        return [merged[k] for k in sorted(merged)], unreadable, written_earlier

    def smallest_first(
        self, extracted: Sequence[tuple[DatasetIndexer, list[str], Sequence[Extracted]]]
    ) -> list[int]:
        """The indices of ``extracted`` by the rows of each table's cached copy, fewest
        first (see :meth:`publish`)."""
        return sorted(range(len(extracted)), key=lambda k: self._cached_rows(extracted[k][0]))

    def note_exported(self, name: str, stamp: Fingerprint) -> None:
        """The single file of partitioned table ``name`` was exported as ``stamp`` (under
        the table lock): the cache follows it (its rows are the cached ones)."""
        self.stamps[name] = stamp
        self.frames.pop(name, None)

    def _cached_rows(self, ix: DatasetIndexer) -> int:
        """Rows of the cached copy of the table of ``ix`` (0 if it is not cached)."""
        st = self.tables.get(ix.table_name)
        return 0 if st is None else len(st)


def report_of(m: Merged, on_outcome: Callable[[RecordOutcome], None] | None) -> UpdateReport:
    """The report of a published table (``table_updated``); each outcome goes to
    ``on_outcome`` first (a record whose old rows were kept: with their count)."""
    ix, table, results = m.ix, m.table, m.results
    if isinstance(results, HeldResults):  # a rebuild's: no pairs made
        rows_written, plain = results.rows(), tuple(results.outcomes())
    else:
        rows_written = sum(rows.count for _, rows in results if rows is not None)
        plain = tuple(o for o, _ in results)
    outcomes = tuple(_with_kept_rows(o, table) if o.keeps_old_rows else o for o in plain)
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
