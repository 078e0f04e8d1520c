"""kymwatch benchmarks (``./dev bench``, via run.py): every target of issues 11 and 14.

Sections: scale (rebuild, first start, warm and cold restarts), latency (single edits,
atomic and in-place writers), burst (daemon against the fast floor, the library floor
and per-event ``update_image``), idle (inotify and polling, and whether polling sees
each writer's change), cli (``status``/``sync``/``logs`` start-up) and state (saves).
Not part of the test suite. Generates kymflow-shaped stores with plain file I/O
(both generations; cached under ``bench/out/cache``), measures, and writes
``docs/benchmarks.md``, ``docs/benchmarks.json`` and ``docs/bench-*.png``. A section
that fails is logged and recorded; the others' results are kept. Options the
measured build lacks (``--settle-ms``) are detected from ``kymwatch run --help``.
Sizes above 10k are cut (and the report says so) when the build's rebuild rate
would make the run too long (``--size-budget-s``).

Examples::

    ./dev bench                         # the full run (~25 min on an idle 2-core machine)
    ./dev bench --quick                 # every section, small sizes (bench/out/quick/)
    ./dev bench --sections latency --latency-sizes 1000,10000
    ./dev bench --sections burst --burst-sizes 2000 --out bench/out/try
    ./dev bench --src worktree --quick  # measure uncommitted changes too

A run of some sections only keeps the other sections' results already in the
output folder's ``benchmarks.json`` (each section records when it was measured).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import features
import measure
import report
import sec_burst
import sec_cli
import sec_idle
import sec_latency
import sec_scale
import sec_state
import storegen
import stores
from measure import Ctx

SECTIONS = {
    "scale": sec_scale.run,
    "latency": sec_latency.run,
    "burst": sec_burst.run,
    "idle": sec_idle.run,
    "cli": sec_cli.run,
    "state": sec_state.run,
}

FULL = {
    "scale_sizes": [1000, 10_000, 50_000],
    "latency_sizes": [1000, 10_000, 50_000],
    "latency_samples": 150,
    "latency_samples_large": 60,
    "latency_writers": ["atomic", "inplace"],
    "latency_parts_sizes": [50_000],
    "partition_rows": 200_000,
    "inplace_fraction": 0.67,
    "cold_sizes": [10_000],
    "cli_store": 10_000,
    "cli_reps": 9,
    "state_store": 50_000,
    "burst_store": 10_000,
    "burst_sizes": [100, 500, 2000],
    "per_event_sample": 100,
    "idle_store": 10_000,
    "idle_seconds": 40.0,
    "idle_settle": 5.0,
    "detect_timeout_s": 150.0,
    "reps": 3,
    "rebuild_reps": 3,
    "rebuild_reps_50k": 1,
    "cold_start_max": 10_000,
    "wait_quiet": 60.0,
    "out": storegen.OUT.parent.parent / "docs",
}
QUICK = {
    "scale_sizes": [500, 1000],
    "latency_sizes": [1000],
    "latency_samples": 30,
    "latency_samples_large": 20,
    "latency_writers": ["atomic", "inplace"],
    "latency_parts_sizes": [1000],
    "partition_rows": 2_000,
    "inplace_fraction": 0.5,
    "cold_sizes": [1000],
    "cli_store": 1000,
    "cli_reps": 3,
    "state_store": 1000,
    "burst_store": 1000,
    "burst_sizes": [20, 100],
    "per_event_sample": 50,
    "idle_store": 1000,
    "idle_seconds": 10.0,
    "idle_settle": 2.0,
    "detect_timeout_s": 30.0,
    "reps": 1,
    "rebuild_reps": 1,
    "rebuild_reps_50k": 1,
    "cold_start_max": 1000,
    "wait_quiet": 0.0,
    "out": storegen.OUT / "quick",
}


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "").replace("k", "000")) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; anything not given takes the ``--quick`` or full-run default."""
    p = argparse.ArgumentParser(
        prog="./dev bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one repetition, every section (a few minutes)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    p.add_argument("--scale-sizes", type=_ints, help="records per store (default 1k,10k,50k)")
    p.add_argument("--latency-sizes", type=_ints, help="records per store (default 1k,10k,50k)")
    p.add_argument("--latency-samples", type=int, help="edits per size up to 10k (default 150)")
    p.add_argument("--latency-samples-large", type=int, help="edits per size above 10k (60)")
    p.add_argument(
        "--latency-writers",
        type=lambda t: [w for w in t.split(",") if w],
        help="atomic (.partial + rename), inplace (to_parquet in place); default both",
    )
    p.add_argument(
        "--latency-parts-sizes",
        type=_ints,
        help="sizes also timed on the parts of a daemon run with --partition-rows (50k)",
    )
    p.add_argument(
        "--partition-rows", type=int, help="--partition-rows of that daemon (default 200000)"
    )
    p.add_argument(
        "--inplace-fraction", type=float, help="in-place edits as a fraction of atomic (0.67)"
    )
    p.add_argument("--settle-ms", type=int, default=20, help="--settle-ms where the build has it")
    p.add_argument("--cold-sizes", type=_ints, help="sizes given a cold-cache restart (10k)")
    p.add_argument("--cli-store", type=int, help="records in the CLI section's store (10k)")
    p.add_argument("--cli-reps", type=int, help="runs per CLI command (default 9)")
    p.add_argument("--state-store", type=int, help="records in the state section's store (50k)")
    p.add_argument("--burst-store", type=int, help="records in the burst store (default 10k)")
    p.add_argument("--burst-sizes", type=_ints, help="records per burst (default 100,500,2000)")
    p.add_argument(
        "--per-event-sample",
        type=int,
        help="time per-event update_image on at most this many records, extrapolate (100)",
    )
    p.add_argument(
        "--rebuild-sample",
        type=int,
        default=2,
        help="rebuilds timed for the rebuild-per-change estimate if the scale section did not run",
    )
    p.add_argument("--idle-store", type=int, help="records in the idle store (default 10k)")
    p.add_argument("--idle-seconds", type=float, help="idle measurement per mode (default 40)")
    p.add_argument("--idle-settle", type=float, help="wait before measuring idle (default 5)")
    p.add_argument(
        "--detect-timeout-s",
        type=float,
        help="after the idle window, wait this long for each writer's change (150; a polling "
        "daemon may verify in-place rewrites only every few dozen polls)",
    )
    p.add_argument("--reps", type=int, help="repetitions per figure (default 3)")
    p.add_argument("--rebuild-reps", type=int, help="rebuilds per size below 50k (default 3)")
    p.add_argument("--rebuild-reps-50k", type=int, help="rebuilds at 50k and above (default 1)")
    p.add_argument(
        "--cold-start-max",
        type=int,
        help="largest store given a timed first daemon start (default 10k; above it the "
        "daemon state is seeded from the rebuild)",
    )
    p.add_argument("--quiet-ms", type=int, default=300, help="daemon quiet window (default 300)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        help="wait up to S seconds for other processes to go quiet before each section",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="cores other processes may use for the machine to count as quiet (default 0.15)",
    )
    p.add_argument("--no-oracle", action="store_true", help="skip the burst's rebuild oracle")
    p.add_argument(
        "--first-start-budget-s",
        type=float,
        default=300.0,
        help="skip a size's timed first daemon start when its rebuild took longer (300)",
    )
    p.add_argument(
        "--size-budget-s",
        type=float,
        default=420.0,
        help="cut sizes above --burst-store whose predicted rebuild is longer (420)",
    )
    p.add_argument(
        "--rep-budget-s",
        type=float,
        default=40.0,
        help="repeat a burst or a rebuild only while one repetition is shorter (40)",
    )
    p.add_argument(
        "--oracle-budget-s",
        type=float,
        default=90.0,
        help="skip the burst's whole-table oracle when a rebuild would take longer (90)",
    )
    p.add_argument("--out", type=Path, help="output folder (default docs/, quick: bench/out/quick)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite benchmarks.md and the plots from the output folder's benchmarks.json",
    )
    p.add_argument(
        "--clean",
        action="store_true",
        help="delete the store copies kept in bench/out/work from earlier runs first",
    )
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections and write the report."""
    opts = parse_args(argv)
    if opts.report_only:
        report.write(json.loads((opts.out / "benchmarks.json").read_text()), opts.out)
        print(f"wrote {opts.out / 'benchmarks.md'}", file=sys.stderr)
        return 0
    measure.quiet_logging()
    work = storegen.OUT / "work"
    storegen.OUT.mkdir(parents=True, exist_ok=True)
    lock = open(storegen.OUT / ".bench.lock", "a+")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bench: another ./dev bench is using bench/out; run one at a time", file=sys.stderr)
        return 2
    if opts.clean and work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(opts=opts, work=work)
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "benchmarks.json"
    previous: dict[str, Any] = {}
    if json_path.exists():
        try:
            previous = json.loads(json_path.read_text())
        except ValueError:
            previous = {}
    results: dict[str, Any] = {
        "machine": measure.machine(work),
        "features": features.summary(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "sections": dict(previous.get("sections", {})),
    }
    ctx.log(f"kymwatch benchmarks: {', '.join(opts.sections)} → {out}")
    gen = {}
    sizes = set(opts.scale_sizes if "scale" in opts.sections else [])
    sizes |= set(opts.latency_sizes if "latency" in opts.sections else [])
    sizes |= {opts.burst_store} if "burst" in opts.sections else set()
    sizes |= {opts.idle_store} if "idle" in opts.sections else set()
    sizes |= {opts.cli_store} if "cli" in opts.sections else set()
    sizes |= {opts.state_store} if "state" in opts.sections else set()
    for n in sorted(sizes):
        if n > opts.burst_store:
            continue  # made when first used: a slow build may cut these sizes (sec_scale.too_big)
        _, took = storegen.cached_store(n)
        if took is not None:
            ctx.log(f"generated the {n}-record store in {took:.1f} s")
            gen[str(n)] = took
    results["generation_s"] = gen
    failed = []
    stores.code_hash()  # freeze: templates made now stay usable if src/ changes mid-run
    for name in SECTIONS:
        if name not in opts.sections:
            continue
        quiet = (
            measure.wait_for_quiet(opts.wait_quiet, opts.quiet_threshold, ctx.log)
            if opts.wait_quiet
            else None
        )
        meter = measure.LoadMeter()
        code_before = stores.code_hash(fresh=True)
        t0 = time.monotonic()
        try:
            result = SECTIONS[name](ctx)
        except Exception as e:  # the other sections' results are kept
            traceback.print_exc()
            failed.append(name)
            results["failed_sections"] = failed
            results["sections"].pop(name, None)  # never show an older run's figures as this one's
            ctx.log(f"{name}: FAILED ({type(e).__name__}: {e}); continuing with the others")
            json_path.write_text(json.dumps(results, indent=1, default=float) + "\n")
            continue
        results["sections"][name] = {
            "date_utc": results["machine"]["date_utc"],
            "git_commit": results["machine"]["git_commit"],
            "src_changed_during": stores.code_hash(fresh=True) != code_before,
            "seconds": round(time.monotonic() - t0, 1),
            "background": {"other_cores": round(meter.other_cores(), 3), "before": quiet},
            "result": result,
        }
        ctx.log(f"{name}: done in {time.monotonic() - t0:.0f} s")
        json_path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    results["failed_sections"] = failed
    results["run_seconds"] = round(time.monotonic() - ctx.t0, 1)
    json_path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    report.write(results, out)
    ctx.log(f"wrote {out / 'benchmarks.md'} ({results['run_seconds']:.0f} s)")
    if failed:
        print(f"bench: sections failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
