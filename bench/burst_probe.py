"""By-hand measurement: the daemon's CPU and wall time over bursts, base vs new code.

Run as ``python bench/burst_probe.py SRC [SRC ...] [--records 10000] [--burst 2000]
[--rounds 2] [--reps 1] [--spy] [--strace] [--gc] [--tables DIR] [--writer-only]
[--relink] [--flush]``: for each round and each source tree SRC (a folder holding
``kymwatch/``, e.g. an exported ``src/`` of another commit), one after the other on a
fresh hard-link copy of the bench's cached store (tables from ``--tables``, by default
those of an indexed template in ``bench/out/cache``; state seeded), a ``kymwatch run`` of
that tree watches the store (``PYTHONPATH=SRC``), waited until idle; then ``--reps``
bursts on that one daemon and copy, as ``sec_burst`` does (each a new marker): the burst
rewrites both artifacts of ``--burst`` records, then calls the sync barrier, and the
next burst waits until the daemon is idle again.

Prints one JSON line per burst: wall (first write → sync returns), write time and the
writer's (this process's) user / system CPU and page faults over the writes, the
daemon's CPU over the burst (all threads, split into user and system time from
``/proc/<pid>/stat``; the main thread's; each other thread's), its minor / major page
faults and run-queue wait, its ``batch_indexed`` lines (one per table write: records
per write) and the chunks they cover (more than the writes when a backlog's chunks were
held), the kernel's dirty and writeback pages at the burst's start, and the marker
check; with ``--gc`` also Python's cyclic collections over the burst (:mod:`gc_probe`).
``--spy`` records a py-spy profile of each burst into ``bench/out/profiles``,
``--strace`` counts its system calls there (``strace -c -f``). Base and new alternate so
that the shared machine's load falls on both alike.

``--writer-only`` runs the same bursts with no daemon at all (the writes alone, then
nothing), to tell the writer's own cost from the daemon's. ``--relink`` makes every
artifact of the burst a hard link shared with the cache again before each burst
(untimed, as the first burst finds them; like a hard-link copy it changes the cached
files' ctime, so never while a benchmark runs); ``--flush`` calls ``sync(2)`` before each burst
(untimed), so no dirty pages of the previous burst are left to write back during it.
"""

from __future__ import annotations

import argparse
import json
import os
import profile as spyprof
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

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


