"""The headline tables of ``benchmarks.md``: issue 11's and issue 14's targets.

Each row shows the target beside the figure and, for every row, what bounds the
figure (read from the same run's numbers), so a missed target names its cause.
A row whose section did not run, failed, or whose option does not exist in the
measured build says so instead of a number.
"""

from __future__ import annotations

import math
from typing import Any

from report_util import f, k, sec, table

BASELINE = "commit aaa67aa, generation-1 data with string ids"
BASELINE_BURST_2000_S = 6.57  # daemon, first write → sync, 2,000 records at 10k (BASELINE)


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def _size(entries: list[dict[str, Any]], n: int, **match: Any) -> dict[str, Any] | None:
    for e in entries:
        if e.get("records") == n and all(e.get(a) == b for a, b in match.items()):
            return e if "error" not in e else None
    return None


def _parts_note(lat: dict[str, Any], n: int) -> str:
    """The same edit timed on the part files of a partitioned daemon, where it ran."""
    e = _size(lat["sizes"], n, writer="atomic, parts")
    if not e:
        return ""
    m = e["latency_minus_window_ms"]
    return (
        f"; for readers of the parts (`--partition-rows`, see Issue 14's table): "
        f"p99 - window {m['p99']:.0f} ms (kymflow reads the single file)"
    )


def _own_work(total_s: float, import_s: float | None) -> str:
    """What a CLI command spends beyond the CLI's own start-up (``kymwatch --version``)."""
    if import_s is None:
        return ""
    own = (total_s - import_s) * 1000
    if own <= 0:
        return "the CLI's start-up is all of it (the difference is within the noise)"
    return f"the command's own work ≈ {own:,.0f} ms"


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def sizes(results: dict[str, Any]) -> tuple[int, int]:
    """The "10k" and "50k" of the targets (a quick run measures smaller stores instead)."""
    o = results.get("options", {})
    if not o.get("quick"):
        return 10_000, 50_000
    return int(o.get("burst_store", 1000)), max(o.get("scale_sizes") or [1000])


def rss_rows(results: dict[str, Any]) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """Daemon peak RSS (MiB, where) at "10k" records: (steady cases, worst cases)."""
    mid, _ = sizes(results)
    steady: list[tuple[float, str]] = []
    worst: list[tuple[float, str]] = []
    scale, lat = sec(results, "scale"), sec(results, "latency")
    idle, burst = sec(results, "idle"), sec(results, "burst")
    s10 = _size(scale["sizes"], mid) if scale else None
    if s10:
        steady += [(r["vm_hwm_mib"], "restart") for r in s10["restart_unchanged"]["runs"]]
        worst += [(r["vm_hwm_mib"], "restart, 1 % changed") for r in s10["restart_1pct"]["runs"]]
        if s10.get("first_start"):
            worst.append((s10["first_start"]["vm_hwm_mib"], "first start"))
    if idle and idle["store_records"] == mid:
        steady += [(m["vm_hwm_mib"], f"idle, {mode}") for mode, m in idle["modes"].items()]
    for e in lat["sizes"] if lat else []:
        if e.get("records") == mid and "error" not in e:
            changed = sum(c or 0 for c in e.get("startup_changed", []))
            note = f", start-up re-indexed {changed:,} records" if changed else ""
            steady.append((e["daemon_peak_rss_mib"], f"single edits, {e['writer']}{note}"))
    if burst and burst["store_records"] == mid and "daemon_rss" in burst:
        worst.append((burst["daemon_rss"]["vm_hwm_mib"], "bursts"))
    return steady, worst


