"""Scale: full rebuild and daemon startup at growing store sizes.

Per size: ``KymDataset.rebuild`` of every table in a fresh child process (time,
CPU, peak RSS); a first daemon start on a store without tables or state (which
indexes everything); daemon restarts with nothing changed and with 1 % of the
records re-analysed while it was down (spawn → ``watching`` status, the
``reconcile_done`` duration from the daemon's log, peak RSS).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import measure
import storegen
import stores
from measure import Ctx, Daemon, median

CHILD = Path(__file__).resolve().parent / "rebuild_child.py"


def _rebuild(store: Path) -> dict[str, Any]:
    shutil.rmtree(store / "tables", ignore_errors=True)
    out = subprocess.run(
        [sys.executable, str(CHILD), str(store)], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _daemon_start(ctx: Ctx, store: Path, *, sync_first: bool = False) -> dict[str, Any]:
    import sec_latency

    d = Daemon(store, quiet_ms=ctx.opts.quiet_ms, extra=sec_latency.daemon_args(ctx)).start()
    try:
        synced = measure.sync(store) if sync_first else None
        done = d.events("reconcile_done")
        started = d.events("daemon_started")
        rec = done[0] if done else {}
        out = {
            "spawn_to_ready_s": d.spawn_to_ready_s,
            "reconcile_s": rec.get("duration_ms", float("nan")) / 1000,
            "changed": rec.get("changed"),
            "records": rec.get("records"),
            "cpu_s": d.cpu_seconds(),
            "runqueue_wait_s": d.schedstat()[1],
            "watches": started[0].get("watches") if started else None,
            "then_sync_s": synced,
            **d.peak_rss_mib(),
        }
    finally:
        d.stop()
    return out


def _summary(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {f"{k}_median": median([r[k] for r in runs]) for k in keys} | {"runs": runs}


def run_size(ctx: Ctx, n: int) -> dict[str, Any]:
    """Every scale measurement at one store size."""
    o = ctx.opts
    store = storegen.work_copy(n, ctx.work / f"store-{n}")
    res: dict[str, Any] = {"records": n, "rows_per_record": storegen.ROWS_PER_RECORD}
    reps = o.rebuild_reps if n < 50_000 else o.rebuild_reps_50k
    rebuilds = []
    for r in range(reps):
        if rebuilds and rebuilds[-1]["seconds"] > o.rep_budget_s:
            res["rebuild_reps_cut"] = f"{r}: one took longer than --rep-budget-s"
            break
        rb = _rebuild(store)
        ctx.log(f"  rebuild {n}: {rb['seconds']:.2f} s, peak RSS {rb['peak_rss_mib']:.0f} MiB")
        rebuilds.append(rb)
        if r == 0 and n == o.burst_store:
            ctx.shared["rebuild_burst_store_s"] = []
        if n == o.burst_store:
            ctx.shared["rebuild_burst_store_s"].append(rb["seconds"])
    res["rebuild"] = _summary(
        rebuilds, ("seconds", "cpu_seconds", "runqueue_wait_s", "peak_rss_mib")
    )
    res["rebuild"]["records_per_s"] = n / res["rebuild"]["seconds_median"]
    res["rebuild"]["records_per_cpu_s"] = n / res["rebuild"]["cpu_seconds_median"]

    ctx.shared["rebuild_s_per_record"] = res["rebuild"]["seconds_median"] / n
    first_ok = res["rebuild"]["seconds_median"] <= o.first_start_budget_s
    if n <= o.cold_start_max and not first_ok:
        res["first_start_skipped"] = (
            f"rebuild took {res['rebuild']['seconds_median']:.0f} s > "
            f"--first-start-budget-s {o.first_start_budget_s:g} (a first start costs about as much)"
        )
        ctx.log(f"  first daemon start {n}: skipped ({res['first_start_skipped']})")
    if n <= o.cold_start_max and first_ok:
        shutil.rmtree(store / "tables")
        shutil.rmtree(store / "index", ignore_errors=True)
        cold = _daemon_start(ctx, store)
        ctx.log(f"  first daemon start {n}: {cold['spawn_to_ready_s']:.2f} s")
        res["first_start"] = cold
        how = "first daemon start"
    else:
        stores.seed_state(store)  # tables are the last rebuild's
        res["first_start"] = None
        how = "rebuild + seeded state"
    if not stores.has_template(n):
        stores.save_template(store, n, how)
    res["state_from"] = how

    keys = ("spawn_to_ready_s", "reconcile_s", "cpu_s", "runqueue_wait_s", "vm_hwm_mib")
    unchanged = []
    for _ in range(o.reps):
        unchanged.append(_daemon_start(ctx, store))
    res["restart_unchanged"] = _summary(unchanged, keys)
    if n in o.cold_sizes:
        colds = []
        for _ in range(o.reps):
            how = measure.drop_caches(store)
            colds.append(_daemon_start(ctx, store) | {"cache_drop": how})
        res["restart_cold"] = _summary(colds, keys) | {"cache_drop": colds[0]["cache_drop"]}
        cold_s = median([c["spawn_to_ready_s"] for c in colds])
        ctx.log(f"  restart, cold page cache, {n}: {cold_s:.2f} s ({colds[0]['cache_drop'][:40]})")
    ctx.log(
        f"  restart, nothing changed, {n}: "
        f"{median([u['spawn_to_ready_s'] for u in unchanged]):.2f} s"
    )

    rng = random.Random(n)
    k = max(1, n // 100)
    changed = []
    for r in range(o.reps):
        idx = rng.sample(range(n), k)
        marker = 7000.0 + r
        storegen.write_artifacts(store, idx, marker)
        run = _daemon_start(ctx, store)
        run["check_records_with_marker"] = stores.records_with_marker(store, idx, marker)
        run["check_ok"] = stores.markers_ok(run["check_records_with_marker"])
        changed.append(run)
    res["restart_1pct"] = _summary(changed, keys) | {"changed_records": k}
    res["restart_1pct"]["changed_records_per_s"] = k / res["restart_1pct"]["reconcile_s_median"]
    ctx.log(f"  restart, 1% changed, {n}: {median([c['spawn_to_ready_s'] for c in changed]):.2f} s")
    res["restart_unchanged"]["records_per_s"] = n / res["restart_unchanged"]["reconcile_s_median"]
    if n == o.burst_store and first_ok:
        res["adopt_kymflow_tables"] = _adopt(ctx, store)
    return res


def _adopt(ctx: Ctx, store: Path) -> dict[str, Any]:
    """A first daemon start on a store whose tables kymflow built (no kymwatch state).

    The tables are rewritten as kymflow writes them (pandas object columns); the daemon
    must adopt them: never crash, never publish fewer rows. Reports the start-up time,
    peak RSS and the rows per table before and after a sync.
    """
    before = stores.write_kymflow_tables(store)
    for f in (store / "index").iterdir():
        if f.name != ".zgroup":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    out = _daemon_start(ctx, store, sync_first=True)
    after = stores.table_rows(store)
    out |= {"rows_before": before, "rows_after": after}
    out["never_fewer_rows"] = all(after.get(t, 0) >= r for t, r in before.items())
    ctx.log(
        f"  start on kymflow-built tables: {out['spawn_to_ready_s']:.2f} s, "
        f"rows kept: {out['never_fewer_rows']}"
    )
    return out


def too_big(ctx: Ctx, n: int) -> str | None:
    """Why a store of ``n`` records is cut from this run (None if it is not).

    Sizes above ``--burst-store`` (10k) are cut when the rebuild rate measured so far
    predicts a rebuild longer than ``--size-budget-s``: one such rebuild (or first
    start) is needed to index the store at all, and the full run must stay bounded.
    """
    per_rec = ctx.shared.get("rebuild_s_per_record")
    if n <= ctx.opts.burst_store or not per_rec:
        return None
    predicted = per_rec * n
    if predicted <= ctx.opts.size_budget_s:
        return None
    return (
        f"cut: indexing {n:,} records would take ~{predicted:.0f} s at the rebuild rate "
        f"measured in this run (> --size-budget-s {ctx.opts.size_budget_s:g})"
    )


def run(ctx: Ctx) -> dict[str, Any]:
    """The scale section over ``--scale-sizes``."""
    sizes = ctx.opts.scale_sizes
    per_size = []
    cut = []
    for n in sizes:
        why = too_big(ctx, n)
        if why:
            ctx.log(f"scale: {n} records {why}")
            cut.append({"records": n, "why": why})
            continue
        ctx.log(f"scale: {n} records")
        per_size.append(run_size(ctx, n))
    fits = {}
    if len(per_size) >= 2:
        xs = [s["records"] for s in per_size]
        fits["rebuild"] = measure.linear_fit(xs, [s["rebuild"]["seconds_median"] for s in per_size])
        fits["rebuild_cpu"] = measure.linear_fit(
            xs, [s["rebuild"]["cpu_seconds_median"] for s in per_size]
        )
        for key in ("restart_unchanged", "restart_1pct"):
            ys = [s[key]["spawn_to_ready_s_median"] for s in per_size]
            fits[f"{key}_spawn_to_ready"] = measure.linear_fit(xs, ys)
            ys = [s[key]["reconcile_s_median"] for s in per_size]
            fits[f"{key}_reconcile"] = measure.linear_fit(xs, ys)
        firsts = [s for s in per_size if s["first_start"]]
        if len(firsts) >= 2:
            xs = [s["records"] for s in firsts]
            ys = [s["first_start"]["spawn_to_ready_s"] for s in firsts]
            fits["first_start"] = measure.linear_fit(xs, ys)
    return {"sizes": per_size, "fits": fits, "cut": cut}


def ensure_template(ctx: Ctx, n: int) -> None:
    """Make the indexed template of the ``n``-record store if this code has none yet."""
    if stores.has_template(n):
        return
    ctx.log(f"preparing an indexed {n}-record store (rebuild + seeded daemon state)")
    store = storegen.work_copy(n, ctx.work / f"store-{n}")
    _rebuild(store)
    stores.seed_state(store)
    stores.save_template(store, n, "rebuild + seeded state")
