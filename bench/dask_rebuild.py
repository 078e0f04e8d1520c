"""Rebuild of a kymflow-shaped store, local vs a Dask ``local:N`` cluster (issue 13).

Not part of ``./dev bench``: run it by hand, on a quiet machine, once::

    .venv/bin/python bench/dask_rebuild.py --records 50000 --workers 2

It measures, on one store (both generations, four tables):

* the local rebuild (every table, as ``kymwatch rebuild`` does it);
* the start of a ``LocalCluster`` of N single-threaded worker processes;
* the rebuild with the records read on that cluster (the tables are checked equal);
* the per-chunk overhead: an empty task's round trip, and one chunk read on a worker
  against the same chunk read here (the difference is scheduling plus moving the
  chunk's Arrow rows back to the client);
* the machine's load average before and after (the machine may be shared).

``--store PATH`` rebuilds an existing store instead of the generated one (its
``tables/`` are rewritten).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storegen

from kymwatch.index import KymDataset, make_indexers, select_indexers
from kymwatch.index.distributed import ClusterExtractor, ClusterSpec, cluster, extract_chunk
from kymwatch.store import ZarrDataset, ZarrImageRecord, scan_record


def _tables(store: Path, names: list[str]) -> dict[str, Any]:
    return {n: pq.read_table(store / "tables" / f"{n}.parquet") for n in names}


def _rebuild(store: Path, extractor: Any = None) -> tuple[float, dict[str, float]]:
    kd = KymDataset(store, indexers=make_indexers(select_indexers(store)))
    kd.extractor = extractor
    per: dict[str, float] = {}
    start = time.perf_counter()
    for ix in kd.indexers:
        t = time.perf_counter()
        kd.rebuild_report(ix, recheck=True, log_outcomes=False)
        per[ix.table_name] = round(time.perf_counter() - t, 3)
    return round(time.perf_counter() - start, 3), per


def _overhead(client: Any, store: Path, chunk: int) -> dict[str, float]:
    """Per-task costs: an empty task's round trip; one chunk here vs on a worker."""
    kd = KymDataset(store, indexers=make_indexers(select_indexers(store)))
    ix = kd.indexers[0]
    ids = kd.store.list_image_ids()[:chunk]
    [ix_f] = client.scatter([ix], broadcast=True)
    empty = []
    for _ in range(20):
        t = time.perf_counter()
        client.submit(extract_chunk, ix_f, str(store), [], pure=False).result()
        empty.append(time.perf_counter() - t)
    here, there = [], []
    for _ in range(3):
        t = time.perf_counter()
        extract_chunk(ix, str(store), ids)
        here.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.submit(extract_chunk, ix_f, str(store), ids, pure=False).result()
        there.append(time.perf_counter() - t)
    return {
        "indexer": ix.name,  # type: ignore[dict-item]
        "chunk_records": chunk,
        "empty_task_ms": round(statistics.median(empty) * 1000, 2),
        "chunk_here_ms": round(min(here) * 1000, 1),
        "chunk_on_worker_ms": round(min(there) * 1000, 1),
        "overhead_per_chunk_ms": round((min(there) - min(here)) * 1000, 1),
    }


def _scan_pass(store: Path) -> float:
    """One pass fingerprinting every record's files (a rebuild's recheck does two per
    table, on the client)."""
    ds = ZarrDataset(store, "r")
    start = time.perf_counter()
    for image_id in ds.list_image_ids():
        scan_record(ZarrImageRecord(ds, image_id).path)
    return round(time.perf_counter() - start, 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=2000, help="records per task")
    p.add_argument("--store", type=Path, help="an existing store (default: generated)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = args.store or storegen.work_copy(
        args.records, storegen.OUT / "dask" / f"store-{args.records}"
    )
    n_records = len(os.listdir(store / "images")) - 2  # .zgroup, .zattrs
    result: dict[str, Any] = {
        "records": n_records,
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    result["files_per_record"] = statistics.mean(len(storegen.record_files(i)) for i in (0, 1))
    result["scan_pass_s"] = _scan_pass(store)
    result["local_s"], result["local_per_table_s"] = _rebuild(store)
    names = list(result["local_per_table_s"])
    local = _tables(store, names)
    t = time.perf_counter()
    with cluster(ClusterSpec(None, args.workers)) as client:
        result["cluster_start_s"] = round(time.perf_counter() - t, 2)
        extractor = ClusterExtractor(client, store, args.chunk)
        result["dask_s"], result["dask_per_table_s"] = _rebuild(store, extractor)
        result["dask_chunks"] = extractor.chunks_done
        result["dask_read_s"] = round(extractor.seconds_in_tasks, 3)  # waiting for the cluster
        result["dask_equal_tables"] = all(local[n].equals(_tables(store, [n])[n]) for n in names)
        result["overhead"] = _overhead(client, store, args.chunk)
    result["workers"] = args.workers
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    # The client's own share (fingerprints, merge, table writes), the same in both runs:
    result["client_serial_s"] = round(result["dask_s"] - result["dask_read_s"], 3)
    result["local_read_s"] = round(result["local_s"] - result["client_serial_s"], 3)
    print(json.dumps(result, indent=2))
    return 0 if result["dask_equal_tables"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