def issue11(results: dict[str, Any]) -> list[str]:
    """Issue 11's target table."""
    rows: list[list[Any]] = []
    na = "section not run or failed"
    burst, scale, lat = sec(results, "burst"), sec(results, "scale"), sec(results, "latency")
    cli, idle, state = sec(results, "cli"), sec(results, "idle"), sec(results, "state")

    big = max(burst["sizes"], key=lambda s: s["records"]) if burst and burst["sizes"] else None
    if big:
        r, dm, fl, pe = big["ratios"], big["daemon"], big["floor"], big["per_event"]
        where = f"burst {big['records']:,} records x 2 artifacts at {k(burst['store_records'])}"
        ext = f", per-event timed on {pe['timed_records']} records" if pe["extrapolated"] else ""
        rows.append(
            [
                f"{where}: per-event `update_image` ÷ daemon",
                "≥ 30x",
                f"{r['per_event_over_daemon']:.1f}x{ext}",
                _verdict(r["per_event_over_daemon"] >= 30),
                f"per-event {pe['ms_per_call']:.1f} ms per call ({pe['timed_calls']} calls timed);"
                f" daemon {dm['total_s']:.2f} s end to end, {dm['daemon_cpu_s']:.2f} s CPU",
            ]
        )
        rows.append(
            [
                f"{where}: daemon ÷ fast floor",
                "≤ 1.3x",
                f"{r['daemon_over_floor']:.2f}x",
                _verdict(r["daemon_over_floor"] <= 1.3),
                f"daemon CPU {dm['daemon_cpu_s']:.2f} s vs floor CPU {fl['cpu_s']:.2f} s "
                f"({r['daemon_cpu_over_floor_cpu']:.2f}x); daemon waited "
                f"{f(dm.get('daemon_runqueue_wait_s'))} s for a CPU; daemon ÷ library floor "
                f"(`update_images`) {r['daemon_over_library_floor']:.2f}x",
            ]
        )
    else:
        rows.append(["burst ratios", "≥ 30x, ≤ 1.3x", na, "-", ""])
    mid, large = sizes(results)
    s10 = _size(scale["sizes"], mid) if scale else None
    s50 = _size(scale["sizes"], large) if scale else None
    if s10:
        rb = s10["rebuild"]
        per_core = rb.get("records_per_cpu_s", mid / rb["cpu_seconds_median"])
        rows.append(
            [
                f"`rebuild`, records per second per core, {k(mid)}",
                "≥ 2,000",
                f"{per_core:,.0f} ({rb['records_per_s']:,.0f} per wall second)",
                _verdict(per_core >= 2000),
                f"{rb['cpu_seconds_median'] / mid * 1000:.2f} ms CPU per record; "
                f"{rb['cpu_seconds_median']:.2f} s CPU of {rb['seconds_median']:.2f} s wall, "
                f"waiting for a CPU {f(rb.get('runqueue_wait_s_median'))} s",
            ]
        )
    else:
        rows.append([f"`rebuild` records/s per core, {k(mid)}", "≥ 2,000", na, "-", ""])
    if s50:
        rb = s50["rebuild"]
        imp = rb["runs"][0].get("rss_after_import_mib") if rb.get("runs") else None
        rows.append(
            [
                f"`rebuild` peak RSS, {k(large)}",
                "≤ 300 MiB",
                f"{rb['peak_rss_mib_median']:,.0f} MiB",
                _verdict(rb["peak_rss_mib_median"] <= 300),
                f"after imports alone {f(imp, 0)} MiB",
            ]
        )
    else:
        cut = [c["why"] for c in (scale or {}).get("cut", []) if c["records"] == large]
        why = cut[0] if cut else f"{k(large)} not in --scale-sizes"
        rows.append([f"`rebuild` peak RSS, {k(large)}", "≤ 300 MiB", why, "-", ""])
    steady, worst = rss_rows(results)
    for label, goal, values in (("steady (idle, single edits, restart)", 150, steady),
                                ("worst case (first start, bursts)", 200, worst)):  # fmt: skip
        if values:
            mib, where = max(values)
            others = ", ".join(f"{w} {m:.0f}" for m, w in sorted(values, reverse=True)[1:4])
            rows.append(
                [
                    f"daemon RSS at {k(mid)}, {label}",
                    f"≤ {goal} MiB",
                    f"{mib:.0f} MiB ({where})",
                    _verdict(mib <= goal),
                    f"next: {others}" if others else "",
                ]
            )
        else:
            rows.append([f"daemon RSS at {k(mid)}, {label}", f"≤ {goal} MiB", na, "-", ""])
    for n, goal in [(mid, 50)] + ([(large, 100)] if large != mid else []):
        e = _size(lat["sizes"], n, writer="atomic") if lat else None
        if e:
            m, u = e["latency_minus_window_ms"], e["latency_ms"]
            worker = e.get("worker_ms_by_table", {})
            slowest = max(worker.items(), key=lambda kv: kv[1]["p50"], default=None)
            bound = (
                f"worker batch p50 {slowest[1]['p50']:.0f} ms ({slowest[0]}); " if slowest else ""
            )
            rows.append(
                [
                    f"single edit at {k(n)}: p99 of (latency - {e['window_ms']:g} ms window)",
                    f"≤ {goal} ms",
                    f"{m['p99']:.0f} ms (user-visible p50 {u['p50']:.0f} / p99 {u['p99']:.0f} ms)",
                    _verdict(m["p99"] <= goal),
                    bound + f"run-queue wait p99 {e['runqueue_wait_ms']['p99']:.1f} ms; "
                    f"estimate without it p99 {e['minus_window_minus_wait_ms']['p99']:.0f} ms"
                    + _parts_note(lat, n),
                ]
            )
        else:
            errs = [e["error"] for e in (lat or {}).get("sizes", []) if e.get("records") == n]
            why = errs[0] if errs else na
            rows.append([f"single edit at {k(n)}, p99 - window", f"≤ {goal} ms", why, "-", ""])
    if cli:
        c = cli["commands"]
        py = c.get("python_startup", {}).get("median_s")
        imp = c.get("version", c.get("import_cli", {})).get("median_s")
        for name in ("status", "sync", "logs"):
            m = c.get(name, {})
            if "median_s" not in m:
                rows.append(
                    [f"`kymwatch {name}` start-up", "≤ 150 ms", m.get("error", na), "-", ""]
                )
                continue
            rows.append(
                [
                    f"`kymwatch {name}`{' (idle daemon)' if name == 'sync' else ''}, "
                    f"wall, median of {cli['reps']}",
                    "≤ 150 ms",
                    f"{m['median_s'] * 1000:.0f} ms",
                    _verdict(m["median_s"] <= 0.150),
                    f"`python -c pass` {f(py * 1000 if py else None, 0)} ms; "
                    f"`kymwatch --version` {f(imp * 1000 if imp else None, 0)} ms; "
                    + _own_work(m["median_s"], imp),
                ]
            )
    else:
        rows.append(["`status`, `sync`, `logs` start-up", "≤ 150 ms", na, "-", ""])
    poll = idle["modes"].get("polling") if idle else None
    if poll:
        det = poll.get("detects", {})
        missed = [w for w, d in det.items() if d.get("seen_after_s") is None]
        seen = ", ".join(
            f"{w} {d['seen_after_s']:.1f} s" for w, d in det.items() if d.get("seen_after_s")
        )
        late = [w for w in missed if det[w].get("after_sync")]
        missed = [
            f"{w} (not within the wait{'; seen after `kymwatch sync`' if w in late else ''})"
            for w in missed
        ]
        rows.append(
            [
                f"`--polling` at {k(idle['store_records'])}, idle",
                "≤ 2 % of a core, no change missed",
                f"{poll['cpu_pct']:.2f} %; changes seen: {seen or '-'}"
                + (f"; **missed: {', '.join(missed)}**" if missed else ""),
                _verdict(poll["cpu_pct"] <= 2 and not missed),
                f"worst 10 s window {poll['cpu_pct_window_max']:.2f} %; "
                f"{poll['voluntary_ctx_per_s']:.1f} wake-ups/s",
            ]
        )
    else:
        rows.append(["`--polling` idle CPU", "≤ 2 %", na, "-", ""])
    if state:
        sv = state["saves"]
        one, full = sv.get("1", {}).get("median_s"), sv["full"]["median_s"]
        counts = [int(c) for c in sv if c != "full"]
        most = max(counts, default=0)
        many = sv[str(most)]["median_s"] if counts else None
        prop = None if one is None or _nan(one) else one * 5 < full
        rows.append(
            [
                f"state save while busy, {k(state['store_records'])}",
                "proportional to what changed",
                f"1 record {f(one and one * 1000, 1)} ms, "
                f"{most:,} {f(many and many * 1000, 1)} ms, full {full * 1000:.0f} ms",
                _verdict(prop),
                "timed on the state module (`IndexState.save`)"
                + (f"; 50k {state['size_cut']}" if state.get("size_cut") else "")
                + ("" if state.get("incremental_api") else "; no per-record update in this build"),
            ]
        )
    else:
        rows.append(["state save while busy, 50k", "∝ changes", na, "-", ""])
    if s10 and s10.get("restart_cold"):
        w, c = s10["restart_unchanged"], s10["restart_cold"]
        rows.append(
            [
                f"restart of an indexed {k(mid)} store, warm / cold page cache",
                "measured",
                f"{w['spawn_to_ready_s_median']:.2f} s / {c['spawn_to_ready_s_median']:.2f} s",
                "met",
                f"reconcile {w['reconcile_s_median']:.2f} / {c['reconcile_s_median']:.2f} s; "
                f"cold by: {c['cache_drop']}",
            ]
        )
    else:
        rows.append([f"restart {k(mid)} warm / cold", "measured", na, "-", ""])
    head = ["what", "target", "measured", "", "what bounds it (same run)"]
    return [
        "## Issue 11: speed and memory targets",
        "",
        "Benchmarks on kymflow-shaped data (UUID records, string and UUID event ids, half "
        "generation 1, half generation 2). Ratios come from one run."
        + (
            f" **Quick run**: the 10k rows are measured at {k(sizes(results)[0])} records and the"
            f" 50k rows at {k(sizes(results)[1])}; not comparable with the targets."
            if results.get("options", {}).get("quick")
            else ""
        ),
        "",
        *table(head, rows),
    ]


