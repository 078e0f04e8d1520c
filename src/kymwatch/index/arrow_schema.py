"""The schema policy of :mod:`kymwatch.index.schema`, applied to Arrow columns in bulk.

Indexers hand over each record's rows as read (:class:`RawRows`: an Arrow table, or
column lists from JSON). A batch of records is converted at once: records whose raw
columns have the same names and types are concatenated and each column is converted
at once (:mod:`kymwatch.index.arrow_column`); a value that does not fit becomes null
and is logged, ``value_coerced``, against the record it came from.
Extra columns are typed by content over the whole table (:func:`finish_table`).
pandas appears only at the API boundary (:mod:`kymwatch.index.frames`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import pyarrow as pa

from kymwatch.errors import ArtifactInvalidError
from kymwatch.index.arrow_column import (
    ARROW_TYPES,
    Values,
    convert_column,
    first_valid,
    infer_column,
)
from kymwatch.index.schema import Coercions
from kymwatch.store.arrowints import repeat_each
from kymwatch.store.engine import IMAGE_ID

__all__ = [
    "RawRows",
    "RowSpan",
    "conform_batch",
    "empty_arrow",
    "finish_table",
    "unify",
]


@dataclass(frozen=True, slots=True)
class RawRows:
    """One record's rows as an indexer read them, before any conversion.

    Attributes:
        image_id: The record (stamped on every row).
        key: The artifact name read.
        path: The artifact file read.
        source: An Arrow table, or column name → values (JSON).
        num_rows: Rows in ``source``.
        constants: Declared columns given one value on every row.
    """

    image_id: str
    key: str
    path: str
    source: pa.Table | Mapping[str, list[Any]]
    num_rows: int
    constants: Mapping[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The raw column names (set from ``source``)."""

    def __post_init__(self) -> None:
        src = self.source
        names = src.schema.names if isinstance(src, pa.Table) else list(src)
        object.__setattr__(self, "names", tuple(names))

    def check(self) -> None:
        """Raise ArtifactInvalidError if the artifact repeats a column name."""
        names = self.names
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ArtifactInvalidError(
                self.image_id, self.key, self.path, f"repeated column name(s) {dupes}"
            )


@dataclass(frozen=True, slots=True)
class RowSpan:
    """One record's typed rows: ``count`` rows from ``start`` of a batch's table (the
    records of a batch share one table; a rebuild concatenates adjacent spans whole)."""

    batch: pa.Table
    start: int
    count: int

    def table(self) -> pa.Table:
        """The rows as a table of their own (zero-copy slice)."""
        return self.batch.slice(self.start, self.count)

    def follows(self, other: RowSpan) -> bool:
        """True when these rows come right after ``other``'s in the same batch table."""
        return self.batch is other.batch and self.start == other.start + other.count


# -- batches --------------------------------------------------------------------------------
def _group_key(raw: RawRows) -> object:
    if isinstance(raw.source, pa.Table):
        return raw.source.schema
    return tuple(raw.source)


def _same_key(a: object, b: object) -> bool:
    if isinstance(a, pa.Schema) and isinstance(b, pa.Schema):
        return bool(a.equals(b))
    return a == b


def _group_columns(group: Sequence[RawRows]) -> dict[str, Values]:
    first = group[0].source
    if isinstance(first, pa.Table):
        tables = [r.source for r in group if isinstance(r.source, pa.Table)]
        # One chunk per column before any conversion: each kernel (cast, NaN check,
        # inference) then runs once per column, not once per record's chunk (at 10k
        # records this halved the typing of a chunk's rows: bench/ANALYSIS.md).
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
        return {name: table.column(name) for name in table.column_names}
    out: dict[str, list[Any]] = {name: [] for name in first}
    for r in group:
        assert not isinstance(r.source, pa.Table)
        for name, col in r.source.items():
            out[name].extend(col)
    return out


def _owners(group: Sequence[RawRows], positions: list[int]) -> list[int]:
    """The index in ``group`` of the record each row position belongs to."""
    offsets = list(accumulate((r.num_rows for r in group), initial=0))
    return [bisect_right(offsets, p) - 1 for p in positions]


