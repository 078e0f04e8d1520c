"""By-hand measurement: the daemon's CPU and wall time over one burst, base vs new code.

Run as ``python bench/burst_probe.py SRC [SRC ...] [--records 10000] [--burst 2000]
[--rounds 2] [--spy] [--strace] [--gc] [--tables DIR]``: for each round and each source tree SRC
(a folder holding ``kymwatch/``, e.g. an exported ``src/`` of another commit), one after
the other on a fresh hard-link copy of the bench's cached store (tables from ``--tables``,
by default those of an indexed template in ``bench/out/cache``; state seeded), a ``kymwatch
run`` of that tree watches the store (``PYTHONPATH=SRC``), waited until idle; the burst
rewrites both artifacts of ``--burst`` records as ``sec_burst`` does, then calls the sync
barrier. Prints one JSON line per run: wall (first write → sync returns), write time, the
daemon's CPU (all threads and the main thread's) and run-queue wait over the burst, its
``batch_indexed`` lines (one per table write: records per write) and the chunks they
cover (more than the writes when a backlog's chunks were held), and the marker check;
with ``--gc`` also Python's cyclic collections over the burst (:mod:`gc_probe`). ``--spy`` records a
py-spy profile of each run into ``bench/out/profiles``, ``--strace`` counts its system
calls there (``strace -c -f``). Base and new alternate so that the shared machine's load
falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import profile as spyprof
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import gc_probe
import measure
import storegen
import stores
from measure import Daemon, sync


def _prepare(n: int, dest: Path, tables: Path) -> Path:
    storegen.work_copy(n, dest)
    shutil.copytree(tables, dest / "tables")
    (dest / "index").mkdir(exist_ok=True)
    stores.seed_state(dest)
    return dest


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _run(
    src: Path,
    store: Path,
    idx: list[int],
    marker: float,
    spy: bool,
    trace: bool = False,
    gc_out: Path | None = None,
) -> dict[str, object]:
    env = {"PYTHONPATH": str(src)}
    if gc_out is not None:  # the collections, recorded by a sitecustomize hook
        hook = gc_probe.hook_dir(storegen.OUT / "gc-hook")
        env = {"PYTHONPATH": f"{src}:{hook}", gc_probe.ENV: str(gc_out)}
        gc_out.unlink(missing_ok=True)
    d = Daemon(store, quiet_ms=300, extra=["--settle-ms", "20"])
    d.proc.env.update(env)
    with d:
        sync(store)
        d.wait_idle()
        raw = spyprof.OUT / f"probe-{src.parent.name}-{int(marker)}.raw"
        proc = spyprof._record_pid(d.pid, raw) if spy else None
        if trace:  # system calls of every thread, counted (strace -c)
            out = spyprof.OUT / f"strace-{src.parent.name}-{int(marker)}.txt"
            cmd = ["strace", "-c", "-f", "-p", str(d.pid), "-o", str(out)]
            proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        if proc is not None:
            time.sleep(1.0)
        n_batches = len(d.events("batch_indexed"))
        cpu0 = d.cpu_seconds()
        threads0 = _thread_cpu(d.pid)
        _, w0 = d.schedstat()
        t0 = time.perf_counter()
        wall0 = time.time()
        storegen.write_artifacts(store, idx, marker)
        t1 = time.perf_counter()
        sync(store)
        t2 = time.perf_counter()
        wall2 = time.time()
        cpu = d.cpu_seconds() - cpu0
        threads = _thread_cpu(d.pid)
        main_cpu = threads.get(d.pid, 0.0) - threads0.get(d.pid, 0.0)
        wait = d.schedstat()[1] - w0
        if proc is not None and trace:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        elif proc is not None:
            spyprof._finish(proc, raw, raw.stem, f"{src}: burst ({t2 - t0:.2f} s)")
        batches = d.events("batch_indexed")[n_batches:]
        peak = d.peak_rss_mib()["vm_hwm_mib"]  # since the start: the burst's, if larger
    ok = stores.records_with_marker(store, idx, marker)
    collections = {} if gc_out is None else gc_probe.window(gc_out, wall0, wall2)
    return collections | {
        "src": str(src),
        "total_s": round(t2 - t0, 3),
        "write_s": round(t1 - t0, 3),
        "after_write_s": round(t2 - t1, 3),
        "daemon_cpu_s": round(cpu, 3),
        "main_thread_cpu_s": round(main_cpu, 3),
        "other_threads_cpu_s": sorted(
            (
                round(c - threads0.get(t, 0.0), 2)
                for t, c in threads.items()
                if t != d.pid and c - threads0.get(t, 0.0) > 0
            ),
            reverse=True,
        ),
        "runqueue_wait_s": round(wait, 3),
        "vm_hwm_mib": peak,
        "batches": len(batches),
        "chunks": sum(int(b.get("chunks", 1)) for b in batches),  # > batches: held writes
        "batch_records": [b.get("records") for b in batches],
        "ok": stores.markers_ok(ok),
    }


def main() -> None:
    """Alternate the source trees over the rounds; print one JSON line per run."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("src", nargs="+", type=Path)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--spy", action="store_true")
    p.add_argument("--strace", action="store_true")
    p.add_argument("--gc", action="store_true", help="Python's collections over the burst")
    p.add_argument("--tables", type=Path, default=None)
    opts = p.parse_args()
    measure.quiet_logging()
    n = opts.records
    if opts.tables is None:  # any indexed template of this size (state is seeded afresh)
        found = sorted(storegen.CACHE.glob(f"indexed-{n}x{storegen.ROWS_PER_RECORD}-*"))
        if not found:
            p.error(f"no indexed {n}-record template in {storegen.CACHE}: pass --tables")
        opts.tables = found[-1] / "tables"
    tables = opts.tables
    work = storegen.OUT / "work"
    spyprof.OUT.mkdir(parents=True, exist_ok=True)
    idx = random.Random(opts.burst).sample(range(n), opts.burst)
    marker = 30_000.0
    for _ in range(opts.rounds):
        for src in opts.src:
            marker += 1
            store = _prepare(n, work / "probe-store", tables)
            gc_out = work / "gc-probe.json" if opts.gc else None
            got = _run(src.resolve(), store, idx, marker, opts.spy, opts.strace, gc_out)
            print(json.dumps(got), flush=True)


if __name__ == "__main__":
    main()
