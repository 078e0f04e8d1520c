"""Latency: one artifact written → the table holding it published on disk.

Method: the benchmark process writes one artifact atomically (``.partial`` file,
then ``os.replace``) and takes the time when the rename returns. It then polls
``os.stat`` of the affected table every ~1 ms; the first change of (inode,
mtime, size) is the publication time. Outside the timing it reads the table and
checks the new row is there (if not, it keeps polling for the next version).
The poller's own delay is measured by the same loop detecting renames made at
known times by another thread (``method_overhead_ms``). Edits alternate
between the two artifacts (velocity events parquet → ``velocity_events``
table, ~10 rows per record; radon JSON → ``radon_report``, 1 row per record),
each on a random record, with a random 0.1-0.3 s pause between edits.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import storegen
import stores
from measure import Ctx, Daemon, LoadMeter, linear_fit, median, percentiles, sync

POLL_S = 0.001


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def wait_publish(path: Path, before: tuple[int, int, int] | None, timeout: float = 60.0) -> float:
    """Poll until ``path`` is replaced; return the perf_counter time it was first seen."""
    deadline = time.perf_counter() + timeout
    while True:
        now = _stamp(path)
        t = time.perf_counter()
        if now != before:
            return t
        if t > deadline:
            raise TimeoutError(f"{path} not republished within {timeout} s")
        time.sleep(POLL_S)


def method_overhead(n: int = 200) -> dict[str, Any]:
    """How late the poller sees a rename made at a known time by another thread."""
    folder = Path(tempfile.mkdtemp(prefix="kymwatch-bench-"))
    target = folder / "t.parquet"
    target.write_bytes(b"0")
    delays = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        before = _stamp(target)
        when: list[float] = []

        def writer(k: int = i, when: list[float] = when) -> None:
            time.sleep(random.uniform(0.002, 0.02))
            tmp = folder / f"t.{k}.partial"
            tmp.write_bytes(str(k).encode())
            os.replace(tmp, target)
            when.append(time.perf_counter())

        th = threading.Thread(target=writer)
        th.start()
        seen = wait_publish(target, before)
        th.join()
        delays.append((seen - when[0]) * 1000)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    shutil.rmtree(folder)
    return {
        "samples": n,
        "poll_interval_ms": POLL_S * 1000,
        **{k: round(v, 3) for k, v in percentiles(delays).items()},
        "mean_ms": round(sum(delays) / n, 3),
        "max_ms": round(max(delays), 3),
        "poller_cpu_fraction_of_core": round(cpu, 3),
    }


def _has_row(store: Path, table: str, image_id: str, marker: float) -> bool:
    col = "score" if table == "velocity_events" else "mean_velocity"
    t = pq.read_table(store / "tables" / f"{table}.parquet", columns=["image_id", col])
    rows = t.filter(pc.equal(t["image_id"], image_id))
    return rows.num_rows > 0 and bool(pc.all(pc.equal(rows[col], marker)).as_py())


def _session(ctx: Ctx, store: Path, n: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    quiet = ctx.opts.quiet_ms
    out: dict[str, list[float]] = {"velocity_events": [], "radon_report": []}
    waits: dict[str, list[float]] = {"velocity_events": [], "radon_report": []}
    misses = 0
    meter = LoadMeter()
    with Daemon(store, quiet_ms=quiet) as d:
        sync(store)
        time.sleep(0.5)
        for k in range(samples):
            i = rng.randrange(n)
            marker = 10_000.0 + seed * 1000 + k
            if k % 2 == 0:
                table, path = "velocity_events", storegen.events_path(store, i)
                data = storegen.events_parquet(marker=marker)
            else:
                table, path = "radon_report", storegen.radon_path(store, i)
                data = storegen.radon_json(i, marker=marker)
            tpath = store / "tables" / f"{table}.parquet"
            before = _stamp(tpath)
            _, w0 = d.schedstat()
            storegen.atomic_write(path, data)
            t_write = time.perf_counter()
            while True:
                seen = wait_publish(tpath, before)
                before = _stamp(tpath)
                if _has_row(store, table, storegen.image_id(i), marker):
                    break
                misses += 1  # a version without our row (should not happen); keep waiting
            out[table].append((seen - t_write) * 1000)
            waits[table].append((d.schedstat()[1] - w0) * 1000)
            time.sleep(rng.uniform(0.1, 0.3))
        batches = [e for e in d.events("batch_indexed") if e.get("source") == "events"]
        rss = d.peak_rss_mib()
    by_table: dict[str, list[float]] = {}
    for e in batches:
        if e.get("records") == 1 and len(e.get("tables") or []) == 1:
            by_table.setdefault(e["tables"][0], []).append(float(e["duration_ms"]))
    return {
        "samples": out,
        "runqueue_wait_ms": waits,
        "worker_ms": by_table,
        "other_cores": meter.other_cores(),
        "misses": misses,
        "batch_duration_ms_median": median([float(e["duration_ms"]) for e in batches]),
        "batch_lag_ms_median": median([float(e["lag_ms"]) for e in batches]),
        "batches": len(batches),
        "daemon_rss": rss,
    }


def run(ctx: Ctx) -> dict[str, Any]:
    """The latency section over ``--latency-sizes``."""
    import sec_scale

    o = ctx.opts
    ctx.log("latency: measuring the poller's own delay")
    res: dict[str, Any] = {"quiet_ms": o.quiet_ms, "method_overhead_ms": method_overhead()}
    per_size = []
    for n in o.latency_sizes:
        sec_scale.ensure_template(ctx, n)
        store = stores.indexed_copy(n, ctx.work / f"store-{n}")
        total = o.latency_samples if n <= 10_000 else o.latency_samples_large
        sessions = max(1, min(o.reps, total // 20))
        runs = []
        for s in range(sessions):
            ctx.log(f"latency: {n} records, session {s + 1}/{sessions}")
            runs.append(_session(ctx, store, n, total // sessions, seed=s))
        pooled = [x for r in runs for t in r["samples"].values() for x in t]
        by_table = {
            t: [x for r in runs for x in r["samples"][t]]
            for t in ("velocity_events", "radon_report")
        }
        minus = [x - o.quiet_ms for x in pooled]
        waited = [w for r in runs for t in r["runqueue_wait_ms"].values() for w in t]
        slow = sorted(zip(minus, waited, strict=True))[int(len(minus) * 0.95) :]
        entry = {
            "records": n,
            "samples": len(pooled),
            "sessions": sessions,
            "latency_ms": percentiles(pooled),
            "latency_minus_quiet_ms": percentiles(minus),
            "max_minus_quiet_ms": max(minus),
            "runqueue_wait_ms": percentiles(waited),
            "slowest_5pct": {
                "latency_minus_quiet_ms_median": median([m for m, _ in slow]),
                "runqueue_wait_ms_median": median([w for _, w in slow]),
            },
            "minus_quiet_minus_wait_ms": percentiles(
                [m - w for m, w in zip(minus, waited, strict=True)]
            ),
            "by_table_minus_quiet_ms": {
                t: percentiles([x - o.quiet_ms for x in v]) for t, v in by_table.items()
            },
            "per_session_p50_minus_quiet_ms": [
                percentiles([x - o.quiet_ms for t in r["samples"].values() for x in t])["p50"]
                for r in runs
            ],
            "batch_duration_ms_median": median([r["batch_duration_ms_median"] for r in runs]),
            "worker_ms_by_table": {
                t: percentiles([x for r in runs for x in r["worker_ms"].get(t, [])])
                for t in ("velocity_events", "radon_report")
            },
            "table_rows": {
                "velocity_events": n * storegen.ROWS_PER_RECORD,
                "radon_report": n,
            },
            "batch_lag_ms_median": median([r["batch_lag_ms_median"] for r in runs]),
            "misses": sum(r["misses"] for r in runs),
            "other_cores_per_session": [round(r["other_cores"], 2) for r in runs],
            "daemon_peak_rss_mib": max(r["daemon_rss"]["vm_hwm_mib"] for r in runs),
            "raw_ms": {t: [round(x, 2) for x in v] for t, v in by_table.items()},
            "raw_runqueue_wait_ms": {
                t: [round(w, 2) for r in runs for w in r["runqueue_wait_ms"][t]]
                for t in ("velocity_events", "radon_report")
            },
        }
        p = entry["latency_minus_quiet_ms"]
        ctx.log(
            f"  {n}: latency - quiet p50 {p['p50']:.0f} / p95 {p['p95']:.0f} / "
            f"p99 {p['p99']:.0f} ms"
        )
        per_size.append(entry)
    res["sizes"] = per_size
    points = [
        (s["table_rows"][t], pct["p50"])
        for s in per_size
        for t, pct in s["worker_ms_by_table"].items()
        if pct["p50"] == pct["p50"]  # not NaN
    ]
    if len(points) >= 2:
        fit = linear_fit([r for r, _ in points], [ms for _, ms in points])
        b, a = fit["slope_s_per_record"], fit["intercept_s"]  # here: ms per row, ms
        res["table_rewrite_fit"] = {
            "ms_per_1k_rows": b * 1000,
            "fixed_ms": a,
            "r2": fit["r2"],
            "rows_at_150_ms": (150 - a) / b if b > 0 else None,
            "points": points,
        }
    return res
