"""The per-section parts of ``benchmarks.md``: idle cost, CLI start-up, state saves."""

from __future__ import annotations

from typing import Any

from report_util import k, meta, sec, table


def idle(results: dict[str, Any]) -> list[str]:
    """Section 4: idle cost."""
    idle = sec(results, "idle")
    if not idle:
        return []
    lines = [
        "## 4. Idle cost",
        "",
        meta(results, "idle"),
        "",
        f"A daemon watches an indexed {k(idle['store_records'])}-record store "
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
                ", ".join(
                    f"{w} {d['seen_after_s']:.2f} s"
                    if d.get("seen_after_s")
                    else f"{w} not seen" + (" (seen after sync)" if d.get("after_sync") else "")
                    for w, d in m.get("detects", {}).items()
                )
                or "-",
            ]
        )
    lines += table(
        [
            "mode",
            "CPU %",
            "CPU % (worst 10 s)",
            "voluntary switches/s",
            "involuntary/s",
            "threads",
            "inotify watches",
            "RSS MiB",
            "then: change seen after (atomic, in place)",
        ],
        rows,
    )
    ino = idle["modes"].get("inotify")
    if ino:
        lines += [
            f"**Reading.** With inotify the daemon holds {ino['inotify_watches']:,} watches for "
            f"{idle['store_folders']:,} folders (a recursive watch would need one per folder) "
            "and wakes only for its status heartbeat. Polling's cost is the CPU column; the last "
            "column says how long each writer's change took to reach the tables after the idle "
            "window (an in-place rewrite changes no folder, so a polling daemon sees it only "
            "when it verifies that record's files).",
            "",
        ]
    return lines


def cli(results: dict[str, Any]) -> list[str]:
    """Section 5: CLI start-up."""
    c = sec(results, "cli")
    if not c:
        return []
    rows = []
    for name, m in c["commands"].items():
        if "median_s" not in m:
            rows.append([name, m.get("error", "-"), "", ""])
            continue
        rows.append([name, m["median_s"] * 1000, m["p10_s"] * 1000, m["p90_s"] * 1000])
    return [
        "## 5. CLI start-up",
        "",
        meta(results, "cli"),
        "",
        f"Each command is a fresh `python -m kymwatch ...` process, run {c['reps']} times (after "
        f"one untimed run) against an indexed {k(c['store_records'])}-record store watched by "
        "an idle daemon; wall time from spawn to exit, output discarded. `python_startup` "
        "(`python -c pass`) and `version` (`kymwatch --version`: the CLI's start-up without a "
        "command) for reference."
        + (
            " The package's bytecode was compiled first, as `pip install` does."
            if c.get("bytecode_compiled")
            else ""
        ),
        "",
        *table(["command", "median ms", "p10 ms", "p90 ms"], rows),
    ]


def state(results: dict[str, Any]) -> list[str]:
    """Section 6: state saves."""
    st = sec(results, "state")
    if not st:
        return []
    rows = [
        [
            ("full rewrite" if key == "full" else f"{int(key):,} changed records"),
            v["median_s"] * 1000,
        ]
        for key, v in st["saves"].items()
    ]
    return [
        "## 6. State save while busy",
        "",
        meta(results, "state"),
        "",
        f"The daemon's state (`IndexState`) of an indexed {k(st['store_records'])}-record store "
        f"is loaded ({st['load_s'] * 1000:.0f} ms, {st['records_in_state']:,} records); then "
        "records are marked re-indexed as the worker does after a batch (`update_record`) and "
        "the next `save` is timed (median of the repetitions).",
        "",
        *table(["save after", "median ms"], rows),
    ]
