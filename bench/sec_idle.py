"""Idle cost: a daemon watching a large store while nothing happens.

For inotify and ``--polling`` mode: CPU time (user + system, all threads) and
context switches (voluntary + involuntary, summed over every thread from
``/proc/<pid>/task/*/status``; a voluntary switch is a thread going to sleep, so
they count wake-ups) over ``--idle-seconds``, in 10 s windows; inotify watches
held, against the number of folders a recursive watch would need.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import storegen
import stores
from measure import Ctx, Daemon, median, sync, task_ctx_switches


def _count_dirs(root: os.PathLike[str]) -> int:
    return sum(len(dirs) for _, dirs, _ in os.walk(root))


def _detects(store: Path, n: int, timeout: float) -> dict[str, Any]:
    """After the idle window: does the daemon see an atomic and an in-place rewrite?

    Each writer rewrites one artifact of a different record; the result is the time
    until the table holds the new value (None if not within ``timeout`` seconds; a
    polling daemon may verify in-place rewrites only every few dozen polls), and
    whether a ``kymwatch sync`` then brings it in (``after_sync``).
    """
    from sec_latency import _has_row

    out: dict[str, Any] = {}
    for k, writer in enumerate(("atomic", "inplace")):
        edit = storegen.Edit(index=(7 + k) % n, kind="events")
        path = storegen.artifact_path(store, edit.index, edit.kind)
        if writer == "inplace":
            storegen.unshare(path)
            time.sleep(3.0)  # let the unsharing rename be indexed first
        marker = 55_555.0 + k
        data = storegen.artifact_bytes(edit.index, edit.kind, marker)
        t0 = time.perf_counter()
        (storegen.atomic_write if writer == "atomic" else storegen.inplace_write)(path, data)
        seen = None
        while time.perf_counter() - t0 < timeout:
            try:
                if _has_row(store, edit.table, edit.image_id, marker):
                    seen = time.perf_counter() - t0
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        out[writer] = {"seen_after_s": seen}
        if seen is None:
            sync(store)
            out[writer]["after_sync"] = _has_row(store, edit.table, edit.image_id, marker)
    return out


def _wait_stale_counted(store: Path, timeout: float = 300.0) -> None:
    """Wait for the daemon's first stale-analysis pass (seconds of CPU after a start on a
    large store), so the idle window measures the idle daemon, not that pass. Builds
    without the stale counter publish no ``stale_records``: nothing to wait for."""
    status = store / "index" / "status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            doc = {}
        if "stale_records" not in doc or doc["stale_records"] is not None:
            return
        time.sleep(0.2)


def run(ctx: Ctx) -> dict[str, Any]:
    """The idle section on a ``--idle-store`` store."""
    import sec_latency
    import sec_scale

    o = ctx.opts
    n = o.idle_store
    sec_scale.ensure_template(ctx, n)
    res: dict[str, Any] = {"store_records": n, "seconds": o.idle_seconds, "modes": {}}
    for mode in ("inotify", "polling"):
        store = stores.indexed_copy(n, ctx.work / f"store-{n}")
        if mode == "inotify":
            res["store_folders"] = _count_dirs(store)
        extra = ["--polling"] if mode == "polling" else []
        ctx.log(f"idle: {mode}, {n} records, {o.idle_seconds:g} s")
        with Daemon(store, quiet_ms=o.quiet_ms, extra=extra + sec_latency.daemon_args(ctx)) as d:
            sync(store)
            _wait_stale_counted(store)
            time.sleep(o.idle_settle)
            window = min(10.0, o.idle_seconds)
            windows = []
            cpu0, (v0, i0) = d.cpu_seconds(), task_ctx_switches(d.pid)
            start = time.perf_counter()
            while time.perf_counter() - start < o.idle_seconds - 1e-6:
                wc, (wv, wi), wt = d.cpu_seconds(), task_ctx_switches(d.pid), time.perf_counter()
                time.sleep(window)
                dt = time.perf_counter() - wt
                v, i = task_ctx_switches(d.pid)
                windows.append(
                    {
                        "cpu_pct": (d.cpu_seconds() - wc) / dt * 100,
                        "voluntary_per_s": (v - wv) / dt,
                        "involuntary_per_s": (i - wi) / dt,
                    }
                )
            elapsed = time.perf_counter() - start
            v1, i1 = task_ctx_switches(d.pid)
            tick = 1 / os.sysconf("SC_CLK_TCK")
            entry = {
                "cpu_pct": (d.cpu_seconds() - cpu0) / elapsed * 100,
                "cpu_pct_resolution": tick / elapsed * 100,
                "voluntary_ctx_per_s": (v1 - v0) / elapsed,
                "involuntary_ctx_per_s": (i1 - i0) / elapsed,
                "cpu_pct_window_median": median([w["cpu_pct"] for w in windows]),
                "cpu_pct_window_max": max(w["cpu_pct"] for w in windows),
                "windows": windows,
                "threads": len(os.listdir(f"/proc/{d.pid}/task")),
                "inotify_watches": d.inotify_watches(),
                **d.peak_rss_mib(),
            }
            entry["detects"] = _detects(store, n, o.detect_timeout_s)
        res["modes"][mode] = entry
        ctx.log(
            f"  {mode}: CPU {entry['cpu_pct']:.3f} %, "
            f"{entry['voluntary_ctx_per_s']:.1f} voluntary switches/s, "
            f"{entry['inotify_watches']} watches, RSS {entry['rss_now_mib']:.0f} MiB"
        )
    return res
