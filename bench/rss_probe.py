"""Where a daemon's memory goes: ``kymwatch run`` in a child process with probes.

Measured by hand (not part of ``./dev bench``)::

    .venv/bin/python bench/rss_probe.py WORKDIR [--records 10000] [--tracemalloc]
        [--first-start] [--edits 20] [--burst 2000] [--bursts 1]

The child runs ``kymwatch.cli.main(["run", STORE])`` with hooks that record, at each
step (after imports, after the state is loaded, after the start-up reconcile, then
on request of the driver: idle, after single edits, after a burst): VmRSS / VmHWM,
anonymous vs file-backed RSS (``smaps_rollup``), glibc's heap counters
(``mallinfo2``: in use, free, mapped), Arrow's allocated bytes, the threads, and
with ``--tracemalloc`` the Python allocations by line. The store is a hard-link
copy of the cached kymflow-shaped store of :mod:`storegen` with the template
tables installed (a restart) or without tables and state (``--first-start``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# -- the child: the daemon with probes -------------------------------------------------------
class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _proc_kib(path: str, keys: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def _maps() -> dict[str, float]:
    """RSS (MiB) by kind of mapping: heap, malloc arenas of threads (64 MiB regions),
    1 MiB regions (Python's object arenas), thread stacks, other anonymous, files."""
    sums: dict[str, float] = {}
    kind, size = "", 0
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                size = hi - lo
                name = head[5] if len(head) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("["):
                    kind = name
                elif name:
                    kind = "file " + os.path.basename(name).split(".")[0][:20]
                elif size == 1 << 20:
                    kind = "anon 1MiB (pymalloc?)"
                elif size in (8 << 20, (8 << 20) + 4096):
                    kind = "anon 8MiB (stack?)"
                elif (size >= 60 << 20 and size <= 64 << 20) or "rw" not in head[1]:
                    kind = "anon arena/guard"
                else:
                    kind = "anon other"
            elif head[0] == "Rss:":
                sums[kind] = sums.get(kind, 0.0) + int(head[1]) / 1024
    big = {k: round(v, 1) for k, v in sorted(sums.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    return big


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator: arenas held and bytes in use (MiB)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, val = line.rpartition("=")
        key = key.strip()
        val = val.strip().replace(",", "")
        if key == "# arenas allocated current":
            out["pymalloc_arenas"] = int(val)
        elif key == "# bytes in allocated blocks":
            out["pymalloc_used"] = round(int(val) / 2**20, 1)
        elif key == "Total":
            out["pymalloc_total"] = round(int(val) / 2**20, 1)
    return out


def _malloc_info() -> dict[str, Any]:
    """glibc's arenas (MiB each, current system memory) and its mmapped total."""
    import re
    import tempfile

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        with tempfile.NamedTemporaryFile() as tmp:
            fp = libc.fopen(tmp.name.encode(), b"w")
            libc.malloc_info(0, ctypes.c_void_p(fp))
            libc.fclose(ctypes.c_void_p(fp))
            xml = Path(tmp.name).read_text()
    except (OSError, AttributeError):
        return {}
    heaps = re.findall(r'<heap nr="\d+">.*?<system type="current" size="(\d+)"/>', xml, re.S)
    return {"arenas": [round(int(h) / 2**20, 1) for h in heaps]}


def _line(stat: Any) -> str:
    return f"{stat.size / 2**20:7.2f} MiB {stat.count:8d} {stat.traceback}"


class _GcProbe:
    """Python's cyclic collections (a ``gc.callbacks`` hook): count, seconds and the
    longest pause per generation, and collections per thread, since the last take."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[int, float] = {}  # thread id -> start of its collection
        self.own = False  # the snapshot's own gc.collect() is left out
        self.reset()

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = 0
        self.threads: dict[str, int] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        me = threading.get_ident()
        if phase == "start":
            self.started[me] = time.perf_counter()
            return
        took = time.perf_counter() - self.started.pop(me, time.perf_counter())
        if self.own:
            return
        gen = info["generation"]
        with self.lock:
            self.count[gen] += 1
            self.seconds[gen] += took
            self.longest[gen] = max(self.longest[gen], took)
            self.collected += info["collected"]
            name = threading.current_thread().name
            self.threads[name] = self.threads.get(name, 0) + 1

    def take(self) -> dict[str, Any]:
        """What ran since the last take, and what each generation holds now."""
        import gc

        with self.lock:
            doc = {
                "gc_count": list(self.count),
                "gc_ms": [round(s * 1000, 1) for s in self.seconds],
                "gc_longest_ms": [round(s * 1000, 1) for s in self.longest],
                "gc_collected": self.collected,
                "gc_threads": dict(self.threads),
            }
            self.reset()
        doc["gc_objects"] = [len(gc.get_objects(g)) for g in range(3)]
        doc["gc_frozen"] = gc.get_freeze_count()
        doc["gc_threshold"] = list(gc.get_threshold())
        return doc


GC_PROBE = _GcProbe()


def snapshot(label: str, top: int = 0) -> dict[str, Any]:
    """The process's memory now (MiB), and the collections since the last snapshot."""
    import gc

    doc: dict[str, Any] = {"label": label, "t": time.time()}
    doc |= GC_PROBE.take()
    GC_PROBE.own = True
    try:
        gc.collect()
    finally:
        GC_PROBE.own = False
    doc |= _proc_kib("/proc/self/status", ("VmRSS", "VmHWM", "RssAnon", "RssFile"))
    doc["Threads"] = len(os.listdir("/proc/self/task"))
    doc |= _proc_kib("/proc/self/smaps_rollup", ("Anonymous", "Private_Dirty", "Shared_Clean"))
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        doc["heap_in_use"] = round(mi.uordblks / 2**20, 1)
        doc["heap_free"] = round(mi.fordblks / 2**20, 1)
        doc["heap_arena"] = round(mi.arena / 2**20, 1)
        doc["mmapped"] = round(mi.hblkhd / 2**20, 1)
    except (OSError, AttributeError):
        pass
    if "pyarrow" in sys.modules:
        import pyarrow as pa

        doc["arrow"] = round(pa.total_allocated_bytes() / 2**20, 1)
        doc["arrow_peak"] = round(pa.default_memory_pool().max_memory() / 2**20, 1)
        for name in ("jemalloc", "mimalloc"):
            try:
                pool = getattr(pa, f"{name}_memory_pool")()
                doc[name] = round(pool.bytes_allocated() / 2**20, 1)
                doc[f"{name}_peak"] = round(pool.max_memory() / 2**20, 1)
            except (NotImplementedError, AttributeError):
                pass
    doc["threads"] = sorted(t.name for t in threading.enumerate())
    doc["maps"] = _maps()
    doc |= _pymalloc()
    doc |= _malloc_info()
    import tracemalloc

    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory()
        doc["py_traced"] = round(cur / 2**20, 1)
        doc["py_traced_peak"] = round(peak / 2**20, 1)
        if top:
            snap = tracemalloc.take_snapshot()
            stats = snap.statistics("lineno")[:top]
            files = snap.statistics("filename")[:top]
            doc["py_top"] = [_line(s) for s in stats]
            doc["py_files"] = [_line(s) for s in files]
    return doc


def _child(store: str, out: str, top: int, extra: list[str]) -> None:
    """Run the daemon on ``store`` and append snapshots to ``out`` (one JSON per line)."""
    import gc

    gc.callbacks.append(GC_PROBE)
    if os.environ.get("PROBE_GC_THRESHOLD"):  # a variant: "700,10,10" is Python's default
        gc.set_threshold(*(int(x) for x in os.environ["PROBE_GC_THRESHOLD"].split(",")))
    lock = threading.Lock()

    def dump(label: str) -> None:
        with lock, open(out, "a") as f:
            f.write(json.dumps(snapshot(label, top)) + "\n")

    dump("python")
    if not os.environ.get("PROBE_LATE_POOL"):  # as `kymwatch run` does before its imports
        try:
            from kymwatch.daemon.memory import use_system_allocator

            use_system_allocator()
        except ImportError:  # a build without it
            pass
        try:  # numpy kept out as `kymwatch run` does (KYMWATCH_NUMPY=1 keeps it)
            from kymwatch.daemon.memory import keep_numpy_out

            keep_numpy_out(None, dask=False)
        except ImportError:  # a build without it
            pass
    import kymwatch.cli  # noqa: F401
    from kymwatch.daemon import reconciler, runner

    dump("import kymwatch.cli")

    load, init = runner.Daemon._load_state, runner.Daemon.run
    recon = reconciler.Reconciler.reconcile

    def run(self: Any) -> None:
        dump("Daemon constructed (imports, indexers)")
        init(self)

    def load_state(self: Any) -> None:
        load(self)
        dump(f"state loaded ({len(self.state.records)} records)")

    def reconcile(self: Any, why: str) -> Any:
        got = recon(self, why)
        dump(f"reconcile {why}")
        return got

    runner.Daemon.run = run  # type: ignore[method-assign]
    runner.Daemon._load_state = load_state  # type: ignore[method-assign]
    reconciler.Reconciler.reconcile = reconcile  # type: ignore[method-assign]

    def listen() -> None:
        fifo = out + ".fifo"
        while True:
            with open(fifo) as f:
                for line in f:
                    dump(line.strip())

    threading.Thread(target=listen, name="probe", daemon=True).start()
    from kymwatch.cli import main

    sys.exit(main(["run", store, "--log-level", "info", *extra]))


# -- the driver -------------------------------------------------------------------------------
def _prepare(work: Path, n: int, first_start: bool) -> Path:
    sys.path.insert(0, str(HERE))
    import storegen
    import stores

    store = work / f"store-{n}"
    storegen.work_copy(n, store)
    if not first_start:
        tmpl = sorted(storegen.CACHE.glob(f"indexed-{n}x{storegen.ROWS_PER_RECORD}-*"))[-1]
        shutil.copytree(tmpl / "tables", store / "tables")
        stores.seed_state(store)
    return store


def _wait_watching(store: Path, pid: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = json.loads((store / "index" / "status.json").read_bytes())
            if doc.get("pid") == pid and doc.get("state") == "watching":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError("daemon not watching")


def _ask(out: Path, label: str) -> None:
    n = sum(1 for _ in out.open()) if out.exists() else 0
    with open(str(out) + ".fifo", "w") as f:
        f.write(label + "\n")
    while (sum(1 for _ in out.open()) if out.exists() else 0) <= n:
        time.sleep(0.05)


def main() -> None:
    """Drive one daemon through start, idle, single edits and a burst; print the steps."""
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--first-start", action="store_true")
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--edits", type=int, default=20)
    p.add_argument("--burst", type=int, default=2_000)
    p.add_argument("--bursts", type=int, default=1, help="bursts one after the other")
    p.add_argument("--polling", action="store_true", help="kymwatch run --polling")
    p.add_argument("--store", type=Path, help="run on this store as it is (no fresh copy)")
    p.add_argument("--child", nargs=2, metavar=("STORE", "OUT"))
    opts = p.parse_args()
    if opts.child:
        top = opts.top if os.environ.get("PYTHONTRACEMALLOC") else 0
        _child(*opts.child, top, ["--polling"] if opts.polling else [])
        return
    sys.path.insert(0, str(HERE))
    import measure  # noqa: F401  (tests/ on the path: the harness)
    import storegen

    from kymwatch.daemon import request_sync

    store = opts.store or _prepare(opts.work, opts.records, opts.first_start)
    out = opts.work / "probe.jsonl"
    out.unlink(missing_ok=True)
    fifo = Path(str(out) + ".fifo")
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    env = dict(os.environ)
    if opts.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "1"
    cmd = [sys.executable, __file__, str(opts.work), "--child", str(store), str(out)]
    cmd += ["--polling"] if opts.polling else []
    with open(opts.work / "daemon.out", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_watching(store, proc.pid)
        _ask(out, "watching")
        time.sleep(5)
        _ask(out, "idle 5 s")
        for k in range(opts.edits):
            i = (k * 7919) % opts.records
            storegen.write_artifacts(store, [i], marker=0.5 + k / 1000)
            time.sleep(0.4)
            request_sync(store, timeout=300)
        _ask(out, f"after {opts.edits} single edits")
        for b in range(opts.bursts if opts.burst else 0):
            idx = [(b * opts.burst + k) % opts.records for k in range(opts.burst)]
            storegen.write_artifacts(store, idx, marker=0.77 + b / 100)
            request_sync(store, timeout=900)
            _ask(out, f"after {opts.burst}-record burst {b + 1}")
            time.sleep(3)
            _ask(out, "3 s later")
    finally:
        shutil.copy(f"/proc/{proc.pid}/smaps", opts.work / "smaps.txt")
        tasks = Path(f"/proc/{proc.pid}/task")
        names = sorted((t / "comm").read_text().strip() for t in tasks.iterdir())
        (opts.work / "tasks.txt").write_text("\n".join(names) + "\n")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    for line in out.open():
        doc = json.loads(line)
        cols = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "heap_in_use", "heap_free", "mmapped")
        more = ("arrow", "jemalloc", "jemalloc_peak", "mimalloc", "py_traced", "pymalloc_used")
        more += ("pymalloc_arenas", "Threads", "arenas", "gc_count", "gc_ms", "gc_longest_ms")
        more += ("gc_objects", "gc_frozen", "gc_threads")
        vals = " ".join(f"{c}={doc.get(c, '-')}" for c in (*cols, *more))
        print(f"{doc['label']:<42} {vals} threads={len(doc['threads'])}")
        print("     maps:", doc["maps"])
        for row in doc.get("py_top", []):
            print("    ", row)


if __name__ == "__main__":
    main()
