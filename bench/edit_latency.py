"""Before/after latency of single edits, end to end (issue 14; hand-run, not in the suite).

The method of ``sec_latency`` (atomic writer, the table's ``os.stat`` polled every 1 ms
from this process, the new row checked outside the timing, edits alternating events /
radon on random records 0.1-0.3 s apart), made short and comparable: each variant is a
``src`` folder run as ``kymwatch run`` with ``PYTHONPATH`` pointing at it, and the
variants take turns, session after session, on one hard-link copy of the bench's indexed
store (``bench/edit_timeline.py`` makes it).

    .venv/bin/python bench/edit_latency.py --edits 40 --rounds 2 \
        base=/tmp/kw-edit/base/src new=src
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storegen
from edit_timeline import make_store
from measure import Daemon, percentiles, sync
from sec_latency import _has_row, _stamp, wait_publish


def session(store: Path, n: int, edits: int, seed: int, src: Path, tag: int) -> dict[str, Any]:
    """One daemon of ``src`` on ``store``: ``edits`` timed edits."""
    os.environ["PYTHONPATH"] = str(src.resolve())
    rng = random.Random(seed)
    lat: dict[str, list[float]] = {}
    waits: list[float] = []  # the daemon's threads runnable but not running, per edit
    cpu: list[float] = []  # the daemon's CPU time, per edit
    seq: list[float] = []  # every latency, in edit order
    with Daemon(store, quiet_ms=300, extra=["--settle-ms", "20"]) as d:
        sync(store)
        time.sleep(0.5)
        for k in range(edits):
            i, kind = rng.randrange(n), storegen.KINDS[k % 2]
            table = storegen.table_of(i, kind)
            marker = 30_000.0 + tag * 1000 + k  # new in every session
            path = storegen.artifact_path(store, i, kind)
            data = storegen.artifact_bytes(i, kind, marker)
            tpath = store / "tables" / f"{table}.parquet"
            before = _stamp(tpath)
            c0, w0 = d.schedstat()
            storegen.atomic_write(path, data)
            t_write = time.perf_counter()
            while True:
                seen = wait_publish(tpath, before)
                before = _stamp(tpath)
                if _has_row(store, table, storegen.image_id(i), marker):
                    break
            lat.setdefault(table, []).append((seen - t_write) * 1000)
            seq.append((seen - t_write) * 1000)
            c1, w1 = d.schedstat()
            waits.append((w1 - w0) * 1000)
            cpu.append((c1 - c0) * 1000)
            time.sleep(rng.uniform(0.1, 0.3))
        batches = [e for e in d.events("batch_indexed") if e.get("source") == "events"]
    worker = [float(e["duration_ms"]) for e in batches if e.get("records") == 1]
    return {"latency_ms": lat, "worker_ms": worker, "wait_ms": waits, "cpu_ms": cpu, "seq": seq}


def _fmt(xs: list[float]) -> str:
    p = percentiles(xs, (50, 90, 99))
    return f"n={len(xs):3d} p50 {p['p50']:6.1f}  p90 {p['p90']:6.1f}  p99 {p['p99']:6.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("variants", nargs="+", help="name=src_folder")
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--edits", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/kw-edit"))
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    variants = [(v.split("=", 1)[0], Path(v.split("=", 1)[1])) for v in a.variants]
    store = make_store(a.records, a.workdir / f"e2e-{a.records}")
    res: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    tag = int(time.time()) % 10_000 * 100
    for r in range(a.rounds):
        for name, src in variants:
            tag += 1
            out = session(store, a.records, a.edits, seed=r, src=src, tag=tag)
            res[name].append(out)
            allx = [x for xs in out["latency_ms"].values() for x in xs]
            print(f"round {r} {name:8s} all {_fmt(allx)}", flush=True)
    print()
    for name, _ in variants:
        runs = res[name]
        allx = [x for o in runs for xs in o["latency_ms"].values() for x in xs]
        print(f"{name:8s} all              {_fmt(allx)}")
        for t in storegen.TABLES:
            xs = [x for o in runs for x in o["latency_ms"].get(t, [])]
            if xs:
                print(f"{name:8s} {t:20s} {_fmt(xs)}")
        print(f"{name:8s} worker ms/batch  {_fmt([x for o in runs for x in o['worker_ms']])}")
        print(f"{name:8s} run-queue wait   {_fmt([x for o in runs for x in o['wait_ms']])}")
        print(f"{name:8s} daemon CPU/edit  {_fmt([x for o in runs for x in o['cpu_ms']])}")
        minus = [x - w for o in runs for x, w in zip(o["seq"], o["wait_ms"], strict=True)]
        print(f"{name:8s} latency - wait   {_fmt(minus)}")
    if a.out:
        a.out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
