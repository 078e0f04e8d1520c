"""The schema policy joined to the table engine: adopting a table read from disk, and
merging a batch's rows into it (an update splices, a rebuild concatenates in id order).

The results equal a fresh rebuild whatever the order of updates: the rows of a record
are its artifact's rows, in the artifact's order; records are in ``image_id`` order;
extra columns are typed from the merged rows alone (:func:`finish_table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate

import pyarrow as pa

from kymwatch.index.arrow_column import convert_column
from kymwatch.index.arrow_schema import RowSpan, empty_arrow, finish_table, unify
from kymwatch.index.base import DatasetIndexer, OutcomeStatus, RecordOutcome, extras_position
from kymwatch.index.batch import Extracted, HeldResults
from kymwatch.index.gather import align, gather_spans
from kymwatch.index.schema import Coercions
from kymwatch.store.engine import SortedTable, concat

__all__ = ["DEFER_COMPACT_RECORDS", "adopt", "merge_rebuild", "merge_update"]

DEFER_COMPACT_RECORDS = 16
"""An update of at most this many records leaves its table uncompacted (two more
chunks per record at most: the encode does not notice them); the publisher compacts
it once its files are written (:meth:`SortedTable.compacted`). A larger update (a
burst) compacts at once: thousands of chunks would slow the encode."""


def adopt(raw: pa.Table, ix: DatasetIndexer | None, coerced: Coercions) -> tuple[SortedTable, bool]:
    """A table read from disk, typed by the schema policy and sorted by ``image_id``,
    and whether that changed it (kymflow's object columns, an unsorted table: it is
    then rewritten by the next update even when no row changes). A table no indexer
    owns is kept as it is."""
    if ix is None:
        return SortedTable.of(raw, (), (0,)), False
    extras_at = extras_position(ix)
    for col, dtype in ix.columns.items():
        if col in raw.column_names:
            values = raw.column(col)
            _, bad = convert_column(values, dtype)
            if bad:
                coerced.add(col, len(bad), values[bad[0]].as_py())
    table = finish_table(raw, ix.columns, extras_at)
    st, was_sorted_now = SortedTable.adopt(table)
    foreign = was_sorted_now or not table.schema.remove_metadata().equals(
        raw.schema.remove_metadata()
    )
    foreign = foreign or not table.equals(raw)
    return st, foreign


def _all_null_columns(table: pa.Table) -> set[str]:
    return {c for c in table.column_names if table.column(c).null_count == table.num_rows}


def merge_update(
    current: SortedTable, results: Sequence[Extracted], ix: DatasetIndexer
) -> tuple[SortedTable, bool]:
    """``current`` with the rows of the re-indexed records replaced (records whose
    artifact is unreadable or invalid keep theirs), and whether anything changed.

    The table of an update of few records may be left uncompacted
    (:data:`DEFER_COMPACT_RECORDS`): whoever keeps it calls
    :meth:`~kymwatch.store.engine.SortedTable.compacted` after using it."""
    extras_at = extras_position(ix)
    replace: dict[str, pa.Table | None] = {}
    keep_null = _all_null_columns(current.table) if extras_at is not None else set()
    schema = current.table.schema
    # Each batch table is put in the table's schema once, then sliced per record (the
    # check and the null columns of a gen-1 record among gen-2 rows cost ~0.2 ms each).
    batches: dict[int, pa.Table | None] = {}
    aligned: dict[str, pa.Table | None] = {}
    for o, span in results:
        if o.keeps_old_rows:
            continue
        rows = span is not None and span.count > 0
        replace[o.image_id] = span.table() if span is not None and rows else None
        aligned[o.image_id] = None
        if span is not None:
            keep_null |= set(span.batch.column_names)
            if rows:
                key = id(span.batch)
                if key not in batches:
                    batches[key] = align(span.batch, schema)
                batch = batches[key]
                aligned[o.image_id] = None if batch is None else batch.slice(span.start, span.count)
    if all(a is not None or replace[i] is None for i, a in aligned.items()):
        st, changed = current.splice(aligned, defer_compact=len(aligned) <= DEFER_COMPACT_RECORDS)
        if extras_at is None:
            return st, changed
        table = _finish(st.table, ix, keep_null)
        changed = changed or not table.schema.equals(st.table.schema)
        return SortedTable(table, st.ids, st.offsets), changed
    # A new column, or a column whose type the new rows change: unify, then splice.
    ids = [i for i, r in replace.items() if r is not None]
    parts = unify([current.table, *(r for r in replace.values() if r is not None)])
    schema = concat([p.slice(0, 0) for p in parts]).schema  # the one all of them share
    merged: dict[str, pa.Table | None] = dict.fromkeys(replace)
    merged.update((i, align(r, schema) or r) for i, r in zip(ids, parts[1:], strict=True))
    base = SortedTable(align(parts[0], schema) or parts[0], current.ids, current.offsets)
    st, _ = base.splice(merged)
    return SortedTable(_finish(st.table, ix, keep_null), st.ids, st.offsets), True


def _finish(table: pa.Table, ix: DatasetIndexer, keep_null: set[str]) -> pa.Table:
    """The table typed by content; a table without rows has the declared columns only
    (as a rebuild of no rows)."""
    if not table.num_rows:
        return empty_arrow(ix.columns)
    return finish_table(table, ix.columns, extras_position(ix), keep_null, typed=True)


def merge_rebuild(
    current: SortedTable, results: Sequence[Extracted], ix: DatasetIndexer
) -> SortedTable:
    """The table of ``results`` alone (records whose artifact is unreadable or invalid
    keep the rows ``current`` has for them), in ``image_id`` order.

    Rows that lie next to each other in one batch table (records read in id order, the
    usual rebuild) are taken as one slice: no per-record tables are built. A rebuild's
    held results whose chunks each hold their rows in one table (the usual case) are
    merged chunk table by chunk table (:func:`_merge_whole`: no per-record spans).
    """
    whole = results.whole_tables() if isinstance(results, HeldResults) else None
    if whole is not None:
        merged = _merge_whole(current, whole, ix)
        if merged is not None:
            return merged
    parts: list[tuple[str, RowSpan]] = []
    batches: dict[int, pa.Table] = {}
    for o, span in results:
        if o.keeps_old_rows:
            start, count = current.range_of(o.image_id)
            span = RowSpan(current.table, start, count)
        elif span is None:
            continue
        else:
            batches[id(span.batch)] = span.batch
        if span.count:
            parts.append((o.image_id, span))
    if not parts:
        return SortedTable.of(empty_arrow(ix.columns), (), (0,))
    if any(parts[k][0] >= parts[k + 1][0] for k in range(len(parts) - 1)):
        parts.sort(key=lambda p: p[0])
    spans = [span for _, span in parts]
    ids = tuple(i for i, _ in parts)
    return _assembled(current, spans, batches.values(), ids, [s.count for s in spans], ix)


def _merge_whole(
    current: SortedTable,
    whole: Sequence[tuple[Sequence[RecordOutcome], pa.Table]],
    ix: DatasetIndexer,
) -> SortedTable | None:
    """:func:`merge_rebuild` of results held as chunk tables (each chunk's outcomes and
    the table of its indexed records' rows, in order: :meth:`HeldResults.whole_tables`),
    the same table built from the tables whole; None when the records are not in
    strictly increasing id order (the caller sorts them)."""
    ids: list[str] = []
    counts: list[int] = []
    for outcomes, _ in whole:
        for o in outcomes:
            if o.rows and o.status is OutcomeStatus.INDEXED:
                ids.append(o.image_id)
                counts.append(o.rows)
    if not ids:
        return SortedTable.of(empty_arrow(ix.columns), (), (0,))
    if any(ids[k] >= ids[k + 1] for k in range(len(ids) - 1)):
        return None
    spans = [RowSpan(t, 0, t.num_rows) for _, t in whole if t.num_rows]
    return _assembled(current, spans, [t for _, t in whole], tuple(ids), counts, ix)


def _assembled(
    current: SortedTable,
    spans: Sequence[RowSpan],
    batches: Iterable[pa.Table],
    ids: tuple[str, ...],
    counts: Sequence[int],
    ix: DatasetIndexer,
) -> SortedTable:
    """The rebuilt table of ``spans`` (rows of ``ids`` in order, ``counts`` each),
    typed; the all-null columns of ``current`` and every column of ``batches`` (the
    tables the rows came from) are kept where the indexer keeps extra columns."""
    extras_at = extras_position(ix)
    keep_null: set[str] = set()
    if extras_at is not None:
        keep_null = _all_null_columns(current.table)
        keep_null |= {c for b in batches for c in b.column_names}
    table = finish_table(gather_spans(spans), ix.columns, extras_at, keep_null, typed=True)
    return SortedTable.of(table, ids, accumulate(counts, initial=0))
