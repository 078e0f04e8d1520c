"""The table engine: a dataset table kept sorted by ``image_id``, edited by splicing.

Every table kymwatch writes is an Arrow table whose rows are stably sorted by
``image_id`` (each record's rows contiguous, in the order its artifact gives them).
Replacing the rows of some records therefore never sorts: each record's row range is
found by binary search in the sorted list of the table's ids, and the new table is
the concatenation of the untouched slices and the new rows (an O(rows) copy at most,
no string sort). Whether the edit changed anything is decided on the replaced rows
alone. A table that is not sorted (written by kymflow, which appends) is sorted once,
stably, when it is adopted.

Row offsets are a stdlib ``array("q")`` (compact, indexed as Python ints); their bulk
arithmetic runs in Arrow on a zero-copy view of it (:mod:`kymwatch.store.arrowints`):
the daemon's engine needs no numpy (see :mod:`kymwatch.daemon.memory`).

The engine knows nothing of column types: callers (the schema policy of
:mod:`kymwatch.index`, or :meth:`ZarrDataset.replace_rows_for_image_id`) give it rows
already in the table's schema, or let :func:`concat` promote them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import pyarrow as pa
import pyarrow.compute as pc

from kymwatch.store.arrowints import as_int64s, concat_ranges, shift_into

__all__ = [
    "CHUNK_ROWS",
    "GATHER_FROM",
    "IMAGE_ID",
    "SortedTable",
    "chunk_rows",
    "compact",
    "concat",
    "id_ranges",
]

IMAGE_ID = "image_id"
CHUNK_ROWS = 8192
"""Rows per chunk of a table read for editing (see :func:`compact`)."""
_CHUNKS_PER_TABLE = 48


GATHER_FROM = 64
"""A splice replacing at least this many records (a burst's chunk) builds the new table
by one gather (``take``) in chunks of :func:`chunk_rows` instead of slicing it around
every record and compacting the pieces: 100,000 rows, 1,600 records: ~26 ms instead of
~200-250 (``bench/ANALYSIS.md``, "Burst, session 7"). An edit's few records keep the
slices (no copy of the table on its way)."""


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables, missing columns filled with nulls and null columns promoted."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def chunk_rows(num_rows: int) -> int:
    """The most rows :func:`compact` combines into one chunk, for a table of
    ``num_rows``: 8,192, or a 48th of the table if that is more."""
    return max(CHUNK_ROWS, num_rows // _CHUNKS_PER_TABLE)


def compact(table: pa.Table) -> pa.Table:
    """``table`` with runs of adjacent short chunks combined, copying only those.

    Each splice adds a chunk (the new rows) and cuts one (where they go in), so a table
    edited in place would gain chunks without end. Chunks are grouped greedily from the
    first: a group is closed when the next chunk would take it above
    :func:`chunk_rows`, and a group of several chunks is copied into one. Any two
    adjacent chunks of the result thus hold more than about that many rows (about
    ``2 * num_rows / chunk_rows`` chunks at most), and after one splice of a compacted
    table only the chunks next to the edit are copied: never the whole table, whose
    copy (``combine_chunks`` of 500,000 rows: 15-350 ms, mostly fresh memory) was a
    latency spike every few edits. A chunk left alone is copied too (in chunks of at
    most that many rows) when it is a slice of buffers more than twice its size, so
    that the pieces of an edited chunk do not keep the whole of it alive: memory stays
    about one copy of the table. A table read in chunks of :data:`CHUNK_ROWS`, as the
    publisher reads them, has no larger buffers; a table rebuilt in one chunk is moved
    into such chunks by its first edits (each row copied once). The grouping follows
    the chunks of the first column; the others are sliced by the same rows, whatever
    their own chunks.
    """
    if not table.num_columns or table.column(0).num_chunks <= 1:
        return table
    limit = chunk_rows(table.num_rows)
    groups: list[tuple[int, int, bool]] = []  # (first row, rows, copy them)
    start = rows = count = 0
    last: pa.Array | None = None
    for chunk in table.column(0).chunks:
        n = len(chunk)
        if count and rows + n > limit:
            groups.append((start, rows, count > 1 or _holds_more(last)))
            start, rows, count = start + rows, 0, 0
        rows, count, last = rows + n, count + 1, chunk
    groups.append((start, rows, count > 1 or _holds_more(last)))
    if not any(copy for _, _, copy in groups):
        return table
    parts = [
        _copied(table.slice(first, rows), limit) if copy else table.slice(first, rows)
        for first, rows, copy in groups
        if rows
    ]
    return pa.concat_tables(parts) if parts else table


def _holds_more(chunk: pa.Array | None) -> bool:
    """Whether a chunk is a slice of buffers more than twice the size of its values."""
    return chunk is not None and chunk.get_total_buffer_size() > 2 * chunk.nbytes


def _copied(table: pa.Table, limit: int) -> pa.Table:
    """``table`` in equal chunks of at most ``limit`` rows, in buffers of their own (a
    copy, even of a column of one chunk: ``combine_chunks`` would keep that one as it
    is)."""
    k = -(-table.num_rows // limit)
    bounds = [i * table.num_rows // k for i in range(k + 1)]
    pieces = []
    for first, stop in pairwise(bounds):
        piece = table.slice(first, stop - first)
        columns = [pa.concat_arrays(c.chunks) for c in piece.columns]
        pieces.append(pa.Table.from_arrays(columns, schema=table.schema))
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


def _gathered(
    table: pa.Table, new: Sequence[pa.Table], begins: Sequence[int], counts: Sequence[int]
) -> pa.Table:
    """The rows ``begins[i] : begins[i] + counts[i]`` of ``table`` followed by ``new``
    (same schema), in order, copied into chunks of :func:`chunk_rows` rows, each with
    buffers of its own (as :func:`compact` leaves a table).

    Column by column: a column's chunks are combined for the gather and dropped after
    it, so besides the old and the new table one column's copy is alive, not the whole
    table's (combining every column first added ~45 MiB to a 10k store's first index).
    """
    total = sum(counts)
    if not total:
        return table.schema.empty_table()
    source = pa.concat_tables([table, *new])
    positions = concat_ranges(begins, counts)
    limit = chunk_rows(total)
    cuts = [positions.slice(k, limit) for k in range(0, total, limit)]
    columns = []
    for column in source.columns:
        values = column.combine_chunks()
        columns.append(pa.chunked_array([values.take(c) for c in cuts], type=column.type))
        del values
    return pa.Table.from_arrays(columns, schema=source.schema)


def id_ranges(ids: pa.ChunkedArray | pa.Array) -> tuple[list[str], list[int]] | None:
    """The distinct ids of a column sorted by id, and their row offsets (one more than
    ids); None if the column is not sorted (or holds nulls)."""
    n = len(ids)
    if n == 0:
        return [], [0]
    if ids.null_count:
        return None
    col = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    col = col.cast(pa.string())
    if n > 1:
        ordered = pc.all(pc.less_equal(col.slice(0, n - 1), col.slice(1))).as_py()
        if not ordered:
            return None
    # In a sorted column a new id starts wherever the value differs from the previous one.
    differs = pc.not_equal(col.slice(1), col.slice(0, n - 1))
    after = pc.indices_nonzero(differs).cast(pa.int64())  # row k + 1 starts an id
    starts = pa.concat_arrays([pa.array([0], pa.int64()), pc.add(after, 1)])
    distinct = col.take(starts).to_pylist()
    return [str(v) for v in distinct], [*as_int64s(starts).tolist(), n]


@dataclass(frozen=True, slots=True)
class SortedTable:
    """A table whose rows are stably sorted by ``image_id``, with its id → row-range map.

    Attributes:
        table: The rows.
        ids: The distinct image ids, sorted.
        offsets: ``offsets[i]:offsets[i + 1]`` are the rows of ``ids[i]`` (an
            ``array("q")``, one more than ``ids``; never changed once built).
    """

    table: pa.Table
    ids: tuple[str, ...]
    offsets: array[int]

    @classmethod
    def of(cls, table: pa.Table, ids: Sequence[str], offsets: Iterable[int]) -> SortedTable:
        """A sorted table from its rows, ids and row offsets (taken as they are)."""
        return cls(table, tuple(ids), array("q", offsets))

    @classmethod
    def adopt(cls, table: pa.Table, key: str = IMAGE_ID) -> tuple[SortedTable, bool]:
        """``table`` as a sorted table, and whether it had to be sorted (stably, once).

        Rows without an id (null) sort last, in their order. A table without the
        ``key`` column is kept as it is, as one block of rows of no record.
        """
        if key not in table.column_names:
            return cls.of(table, (), (0,)), False
        ranges = id_ranges(table.column(key))
        if ranges is not None:
            return cls.of(table, *ranges), False
        # A stable sort; nulls are placed last by default.
        order = pc.sort_indices(table.select([key]), sort_keys=[(key, "ascending")])
        table = table.take(order)
        with_id = table.slice(0, len(table) - table.column(key).null_count)
        ranges = id_ranges(with_id.column(key))
        assert ranges is not None
        return cls.of(table, *ranges), True

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def range_of(self, image_id: str) -> tuple[int, int]:
        """(first row, number of rows) of one record (0 rows if it has none)."""
        i = bisect_left(self.ids, image_id)
        if i < len(self.ids) and self.ids[i] == image_id:
            start = int(self.offsets[i])
            return start, int(self.offsets[i + 1]) - start
        return 0, 0

    def rows_of(self, image_id: str) -> pa.Table:
        """The rows of one record (none if it has no rows)."""
        start, count = self.range_of(image_id)
        return self.table.slice(start, count)

    def splice(
        self, replace: Mapping[str, pa.Table | None], *, defer_compact: bool = False
    ) -> tuple[SortedTable, bool]:
        """Replace the rows of the records in ``replace`` (None or no rows: remove them).

        The new rows must have this table's schema (see :func:`concat`). Returns the new
        table and whether any replaced row differs (rows of records not named are
        never compared).

        A splice of at least :data:`GATHER_FROM` records whose rows all have this
        table's schema gathers the new table at once, in fresh chunks (compact
        already). Otherwise the result is compacted (:func:`compact`) unless
        ``defer_compact``: then it keeps
        the pieces the splice cut (two more chunks per record at most) and the caller
        calls :meth:`compacted` once it has time (a daemon's edit: after its table is
        written; the copy of the chunk around the edit, ~0.5 ms for a 100,000-row
        table, was on the way to the write).
        """
        n = len(self.ids)
        offsets = self.offsets
        tail = offsets[-1]  # rows without an id (adopted tables only) stay last
        schema = self.table.schema
        gather = len(replace) >= GATHER_FROM and all(
            r is None or r.schema.equals(schema) for r in replace.values()
        )
        # gather: the new table's rows as runs (begin, count) of [this table, new rows]
        begins: list[int] = []
        counts: list[int] = []
        new_parts: list[pa.Table] = []
        new_at = self.table.num_rows
        segments: list[pa.Table] = []
        new_ids: list[str] = []
        # The new offsets after the first, as pieces (see shift_into): a kept id's old
        # one shifted by the rows added or removed before it, a new id's the rows so far.
        pieces: list[tuple[array[int], int, int, int]] = []
        added: array[int] = array("q")  # the new ids' offsets, referred to by pieces
        at = 0  # rows of the new table so far
        changed = False
        prev_i = 0

        def keep(stop_i: int) -> None:
            """Keep the ids ``prev_i:stop_i`` and their rows, as they are."""
            nonlocal at
            start_row, stop_row = offsets[prev_i], offsets[stop_i]
            if stop_row > start_row and gather:
                begins.append(start_row)
                counts.append(stop_row - start_row)
            elif stop_row > start_row:
                segments.append(self.table.slice(start_row, stop_row - start_row))
            new_ids.extend(self.ids[prev_i:stop_i])
            if stop_i > prev_i:
                pieces.append((offsets, prev_i + 1, stop_i + 1, at - start_row))
            at += stop_row - start_row

        for image_id in sorted(replace):
            rows = replace[image_id]
            i = bisect_left(self.ids, image_id, prev_i)
            keep(i)
            present = i < n and self.ids[i] == image_id
            old_len = offsets[i + 1] - offsets[i] if present else 0
            new_len = 0 if rows is None else rows.num_rows
            if new_len:
                assert rows is not None
                if gather:
                    new_parts.append(rows)
                    begins.append(new_at)
                    counts.append(new_len)
                    new_at += new_len
                else:
                    segments.append(rows)
                new_ids.append(image_id)
                at += new_len
                last = pieces[-1] if pieces else None
                if last is not None and last[0] is added and last[2] == len(added):
                    pieces[-1] = (added, last[1], last[2] + 1, 0)  # ids added one after another
                else:
                    pieces.append((added, len(added), len(added) + 1, 0))
                added.append(at)
                if not changed:
                    old = self.table.slice(offsets[i], old_len)
                    changed = old_len != new_len or not old.equals(rows)
            elif old_len:
                changed = True
            prev_i = i + 1 if present else i
        keep(n)
        if tail < self.table.num_rows and gather:
            begins.append(tail)
            counts.append(self.table.num_rows - tail)
        elif tail < self.table.num_rows:
            segments.append(self.table.slice(tail))
        if gather:
            table = _gathered(self.table, new_parts, begins, counts)
        else:
            table = concat(segments) if segments else schema.empty_table()
            if not defer_compact:
                table = compact(table)
        new_offsets: array[int] = array("q", [0])
        shift_into(new_offsets, pieces)
        return SortedTable(table, tuple(new_ids), new_offsets), changed

    def compacted(self) -> SortedTable:
        """This table with its rows compacted (:func:`compact`; itself if nothing to
        combine), after a splice that deferred it."""
        table = compact(self.table)
        return self if table is self.table else SortedTable(table, self.ids, self.offsets)
