"""The write order of a generation-1 events edit, in process (issue 14; hand-run, not in
the suite).

A generation-1 events edit changes two tables: ``velocity_events`` (the record's own,
50k rows at 10k records) and ``kym_velocity_events`` (kymflow's generation-2 lookup
falls back on the same artifact; 100k rows). On a hard-link copy of the bench's
indexed store (``bench/edit_timeline.py`` makes it) this calls
``KymDataset.update_batch_report`` for one record at a time, the variants taking turns
edit by edit, and times each table's rename from the call:

- ``par-large``: largest table first, both writes at the same time (session 5);
- ``par-small``: smallest first, both writes at the same time;
- ``serial-small``: smallest first, the second write started once the first ended (the
  second table merged meanwhile): what an edit does now.

    PYTHONPATH=src .venv/bin/python bench/edit_order.py --edits 70
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storegen
from edit_timeline import make_store, note_renames

TABLES = ("velocity_events.parquet", "kym_velocity_events.parquet")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--edits", type=int, default=70)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/kw-edit"))
    a = p.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from kymwatch.index import KymDataset, PartitionPolicy, publish
    from kymwatch.index.registry import make_indexers, select_indexers

    store = make_store(a.records, a.workdir / f"order-{a.records}")
    ixs = make_indexers(select_indexers(store))
    kd = KymDataset(store, indexers=ixs, partitions=PartitionPolicy(0, 25_000, 5.0))
    name_of = {ix.table_name: ix.name for ix in ixs}
    for ix in ixs:
        kd.get_arrow(ix.table_name)  # cached, as in a running daemon
    renamed = note_renames()
    real_publish, real_rows = publish.Publisher.publish, publish.Publisher._cached_rows

    def variant(one_by_one: int, largest_first: bool) -> Callable[..., Any]:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            publish.ONE_BY_ONE_RECORDS = one_by_one  # type: ignore[misc]
            if largest_first:
                publish.Publisher._cached_rows = lambda s, ix: -real_rows(s, ix)  # type: ignore[method-assign]
            try:
                return real_publish(self, *args, **kwargs)
            finally:
                publish.Publisher._cached_rows = real_rows  # type: ignore[method-assign]

        return run

    variants = {
        "par-large": variant(0, True),
        "par-small": variant(0, False),
        "serial-small": variant(16, False),
    }
    res: dict[str, dict[str, list[float]]] = {v: {t: [] for t in TABLES} for v in variants}
    rng = random.Random(7)
    for k in range(a.edits):
        for name, run in variants.items():
            publish.Publisher.publish = run  # type: ignore[method-assign]
            i = rng.randrange(a.records)
            while storegen.generation(i) != 1:
                i = rng.randrange(a.records)
            marker = 50_000.0 + k + time.time() % 1000  # new content on every run
            data = storegen.artifact_bytes(i, "events", marker)
            storegen.atomic_write(storegen.artifact_path(store, i, "events"), data)
            image_id = storegen.image_id(i)
            renamed.clear()
            t0 = time.perf_counter()
            kd.update_batch_report({name_of[t[: -len(".parquet")]]: [image_id] for t in TABLES})
            for table, t in renamed.items():
                if table in res[name]:
                    res[name][table].append((t - t0) * 1000)
            time.sleep(0.05)
    publish.Publisher.publish = real_publish  # type: ignore[method-assign]
    for name, by_table in res.items():
        for table, xs in by_table.items():
            xs = sorted(xs)
            p50, p90 = statistics.median(xs), xs[int(0.9 * len(xs))]
            print(f"{name:12s} {table:28s} n={len(xs)} p50 {p50:6.1f} p90 {p90:6.1f}")


if __name__ == "__main__":
    main()