def _stat(path: Path) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` file after the command name (field 3 first)."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = _stat(task / "stat")
        if fields is not None:
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _proc_counters(pid: int) -> dict[str, float]:
    """The process's user and system CPU seconds and minor / major page faults (all
    threads, from ``/proc/<pid>/stat``; fields 14, 15, 10 and 12)."""
    f = _stat(Path(f"/proc/{pid}/stat"))
    assert f is not None
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "user_s": int(f[11]) / tick,
        "sys_s": int(f[12]) / tick,
        "minflt": int(f[7]),
        "majflt": int(f[9]),
    }


def _self_counters() -> dict[str, float]:
    """This process's (the writer's) user / system CPU seconds and page faults."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": r.ru_utime, "sys_s": r.ru_stime, "minflt": r.ru_minflt, "majflt": r.ru_majflt}


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in after}


def _meminfo_kib(*keys: str) -> dict[str, int]:
    """``/proc/meminfo`` fields in KiB (``Dirty``, ``Writeback``)."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in keys:
            out[name.lower() + "_kib"] = int(rest.split()[0])
    return out


_CPU = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _kernel_threads() -> dict[str, float]:
    """CPU seconds of the kernel's threads (children of ``kthreadd``): all of them, and
    the high-priority block workers (``kworker/*H*``: discards, I/O completions)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = block = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        f = _stat(proc / "stat")
        if f is None or f[1] != "2":
            continue
        cpu = (int(f[11]) + int(f[12])) / tick
        total += cpu
        name = (proc / "comm").read_text() if cpu else ""
        if name.startswith("kworker/") and "H" in name.split("-")[0]:
            block += cpu
    return {"kthreads_cpu_s": total, "kblock_cpu_s": block}


def _system() -> dict[str, float]:
    """Machine-wide counters: CPU seconds by kind (``/proc/stat``, all cores), the
    kernel threads' CPU, and the disk's write and discard requests (``/sys/block``)."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    out = {f"cpu_{k}_s": int(v) / tick for k, v in zip(_CPU, cpu, strict=False)}
    dev = os.stat(storegen.OUT).st_dev  # the disk the stores are on
    f = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text().split()
    out |= {"disk_writes": int(f[4]), "disk_discards": int(f[11])}
    out |= {"disk_discard_mib": round(int(f[13]) / 2048, 1)}
    return out | _kernel_threads()


def _relink(store: Path, n: int, idx: list[int]) -> None:
    """Make each burst artifact a hard link of the cached store's file again (untimed)."""
    src, _ = storegen.cached_store(n)
    for i in idx:
        for kind in storegen.KINDS:
            mine = storegen.artifact_path(store, i, kind)
            orig = src / mine.relative_to(store)
            if os.stat(mine).st_ino == os.stat(orig).st_ino:
                continue  # shared already (a rename onto a link of itself does nothing)
            tmp = f"{mine}.relink.partial"
            os.link(orig, tmp)
            os.replace(tmp, mine)


def _writes(store: Path, idx: list[int], marker: float) -> dict[str, Any]:
    """The burst's writes, timed, with the writer's own CPU and faults."""
    mem = _meminfo_kib("Dirty", "Writeback")
    c0 = _self_counters()
    t0 = time.perf_counter()
    storegen.write_artifacts(store, idx, marker)
    t1 = time.perf_counter()
    w = _diff(_self_counters(), c0)
    return (
        {"t0": t0, "t1": t1, "write_s": round(t1 - t0, 3)}
        | {f"writer_{k}": v for k, v in w.items()}
        | {f"start_{k}": v for k, v in mem.items()}
    )


def _between(store: Path, idx: list[int], opts: argparse.Namespace) -> None:
    """Before a burst (untimed): ``--relink``, then ``--flush`` (which also commits the
    relink's own freed files, and their discards, before the burst)."""
    if opts.relink:
        _relink(store, opts.records, idx)
    if opts.flush:
        os.sync()


def _burst(
    d: Daemon,
    src: Path,
    store: Path,
    idx: list[int],
    marker: float,
    opts: argparse.Namespace,
    gc_out: Path | None,
) -> dict[str, object]:
    _between(store, idx, opts)  # before the wait: the daemon indexes a relinked file
    sync(store)
    settled_s = d.wait_idle()
    raw = spyprof.OUT / f"probe-{src.parent.name}-{int(marker)}.raw"
    proc = spyprof._record_pid(d.pid, raw) if opts.spy else None
    if opts.strace:  # system calls of every thread, counted (strace -c)
        out = spyprof.OUT / f"strace-{src.parent.name}-{int(marker)}.txt"
        cmd = ["strace", "-c", "-f", "-p", str(d.pid), "-o", str(out)]
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    if proc is not None:
        time.sleep(1.0)
    n_batches = len(d.events("batch_indexed"))
    p0 = _proc_counters(d.pid)
    threads0 = _thread_cpu(d.pid)
    _, w0 = d.schedstat()
    wall0 = time.time()
    s0 = _system()
    w = _writes(store, idx, marker)
    sync(store)
    t2 = time.perf_counter()
    wall2 = time.time()
    p = _diff(_proc_counters(d.pid), p0)
    threads = _thread_cpu(d.pid)
    main_cpu = threads.get(d.pid, 0.0) - threads0.get(d.pid, 0.0)
    wait = d.schedstat()[1] - w0
    machine = _machine(s0, opts.tail)
    if proc is not None and opts.strace:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    elif proc is not None:
        spyprof._finish(proc, raw, raw.stem, f"{src}: burst ({t2 - w['t0']:.2f} s)")
    batches = d.events("batch_indexed")[n_batches:]
    ok = stores.records_with_marker(store, idx, marker)
    collections = {} if gc_out is None else gc_probe.window(gc_out, wall0, wall2)
    t0, t1 = w.pop("t0"), w.pop("t1")
    return (
        collections
        | {
            "src": str(src),
            "settled_s": round(settled_s, 1),
            "total_s": round(t2 - t0, 3),
            **w,
            "after_write_s": round(t2 - t1, 3),
            "daemon_cpu_s": round(p["user_s"] + p["sys_s"], 3),
            "daemon_user_s": p["user_s"],
            "daemon_sys_s": p["sys_s"],
            "daemon_minflt": int(p["minflt"]),
            "daemon_majflt": int(p["majflt"]),
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
            "vm_hwm_mib": d.peak_rss_mib()["vm_hwm_mib"],  # since the start
            "rss_now_mib": d.peak_rss_mib()["rss_now_mib"],
            "batches": len(batches),
            "chunks": sum(int(b.get("chunks", 1)) for b in batches),  # > batches: held writes
            "batch_records": [b.get("records") for b in batches],
            "ok": stores.markers_ok(ok),
        }
        | machine
    )


def _machine(s0: dict[str, float], tail: float) -> dict[str, float]:
    """The machine's counters from ``s0`` to now (``burst_``) and to ``tail`` seconds
    later (``tail_``: an ext4 journal commit, with its discards, may follow the burst)."""
    burst = _diff(_system(), s0)
    time.sleep(tail)
    after = _diff(_system(), s0)
    return {f"burst_{k}": v for k, v in burst.items()} | {
        f"tail_{k}": v for k, v in after.items() if not k.startswith("cpu_idle")
    }


def _run(
    src: Path, store: Path, idx: list[int], marker: float, opts: argparse.Namespace
) -> list[dict[str, object]]:
    """``opts.reps`` bursts on one daemon of ``src`` watching ``store``."""
    env = {"PYTHONPATH": str(src)}
    gc_out = storegen.OUT / "work" / "gc-probe.json" if opts.gc else None
    if gc_out is not None:  # the collections, recorded by a sitecustomize hook
        hook = gc_probe.hook_dir(storegen.OUT / "gc-hook")
        env = {"PYTHONPATH": f"{src}:{hook}", gc_probe.ENV: str(gc_out)}
        gc_out.unlink(missing_ok=True)
    d = Daemon(store, quiet_ms=300, extra=["--settle-ms", "20"])
    d.proc.env.update(env)
    out = []
    with d:
        for rep in range(opts.reps):
            got = _burst(d, src, store, idx, marker + rep, opts, gc_out)
            out.append({"rep": rep + 1} | got)
    return out


def _writer_only(
    store: Path, idx: list[int], marker: float, opts: argparse.Namespace
) -> list[dict[str, object]]:
    """The bursts' writes with no daemon: what the writing alone costs, rep by rep."""
    out = []
    for rep in range(opts.reps):
        _between(store, idx, opts)
        time.sleep(opts.tail)  # the previous burst's journal commit
        s0 = _system()
        w = _writes(store, idx, marker + rep)
        w.pop("t0"), w.pop("t1")
        out.append({"rep": rep + 1, "src": "writer-only"} | w | _machine(s0, opts.tail))
    return out


def main() -> None:
    """Alternate the source trees over the rounds; print one JSON line per burst."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("src", nargs="*", type=Path)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=1, help="bursts on one daemon and copy")
    p.add_argument("--spy", action="store_true")
    p.add_argument("--strace", action="store_true")
    p.add_argument("--gc", action="store_true", help="Python's collections over the burst")
    p.add_argument("--tables", type=Path, default=None)
    p.add_argument("--writer-only", action="store_true", help="no daemon: the writes alone")
    p.add_argument("--relink", action="store_true", help="re-share the artifacts before each")
    p.add_argument("--flush", action="store_true", help="sync(2) before each burst")
    p.add_argument("--tail", type=float, default=6.0, help="seconds counted after a burst")
    opts = p.parse_args()
    if not opts.src and not opts.writer_only:
        p.error("give a source tree (or --writer-only)")
    measure.quiet_logging()
    n = opts.records
    if opts.tables is None:  # any indexed template of this size (state is seeded afresh)
        found = sorted(storegen.CACHE.glob(f"indexed-{n}x{storegen.ROWS_PER_RECORD}-*"))
        if not found:
            p.error(f"no indexed {n}-record template in {storegen.CACHE}: pass --tables")
        opts.tables = found[-1] / "tables"
    work = storegen.OUT / "work"
    spyprof.OUT.mkdir(parents=True, exist_ok=True)
    idx = random.Random(opts.burst).sample(range(n), opts.burst)
    marker = 30_000.0
    runs: list[Path | None] = list(opts.src) or [None]
    for _ in range(opts.rounds):
        for src in runs:
            marker += opts.reps
            store = _prepare(n, work / "probe-store", opts.tables)
            if src is None:
                got = _writer_only(store, idx, marker, opts)
            else:
                got = _run(src.resolve(), store, idx, marker, opts)
            for line in got:
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
