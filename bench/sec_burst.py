"""Burst: many records re-analysed at once (both artifacts rewritten) in a large store.

Compared in the same run, on two copies of the same indexed store, whose artifacts the
bursts rewrite are first given their own inodes (:func:`_unshare_bursts`), as a user's are:

* **daemon**: ``kymwatch run`` watches copy D; once it is idle (the stale count of
  its start or of the previous burst done), the benchmark rewrites both
  artifacts of B records as fast as it can (atomic ``.partial`` + rename), then
  calls the ``kymwatch sync`` barrier (in-process ``request_sync``, the function
  the CLI calls; the CLI's own start-up cost is measured separately).
* **floor** (the fast floor, :mod:`floor`): no daemon and no kymwatch code; on
  copy P, after the same writes, each changed artifact read once
  (``pq.ParquetFile().read()``), each table read once, spliced and written once.
* **library floor**: on P, one ``KymDataset.update_images`` per indexer with all
  B ids (what kymwatch's own library does with the same batch).
* **per-event** (the seed's way): on P, after the same writes, one
  ``KymDataset.update_image`` per artifact written and indexer it feeds (one long-lived
  ``KymDataset``, so the table is read from disk only once but rewritten every
  call). Above ``--per-event-sample`` records only the first records are timed
  and the total is extrapolated linearly (each call rewrites the same-size table).
* **rebuild per change** (a ``watchmedo shell-command`` user): a full rebuild
  of every table per per-event call; extrapolated from the median measured rebuild of a
  store of the same size (from the scale section when it ran, else measured here).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import floor
import storegen
import stores
from measure import Ctx, Daemon, LoadMeter, median, sync


def _ids(idx: list[int]) -> list[str]:
    return [storegen.image_id(i) for i in idx]


def _unshare_bursts(store: Path, bursts: Iterable[list[int]]) -> None:
    """Give each artifact the bursts rewrite its own inode, then record the state again.

    A hard-link copy's artifacts share their inodes with the cache, so a rename over one
    frees nothing; from the second burst on it frees the file it replaces, which costs
    the writer (and, on a file system mounted with ``discard``, one discard per file;
    ``bench/ANALYSIS.md``, "Burst, session 9"). A user's store has no such links:
    unshared, every rep is the realistic case, not only the second and later ones.
    """
    stores.unshare_artifacts(store, [(i, k) for idx in bursts for i in idx for k in storegen.KINDS])
    os.sync()  # the copies' writes are on disk before the first burst is timed


def _daemon_burst(d: Daemon, store: Path, idx: list[int], marker: float) -> dict[str, Any]:
    sync(store)
    settled_s = d.wait_idle()  # the previous burst's (or the start's) stale count done
    meter = LoadMeter()
    n_batches = len(d.events("batch_indexed"))
    cpu0 = d.cpu_seconds()
    _, w0 = d.schedstat()
    t0 = time.perf_counter()
    storegen.write_artifacts(store, idx, marker)
    t1 = time.perf_counter()
    sync(store)
    t2 = time.perf_counter()
    batches = d.events("batch_indexed")[n_batches:]
    ok = stores.records_with_marker(store, idx, marker)
    return {
        "settled_s": settled_s,
        "write_s": t1 - t0,
        "total_s": t2 - t0,
        "after_write_s": t2 - t1,
        "daemon_cpu_s": d.cpu_seconds() - cpu0,
        "daemon_runqueue_wait_s": d.schedstat()[1] - w0,
        "batches": len(batches),
        "batch_records": [b.get("records") for b in batches],
        "records_with_marker": ok,
        "other_cores": meter.other_cores(),
    }


def _floor(store: Path, idx: list[int], marker: float, fast: bool) -> dict[str, Any]:
    meter = LoadMeter()
    t0 = time.perf_counter()
    storegen.write_artifacts(store, idx, marker)
    t1, c1 = time.perf_counter(), time.process_time()
    if fast:
        floor.update(store, idx)
    else:
        kd = stores.kym_dataset(store)
        for ix in kd.indexers:
            stores.update(kd, ix.name, _ids(idx))
    t2, c2 = time.perf_counter(), time.process_time()
    return {
        "check": stores.records_with_marker(store, idx, marker),
        "write_s": t1 - t0,
        "index_s": t2 - t1,
        "cpu_s": c2 - c1,
        "other_cores": meter.other_cores(),
    }


def _per_event(store: Path, idx: list[int], marker: float, sample: int) -> dict[str, Any]:
    storegen.write_artifacts(store, idx, marker)
    kd = stores.kym_dataset(store)
    timed = idx[:sample]
    calls = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in timed:  # the order the events came in: events artifact, then radon artifact
        for kind in storegen.KINDS:
            for table in stores.tables_fed(i, kind):  # update_image per indexer it feeds
                stores.update(kd, table, [storegen.image_id(i)])
                calls += 1
    t1, c1 = time.perf_counter(), time.process_time()
    rest = _ids(idx[sample:])
    if rest:  # leave the tables right for the next measurement (not timed)
        for ix in kd.indexers:
            stores.update(kd, ix.name, rest)
    scale = len(idx) / len(timed)
    return {
        "timed_records": len(timed),
        "timed_calls": calls,
        "timed_s": t1 - t0,
        "timed_cpu_s": c1 - c0,
        "ms_per_call": (t1 - t0) / calls * 1000,
        "index_s": (t1 - t0) * scale,
        "cpu_s": (c1 - c0) * scale,
        "extrapolated": len(timed) < len(idx),
    }


def _rebuild_sample(ctx: Ctx, store: Path) -> dict[str, Any]:
    shared = ctx.shared.get("rebuild_burst_store_s")
    if shared:
        return {"seconds": median(shared), "samples": len(shared), "source": "scale section"}
    times = []
    for _ in range(ctx.opts.rebuild_sample):
        kd = stores.kym_dataset(store)
        t0 = time.perf_counter()
        for ix in kd.indexers:
            stores.rebuild(kd, ix.name)
        times.append(time.perf_counter() - t0)
        ctx.log(f"  rebuild sample: {times[-1]:.2f} s")
    return {"seconds": median(times), "samples": len(times), "source": "burst section"}


def run(ctx: Ctx) -> dict[str, Any]:
    """The burst section: ``--burst-sizes`` records into a ``--burst-store`` store."""
    import sec_latency
    import sec_scale

    from harness import assert_tables_match_rebuild

    o = ctx.opts
    n = o.burst_store
    sec_scale.ensure_template(ctx, n)
    dstore = stores.indexed_copy(n, ctx.work / f"store-{n}")
    pstore = stores.indexed_copy(n, ctx.work / f"store-{n}-b")
    burst_idx = {b: random.Random(b).sample(range(n), b) for b in o.burst_sizes}
    _unshare_bursts(dstore, burst_idx.values())
    _unshare_bursts(pstore, burst_idx.values())
    res: dict[str, Any] = {"store_records": n, "quiet_ms": o.quiet_ms, "sizes": []}
    marker = 20_000.0
    with Daemon(dstore, quiet_ms=o.quiet_ms, extra=sec_latency.daemon_args(ctx)) as d:
        sync(dstore)
        res["sync_idle_s"] = median([sync(dstore) for _ in range(3)])
        ctx.log(f"burst: idle sync {res['sync_idle_s'] * 1000:.0f} ms in-process")
        for b in o.burst_sizes:
            idx = burst_idx[b]
            entry: dict[str, Any] = {"records": b, "artifacts": 2 * b}
            daemon_runs, floor_runs, lib_runs = [], [], []
            for rep in range(o.reps):
                if rep and daemon_runs[-1]["total_s"] + lib_runs[-1]["index_s"] > o.rep_budget_s:
                    entry["reps_cut"] = (
                        f"{rep} rep(s): one took longer than --rep-budget-s {o.rep_budget_s:g}"
                    )
                    break
                ctx.log(f"burst: {b} records, rep {rep + 1}/{o.reps}")
                marker += 1
                daemon_runs.append(_daemon_burst(d, dstore, idx, marker))
                per_rec = ctx.shared.get("rebuild_s_per_record")
                oracle_s = per_rec * n if per_rec else None
                if (
                    oracle_s
                    and oracle_s > o.oracle_budget_s
                    and rep == 0
                    and b == max(o.burst_sizes)
                ):
                    entry["oracle"] = {
                        "passed": None,
                        "skipped": f"a rebuild of {n} records would take ~{oracle_s:.0f} s "
                        f"(> --oracle-budget-s {o.oracle_budget_s:g}); marker checks only",
                    }
                elif rep == 0 and b == max(o.burst_sizes) and not o.no_oracle:
                    t = time.perf_counter()
                    assert_tables_match_rebuild(dstore, ctx.work / "oracle-scratch")
                    entry["oracle"] = {"passed": True, "seconds": time.perf_counter() - t}
                    ctx.log("  oracle: tables equal a fresh rebuild")
                marker += 1
                floor_runs.append(_floor(pstore, idx, marker, fast=True))
                marker += 1
                lib_runs.append(_floor(pstore, idx, marker, fast=False))
            marker += 1
            ctx.log(f"burst: {b} records, per-event update_image")
            pe = _per_event(pstore, idx, marker, min(b, o.per_event_sample))
            entry["daemon"] = {
                k: median([r[k] for r in daemon_runs])
                for k in (
                    "write_s",
                    "total_s",
                    "after_write_s",
                    "daemon_cpu_s",
                    "daemon_runqueue_wait_s",
                )
            } | {"runs": daemon_runs}
            entry["floor"] = {
                k: median([r[k] for r in floor_runs]) for k in ("write_s", "index_s", "cpu_s")
            } | {"runs": floor_runs}
            entry["library_floor"] = {
                k: median([r[k] for r in lib_runs]) for k in ("write_s", "index_s", "cpu_s")
            } | {"runs": lib_runs}
            entry["per_event"] = pe
            entry["checks_ok"] = all(
                stores.markers_ok(r["records_with_marker"]) for r in daemon_runs
            )
            entry["floor_checks_ok"] = all(stores.markers_ok(r["check"]) for r in floor_runs)
            res["sizes"].append(entry)
            dm, fl = entry["daemon"], entry["floor"]
            ctx.log(
                f"  daemon {dm['total_s']:.2f} s (after last write {dm['after_write_s']:.2f} s), "
                f"floor {fl['index_s']:.2f} s, per-event {pe['index_s']:.1f} s"
            )
        res["daemon_rss"] = d.peak_rss_mib()
    res["rebuild_per_change"] = _rebuild_sample(ctx, pstore)
    for entry in res["sizes"]:
        _ratios(entry, res["rebuild_per_change"]["seconds"])
    return res


def _ratios(entry: dict[str, Any], rebuild_s: float) -> None:
    """End-to-end (first write → right tables) and after-last-write comparisons."""
    dm, fl, pe, lib = entry["daemon"], entry["floor"], entry["per_event"], entry["library_floor"]
    write = fl["write_s"]  # the same writes without a daemon competing for the CPU
    rb_total = entry["per_event"]["timed_calls"] / entry["per_event"]["timed_records"]
    rb_total *= entry["records"] * rebuild_s
    entry["rebuild_per_change"] = {"index_s": rb_total, "extrapolated": True}
    e2e = {
        "daemon": dm["total_s"],
        "floor": write + fl["index_s"],
        "library_floor": write + lib["index_s"],
        "per_event": write + pe["index_s"],
        "rebuild_per_change": write + rb_total,
    }
    entry["end_to_end_s"] = e2e
    entry["ratios"] = {
        "per_event_over_daemon": e2e["per_event"] / e2e["daemon"],
        "rebuild_over_daemon": e2e["rebuild_per_change"] / e2e["daemon"],
        "daemon_over_floor": e2e["daemon"] / e2e["floor"],
        "daemon_over_library_floor": e2e["daemon"] / e2e["library_floor"],
        "after_write_daemon_over_floor": dm["after_write_s"] / fl["index_s"],
        "per_event_over_daemon_after_write": pe["index_s"] / dm["after_write_s"],
        "daemon_cpu_over_floor_cpu": dm["daemon_cpu_s"] / fl["cpu_s"],
    }
