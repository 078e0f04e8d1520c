"""Turn the benchmark results into ``benchmarks.md`` and PNG plots.

Everything in the generated page comes from ``benchmarks.json``; the one
hand-written part, ``bench/ANALYSIS.md`` (profiles and proposed fixes), is
inserted verbatim with a note saying which run it was written for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"

TARGET_LATENCY_MS = 150.0
TARGET_PER_EVENT_X = 20.0
TARGET_FLOOR_X = 2.0
TARGET_RESTART_S = 2.0
TARGET_IDLE_PCT = 0.5
TARGET_RSS_MB = 200.0


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += [
        "| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return [*out, ""]


def _sec(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    s = results.get("sections", {}).get(name)
    return s["result"] if s else None


def _meta(results: dict[str, Any], name: str) -> str:
    s = results["sections"][name]
    bg = s["background"]
    before = bg.get("before") or {}
    waited = f", waited {before['waited_s']:.0f} s for a quiet machine" if before else ""
    changed = (
        " **kymwatch's sources changed while this section ran** (other people commit to the "
        "repository); later measurements in it may use the newer code."
        if s.get("src_changed_during")
        else ""
    )
    return (
        f"*Measured {s['date_utc']} (commit {s['git_commit']}), took {s['seconds']:.0f} s; "
        f"other processes used {bg['other_cores']:.2f} cores on average meanwhile{waited}.*"
        f"{changed}"
    )


# -- plots ---------------------------------------------------------------------------------
def _plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    lat = _sec(results, "latency")
    if lat and lat["sizes"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [s["records"] for s in lat["sizes"]]
        for p, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            ax.plot(xs, [s["latency_minus_quiet_ms"][p] for s in lat["sizes"]], style, label=p)
        ax.axhline(TARGET_LATENCY_MS, color="grey", lw=0.8, ls="--", label="target p99")
        ax.set_xscale("log")
        ax.set_xlabel("records in store")
        ax.set_ylabel(f"latency - quiet window ({lat['quiet_ms']} ms), ms")
        ax.set_title("Single edit: artifact written → table published")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "bench-latency.png", dpi=110)
        plt.close(fig)
        made.append("bench-latency.png")
    burst = _sec(results, "burst")
    if burst and burst["sizes"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [s["records"] for s in burst["sizes"]]
        sizes = burst["sizes"]
        series = [
            ("daemon (first write -> sync)", [s["end_to_end_s"]["daemon"] for s in sizes]),
            ("floor (write + one update per table)", [s["end_to_end_s"]["floor"] for s in sizes]),
            ("per-event update_image", [s["end_to_end_s"]["per_event"] for s in sizes]),
        ]
        for (label, ys), style in zip(series, ("o-", "s--", "^:"), strict=True):
            ax.plot(xs, ys, style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            f"records re-analysed (2 artifacts each) in a {_k(burst['store_records'])} store"
        )
        ax.set_ylabel("seconds until tables are right")
        ax.set_title("Burst time vs burst size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "bench-burst.png", dpi=110)
        plt.close(fig)
        made.append("bench-burst.png")
    scale = _sec(results, "scale")
    if scale and scale["sizes"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [s["records"] for s in scale["sizes"]]
        ax.plot(xs, [s["rebuild"]["seconds_median"] for s in scale["sizes"]], "o-", label="rebuild")
        for key, label, style in (
            ("restart_unchanged", "daemon restart, nothing changed", "s--"),
            ("restart_1pct", "daemon restart, 1 % changed", "^:"),
        ):
            ys = [s[key]["spawn_to_ready_s_median"] for s in scale["sizes"]]
            ax.plot(xs, ys, style, label=label)
        firsts = [s for s in scale["sizes"] if s["first_start"]]
        if firsts:
            ax.plot(
                [s["records"] for s in firsts],
                [s["first_start"]["spawn_to_ready_s"] for s in firsts],
                "d-.",
                label="first daemon start (index all)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("records in store")
        ax.set_ylabel("seconds")
        ax.set_title("Scale: rebuild and daemon start-up")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "bench-scale.png", dpi=110)
        plt.close(fig)
        made.append("bench-scale.png")
    return made


# -- sections ------------------------------------------------------------------------------
def _targets(results: dict[str, Any]) -> list[str]:
    rows: list[list[Any]] = []

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "**missed**")

    lat = _sec(results, "latency")
    at10k = next((s for s in lat["sizes"] if s["records"] == 10_000), None) if lat else None
    if at10k:
        p99 = at10k["latency_minus_quiet_ms"]["p99"]
        rows.append(
            [
                "latency p99 - quiet window, 10k records",
                f"≤ {TARGET_LATENCY_MS:.0f} ms",
                f"{p99:.0f} ms",
                verdict(p99 <= TARGET_LATENCY_MS),
            ]
        )
    burst = _sec(results, "burst")
    if burst and burst["sizes"]:
        big = max(burst["sizes"], key=lambda s: s["records"])
        r = big["ratios"]
        pe = big["per_event"]
        ext = (
            f" (per-event timed on {pe['timed_records']} of the {big['records']} records)"
            if pe["extrapolated"]
            else ""
        )
        rows.append(
            [
                f"burst {big['records']}: per-event update_image time ÷ daemon time",
                f"≥ {TARGET_PER_EVENT_X:.0f}x",
                f"{r['per_event_over_daemon']:.1f}x{ext}",
                verdict(r["per_event_over_daemon"] >= TARGET_PER_EVENT_X),
            ]
        )
        rows.append(
            [
                f"burst {big['records']}: daemon time ÷ floor time",
                f"≤ {TARGET_FLOOR_X:.0f}x",
                f"{r['daemon_over_floor']:.2f}x",
                verdict(r["daemon_over_floor"] <= TARGET_FLOOR_X),
            ]
        )
    scale = _sec(results, "scale")
    s10 = next((s for s in scale["sizes"] if s["records"] == 10_000), None) if scale else None
    if s10:
        t = s10["restart_unchanged"]["spawn_to_ready_s_median"]
        rec = s10["restart_unchanged"]["reconcile_s_median"]
        rows.append(
            [
                "daemon restart, nothing changed, 10k (spawn → watching)",
                f"≤ {TARGET_RESTART_S:.0f} s",
                f"{t:.2f} s (reconcile alone {rec:.2f} s)",
                verdict(t <= TARGET_RESTART_S),
            ]
        )
    idle = _sec(results, "idle")
    if idle and "inotify" in idle["modes"]:
        ino = idle["modes"]["inotify"]
        c = ino["cpu_pct"]
        res = ino.get("cpu_pct_resolution", 0.0)
        shown = f"{c:.3f} %" + (" (one 10 ms tick or less)" if c <= res * 1.01 else "")
        rows.append(
            [
                f"idle CPU, inotify, {_k(idle['store_records'])} records",
                f"< {TARGET_IDLE_PCT} %",
                shown,
                verdict(c < TARGET_IDLE_PCT),
            ]
        )
    steady, worst = [], []  # (MiB, where)
    if s10:
        steady += [(r["vm_hwm_mib"], "restart") for r in s10["restart_unchanged"]["runs"]]
        worst += [(r["vm_hwm_mib"], "restart, 1 % changed") for r in s10["restart_1pct"]["runs"]]
        if s10["first_start"]:
            worst.append((s10["first_start"]["vm_hwm_mib"], "first start"))
    if idle and idle["store_records"] == 10_000:
        steady += [(m["vm_hwm_mib"], f"idle {k}") for k, m in idle["modes"].items()]
    if at10k:
        steady.append((at10k["daemon_peak_rss_mib"], "single edits"))
    if burst and burst["store_records"] == 10_000 and "daemon_rss" in burst:
        worst.append((burst["daemon_rss"]["vm_hwm_mib"], "bursts"))
    for label, values in (("steady: idle, restarts, single edits", steady), ("worst case", worst)):
        if values:
            mib, where = max(values)
            mb = mib * 2**20 / 1e6
            rows.append(
                [
                    f"daemon peak RSS, 10k records ({label})",
                    f"< {TARGET_RSS_MB:.0f} MB",
                    f"{mb:.0f} MB = {mib:.0f} MiB ({where})",
                    verdict(mb < TARGET_RSS_MB),
                ]
            )
    if not rows:
        return []
    head = ["target", "goal", "measured", ""]
    return ["## Headline numbers against the targets", "", *_table(head, rows)]


def _latency(results: dict[str, Any]) -> list[str]:
    lat = _sec(results, "latency")
    if not lat:
        return []
    mo = lat["method_overhead_ms"]
    lines = [
        "## 1. Latency of a single edit",
        "",
        _meta(results, "latency"),
        "",
        "One artifact is rewritten atomically (`.partial` file, then rename) in a store whose "
        "daemon is idle; the time runs from the return of the rename to the moment the affected "
        "table file on disk is replaced by a version holding the new rows. The benchmark polls "
        f"`os.stat` of the table every {mo['poll_interval_ms']:g} ms and, outside the timing, "
        "reads the table to confirm the new row is in it. The method's own delay, measured by "
        "the same loop detecting renames made at known times by another thread, is "
        f"p50 {mo['p50']:.2f} ms, p99 {mo['p99']:.2f} ms (max {mo['max_ms']:.2f} ms); the poller "
        f"uses {mo['poller_cpu_fraction_of_core'] * 100:.1f} % of a core. Edits alternate between "
        "the velocity-events parquet (table `velocity_events`, 10 rows per record) and the radon "
        "JSON (table `radon_report`, 1 row per record), on random records, 0.1-0.3 s apart. "
        f"Daemon: `kymwatch run --quiet-ms {lat['quiet_ms']}` (defaults otherwise, log level "
        "info). Percentiles pool every edit of every daemon session at that size.",
        "",
    ]
    rows = []
    for s in lat["sizes"]:
        m, b = s["latency_minus_quiet_ms"], s["by_table_minus_quiet_ms"]
        rows.append(
            [
                _k(s["records"]),
                s["samples"],
                m["p50"],
                m["p95"],
                m["p99"],
                s["max_minus_quiet_ms"],
                b["velocity_events"]["p50"],
                b["radon_report"]["p50"],
                s["batch_duration_ms_median"],
            ]
        )
    lines += _table(
        [
            "records",
            "edits",
            "p50 - quiet (ms)",
            "p95 - quiet",
            "p99 - quiet",
            "max - quiet",
            "p50 velocity_events",
            "p50 radon_report",
            "worker ms/batch (median, daemon log)",
        ],
        rows,
    )
    rows = []
    for s in lat["sizes"]:
        if "runqueue_wait_ms" not in s:
            continue
        w, x, slow = s["runqueue_wait_ms"], s["minus_quiet_minus_wait_ms"], s["slowest_5pct"]
        rows.append(
            [
                _k(s["records"]),
                ", ".join(f"{c:.2f}" for c in s.get("other_cores_per_session", [])),
                w["p50"],
                w["p99"],
                slow["latency_minus_quiet_ms_median"],
                slow["runqueue_wait_ms_median"],
                x["p50"],
                x["p95"],
                x["p99"],
            ]
        )
    if rows:
        lines += [
            "The machine is shared, so each edit also records how long the daemon's threads "
            "were runnable but waiting for a CPU (`/proc/<pid>/task/*/schedstat`, run-queue "
            "wait, summed over threads) between the write and the publication. Subtracting it "
            "estimates the latency on an idle machine (an estimate, not a measurement):",
            "",
            *_table(
                [
                    "records",
                    "other processes (cores, per session)",
                    "run-queue wait p50 ms",
                    "wait p99 ms",
                    "slowest 5 %: latency - quiet (median ms)",
                    "slowest 5 %: of which waiting for a CPU",
                    "latency - quiet - wait p50",
                    "p95",
                    "p99",
                ],
                rows,
            ),
        ]
    rows = []
    for s in lat["sizes"]:
        for t, pct in s.get("worker_ms_by_table", {}).items():
            rows.append([t, s["table_rows"][t], pct["p50"], pct["p95"], pct["p99"]])
    if rows:
        rows.sort(key=lambda r: r[1])
        lines += [
            "The worker's time for a one-record batch (from the daemon's `batch_indexed` log "
            "lines: read the artifact, merge, rewrite the whole table, record fingerprints), by "
            "the size of the table it rewrites:",
            "",
            *_table(["table", "rows in table", "p50 ms", "p95 ms", "p99 ms"], rows),
        ]
    fit = lat.get("table_rewrite_fit")
    if fit and fit.get("rows_at_150_ms"):
        lines += [
            f"A line through those medians: {fit['fixed_ms']:.1f} ms + "
            f"{fit['ms_per_1k_rows']:.3f} ms per 1,000 table rows (R² {fit['r2']:.3f}); it "
            f"reaches 150 ms at about {fit['rows_at_150_ms']:,.0f} rows, i.e. "
            f"{fit['rows_at_150_ms'] / 10:,.0f} records at 10 event rows each.",
            "",
        ]
    lines += ["![latency vs store size](bench-latency.png)", ""]
    parts = []
    for s in lat["sizes"]:
        m = s["latency_minus_quiet_ms"]
        parts.append(
            f"{_k(s['records'])} records: p99 - quiet {m['p99']:.0f} ms, of which the worker's "
            "batch (read artifact, rewrite the table) takes "
            f"{s['batch_duration_ms_median']:.0f} ms at the median"
        )
    lines += ["**Numbers.** " + "; ".join(parts) + ".", ""]
    return lines


def _burst(results: dict[str, Any]) -> list[str]:
    b = _sec(results, "burst")
    if not b:
        return []
    rb = b["rebuild_per_change"]
    lines = [
        "## 2. Bursts: many records re-analysed at once",
        "",
        _meta(results, "burst"),
        "",
        f"A store of {_k(b['store_records'])} records (10 event rows each) is fully indexed; "
        "then both artifacts of B records are rewritten as fast as one process can (atomic "
        "writes), and the time until the tables are right is measured four ways, in the same "
        "run, on two copies of the same store:",
        "",
        "* **daemon** — `kymwatch run` watches the store; time from the first write until the "
        "`kymwatch sync` barrier returns (called in-process through `request_sync`, the function "
        "the CLI runs; a CLI call on an idle daemon takes "
        f"{b['sync_cli_idle_s']:.2f} s of which {b['sync_idle_s']:.3f} s is the barrier itself "
        "and the rest is interpreter start-up). Checked: every changed record carries its new "
        "values in both tables after each burst, and once (largest burst) the whole tables "
        "equal a fresh rebuild (`assert_tables_match_rebuild`).",
        "* **floor** — no daemon: the same writes, then one `KymDataset.update_images` per "
        "indexer with all B ids (each artifact read once, each table written once).",
        "* **per-event** — the seed's way: one `KymDataset.update_image` per artifact written "
        "(2·B calls), each rewriting the whole table.",
        "* **rebuild per change** — a `watchmedo shell-command` user: a full rebuild of every "
        f"table after each of the 2·B writes, **extrapolated** from the median of "
        f"{rb['samples']} measured rebuild(s) of the same store ({rb['seconds']:.1f} s each, "
        f"from the {rb['source']}).",
        "",
        "Daemon and floor are medians of the repetitions; end-to-end times add the same writes "
        "(measured without a daemon) to the floor, per-event and rebuild strategies, so every "
        "strategy is timed from the first write.",
        "",
    ]
    rows = []
    for s in b["sizes"]:
        e, pe = s["end_to_end_s"], s["per_event"]
        pe_note = f" (ext. from {pe['timed_records']})" if pe["extrapolated"] else ""
        rows.append(
            [
                s["records"],
                s["floor"]["write_s"],
                e["daemon"],
                s["daemon"]["after_write_s"],
                e["floor"],
                f"{_f(e['per_event'], 1)}{pe_note}",
                f"{_f(e['rebuild_per_change'], 0)} (ext.)",
                s["daemon"]["daemon_cpu_s"],
                s["daemon"].get("daemon_runqueue_wait_s"),
                s["floor"]["cpu_s"],
            ]
        )
    lines += _table(
        [
            "records",
            "writes alone (s)",
            "daemon (s)",
            "daemon after last write (s)",
            "floor (s)",
            "per-event (s)",
            "rebuild per change (s)",
            "daemon CPU (s)",
            "daemon waiting for a CPU (s)",
            "floor CPU (s)",
        ],
        rows,
    )
    rows = []
    for s in b["sizes"]:
        r = s["ratios"]
        rows.append(
            [
                s["records"],
                f"{r['per_event_over_daemon']:.1f}x",
                f"{r['rebuild_over_daemon']:,.0f}x",
                f"{r['daemon_over_floor']:.2f}x",
                f"{r['after_write_daemon_over_floor']:.2f}x",
                f"{r['daemon_cpu_over_floor_cpu']:.2f}x",
                f"{s['per_event']['ms_per_call']:.0f}",
            ]
        )
    lines += _table(
        [
            "records",
            "per-event ÷ daemon",
            "rebuild-per-change ÷ daemon",
            "daemon ÷ floor",
            "daemon after last write ÷ floor indexing",
            "daemon CPU ÷ floor CPU",
            "per-event ms per call",
        ],
        rows,
    )
    lines += ["![burst time vs burst size](bench-burst.png)", ""]
    big = max(b["sizes"], key=lambda s: s["records"])
    r = big["ratios"]
    lines += [
        f"**Reading.** At {big['records']} records the daemon is {r['per_event_over_daemon']:.1f}x "
        f"faster than per-event `update_image` and {r['daemon_over_floor']:.2f}x the floor "
        f"end to end (it spends {r['daemon_cpu_over_floor_cpu']:.2f}x the floor's CPU). The "
        "per-event cost per call is flat across burst sizes (each call rewrites the same-size "
        "table)"
        + (
            ", which is what justifies extrapolating it where only part of a burst was timed."
            if any(s["per_event"]["extrapolated"] for s in b["sizes"])
            else "; it was timed over every artifact of every burst."
        ),
        "",
    ]
    return lines


def _scale(results: dict[str, Any]) -> list[str]:
    sc = _sec(results, "scale")
    if not sc:
        return []
    lines = [
        "## 3. Scale: rebuild and daemon start-up",
        "",
        _meta(results, "scale"),
        "",
        "`rebuild`: `KymDataset.rebuild` of both tables in a fresh child process (time without "
        "interpreter start and imports; peak RSS = the child's `ru_maxrss`). *First start*: "
        "`kymwatch run` on a store without tables or state (indexes everything). *Restart*: "
        "`kymwatch run` on an indexed store, nothing changed or 1 % of the records re-analysed "
        "while it was down; time from spawning the process to the status file saying "
        "`watching` (after the start-up reconcile), and the `reconcile_done` duration from its "
        "log. Daemon peak RSS = `VmHWM` of the process (a psutil sampler at 20 Hz agrees). "
        "Page cache warm (stores were just generated or copied).",
        "",
    ]
    rows = []
    for s in sc["sizes"]:
        rb, fs = s["rebuild"], s["first_start"]
        ru, r1 = s["restart_unchanged"], s["restart_1pct"]
        rows.append(
            [
                _k(s["records"]),
                f"{_f(rb['seconds_median'])} ({len(rb['runs'])})",
                rb["cpu_seconds_median"],
                rb.get("runqueue_wait_s_median"),
                f"{rb['records_per_s']:,.0f}",
                rb["peak_rss_mib_median"],
                f"{_f(fs['spawn_to_ready_s'])}" if fs else "- (state seeded)",
                ru["spawn_to_ready_s_median"],
                ru["reconcile_s_median"],
                r1["spawn_to_ready_s_median"],
                r1["reconcile_s_median"],
                max(
                    [
                        x["vm_hwm_mib"]
                        for k in ("restart_unchanged", "restart_1pct")
                        for x in s[k]["runs"]
                    ]
                    + ([fs["vm_hwm_mib"]] if fs else [])
                ),
            ]
        )
    lines += _table(
        [
            "records",
            "rebuild s (runs)",
            "rebuild CPU s",
            "rebuild waiting for a CPU s",
            "rebuild records/s",
            "rebuild peak RSS MiB",
            "first start s",
            "restart s, unchanged",
            "reconcile s, unchanged",
            "restart s, 1 % changed",
            "reconcile s, 1 %",
            "daemon peak RSS MiB",
        ],
        rows,
    )
    fits = sc.get("fits", {})
    if fits:
        rows = []
        for name, f in fits.items():
            if f:
                rows.append(
                    [
                        name.replace("_", " "),
                        f"{f['slope_s_per_record'] * 1e6:,.1f}",
                        f"{f['intercept_s']:.2f}",
                        f"{f['r2']:.4f}",
                        f"{f['loglog_k']:.2f}",
                    ]
                )
        lines += [
            "Linear fits `t = a + b·records` over the sizes above (medians), and the log-log "
            "slope k of `t ∝ records^k` (k = 1: linear; k > 1: super-linear):",
            "",
            *_table(["what", "b (µs per record)", "a (s)", "R²", "k"], rows),
        ]
    lines += ["![scale](bench-scale.png)", ""]
    k_rebuild = fits.get("rebuild", {}).get("loglog_k", float("nan"))
    per_rec = [
        (
            s["records"],
            s["rebuild"]["seconds_median"] / s["records"] * 1e3,
            s["rebuild"]["cpu_seconds_median"] / s["records"] * 1e3,
        )
        for s in sc["sizes"]
    ]
    lines += [
        "**Reading.** Rebuild time per record: "
        + ", ".join(f"{_k(n)}: {t:.2f} ms ({c:.2f} ms CPU)" for n, t, c in per_rec)
        + f". Rebuild log-log slope k = {k_rebuild:.2f} in wall time, "
        f"{fits.get('rebuild_cpu', {}).get('loglog_k', float('nan')):.2f} in CPU time. "
        "A restart with nothing changed costs a scan of every record's `analysis/` folder, "
        "loading the saved fingerprints and setting up the watches; with 1 % changed it adds "
        "indexing those records and one rewrite of each table.",
        "",
    ]
    return lines


def _idle(results: dict[str, Any]) -> list[str]:
    idle = _sec(results, "idle")
    if not idle:
        return []
    lines = [
        "## 4. Idle cost",
        "",
        _meta(results, "idle"),
        "",
        f"A daemon watches an indexed {_k(idle['store_records'])}-record store "
        f"({idle['store_folders']:,} folders) for {idle['seconds']:g} s with nothing "
        "happening (after a sync and a few seconds to settle). CPU = user + system time of "
        "all its threads; context switches summed over every thread "
        "(`/proc/<pid>/task/*/status`); a voluntary switch is a thread going to sleep, i.e. one "
        "wake-up. Polling mode uses the default `--poll-interval 2`. CPU time is counted in "
        "10 ms ticks, so 0 means less than one tick over the whole measurement.",
        "",
    ]
    rows = []
    for mode, m in idle["modes"].items():
        rows.append(
            [
                mode,
                f"{m['cpu_pct']:.3f}"
                + (f" (< {m['cpu_pct_resolution']:.3f})" if m["cpu_pct"] == 0 else ""),
                f"{m['cpu_pct_window_max']:.3f}",
                f"{m['voluntary_ctx_per_s']:.1f}",
                f"{m['involuntary_ctx_per_s']:.1f}",
                m["threads"],
                m["inotify_watches"],
                m["rss_now_mib"],
            ]
        )
    lines += _table(
        [
            "mode",
            "CPU %",
            "CPU % (worst 10 s)",
            "voluntary switches/s",
            "involuntary/s",
            "threads",
            "inotify watches",
            "RSS MiB",
        ],
        rows,
    )
    ino = idle["modes"].get("inotify")
    if ino:
        lines += [
            f"**Reading.** With inotify the daemon holds {ino['inotify_watches']:,} watches for "
            f"{idle['store_folders']:,} folders (a recursive watch would need one per folder) "
            "and wakes only for its status heartbeat; polling pays a full fingerprint scan every "
            "interval.",
            "",
        ]
    return lines


def write(results: dict[str, Any], out: Path) -> None:
    """Write ``benchmarks.md`` and the plots into ``out``."""
    m = results["machine"]
    plots = _plots(results, out)
    kind = "quick run" if results["options"].get("quick") else "full run"
    waited = sum(
        ((s.get("background") or {}).get("before") or {}).get("waited_s", 0)
        for s in results.get("sections", {}).values()
    )
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# kymwatch benchmarks",
        "",
        f"Generated by `./dev bench` ({kind}) "
        f"on {m['date_utc']}; the run took {results.get('run_seconds', 0) / 60:.1f} min, "
        f"{waited / 60:.1f} min of it waiting for other processes to go quiet. "
        "Raw numbers: [`benchmarks.json`](benchmarks.json). Code: `bench/`.",
        "",
        "## Machine",
        "",
        *_table(
            ["", ""],
            [
                ["CPU", f"{m['nproc']} x {m['cpu_model']}"],
                ["memory", f"{m['memory_gib']} GiB"],
                ["kernel / file system", f"{m['kernel']} / {m['work_fs']}"],
                ["Python", m["python"]],
                ["packages", pk],
                [
                    "kymwatch measured",
                    f"commit {m['git_commit']} (a snapshot of `src/`, see below)",
                ],
            ],
        ),
        "The machine is shared: each section states how many cores other processes used while "
        "it ran; numbers taken under load are slower than on an idle machine.",
        "",
        *_targets(results),
        *_latency(results),
        *_burst(results),
        *_scale(results),
        *_idle(results),
    ]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        "./dev bench                      # full run, rewrites docs/benchmarks.{md,json} and plots",
        "./dev bench --quick              # ~2 min smoke run into bench/out/quick/",
        "./dev bench --help               # sections, sizes, repetitions, output folder, ...",
        "./dev bench --src worktree ...   # measure uncommitted changes (default: HEAD)",
        "./dev bench --report-only --out docs   # rewrite this page from benchmarks.json",
        "./dev bench profile burst 10000 2000   # py-spy profiles (also latency, restart,",
        "                                       # rebuild, memory) into bench/out/profiles/",
        "```",
        "",
        "`bench/run.py` exports `src/kymwatch` and the test harness of one commit into "
        "`bench/out/src/<commit>/` and runs the suite and every daemon it starts against that "
        "copy, so edits made to the repository during a run cannot change what is measured.",
        "",
        "Synthetic stores are generated with plain file I/O and cached in `bench/out/cache` "
        "(git-ignored); each measurement works on a hard-link copy (`cp -al`), which is safe "
        "because every write the benchmarks make is an atomic rename.",
        "",
    ]
    (out / "benchmarks.md").write_text("\n".join(lines))
    del plots
