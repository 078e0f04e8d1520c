"""Many records' typed rows gathered into one table: columns aligned to one schema,
unified once per batch table, rows in the order asked (a rebuild's merge, a chunk's
table)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import pyarrow as pa

from kymwatch.index.arrow_schema import RowSpan, unify
from kymwatch.store.arrowints import concat_ranges
from kymwatch.store.engine import concat

__all__ = ["align", "gather_spans", "one_table"]


def align(rows: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``rows`` in exactly ``schema`` (missing columns null), or None if a column is new
    or holds values of another type."""
    if rows.schema.equals(schema):
        return rows
    have = set(rows.column_names)  # a list made anew on each call: asked once
    if not have <= set(schema.names):
        return None
    n = rows.num_rows
    cols = []
    for f in schema:
        if f.name not in have:
            cols.append(pa.nulls(n, f.type))
            continue
        col = rows.column(f.name)
        if col.type == f.type:
            cols.append(col)
        elif col.null_count == n:
            cols.append(pa.nulls(n, f.type))
        else:
            return None
    return pa.Table.from_arrays(cols, schema=schema)


def gather_spans(spans: Sequence[RowSpan]) -> pa.Table:
    """The rows of ``spans``, in that order, as one table.

    Columns are unified once per batch table, not once per record: a batch whose every
    row is used is one unit (a chunk mixing records of two raw schemas is one batch per
    schema, and its records alternate); other rows (kept rows of the current table, a
    batch read again under the lock) are taken as slices. The same values are unified
    as when each span is a part of its own, so the types are the same.
    """
    used: dict[int, int] = {}
    for span in spans:
        used[id(span.batch)] = used.get(id(span.batch), 0) + span.count
    units: list[RowSpan] = []  # whole batches, or runs of adjacent rows
    where: dict[int, int] = {}  # id(batch) -> its unit, for a batch used whole
    for span in spans:
        key = id(span.batch)
        if used[key] == span.batch.num_rows:
            if key not in where:
                where[key] = len(units)
                units.append(RowSpan(span.batch, 0, span.batch.num_rows))
        elif units and span.follows(units[-1]) and id(units[-1].batch) not in where:
            last = units[-1]
            units[-1] = RowSpan(last.batch, last.start, last.count + span.count)
        else:
            units.append(span)
    tables = unify([u.table() for u in units])
    schema = concat([t.slice(0, 0) for t in tables]).schema
    table = concat([align(t, schema) or t for t in tables])
    if len(units) == len(spans):  # every span is its own unit, in order
        return table
    starts = list(accumulate((u.count for u in units), initial=0))
    begins: list[int] = []
    pos = 0  # the next unit taken as a slice (in span order)
    for span in spans:
        k = where.get(id(span.batch))
        if k is None:
            while units[pos].batch is not span.batch or not (
                units[pos].start <= span.start < units[pos].start + units[pos].count
            ):
                pos += 1
            begins.append(starts[pos] + span.start - units[pos].start)
        else:
            begins.append(starts[k] + span.start)
    counts = [span.count for span in spans]
    if sum(counts) == table.num_rows and _increasing(begins, counts):
        return table  # already in order
    return table.take(concat_ranges(begins, counts))


def _increasing(begins: Sequence[int], counts: Sequence[int]) -> bool:
    """Whether the positions of the ranges ``begins[i]`` (``counts[i]`` long), one after
    the other, are strictly increasing."""
    last = -1
    for begin, count in zip(begins, counts, strict=True):
        if count:
            if begin <= last:
                return False
            last = begin + count - 1
    return True


def one_table(spans: Sequence[RowSpan]) -> list[RowSpan]:
    """The spans of one chunk re-cut from a single table holding their rows in order,
    when their batch tables (one per raw schema) give no column two types; else the
    spans as they are (the merge unifies such columns over the whole table).

    A chunk whose records alternate between raw schemas (both generations' velocity
    events in ``kym_velocity_events``) then costs the merge one slice, not one per record,
    and its batch tables are freed once the chunk is read.
    """
    batches: dict[int, pa.Table] = {}
    for s in spans:
        if s.count:
            batches.setdefault(id(s.batch), s.batch)
    if len(batches) < 2:
        return list(spans)
    types: dict[str, pa.DataType] = {}
    for b in batches.values():
        for f in b.schema:
            if pa.types.is_null(f.type):
                continue
            if types.setdefault(f.name, f.type) != f.type:
                return list(spans)
    table = gather_spans([s for s in spans if s.count])
    out: list[RowSpan] = []
    start = 0
    for s in spans:
        if s.count:
            out.append(RowSpan(table, start, s.count))
            start += s.count
        else:
            out.append(s)
    return out
