"""Rows per row group: an edit's write against the readers' cost (hand-run, not in the
suite; "Row groups, session 7" in ``bench/ANALYSIS.md``).

For the bench's generation-2 events table (``kym_velocity_events``: 100k rows at 10k
records, 500k at 50k, from the cached indexed stores) and each target of rows per
group, in one process, targets taking turns round by round: the table's full write
(wall and process CPU: the groups are encoded on two threads), a one-record edit's
write (the touched group encoded, the others copied), the file's size, and the read
time of ``pq.read_table`` (threads), kymwatch's single-threaded read and
``pd.read_parquet``. ``whole`` is the write before row groups: one
``write_table_arrow`` of the table (one row group).

    PYTHONPATH=src .venv/bin/python bench/rowgroups_target.py --records 10000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path("/work/main/bench/out/cache")


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``'s result, wall and process CPU time (ms)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--targets", default="4096,8192,16384,32768,65536,whole")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rowgroups/target"))
    a = p.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    import kymwatch.store.grouped as grouped
    from kymwatch.index.frames import with_pandas_metadata
    from kymwatch.store import SortedTable, read_table_arrow, write_table_arrow

    src = next(CACHE.glob(f"indexed-{a.records}x10-*")) / "tables" / "kym_velocity_events.parquet"
    st, _ = SortedTable.adopt(read_table_arrow(src))
    st = SortedTable(with_pandas_metadata(st.table), st.ids, st.offsets)
    a.workdir.mkdir(parents=True, exist_ok=True)
    targets = a.targets.split(",")
    res: dict[str, dict[str, list[float]]] = {t: {} for t in targets}
    state: dict[str, tuple[SortedTable, Any]] = {}
    rng = random.Random(3)

    def add(t: str, key: str, v: float) -> None:
        res[t].setdefault(key, []).append(v)

    for r in range(a.rounds):
        i = rng.randrange(len(st.ids))
        for t in targets:
            path = a.workdir / f"{t}.parquet"
            cur, prev = state.get(t, (st, None))
            if t != "whole":
                grouped.TARGET_ROWS = int(t)  # type: ignore[misc]
            if r == 0 or r % 5 == 0:  # full writes now and then
                if t == "whole":
                    prev, w, c = _timed(partial(write_table_arrow, path, cur.table))
                else:
                    full = partial(grouped.write_grouped, touched=None, previous=None)
                    prev, w, c = _timed(partial(full, path, cur))
                add(t, "full wall", w)
                add(t, "full cpu", c)
            image_id = cur.ids[i]
            rows = cur.rows_of(image_id)
            k = rows.schema.get_field_index("score")
            score = pa.array([float(r) + 0.5] * rows.num_rows, rows.schema.field(k).type)
            spliced, _ = cur.splice({image_id: rows.set_column(k, rows.schema.field(k), score)})
            new = SortedTable(with_pandas_metadata(spliced.table), spliced.ids, spliced.offsets)
            if t == "whole":
                prev, w, c = _timed(partial(write_table_arrow, path, new.table))
            else:
                edit = partial(grouped.write_grouped, touched={image_id}, previous=prev)
                prev, w, c = _timed(partial(edit, path, new))
                add(t, "encoded groups", float(getattr(prev, "encoded", -1)))
            add(t, "edit wall", w)
            add(t, "edit cpu", c)
            state[t] = (new, prev)
            if r % 3 == 0:
                add(t, "read pq threads", _timed(partial(pq.read_table, path))[1])
                add(t, "read kymwatch", _timed(partial(read_table_arrow, path))[1])
                add(t, "read pandas", _timed(partial(pd.read_parquet, path))[1])
                add(t, "size MB", path.stat().st_size / 1e6)
                add(t, "groups", float(pq.ParquetFile(path).num_row_groups))
    keys = list(next(iter(res.values())).keys())
    print(f"{'target':>8s} " + " ".join(f"{k:>16s}" for k in keys))
    for t in targets:
        cells = []
        for k in keys:
            xs = sorted(res[t].get(k, [float("nan")]))
            cells.append(f"{statistics.median(xs):7.1f}/{xs[int(0.9 * (len(xs) - 1))]:7.1f}")
        print(f"{t:>8s} " + " ".join(f"{c:>16s}" for c in cells))
    print("cells: median/p90 (ms; size in MB)")


if __name__ == "__main__":
    main()
