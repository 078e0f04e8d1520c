"""Function-level profiles of the costs the benchmarks measure (not part of the full run).

Uses py-spy (sampling, attaches to the daemon subprocess, or runs a child) and
aggregates its collapsed stacks into the functions with the most inclusive and
self time. Reports go to ``bench/out/profiles/<name>.txt``.

    ./dev bench profile rebuild 10000
    ./dev bench profile burst 10000 2000
    ./dev bench profile latency 10000 40
    ./dev bench profile restart 10000
    ./dev bench profile memory 10000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import measure
import sec_scale
import storegen
import stores
from measure import Ctx, Daemon, sync

PY_SPY = Path(sys.executable).with_name("py-spy")
OUT = storegen.OUT / "profiles"
SPY_OPTS = ["-r", "200", "--nolineno"]


def summarize(raw: Path, title: str, top: int = 30) -> str:
    """Inclusive and self sample counts per function from py-spy's collapsed stacks."""
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        total += n
        for f in set(frames):
            incl[f] += n
        self_[frames[-1]] += n
    lines = [f"# {title}", f"{total} samples", "", "## inclusive (% of samples)"]
    lines += [f"{c / total * 100:6.1f}  {f}" for f, c in incl.most_common(top)]
    lines += ["", "## self (% of samples)"]
    lines += [f"{c / total * 100:6.1f}  {f}" for f, c in self_.most_common(top)]
    return "\n".join(lines) + "\n"


def _record_pid(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(PY_SPY), "record", "-p", str(pid), "-f", "raw", "-o", str(raw), *SPY_OPTS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finish(spy: subprocess.Popen[bytes], raw: Path, name: str, title: str) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=120)
    text = summarize(raw, title)
    (OUT / f"{name}.txt").write_text(text)
    print(text)