def _stamp(group: Sequence[RawRows], name: str) -> pa.Array:
    """One value per record repeated over its rows (``image_id`` or a constant)."""
    values = [r.image_id if name == IMAGE_ID else r.constants[name] for r in group]
    counts = [r.num_rows for r in group]
    if len(set(values)) == 1:
        return pa.array(values[:1] * sum(counts), pa.string())
    # One string per record, repeated by Arrow (no per-row Python objects).
    return repeat_each(pa.array(values, pa.string()), counts)


def _conform_group(
    group: Sequence[RawRows],
    columns: Mapping[str, str],
    extras_at: int | None,
    coerced: dict[int, Coercions],
) -> pa.Table:
    names = group[0].names
    n = sum(r.num_rows for r in group)
    source = _group_columns(group)
    fixed = {IMAGE_ID, *group[0].constants}
    data: dict[str, pa.ChunkedArray | pa.Array] = {}

    def convert(col: str, dtype: str) -> None:
        arr, bad = convert_column(source[col], dtype)
        data[col] = arr
        if bad:
            values = source[col]
            for pos, owner in zip(bad, _owners(group, bad), strict=True):
                example = values[pos] if isinstance(values, list) else values[pos].as_py()
                coerced.setdefault(owner, Coercions()).add(col, 1, example)

    for col, dtype in columns.items():
        if col in fixed:
            data[col] = _stamp(group, col)
        elif col in names:
            convert(col, dtype)
        else:
            data[col] = pa.nulls(n, ARROW_TYPES[dtype])
    extras = [c for c in names if c not in columns] if extras_at is not None else []
    for col in extras:
        convert(col, infer_column(col, source[col]))
    declared = list(columns)
    at = len(declared) if extras_at is None else extras_at
    order = declared[:at] + extras + declared[at:]
    # One contiguous table per group (the raw columns were combined above; stamps and
    # conversions add no chunks): the records' own small buffers are not kept.
    return pa.table({c: data[c] for c in order}).combine_chunks()


def conform_batch(
    raws: Sequence[RawRows],
    columns: Mapping[str, str],
    extras_at: int | None,
    *,
    indexer: str | None = None,
) -> list[RowSpan]:
    """Each record's rows in the table schema (extras typed per group of records with
    the same raw columns: :func:`finish_table` types them over the whole table).

    ``value_coerced`` is logged once per record and column that lost values.
    """
    groups: list[tuple[object, list[int]]] = []
    for i, raw in enumerate(raws):
        if not (raw.num_rows and raw.names):  # no columns: kymflow's pd.DataFrame(), no rows
            continue
        key = _group_key(raw)
        # Compared, not hashed: hashing an Arrow schema costs more than reading ten rows.
        # The last group first: a chunk's records mostly share their raw columns.
        found: list[int] | None = None
        if groups and _same_key(groups[-1][0], key):
            found = groups[-1][1]
        else:
            found = next((m for k, m in reversed(groups) if _same_key(k, key)), None)
        if found is None:
            groups.append((key, [i]))
        else:
            found.append(i)
    out: list[RowSpan | None] = [None] * len(raws)
    for _, members in groups:
        group = [raws[i] for i in members]
        coerced: dict[int, Coercions] = {}
        table = _conform_group(group, columns, extras_at, coerced)
        start = 0
        for j, i in enumerate(members):
            out[i] = RowSpan(table, start, raws[i].num_rows)
            start += raws[i].num_rows
            if j in coerced:
                raw = raws[i]
                coerced[j].log(image_id=raw.image_id, indexer=indexer, path=raw.path)
    if all(t is not None for t in out):  # the usual case: no empty table built
        return [t for t in out if t is not None]
    empty = RowSpan(empty_arrow(columns), 0, 0)
    return [empty if t is None else t for t in out]


