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

import features
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


PARTS_WRITER = "atomic, parts"
"""The atomic writer, timed on the part file holding the record: a daemon run with
``--partition-rows`` (readers of ``tables/<name>/``, not kymflow's single file)."""


def table_file(store: Path, table: str, image_id: str, parts: bool) -> Path:
    """The file a reader of ``table`` waits on: the part holding ``image_id`` when the
    table is kept as parts (``tables/<name>/_parts.json``), else ``tables/<name>.parquet``."""
    if parts:
        from kymwatch.store.parts import parts_folder, read_layout

        folder = parts_folder(store, table)
        layout = read_layout(folder)
        if layout is not None:
            return folder / layout.files[layout.part_of(image_id)]
    return store / "tables" / f"{table}.parquet"


def _has_row(
    store: Path, table: str, image_id: str, marker: float, path: Path | None = None
) -> bool:
    """Whether ``image_id``'s rows in ``table`` carry ``marker`` (read from ``path``,
    by default the single file ``tables/<table>.parquet``)."""
    col = storegen.MARKER_COLUMN[table]
    path = path or store / "tables" / f"{table}.parquet"
    t = pq.read_table(path, columns=["image_id", col])
    rows = t.filter(pc.equal(t["image_id"], image_id))
    return rows.num_rows > 0 and bool(pc.all(pc.equal(rows[col], marker)).as_py())


def daemon_args(ctx: Ctx) -> list[str]:
    """``--settle-ms`` where this build has it (issue 14), nothing otherwise."""
    return ["--settle-ms", str(ctx.opts.settle_ms)] if features.has_option("--settle-ms") else []


def window_ms(ctx: Ctx) -> float:
    """The wait a completion-signalled write pays before indexing in this build:
    the settle time where ``--settle-ms`` exists, else the quiet window."""
    return float(ctx.opts.settle_ms if features.has_option("--settle-ms") else ctx.opts.quiet_ms)


