"""By-hand measurement: CPU of a burst's table work in process, each chunk written vs held.

Run as ``python bench/backlog_cpu.py STORE [--burst 2000] [--chunk 300] [--rounds 3]`` on an
indexed 10k store of the bench (a hard-link copy with its tables, e.g. the one
``burst_probe`` leaves in ``bench/out/work/probe-store``: artifacts are rewritten atomically,
tables are written). Per round and variant: both artifacts of ``--burst`` random records
are rewritten with a new marker (as ``sec_burst`` does), a fresh ``KymDataset`` loads every
table (as a running daemon has them), then the records are re-indexed ``--chunk`` at a
time with every indexer (``update_batch_report``, what the daemon's worker calls):
``each`` writes the tables after every chunk (the daemon before ``backlog_write_s``),
``held`` holds every chunk but the last (``hold=True``), whose call merges and writes
them all. Prints one JSON line per run: CPU seconds of the process (all threads: the
encodes run on writer threads) and wall seconds. Variants alternate (shared machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import storegen


def main() -> None:
    """Time the variants; print the measurements."""
    import structlog

    from kymwatch.index import KymDataset
    from kymwatch.index.registry import make_indexers, select_indexers

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("store", type=Path)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    opts = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    idx = random.Random(opts.burst).sample(range(opts.records), opts.burst)
    ids = [storegen.image_id(i) for i in idx]
    chunks = [ids[k : k + opts.chunk] for k in range(0, len(ids), opts.chunk)]
    marker = 70_000.0
    for _ in range(opts.rounds):
        for variant in ("each", "held"):
            marker += 1
            storegen.write_artifacts(opts.store, idx, marker)
            kd = KymDataset(opts.store, "a", indexers=make_indexers(select_indexers(opts.store)))
            for ix in kd.indexers:
                kd.get_arrow(ix.table_name)
            cpu, wall = time.process_time(), time.perf_counter()
            for k, chunk in enumerate(chunks):
                hold = variant == "held" and k < len(chunks) - 1
                work = {ix.name: chunk for ix in kd.indexers}
                kd.update_batch_report(work, log_outcomes=False, hold=hold)
            out = {"variant": variant, "chunks": len(chunks)}
            out |= {"cpu_s": round(time.process_time() - cpu, 3)}
            out |= {"wall_s": round(time.perf_counter() - wall, 3)}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