# -- whole tables ---------------------------------------------------------------------------
def unify(parts: Sequence[pa.Table]) -> list[pa.Table]:
    """The parts with each column given one type across them (by content, as an extra
    column: only extra columns can differ), so that they concatenate."""
    types: dict[str, set[pa.DataType]] = {}
    for p in parts:
        for f in p.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    mixed = [name for name, ts in types.items() if len(ts) > 1]
    if not mixed:
        return list(parts)
    out = list(parts)
    for name in mixed:
        dtype = _joined_dtype(name, [p.column(name) for p in out if name in p.column_names])
        for k, p in enumerate(out):
            if name in p.column_names:
                arr, _ = convert_column(p.column(name), dtype)
                out[k] = p.set_column(p.column_names.index(name), name, arr)
    return out


def _joined_dtype(name: str, columns: Sequence[pa.ChunkedArray]) -> str:
    """The dtype :func:`infer_column` gives the values of all ``columns`` together,
    from each column's own (Arrow, vectorised): a table's column and a record's new rows
    otherwise meant a Python pass over every value of the table on each such edit (21 ms
    of a 34 ms batch for a 5,000-row table). The policy's verdicts join: one text value
    makes text; booleans stay boolean only alone (with numbers they count as 0 and 1);
    one fractional or out-of-range number makes float64; a column without values says
    nothing."""
    kinds = {infer_column(name, c) for c in columns if c.null_count < len(c)}
    if not kinds:
        return "float64"
    if "string" in kinds:
        return "string"
    if kinds == {"boolean"}:
        return "boolean"
    if "float64" in kinds:
        return "float64"
    if kinds <= {"Int64", "boolean"}:
        return "Int64"
    return infer_column(name, [v for c in columns for v in c.to_pylist()])  # not expected


def finish_table(
    table: pa.Table,
    columns: Mapping[str, str],
    extras_at: int | None,
    keep_null: Collection[str] | None = None,
    *,
    typed: bool = False,
) -> pa.Table:
    """The table with its extra columns typed by content over all its rows, ordered by
    the first row holding a value in them (then by position; all-null ones last, and
    kept only if in ``keep_null``; None keeps every one), and declared columns typed.

    ``typed``: every column already holds converted values (rows of
    :func:`conform_batch` and of tables this function finished, as a merge splices
    them), so a column whose Arrow type is already its dtype's is kept as it is. Its
    conversion would change nothing, yet cost a pass over the column (the NaN check of
    each float column: ~0.1 ms per 100,000 rows, over half of a one-record merge).
    """
    data: dict[str, pa.ChunkedArray | pa.Array] = {}
    n = table.num_rows
    names = table.column_names  # a list made anew on each call: asked once
    have = set(names)
    own = dict(zip(names, table.columns, strict=True))  # one wrapper per column

    def typed_as(values: pa.ChunkedArray, dtype: str) -> pa.ChunkedArray | pa.Array:
        if typed and values.type == ARROW_TYPES[dtype]:
            return values
        return convert_column(values, dtype)[0]

    for col, dtype in columns.items():
        if col in have:
            data[col] = typed_as(own[col], dtype)
        else:
            data[col] = pa.nulls(n, ARROW_TYPES[dtype])
    extras: list[str] = []
    if extras_at is not None:
        firsts = []
        for pos, col in enumerate(names):
            if col in columns:
                continue
            values = own[col]
            first = first_valid(values)
            if first is not None:
                firsts.append((first, pos, col))
            elif keep_null is None or col in keep_null:
                firsts.append((n, pos, col))
        extras = [col for _, _, col in sorted(firsts)]
        for col in extras:
            values = own[col]
            data[col] = typed_as(values, infer_column(col, values))
    declared = list(columns)
    at = len(declared) if extras_at is None else extras_at
    order = declared[:at] + extras + declared[at:]
    unchanged = order == names and all(data[c] is own[c] for c in order)
    if unchanged and table.schema.metadata is None:
        return table  # nothing changed (a merge's usual case): no new table built
    return pa.table({c: data[c] for c in order})


def empty_arrow(columns: Mapping[str, str]) -> pa.Table:
    """A table with no rows and the given typed columns."""
    return pa.schema([(c, ARROW_TYPES[t]) for c, t in columns.items()]).empty_table()
