"""CLI start-up: ``kymwatch status``, ``sync`` (idle daemon) and ``logs`` as a user runs them.

Each command is a fresh ``python -m kymwatch ...`` subprocess (wall time from spawn
to exit, output discarded), ``--cli-reps`` times, on an indexed store watched by an
idle daemon; the median is the figure. ``python -c pass`` (interpreter start-up
alone) and ``kymwatch --version`` (the CLI's start-up without a command) are timed
the same way for reference.

The package's bytecode is compiled first, as ``pip install`` does: an editable install
under ``PYTHONDONTWRITEBYTECODE`` (as on the benchmark machines) otherwise compiles every
module changed since its ``.pyc`` was written on each start (six of the CLI's modules
stale: ``--version`` 87 → 98 ms, medians of 9, measured by hand).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import stores
from measure import Ctx, Daemon, median, percentiles, sync


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def compile_bytecode() -> str:
    """Compile the ``kymwatch`` package's modules to ``.pyc`` (those out of date); the
    package folder compiled."""
    import kymwatch

    folder = Path(kymwatch.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder)], check=True)
    return str(folder)


def commands(store: Path) -> dict[str, list[str]]:
    """The timed command lines."""
    kw = [sys.executable, "-m", "kymwatch"]
    return {
        "python_startup": [sys.executable, "-c", "pass"],
        "version": [*kw, "--version"],
        "status": [*kw, "status", str(store)],
        "sync": [*kw, "sync", str(store), "-q"],
        "logs": [*kw, "logs", str(store)],
    }


def run(ctx: Ctx) -> dict[str, Any]:
    """The CLI section on a ``--cli-store`` store."""
    import sec_latency
    import sec_scale

    o = ctx.opts
    n = o.cli_store
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    res: dict[str, Any] = {"store_records": n, "reps": o.cli_reps, "commands": {}}
    res["bytecode_compiled"] = compile_bytecode()
    with Daemon(store, quiet_ms=o.quiet_ms, extra=sec_latency.daemon_args(ctx)) as d:
        sync(store)
        res["settled_s"] = d.wait_idle()  # "idle daemon": its start-up stale count done
        for name, argv in commands(store).items():
            try:
                _wall(argv)  # warm the page cache once, not timed
                times = [_wall(argv) for _ in range(o.cli_reps)]
            except subprocess.CalledProcessError as e:
                res["commands"][name] = {"error": f"exit {e.returncode}"}
                continue
            res["commands"][name] = {
                "median_s": median(times),
                **{f"{k}_s": v for k, v in percentiles(times, (10, 90)).items()},
                "runs_s": [round(t, 4) for t in times],
            }
            ctx.log(f"cli: {name} {median(times) * 1000:.0f} ms (median of {o.cli_reps})")
    return res
