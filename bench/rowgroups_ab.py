"""A generation-2 events edit with and without row groups, in process (hand-run, not in
the suite; "Row groups, session 7" in ``bench/ANALYSIS.md``).

Two hard-link copies of the bench's indexed store (``bench/edit_timeline.py`` makes
them), each with its own ``KymDataset`` (as a running daemon: tables cached, the
publisher's row groups remembered). Edit by edit, the variants take turns (which goes
first alternates), each editing the same record of its own copy:

- ``whole``: the table file written in one piece, as before row groups (the publisher's
  write swapped for ``start_table_writes`` of the whole table);
- ``groups``: the file in row groups, the edit encoding only the touched group.

With ``--batch N`` each edit re-indexes N random generation-2 records at once (a
burst's batch). Each edit's time from the call to the rename of
``kym_velocity_events.parquet`` and the process CPU of the call are printed (p50 /
p90), and the two files are checked equal.

    PYTHONPATH=src .venv/bin/python bench/rowgroups_ab.py --records 10000 --edits 40
"""

from __future__ import annotations

import argparse
import pathlib
import random
import statistics
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storegen
from edit_timeline import make_store, note_renames

TABLE = "kym_velocity_events.parquet"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--edits", type=int, default=40)
    p.add_argument("--batch", type=int, default=1, help="records per edit (a burst: more)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rowgroups/ab"))
    a = p.parse_args(argv)
    import pyarrow.parquet as pq
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from kymwatch.index import KymDataset, PartitionPolicy, publish
    from kymwatch.index.registry import make_indexers, select_indexers
    from kymwatch.store import Fingerprint, SortedTable, start_table_writes

    grouped_write = publish.start_grouped_write

    def whole_write(path: Path, st: SortedTable, **kwargs: Any) -> Future[Fingerprint]:
        return start_table_writes([(path, st.table)], within=kwargs.get("within"))[0]

    variants = {"whole": whole_write, "groups": grouped_write}
    kds = {}
    for name in variants:
        store = make_store(a.records, a.workdir / f"{name}-{a.records}")
        ixs = make_indexers(select_indexers(store))
        kds[name] = KymDataset(store, indexers=ixs, partitions=PartitionPolicy(0, 25_000, 5.0))
        for ix in ixs:
            kds[name].get_arrow(ix.table_name)  # cached, as in a running daemon
    ix_name = next(
        ix.name
        for ix in make_indexers(select_indexers(kds["whole"].store.path))
        if ix.table_name == TABLE[: -len(".parquet")]
    )
    real_replace = pathlib.Path.replace  # put back at the end
    renamed = note_renames()
    res: dict[str, dict[str, list[float]]] = {v: {"rename": [], "cpu": []} for v in variants}
    rng = random.Random(11)
    for k in range(a.edits + 1):
        picked: set[int] = set()
        while len(picked) < a.batch:
            i = rng.randrange(a.records)
            if storegen.generation(i) == 2:
                picked.add(i)
        marker = 70_000.0 + k
        order = list(variants) if k % 2 else list(reversed(variants))
        for name in order:
            publish.start_grouped_write = variants[name]  # type: ignore[assignment]
            kd = kds[name]
            for i in sorted(picked):
                data = storegen.artifact_bytes(i, "events", marker)
                storegen.atomic_write(storegen.artifact_path(kd.store.path, i, "events"), data)
            renamed.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            kd.update_batch_report({ix_name: [storegen.image_id(i) for i in sorted(picked)]})
            c1 = time.process_time()
            if k and TABLE in renamed:  # the first edit of each: its full write, left out
                res[name]["rename"].append((renamed[TABLE] - t0) * 1000)
                res[name]["cpu"].append((c1 - c0) * 1000)
            time.sleep(0.05)
    publish.start_grouped_write = grouped_write  # type: ignore[assignment]
    pathlib.Path.replace = real_replace  # type: ignore[method-assign]
    paths = [kds[n].store.table_path(TABLE[: -len(".parquet")]) for n in variants]
    same = pq.read_table(paths[0]).equals(pq.read_table(paths[1]))
    groups = [pq.ParquetFile(p).num_row_groups for p in paths]
    for name, by in res.items():
        for what, xs in by.items():
            xs = sorted(xs)
            p50, p90 = statistics.median(xs), xs[int(0.9 * (len(xs) - 1))]
            print(f"{a.records} {name:7s} {what:7s} n={len(xs)} p50 {p50:6.1f} p90 {p90:6.1f} ms")
    print(f"tables equal: {same}; row groups {dict(zip(variants, groups, strict=True))}")


if __name__ == "__main__":
    main()
