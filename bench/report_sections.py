"""The per-section parts of ``benchmarks.md``: latency, bursts and scale."""

from __future__ import annotations

from typing import Any

from report_util import f, k, meta, sec, table


# -- sections ------------------------------------------------------------------------------
def latency(results: dict[str, Any]) -> list[str]:
    """Section 1: single edits."""
    lat = sec(results, "latency")
    if not lat:
        return []
    mo = lat["method_overhead_ms"]
    window = lat.get("window_ms", lat["quiet_ms"])
    settle = (
        f"`--settle-ms {lat['settle_ms']}`"
        if lat.get("settle_available")
        else "no `--settle-ms` (not available in this build)"
    )
    lines = [
        "## 1. Latency of a single edit",
        "",
        meta(results, "latency"),
        "",
        "One artifact is rewritten in a store whose daemon is idle, either atomically "
        "(kymflow's `.partial` file, then rename) or in place (truncate, write, close, as "
        "`to_parquet` does); the time runs from the return of the write to the moment the "
        "table the record's rows live in is replaced on disk by a version holding the new "
        "rows (a generation-1 events artifact also feeds `kym_velocity_events`; the time is "
        "taken on `velocity_events`). The benchmark polls `os.stat` of the table every "
        f"{mo['poll_interval_ms']:g} ms and, outside the timing, reads the table to confirm "
        "the new row is in it. The method's own delay (the same loop detecting renames made "
        f"at known times by another thread) is p50 {mo['p50']:.2f} ms, p99 {mo['p99']:.2f} ms; "
        f"the poller uses {mo['poller_cpu_fraction_of_core'] * 100:.1f} % of a core. Edits "
        "alternate between the events artifact (10 rows per record) and the radon artifact "
        "(1 row), on random records of both generations, 0.1-0.3 s apart. Daemon: "
        f"`kymwatch run --quiet-ms {lat['quiet_ms']}`, {settle}. *window* = the wait a "
        f"completion-signalled write pays in this build ({window:g} ms).",
        "",
    ]
    rows = []
    for s in lat["sizes"]:
        if "error" in s:
            rows.append([k(s["records"]), s["writer"], "failed: " + s["error"][:80]] + [""] * 7)
            continue
        u, m = s["latency_ms"], s["latency_minus_window_ms"]
        rows.append(
            [
                k(s["records"]),
                s["writer"],
                s["samples"],
                u["p50"],
                u["p95"],
                u["p99"],
                m["p50"],
                m["p99"],
                s["max_minus_window_ms"],
                s["batch_duration_ms_median"],
            ]
        )
    lines += table(
        [
            "records",
            "writer",
            "edits",
            "user-visible p50 ms",
            "p95",
            "p99",
            "p50 - window",
            "p99 - window",
            "max - window",
            "worker ms/batch (median, daemon log)",
        ],
        rows,
    )
    rows = []
    for s in lat["sizes"]:
        if "error" in s:
            continue
        w, x, slow = s["runqueue_wait_ms"], s["minus_window_minus_wait_ms"], s["slowest_5pct"]
        rows.append(
            [
                k(s["records"]),
                s["writer"],
                ", ".join(f"{c:.2f}" for c in s.get("other_cores_per_session", [])),
                w["p50"],
                w["p99"],
                slow["latency_minus_window_ms_median"],
                slow["runqueue_wait_ms_median"],
                x["p50"],
                x["p99"],
            ]
        )
    if rows:
        lines += [
            "**Estimate, not a measurement.** The machine is shared, so each edit also records "
            "how long the daemon's threads were runnable but waiting for a CPU "
            "(`/proc/<pid>/task/*/schedstat`, summed over threads) between the write and the "
            "publication; subtracting it estimates the latency on an idle machine:",
            "",
            *table(
                [
                    "records",
                    "writer",
                    "other processes (cores, per session)",
                    "run-queue wait p50 ms",
                    "wait p99 ms",
                    "slowest 5 %: latency - window (median ms)",
                    "slowest 5 %: of which waiting for a CPU",
                    "estimate: latency - window - wait p50",
                    "estimate p99",
                ],
                rows,
            ),
        ]
    rows = []
    for s in lat["sizes"]:
        if "error" in s or s["writer"] != "atomic":
            continue
        for t, pct in s.get("worker_ms_by_table", {}).items():
            rows.append([t, s["table_rows"].get(t, "-"), pct["p50"], pct["p95"], pct["p99"]])
    if rows:
        rows.sort(key=lambda r: (str(r[0]), r[1] if isinstance(r[1], int) else 0))
        lines += [
            "The worker's time for a one-record batch (the daemon's `batch_indexed` lines: read "
            "the artifact, merge, write the table(s), record fingerprints), by the table(s) it "
            "wrote and their size:",
            "",
            *table(["table(s)", "rows in table", "p50 ms", "p95 ms", "p99 ms"], rows),
        ]
    fit = lat.get("table_rewrite_fit")
    if fit and fit.get("rows_at_150_ms"):
        lines += [
            f"A line through the one-table medians: {fit['fixed_ms']:.1f} ms + "
            f"{fit['ms_per_1k_rows']:.3f} ms per 1,000 table rows (R² {fit['r2']:.3f}).",
            "",
        ]
    lines += ["![latency vs store size](bench-latency.png)", ""]
    return lines


