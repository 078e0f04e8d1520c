"""Child process of the scale benchmark: one full ``KymDataset.rebuild`` of every table.

Run as ``python bench/rebuild_child.py STORE``; prints one JSON line with the time
(excluding interpreter start and imports), CPU time and peak RSS of this process.
A fresh process per rebuild gives a clean peak-RSS figure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
import time
from pathlib import Path


def _peak_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (reset by exec), not ``ru_maxrss``, which Linux
    carries over from the process that exec'ed (here the benchmark's own, larger one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Rebuild every table of the store named on the command line; print the measurements."""
    t_import = time.perf_counter()
    try:  # as `kymwatch rebuild` sets up the process, before pyarrow's import (if built)
        from kymwatch.daemon.memory import use_system_allocator

        use_system_allocator()
    except ImportError:
        pass
    try:  # numpy kept out as `kymwatch rebuild` keeps it (built-in indexers, no --dask)
        from kymwatch.daemon.memory import keep_numpy_out

        keep_numpy_out(None, dask=False)
    except ImportError:
        pass
    import structlog

    from kymwatch.index import KymDataset

    trim = None
    try:  # as `kymwatch rebuild` sets up the process (builds that have it)
        from kymwatch.daemon.memory import trim, tune_process_memory

        tune_process_memory()
    except ImportError:
        pass
    try:  # the indexers a daemon would run on this store (both generations)
        from kymwatch.index.registry import make_indexers, select_indexers

        indexers = make_indexers(select_indexers(Path(sys.argv[1])))
    except ImportError:  # a build without generation 2
        indexers = None
    try:
        from kymwatch.index.frames import skip_pyarrow_pandas_probe

        skip_pyarrow_pandas_probe()
    except ImportError:
        pass
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:  # as `kymwatch rebuild` does once its indexers are made (builds that have it)
        from kymwatch.daemon.memory import tune_gc_for_rebuild

        tune_gc_for_rebuild()
    except ImportError:
        pass
    imported = time.perf_counter() - t_import
    rss_after_import = _peak_mib()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    kd = KymDataset(sys.argv[1], "a", indexers=indexers)
    tables = {}
    lock = getattr(kd.store, "table_lock", None)
    with lock() if lock else contextlib.nullcontext():
        if hasattr(kd, "rebuild_reports"):  # one pass over the records for every table
            reports = kd.rebuild_reports(log_outcomes=False, keep_tables=False, after_chunk=trim)
            for report in reports:
                tables[report.table_name] = {
                    "rows": report.table_rows,
                    "records": len(report.outcomes),
                    "seconds": report.duration_ms / 1000,  # merge and write only
                }
        for ix in kd.indexers if not tables else ():
            t = time.perf_counter()
            if hasattr(kd, "rebuild_report"):
                report = kd.rebuild_report(ix, log_outcomes=False)
                rows, records = report.table_rows, len(report.outcomes)
            else:
                rows, records = len(kd.rebuild(ix)), -1
            tables[ix.table_name] = {
                "rows": rows,
                "records": records,
                "seconds": time.perf_counter() - t,
            }
    with open("/proc/self/schedstat") as f:
        waited = int(f.read().split()[1]) / 1e9
    out = {
        "runqueue_wait_s": waited,
        "seconds": time.perf_counter() - wall0,
        "cpu_seconds": time.process_time() - cpu0,
        "import_seconds": imported,
        "peak_rss_mib": _peak_mib(),
        "rss_after_import_mib": rss_after_import,
        "tables": tables,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