def issue14(results: dict[str, Any]) -> list[str]:
    """Issue 14's table: user-visible latency by writer and store size."""
    lat = sec(results, "latency")
    if not lat:
        return ["## Issue 14: index on completion", "", "Latency section not run or failed.", ""]
    settle = (
        f"`--settle-ms {lat['settle_ms']}`"
        if lat.get("settle_available")
        else "`--settle-ms`: not available in this build (every write waits the quiet window)"
    )
    rows = []
    for e in lat["sizes"]:
        if "error" in e:
            rows.append([k(e["records"]), e["writer"], "failed", e["error"][:80], "", "", ""])
            continue
        u = e["latency_ms"]
        target = ""
        if e["records"] == sizes(results)[0] and e["writer"] == "atomic":
            target = _verdict(u["p50"] <= 40 and u["p99"] <= 100) + " (p50 ≤ 40, p99 ≤ 100 ms)"
        due = ", ".join(f"{a}: {b}" for a, b in sorted(e.get("due_by", {}).items()))
        due = due.replace("n/a:", "not logged by this build:")
        rows.append(
            [
                k(e["records"]),
                e["writer"],
                e["samples"],
                f"{u['p50']:.0f}",
                f"{u['p99']:.0f}",
                target,
                due,
            ]
        )
    head = ["records", "writer", "edits", "p50 ms", "p99 ms", "target", "batches by signal"]
    lines = [
        "## Issue 14: user-visible latency (write → table on disk)",
        "",
        f"Daemon: `--quiet-ms {lat['quiet_ms']}`, {settle}. *atomic*: kymflow's writer "
        "(`<name>.<hex>.partial`, then rename); *inplace*: `to_parquet` onto the artifact "
        "(truncate, write, close). The time includes the quiet/settle wait. *atomic, parts*: "
        "the atomic writer with the daemon run with `--partition-rows "
        f"{lat.get('partition_rows', 200_000):,}`, timed on the part file holding the record "
        "(`tables/<table>/part-*.parquet`: what a reader of the parts sees; kymflow's "
        "single file is exported after it).",
        "",
        *table(head, rows),
    ]
    burst = sec(results, "burst")
    big = _size(burst["sizes"], 2000) if burst and burst["store_records"] == 10_000 else None
    if big:
        lines += [
            f"Bursts no slower than before: 2,000 records at 10k took "
            f"{big['daemon']['total_s']:.2f} s (daemon, first write → sync) against "
            f"{BASELINE_BURST_2000_S} s at {BASELINE} (that run had two tables; this store "
            "feeds four).",
            "",
        ]
    return lines