def burst(results: dict[str, Any]) -> list[str]:
    """Section 2: bursts."""
    b = sec(results, "burst")
    if not b:
        return []
    rb = b["rebuild_per_change"]
    lines = [
        "## 2. Bursts: many records re-analysed at once",
        "",
        meta(results, "burst"),
        "",
        f"A kymflow-shaped store of {k(b['store_records'])} records (half generation 1, half "
        "generation 2; 10 event rows each) is fully indexed; then both data artifacts (events "
        "and radon) of B records are rewritten as fast as one process can (atomic writes), and "
        "the time until every table is right is measured five ways, in the same run, on two "
        "copies of the same store. Each artifact a burst rewrites has its own inode, as in a "
        "user's store: a rename over it frees the old file, which costs the writer more than "
        "a rename over a link the cache still holds (much more on a file system mounted with "
        "`discard`; `bench/ANALYSIS.md`, 'Burst, session 9'):",
        "",
        "* **daemon** — `kymwatch run` watches the store; time from the first write until the "
        "`kymwatch sync` barrier returns (called in-process through `request_sync`, the "
        "function the CLI runs; the CLI's own start-up is in the CLI section). Checked: every "
        "changed record carries its new values in every table it feeds after each burst, and "
        "once (largest burst) the whole tables equal a fresh rebuild.",
        "* **floor** (fast floor, `bench/floor.py`, no kymwatch code) — the same writes, then "
        "each changed artifact read once (`pq.ParquetFile().read()`, `json.loads`), each table "
        "read once, the changed records' rows replaced, each table written once.",
        "* **library floor** — one `KymDataset.update_images` per indexer with all B ids.",
        "* **per-event** — the seed's way: one `KymDataset.update_image` per artifact written "
        "and indexer it feeds, each rewriting the whole table.",
        "* **rebuild per change** — a `watchmedo shell-command` user: a full rebuild of every "
        "table per per-event call, **extrapolated** from the median of "
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
                e.get("library_floor"),
                f"{f(e['per_event'], 1)}{pe_note}",
                f"{f(e['rebuild_per_change'], 0)} (ext.)",
                s["daemon"]["daemon_cpu_s"],
                s["daemon"].get("daemon_runqueue_wait_s"),
                s["floor"]["cpu_s"],
            ]
        )
    lines += table(
        [
            "records",
            "writes alone (s)",
            "daemon (s)",
            "daemon after last write (s)",
            "floor (s)",
            "library floor (s)",
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
                f"{f(r.get('daemon_over_library_floor'))}x",
                f"{r['after_write_daemon_over_floor']:.2f}x",
                f"{r['daemon_cpu_over_floor_cpu']:.2f}x",
                f"{s['per_event']['ms_per_call']:.0f}",
            ]
        )
    lines += table(
        [
            "records",
            "per-event ÷ daemon",
            "rebuild-per-change ÷ daemon",
            "daemon ÷ floor",
            "daemon ÷ library floor",
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


def scale(results: dict[str, Any]) -> list[str]:
    """Section 3: rebuild and daemon start-up."""
    sc = sec(results, "scale")
    if not sc:
        return []
    lines = [
        "## 3. Scale: rebuild and daemon start-up",
        "",
        meta(results, "scale"),
        "",
        "`rebuild`: `KymDataset.rebuild` of every table (the indexers a daemon selects) in a "
        "fresh child process (time without "
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
                k(s["records"]),
                f"{f(rb['seconds_median'])} ({len(rb['runs'])})",
                rb["cpu_seconds_median"],
                rb.get("runqueue_wait_s_median"),
                f"{rb['records_per_s']:,.0f}",
                f"{rb.get('records_per_cpu_s', s['records'] / rb['cpu_seconds_median']):,.0f}",
                rb["peak_rss_mib_median"],
                f"{f(fs['spawn_to_ready_s'])}" if fs else "- (state seeded)",
                ru["spawn_to_ready_s_median"],
                ru["reconcile_s_median"],
                r1["spawn_to_ready_s_median"],
                r1["reconcile_s_median"],
                f(s["restart_cold"]["spawn_to_ready_s_median"]) if s.get("restart_cold") else "-",
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
    lines += table(
        [
            "records",
            "rebuild s (runs)",
            "rebuild CPU s",
            "rebuild waiting for a CPU s",
            "rebuild records/s",
            "records/s per core (CPU)",
            "rebuild peak RSS MiB",
            "first start s",
            "restart s, unchanged",
            "reconcile s, unchanged",
            "restart s, 1 % changed",
            "reconcile s, 1 %",
            "restart s, cold cache",
            "daemon peak RSS MiB",
        ],
        rows,
    )
    colds = [(s["records"], s["restart_cold"]) for s in sc["sizes"] if s.get("restart_cold")]
    for n, c in colds:
        lines += [
            f"Cold restart at {k(n)}: before each start, {c['cache_drop']}.",
            "",
        ]
    for s in sc["sizes"]:
        a = s.get("adopt_kymflow_tables")
        if not a:
            continue
        kept = "yes" if a["never_fewer_rows"] else "**NO**"
        rows_txt = ", ".join(
            f"{t} {a['rows_before'][t]:,} → {a['rows_after'].get(t, 0):,}" for t in a["rows_before"]
        )
        lines += [
            f"Start on a {k(s['records'])} store whose tables kymflow built (pandas object "
            "columns, no kymwatch state): ready after "
            f"{a['spawn_to_ready_s']:.2f} s, then `sync` {f(a.get('then_sync_s'))} s, peak RSS "
            f"{a['vm_hwm_mib']:.0f} MiB; never fewer rows: {kept} ({rows_txt}).",
            "",
        ]
    fits = sc.get("fits", {})
    if fits:
        rows = []
        for name, fit in fits.items():
            if fit:
                rows.append(
                    [
                        name.replace("_", " "),
                        f"{fit['slope_s_per_record'] * 1e6:,.1f}",
                        f"{fit['intercept_s']:.2f}",
                        f"{fit['r2']:.4f}",
                        f"{fit['loglog_k']:.2f}",
                    ]
                )
        lines += [
            "Linear fits `t = a + b·records` over the sizes above (medians), and the log-log "
            "slope k of `t ∝ records^k` (k = 1: linear; k > 1: super-linear):",
            "",
            *table(["what", "b (µs per record)", "a (s)", "R²", "k"], rows),
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
        + ", ".join(f"{k(n)}: {t:.2f} ms ({c:.2f} ms CPU)" for n, t, c in per_rec)
        + f". Rebuild log-log slope k = {k_rebuild:.2f} in wall time, "
        f"{fits.get('rebuild_cpu', {}).get('loglog_k', float('nan')):.2f} in CPU time. "
        "A restart with nothing changed costs a scan of every record's `analysis/` folder, "
        "loading the saved fingerprints and setting up the watches; with 1 % changed it adds "
        "indexing those records and one rewrite of each table.",
        "",
    ]
    return lines
