"""By-hand measurement: CPU time of one daemon-style batch, in process.

Run as ``python bench/batch_cpu.py STORE RECORDS [ROUNDS]`` on an indexed store (a
hard-link copy: tables are written): loads every table (as a running daemon has them),
then re-indexes the first RECORDS records with every indexer at once
(``KymDataset.update_batch_report``, what the worker calls for a burst) ROUNDS times;
prints one JSON line with the CPU seconds of each round. Compare two source trees by
running this alternately with ``PYTHONPATH=<tree>/src`` (the machine is shared).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


def main() -> None:
    """Time the batches; print the measurements."""
    import structlog

    from kymwatch.index import KymDataset
    from kymwatch.index.registry import make_indexers, select_indexers

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store, records = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    kd = KymDataset(store, "a", indexers=make_indexers(select_indexers(Path(store))))
    for ix in kd.indexers:
        kd.get_arrow(ix.table_name)
    ids = kd.store.list_image_ids()[:records]
    work = {ix.name: ids for ix in kd.indexers}
    cpu = []
    for _ in range(rounds):
        t = time.process_time()
        kd.update_batch_report(work, log_outcomes=False)
        cpu.append(time.process_time() - t)
    print(json.dumps({"records": len(ids), "indexers": len(work), "cpu_seconds": cpu}))


if __name__ == "__main__":
    main()