def _partition(store: Path, n: int, rng: random.Random) -> None:
    """Make the daemon cut its large tables into parts before the timing: one untimed
    edit of each artifact kind on a record of each generation, so every table gets a
    write (the first write of a table past ``--partition-rows`` rewrites it whole, as
    parts; a table not cut yet would be timed on its single file, the export), then a
    sync."""
    first = 2 * rng.randrange(max(n // 2, 1))  # even: generation 1, odd: generation 2
    for i in {first, min(first + 1, n - 1)}:
        for kind in storegen.KINDS:
            path = storegen.artifact_path(store, i, kind)
            storegen.atomic_write(path, storegen.artifact_bytes(i, kind, -1.0))
    sync(store)


def _plan(seed: int, n: int, samples: int) -> tuple[random.Random, list[storegen.Edit]]:
    """A session's edits (random records, the two artifact kinds in turn) and the
    random source its pauses go on drawing from."""
    rng = random.Random(seed)
    return rng, [storegen.Edit(rng.randrange(n), storegen.KINDS[k % 2]) for k in range(samples)]


def _session(
    ctx: Ctx,
    store: Path,
    n: int,
    plan: tuple[random.Random, list[storegen.Edit]],
    seed: int,
    writer: str,
) -> dict[str, Any]:
    rng, edits = plan
    quiet = ctx.opts.quiet_ms
    parts = writer == PARTS_WRITER
    out: dict[str, list[float]] = {t: [] for t in storegen.TABLES}
    waits: dict[str, list[float]] = {t: [] for t in storegen.TABLES}
    misses = 0
    meter = LoadMeter()
    write = storegen.inplace_write if writer == "inplace" else storegen.atomic_write
    extra = daemon_args(ctx) + (["--partition-rows", str(ctx.opts.partition_rows)] * parts)
    with Daemon(store, quiet_ms=quiet, extra=extra) as d:
        sync(store)
        if parts:
            _partition(store, n, rng)
        settled = d.wait_idle()  # "daemon is idle": its start-up stale count done
        # Records the start-up reconcile found changed: 0 unless something outside the
        # benchmark touched the store's inodes (a hard-link copy of the same cache
        # changes their ctime), and then the session's peak RSS is a re-index's.
        started = [e for e in d.events("reconcile_done") if e.get("reason") == "startup"]
        startup_changed = started[-1].get("changed") if started else None
        for k, edit in enumerate(edits):
            marker = 10_000.0 + seed * 1000 + k
            table = edit.table
            path = storegen.artifact_path(store, edit.index, edit.kind)
            data = storegen.artifact_bytes(edit.index, edit.kind, marker)
            tpath = table_file(store, table, edit.image_id, parts)
            before = _stamp(tpath)
            _, w0 = d.schedstat()
            write(path, data)
            t_write = time.perf_counter()
            while True:
                seen = wait_publish(tpath, before)
                before = _stamp(tpath)
                if _has_row(store, table, edit.image_id, marker, tpath):
                    break
                misses += 1  # a version without our row (another table's batch); keep waiting
            out[table].append((seen - t_write) * 1000)
            waits[table].append((d.schedstat()[1] - w0) * 1000)
            time.sleep(rng.uniform(0.1, 0.3))
        batches = [e for e in d.events("batch_indexed") if e.get("source") == "events"]
        rss = d.peak_rss_mib()
    by_table: dict[str, list[float]] = {}
    for e in batches:
        if e.get("records") == 1 and e.get("tables"):
            key = "+".join(sorted(e["tables"]))
            by_table.setdefault(key, []).append(float(e["duration_ms"]))
    return {
        "samples": out,
        "runqueue_wait_ms": waits,
        "worker_ms": by_table,
        "other_cores": meter.other_cores(),
        "misses": misses,
        "batch_duration_ms_median": median([float(e.get("duration_ms", "nan")) for e in batches]),
        "batch_lag_ms_median": median([float(e.get("lag_ms", "nan")) for e in batches]),
        "due_by": due_by(batches),
        "batches": len(batches),
        "daemon_rss": rss,
        "settled_s": settled,
        "startup_changed": startup_changed,
    }


def _size(ctx: Ctx, n: int, writer: str) -> dict[str, Any]:
    o = ctx.opts
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    total = o.latency_samples if n <= 10_000 else o.latency_samples_large
    if writer != "atomic":
        total = max(10, int(total * o.inplace_fraction))
    sessions = max(1, min(o.reps, total // 20))
    plans = [_plan(s, n, total // sessions) for s in range(sessions)]
    if writer == "inplace":
        # in-place writes must not reach the cache through a hard link; the daemon then
        # starts with nothing to re-index, as in the atomic sessions
        stores.unshare_artifacts(store, [(e.index, e.kind) for _, edits in plans for e in edits])
    runs = []
    for s, plan in enumerate(plans):
        ctx.log(f"latency: {n} records, {writer} writer, session {s + 1}/{sessions}")
        runs.append(_session(ctx, store, n, plan, seed=s, writer=writer))
    window = window_ms(ctx)
    pooled = [x for r in runs for t in r["samples"].values() for x in t]
    by_table = {
        t: [x for r in runs for x in r["samples"][t]]
        for t in storegen.TABLES
        if any(r["samples"][t] for r in runs)
    }
    minus = [x - window for x in pooled]
    minus_quiet = [x - o.quiet_ms for x in pooled]
    waited = [w for r in runs for t in r["runqueue_wait_ms"].values() for w in t]
    slow = sorted(zip(minus, waited, strict=True))[int(len(minus) * 0.95) :]
    worker: dict[str, list[float]] = {}
    for r in runs:
        for t, xs in r["worker_ms"].items():
            worker.setdefault(t, []).extend(xs)
    due: dict[str, int] = {}
    for r in runs:
        for k, v in r["due_by"].items():
            due[k] = due.get(k, 0) + v
    entry = {
        "records": n,
        "writer": writer,
        "samples": len(pooled),
        "sessions": sessions,
        "window_ms": window,
        "latency_ms": percentiles(pooled),
        "latency_minus_window_ms": percentiles(minus),
        "latency_minus_quiet_ms": percentiles(minus_quiet),
        "max_minus_window_ms": max(minus) if minus else float("nan"),
        "runqueue_wait_ms": percentiles(waited),
        "slowest_5pct": {
            "latency_minus_window_ms_median": median([m for m, _ in slow]),
            "runqueue_wait_ms_median": median([w for _, w in slow]),
        },
        "minus_window_minus_wait_ms": percentiles(
            [m - w for m, w in zip(minus, waited, strict=True)]
        ),
        "latency_minus_wait_ms": percentiles([x - w for x, w in zip(pooled, waited, strict=True)]),
        "by_table_latency_ms": {t: percentiles(v) for t, v in by_table.items()},
        "batch_duration_ms_median": median([r["batch_duration_ms_median"] for r in runs]),
        "worker_ms_by_table": {t: percentiles(v) for t, v in worker.items()},
        "table_rows": storegen.expected_rows(n),
        "batch_lag_ms_median": median([r["batch_lag_ms_median"] for r in runs]),
        "due_by": due,
        "misses": sum(r["misses"] for r in runs),
        "other_cores_per_session": [round(r["other_cores"], 2) for r in runs],
        "daemon_peak_rss_mib": max(r["daemon_rss"]["vm_hwm_mib"] for r in runs),
        "settled_s": [round(r["settled_s"], 1) for r in runs],
        "startup_changed": [r["startup_changed"] for r in runs],
        "raw_ms": {t: [round(x, 2) for x in v] for t, v in by_table.items()},
    }
    p, q = entry["latency_ms"], entry["latency_minus_window_ms"]
    ctx.log(
        f"  {n} {writer}: latency p50 {p['p50']:.0f} / p99 {p['p99']:.0f} ms; "
        f"minus the {window:g} ms window p50 {q['p50']:.0f} / p99 {q['p99']:.0f} ms"
    )
    return entry


def due_by(batches: list[dict[str, Any]]) -> dict[str, int]:
    """Records by the reason they became due (``due_by`` of ``batch_indexed``, where the
    build logs it: ``{"moved": 1, "closed": 0, ...}``); ``n/a`` counts batches without it."""
    out: dict[str, int] = {}
    for e in batches:
        reasons = e.get("due_by")
        if not isinstance(reasons, dict):
            out["n/a"] = out.get("n/a", 0) + 1
            continue
        for reason, count in reasons.items():
            if isinstance(count, int) and count:
                out[reason] = out.get(reason, 0) + count
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    """The latency section over ``--latency-sizes``, for atomic and in-place writers."""
    import sec_scale

    o = ctx.opts
    ctx.log("latency: measuring the poller's own delay")
    settle = features.has_option("--settle-ms")
    res: dict[str, Any] = {
        "quiet_ms": o.quiet_ms,
        "settle_ms": o.settle_ms if settle else None,
        "settle_available": settle,
        "window_ms": window_ms(ctx),
        "daemon_args": daemon_args(ctx),
        "partition_rows": o.partition_rows,
        "method_overhead_ms": method_overhead(),
    }
    per_size = []
    for n in o.latency_sizes:
        why = sec_scale.too_big(ctx, n)
        if why:
            ctx.log(f"latency: {n} records {why}")
            per_size += [{"records": n, "writer": w, "error": why} for w in o.latency_writers]
            continue
        sec_scale.ensure_template(ctx, n)
        writers = list(o.latency_writers)
        if n in o.latency_parts_sizes and features.has_option("--partition-rows"):
            writers.append(PARTS_WRITER)
        for writer in writers:
            try:
                per_size.append(_size(ctx, n, writer))
            except Exception as e:  # one writer's failure keeps the others' figures
                ctx.log(f"latency: {n} records, {writer}: FAILED {type(e).__name__}: {e}")
                per_size.append(
                    {"records": n, "writer": writer, "error": f"{type(e).__name__}: {e}"}
                )
    res["sizes"] = per_size
    points = [
        (s["table_rows"][t], pct["p50"])
        for s in per_size
        if "error" not in s and s["writer"] == "atomic"
        for t, pct in s["worker_ms_by_table"].items()
        if t in s["table_rows"] and pct["p50"] == pct["p50"]  # one table, not NaN
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
