"""Micro-benchmark of the table code the daemon runs on every edit, on a 100k-row
table of 10k records: the engine's splice (1 and 20 records), its run boundaries
(``id_ranges``, on adopting a table), the typing of a table's extra float columns
(``finish_table``: one fractional, one whole-valued) and ``range_of`` per record.

Measured by hand (not part of ``./dev bench``); compare two builds in one session,
alternating runs (the machine is shared)::

    PYTHONPATH=/path/to/other/src .venv/bin/python bench/engine_micro.py
    .venv/bin/python bench/engine_micro.py --no-numpy   # as the daemon runs: no numpy

Prints the median milliseconds of each step.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable

if "--no-numpy" in sys.argv:
    sys.modules["numpy"] = None  # type: ignore[assignment]  # before pyarrow is imported

import pyarrow as pa

from kymwatch.index.arrow_schema import finish_table
from kymwatch.store.engine import SortedTable, id_ranges

N_IDS, PER = 10_000, 10


def _median_ms(f: Callable[[], object], reps: int) -> float:
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    """Print the median time of each step."""
    ids = sorted(uuid.UUID(int=i * 7919 + 1).hex for i in range(N_IDS))
    col = [i for i in ids for _ in range(PER)]
    n = len(col)
    table = pa.table(
        {
            "image_id": col,
            "event_id": [f"e{k % PER}" for k in range(n)],
            "t0_s": [k * 0.5 for k in range(n)],
            "n_frames": [float(k % 97) for k in range(n)],
        }
    )
    st, _ = SortedTable.adopt(table)
    one = table.slice(PER * 5000, PER)
    grown = pa.table({**{c: one.column(c) for c in one.column_names}}).slice(0, PER)
    grown = pa.concat_tables([grown, grown.slice(0, 3)])
    columns = {"image_id": "string", "event_id": "string"}
    steps: dict[str, Callable[[], object]] = {
        "splice 1 record": lambda: st.splice({ids[5000]: one}),
        "splice 1 record, rows added": lambda: st.splice({ids[5000]: grown}),
        "splice 20 records removed": lambda: st.splice({ids[k * 400]: None for k in range(20)}),
        "id_ranges (adopt)": lambda: id_ranges(table.column("image_id")),
        "finish_table (2 float extras)": lambda: finish_table(table, columns, 2),
        "range_of x 10k": lambda: [st.range_of(i) for i in ids],
    }
    reps = {"id_ranges (adopt)": 30, "range_of x 10k": 10, "finish_table (2 float extras)": 30}
    for name, f in steps.items():
        print(f"{name:<32} {_median_ms(f, reps.get(name, 200)):8.3f} ms")
    print("numpy loaded:", sys.modules.get("numpy") is not None)


if __name__ == "__main__":
    main()
