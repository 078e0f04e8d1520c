"""Which parts of a partitioned table a merge rewrites (see :mod:`kymwatch.store.parts`).

Pure planning: given the merged sorted table, the current layout and the records the
merge replaced, name the part files to write and the layout that follows. An edit
rewrites the part(s) holding the records it replaced; a table crossing the threshold,
a part grown past twice its size, or a change of schema rewrites them all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection
from dataclasses import dataclass

import pyarrow as pa

from kymwatch.store.engine import SortedTable
from kymwatch.store.parts import PartLayout, split_bounds

__all__ = ["PartPlan", "PartitionPolicy", "plan_parts"]


@dataclass(frozen=True, slots=True)
class PartitionPolicy:
    """When tables are kept as parts, and how often their export is rewritten.

    Attributes:
        partition_rows: A table of at least this many rows is kept as parts (0: never).
        part_rows: Rows per part when (re)partitioning; a part past twice this is split.
        export_interval_s: Least time between two exports of a partitioned table's
            single file while edits go on (it is also exported on idle, sync and stop).
    """

    partition_rows: int = 0
    part_rows: int = 25_000
    export_interval_s: float = 5.0

    def wants_parts(self, rows: int, layout: PartLayout | None) -> bool:
        """Whether a table of ``rows`` rows (with ``layout`` on disk) is kept as parts."""
        return layout is not None or (self.partition_rows > 0 and rows >= self.partition_rows)


@dataclass(frozen=True, slots=True)
class PartPlan:
    """The part files to write and the layout to publish with them.

    Attributes:
        layout: The layout after the write (its version one more than before).
        writes: (part file name, rows) to write.
        repartitioned: True when the part boundaries changed (the old layout's files
            are removed after the new ones and ``_parts.json`` are written).
    """

    layout: PartLayout
    writes: list[tuple[str, pa.Table]]
    repartitioned: bool


def _part_table(st: SortedTable, layout: PartLayout, k: int) -> pa.Table:
    """The rows of part ``k`` (rows without an id, of an adopted table, go last)."""
    bounds = layout.bounds
    lo = 0 if k == 0 else bisect_left(st.ids, bounds[k - 1])
    hi = len(st.ids) if k == len(bounds) else bisect_left(st.ids, bounds[k])
    start = int(st.offsets[lo])
    stop = st.table.num_rows if k == len(bounds) else int(st.offsets[hi])
    return st.table.slice(start, stop - start)


def plan_parts(
    st: SortedTable,
    layout: PartLayout | None,
    touched: Collection[str] | None,
    *,
    schema_changed: bool,
    policy: PartitionPolicy,
) -> PartPlan:
    """The parts to write for ``st``.

    Args:
        st: The merged table.
        layout: The layout on disk (None: the table is a single file so far).
        touched: The records whose rows the merge replaced (None: all of them).
        schema_changed: The columns or their types changed: every part is rewritten.
        policy: Part sizes.
    """
    whole = layout is None or touched is None or schema_changed
    if layout is not None and not whole:
        assert touched is not None
        parts = sorted({layout.part_of(i) for i in touched})
        tables = {k: _part_table(st, layout, k) for k in parts}
        if all(t.num_rows <= 2 * policy.part_rows for t in tables.values()):
            step = PartLayout(layout.layout, layout.version + 1, layout.bounds)
            return PartPlan(step, [(step.files[k], tables[k]) for k in parts], False)
        whole = True
    bounds = split_bounds(st.ids, st.offsets.tolist(), policy.part_rows)
    if layout is not None and bounds == layout.bounds:
        step = PartLayout(layout.layout, layout.version + 1, bounds)
        repartitioned = False
    else:
        number = 1 if layout is None else layout.layout + 1
        step = PartLayout(number, 1 if layout is None else layout.version + 1, bounds)
        repartitioned = True
    writes = [(name, _part_table(st, step, k)) for k, name in enumerate(step.files)]
    return PartPlan(step, writes, repartitioned)