def prof_rebuild(ctx: Ctx, n: int) -> None:
    """py-spy over a full rebuild (child process) of an ``n``-record store."""
    store = storegen.work_copy(n, ctx.work / f"store-{n}")
    raw = OUT / f"rebuild-{n}.raw"
    child = Path(__file__).with_name("rebuild_child.py")
    subprocess.run(
        [str(PY_SPY), "record", "-f", "raw", "-o", str(raw), *SPY_OPTS, "--",
         sys.executable, str(child), str(store)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    text = summarize(raw, f"rebuild of {n} records (both tables)")
    (OUT / f"rebuild-{n}.txt").write_text(text)
    print(text)


def prof_burst(ctx: Ctx, n: int, b: int) -> None:
    """py-spy on the daemon while it absorbs a burst of ``b`` records in an ``n`` store."""
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    idx = random.Random(b).sample(range(n), b)
    with Daemon(store, quiet_ms=ctx.opts.quiet_ms) as d:
        sync(store)
        raw = OUT / f"burst-{n}-{b}.raw"
        spy = _record_pid(d.pid, raw)
        time.sleep(1.0)
        t0 = time.perf_counter()
        storegen.write_artifacts(store, idx, 555.0)
        sync(store)
        took = time.perf_counter() - t0
        _finish(spy, raw, f"burst-{n}-{b}", f"daemon, burst of {b} records into {n} ({took:.1f} s)")


def prof_latency(ctx: Ctx, n: int, k: int) -> None:
    """py-spy on the daemon over ``k`` single edits, 0.6 s apart, in an ``n`` store."""
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    rng = random.Random(1)
    with Daemon(store, quiet_ms=ctx.opts.quiet_ms) as d:
        sync(store)
        raw = OUT / f"latency-{n}.raw"
        spy = _record_pid(d.pid, raw)
        time.sleep(1.0)
        for j in range(k):
            i, kind = rng.randrange(n), storegen.KINDS[j % 2]
            path = storegen.artifact_path(store, i, kind)
            storegen.atomic_write(path, storegen.artifact_bytes(i, kind, float(j)))
            time.sleep(0.6 + ctx.opts.quiet_ms / 1000)
        _finish(spy, raw, f"latency-{n}", f"daemon, {k} single edits in a {n}-record store")


def prof_restart(ctx: Ctx, n: int) -> None:
    """py-spy over a daemon start on an indexed ``n`` store with nothing changed."""
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    raw = OUT / f"restart-{n}.raw"
    proc = subprocess.Popen(
        [str(PY_SPY), "record", "-f", "raw", "-o", str(raw), *SPY_OPTS, "--",
         sys.executable, "-m", "kymwatch", "run", str(store), "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    status = store / "index" / "status.json"
    deadline = time.monotonic() + 600
    doc: dict[str, object] = {}
    while time.monotonic() < deadline and doc.get("state") != "watching":
        time.sleep(0.05)
        try:
            doc = json.loads(status.read_bytes())
        except (OSError, ValueError):
            doc = {}
    os.kill(int(str(doc["pid"])), signal.SIGTERM)
    proc.wait(timeout=120)
    text = summarize(raw, f"daemon start, nothing changed, {n} records (until stopped)")
    (OUT / f"restart-{n}.txt").write_text(text)
    print(text)


_MEMORY_CHILD = """
import gc, json, sys, time, psutil
from pathlib import Path
proc = psutil.Process()
steps = []
def mark(what):
    gc.collect()
    steps.append((what, proc.memory_info().rss / 2**20))
mark("python")
import pandas, pyarrow, pyarrow.parquet
mark("import pandas + pyarrow")
import kymwatch.cli, kymwatch.daemon
mark("import kymwatch (cli, daemon)")
root = Path(sys.argv[1])
from kymwatch.daemon import IndexState, InotifyWatcher
state = IndexState.load(root)
mark(f"IndexState.load ({len(state.records)} records)")
from kymwatch.index import KymDataset
from kymwatch.index.registry import make_indexers, select_indexers
kd = KymDataset(root, indexers=make_indexers(select_indexers(root)))
tables = kd.load_tables()
mark("KymDataset.load_tables (" + ", ".join(f"{k} {len(v)} rows" for k, v in tables.items()) + ")")
from kymwatch.store import scan_dataset
disk = scan_dataset(root)
mark("scan_dataset result held")
del disk
mark("scan_dataset result dropped")
w = InotifyWatcher(root, lambda item: None)
w.start()
mark(f"InotifyWatcher started ({w.watch_count} watches)")
w.stop()
print(json.dumps(steps))
"""


def prof_memory(ctx: Ctx, n: int) -> None:
    """What a daemon's RSS is made of on an indexed ``n`` store (RSS after each step)."""
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(store)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [f"# RSS of the daemon's parts, indexed {n}-record store", ""]
    prev = 0.0
    for what, rss in steps:
        lines.append(f"{rss:8.1f} MiB  (+{rss - prev:6.1f})  {what}")
        prev = rss
    text = "\n".join(lines) + "\n"
    (OUT / f"memory-{n}.txt").write_text(text)
    print(text)


def main() -> None:
    """Parse the command line and run one profile."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["rebuild", "burst", "latency", "restart", "memory"])
    p.add_argument("n", type=int, help="records in the store")
    p.add_argument("k", type=int, nargs="?", default=0, help="burst size / number of edits")
    p.add_argument("--quiet-ms", type=int, default=300)
    opts = p.parse_args()
    measure.quiet_logging()
    OUT.mkdir(parents=True, exist_ok=True)
    work = storegen.OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(opts=opts, work=work)
    if opts.what == "rebuild":
        prof_rebuild(ctx, opts.n)
    elif opts.what == "burst":
        prof_burst(ctx, opts.n, opts.k or 2000)
    elif opts.what == "latency":
        prof_latency(ctx, opts.n, opts.k or 40)
    elif opts.what == "memory":
        prof_memory(ctx, opts.n)
    else:
        prof_restart(ctx, opts.n)


if __name__ == "__main__":
    main()
