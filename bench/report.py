"""Turn the benchmark results into ``benchmarks.md`` and PNG plots.

Everything in the generated page comes from ``benchmarks.json``; the one
hand-written part, ``bench/ANALYSIS.md`` (profiles and proposed fixes), is
inserted verbatim with a note saying which run it was written for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import report_extra
import report_sections
import report_targets
from report_util import k, sec, table

ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"
DASK = ANALYSIS.parent / "DASK.md"  # issue 13, measured by hand: bench/dask_rebuild.py


# -- plots ---------------------------------------------------------------------------------
def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    lat = sec(results, "latency")
    ok = [s for s in lat["sizes"] if "error" not in s] if lat else []
    if ok:
        fig, ax = plt.subplots(figsize=(6, 4))
        for writer, color in (("atomic", "C0"), ("inplace", "C1")):
            mine = [s for s in ok if s["writer"] == writer]
            if not mine:
                continue
            xs = [s["records"] for s in mine]
            for p, style in (("p50", "o-"), ("p99", "^:")):
                ys = [s["latency_ms"][p] for s in mine]
                ax.plot(xs, ys, style, color=color, label=f"{writer} {p}")
        ax.axhline(100, color="grey", lw=0.8, ls="--", label="atomic p99 target (10k)")
        ax.set_xscale("log")
        ax.set_xlabel("records in store")
        ax.set_ylabel("write → table on disk, ms")
        ax.set_title("Single edit: user-visible latency")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "bench-latency.png", dpi=110)
        plt.close(fig)
        made.append("bench-latency.png")
    burst = sec(results, "burst")
    if burst and burst["sizes"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [s["records"] for s in burst["sizes"]]
        sizes = burst["sizes"]
        series = [
            ("daemon (first write -> sync)", [s["end_to_end_s"]["daemon"] for s in sizes]),
            (
                "fast floor (write + read once, write once)",
                [s["end_to_end_s"]["floor"] for s in sizes],
            ),
            ("per-event update_image", [s["end_to_end_s"]["per_event"] for s in sizes]),
        ]
        for (label, ys), style in zip(series, ("o-", "s--", "^:"), strict=True):
            ax.plot(xs, ys, style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            f"records re-analysed (2 artifacts each) in a {k(burst['store_records'])} store"
        )
        ax.set_ylabel("seconds until tables are right")
        ax.set_title("Burst time vs burst size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "bench-burst.png", dpi=110)
        plt.close(fig)
        made.append("bench-burst.png")
    scale = sec(results, "scale")
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
def write(results: dict[str, Any], out: Path) -> None:
    """Write ``benchmarks.md`` and the plots into ``out``."""
    m = results["machine"]
    made = plots(results, out)
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
        *table(
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
        "Features of the measured build (from `kymwatch run --help`): "
        + (
            ", ".join(f"{a} {'yes' if b else 'no'}" for a, b in results.get("features", {}).items())
            or "-"
        )
        + ".",
        "",
        "The machine is shared: each section states how many cores other processes used while "
        "it ran; numbers taken under load are slower than on an idle machine.",
        "",
    ]
    for part in (
        report_targets.issue11,
        report_targets.issue14,
        report_sections.latency,
        report_sections.burst,
        report_sections.scale,
        report_extra.idle,
        report_extra.cli,
        report_extra.state,
    ):
        try:
            lines += part(results)
        except Exception as e:  # one section's odd result must not cost the whole page
            lines += [f"*{part.__name__}: could not be rendered ({type(e).__name__}: {e}).*", ""]
    fails = results.get("failed_sections") or []
    if fails:
        lines += [f"**Sections that failed in this run:** {', '.join(fails)} (see its log).", ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        "./dev bench                      # full run, rewrites docs/benchmarks.{md,json} and plots",
        "./dev bench --quick              # a few minutes' smoke run into bench/out/quick/",
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
        "because every write into a shared inode is an atomic rename (in-place writers first give "
        "the artifact its own inode).",
        "",
    ]
    if DASK.exists():  # not part of the full run: kept as measured by hand
        lines += [DASK.read_text().rstrip(), ""]
    (out / "benchmarks.md").write_text("\n".join(lines))
    del made
