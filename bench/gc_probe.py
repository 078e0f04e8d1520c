"""Python's cyclic collections in a ``kymwatch run`` child, for ``burst_probe --gc``.

:func:`hook_dir` writes a ``sitecustomize.py`` that, in a process whose environment
names ``KYMWATCH_GC_PROBE`` (an output path), appends a ``gc.callbacks`` hook recording
every collection (wall time at its end, generation, seconds, objects collected, thread)
and writes them as JSON to that path at exit (the daemon's clean stop on SIGTERM);
with ``KYMWATCH_GC_PROBE_TYPES=1`` also the garbage found once the daemon froze its
start-up, counted by type (``gc.DEBUG_SAVEALL``: the garbage is freed a moment later).
Put the folder on the child's ``PYTHONPATH`` after its ``src``; :func:`window` sums the
collections that ended between two wall times (a burst), per generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENV = "KYMWATCH_GC_PROBE"

_HOOK = """
import os

if os.environ.get("KYMWATCH_GC_PROBE"):
    import atexit, gc, json, threading, time

    _out = os.environ["KYMWATCH_GC_PROBE"]
    _rows = []
    _start = {}

    def _probe(phase, info):
        me = threading.get_ident()
        if phase == "start":
            _start[me] = time.perf_counter()
            return
        took = time.perf_counter() - _start.pop(me, time.perf_counter())
        _rows.append((time.time(), info["generation"], took, info["collected"],
                      threading.current_thread().name))

    def _dump():
        with open(_out, "w") as f:
            json.dump({"rows": _rows, "frozen": gc.get_freeze_count(),
                       "threshold": gc.get_threshold(), "types": _types}, f)

    _types = {}
    if os.environ.get("KYMWATCH_GC_PROBE_TYPES"):  # what the garbage found is, by type
        gc.set_debug(gc.DEBUG_SAVEALL)

        def _kinds(phase, info):
            if phase == "stop" and gc.garbage:
                for obj in gc.garbage if gc.get_freeze_count() else ():  # once up
                    name = type(obj).__module__ + "." + type(obj).__qualname__
                    _types[name] = _types.get(name, 0) + 1
                gc.garbage.clear()

        gc.callbacks.append(_kinds)

    gc.callbacks.append(_probe)
    atexit.register(_dump)
"""


def hook_dir(folder: Path) -> Path:
    """A folder holding the probe's ``sitecustomize.py`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_HOOK)
    return folder


def window(path: Path, t0: float, t1: float) -> dict[str, Any]:
    """Collections that ended between the wall times ``t0`` and ``t1``: count, ms and
    the longest ms per generation, and the count per thread."""
    doc = json.loads(path.read_text())
    count, ms, longest = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    threads: dict[str, int] = {}
    for at, gen, took, _collected, thread in doc["rows"]:
        if t0 <= at <= t1:
            count[gen] += 1
            ms[gen] += took * 1000
            longest[gen] = max(longest[gen], took * 1000)
            threads[thread] = threads.get(thread, 0) + 1
    return {
        "gc_count": count,
        "gc_ms": [round(x, 1) for x in ms],
        "gc_longest_ms": [round(x, 1) for x in longest],
        "gc_total_ms": round(sum(ms), 1),
        "gc_threads": threads,
        "gc_frozen_at_exit": doc["frozen"],
    }
