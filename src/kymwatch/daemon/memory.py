"""Process-level memory settings of the daemon: give back what a batch used, and keep
Python's garbage collector short.

A daemon lives for months; what matters is the memory it keeps between batches,
not only its peak. The settings below are made once by ``kymwatch run`` and ``rebuild``
before the daemon allocates (they change the whole process, so tests that run a
``Daemon`` in their own process do not get them):

- Arrow allocates from the **system allocator** (malloc) instead of its bundled
  mimalloc/jemalloc pool, which keeps freed memory for reuse. Two switches, both
  needed: :func:`use_system_allocator` sets ``ARROW_DEFAULT_MEMORY_POOL=system``
  *before pyarrow is imported* (Arrow's C++ default pool, chosen once at import,
  which the parquet reader and writer use internally), and
  :func:`tune_process_memory` makes it pyarrow's default too. With the second only,
  mimalloc still held ~55 MiB of a 10k daemon after 20 single edits (measured
  2026-11-26: 266 vs 213 MiB, peak 291 vs 239 MiB).
- glibc: at most two **malloc arenas** (each thread that allocates may otherwise get
  its own, up to eight per core, each keeping its free pages), and a fixed **mmap
  threshold**, so large buffers (a table's columns) are mapped and unmapped instead
  of being left in the heap once the threshold has drifted up.
- :func:`trim` (``malloc_trim``) after big batches hands freed heap pages back.
- Python's cyclic garbage collector: :func:`tune_gc` (``kymwatch run``) raises its
  thresholds (:data:`GC_THRESHOLD`: fewer young collections in a burst) and asks each
  daemon of the process to call :func:`daemon_up` once its
  start-up is done (state loaded, start-up reconcile and export done): one full
  collection, then ``gc.freeze()`` moves every object left (imports, indexers, the
  state, cached tables' wrappers: ~39,000 objects at 10k records) to the permanent
  generation, which later collections do not scan. Without it a full collection
  scans all of them and holds the GIL 15-43 ms at 10k records (``bench/rss_probe.py``,
  ``bench/burst_probe.py --gc``), a pause that falls in an edit, a burst's chunk or
  the writer threads; with it, 1-6 ms. Frozen objects are still freed by their
  reference counts; only a garbage cycle among them would stay, so each
  :func:`daemon_up` first unfreezes and collects (in a folder of stores, one daemon's
  start-up frees what the others' frozen objects left in cycles).
  ``kymwatch rebuild`` calls :func:`tune_gc_for_rebuild` once its indexers are made:
  higher thresholds still (:data:`REBUILD_GC_THRESHOLD`), and what the imports left
  frozen at once. With Python's thresholds a 10k-record rebuild ran ~370 young, ~30
  middle and 3 full collections (~0.17 s of CPU, measured with a ``gc.callbacks``
  probe); with these, none after the freeze.

pyarrow's cloud file systems (S3 & co., ~7 MiB) are left as pyarrow loads them: keeping
them out of ``pyarrow.fs`` also kept out its exit hook, and a process that imported one
anyway (a plugin indexer reading from S3) could abort at exit.

Elsewhere these are no-ops (macOS, musl): nothing here raises.

**numpy is kept out** of a daemon that does not need it (:func:`keep_numpy_out`, called
before pyarrow is imported). pyarrow ≥ 16 runs without numpy, but imports it at its own
import whenever it can (``lib.pyx``: ``try: import numpy``, then initialises numpy's C
API); that costs the daemon 11-23 MiB of resident memory at 10k records, 16 of them
at import (measured 2026-11-26, ``bench/ANALYSIS.md``; more in a process that lets
pyarrow import pandas too). kymwatch's own daemon paths are
Arrow-native (no numpy: ``tests/test_nonumpy*.py``); what needs numpy is pandas (the
DataFrame API, plug-in indexers returning DataFrames) and Dask. So numpy is kept out
only when neither can run: no ``--dask``, no plug-in indexer among those configured
(without ``--indexers``: no plug-in installed), and ``KYMWATCH_NUMPY`` unset (``1``
keeps it, for plug-in authors). The mechanism is an import hook first on
``sys.meta_path`` that refuses ``numpy`` and its submodules with a
``ModuleNotFoundError`` saying why and how to keep numpy, rather than a ``None`` in
``sys.modules`` ("import of numpy halted", and gone if any code pops the entry). It
stays for the life of the process, and must: pyarrow decided at its import that numpy
is absent and never initialised numpy's C API, so numpy arrays handed to it later
could crash the process; a clear ``ImportError`` (which code with optional numpy
support catches) is the only safe answer. ``importlib.util.find_spec("numpy")`` raises
that error too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = [
    "GC_THRESHOLD",
    "MMAP_THRESHOLD",
    "NUMPY_ENV",
    "REBUILD_GC_THRESHOLD",
    "daemon_up",
    "keep_numpy_out",
    "numpy_needed",
    "settings",
    "trim",
    "tune_gc",
    "tune_gc_for_rebuild",
    "tune_process_memory",
    "use_system_allocator",
]

MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size up are mapped (and unmapped when freed)."""
GC_THRESHOLD = (10_000, 10, 10)
"""Python's collection thresholds in a daemon process: a young collection after 10,000
net allocations of tracked objects (Python's default: 700). A 2,000-record burst at
10k records ran ~130 young collections with the default and 3-5 with this: its
collections took 26 ms instead of 85 (after the freeze; 91 before either), measured
with ``bench/burst_probe.py --gc`` (medians of 3; ``bench/ANALYSIS.md``). The price: a
young collection scans up to ~10,000 new objects (4-21 ms in a burst, before 2-4); in
single edits they are rare (~3 per 100) and never inside an edit's work
(:func:`kymwatch.daemon.indexing.gc_paused`)."""
REBUILD_GC_THRESHOLD = (100_000, 10, 10)
"""The collection thresholds of a ``kymwatch rebuild`` process: a young collection only
after 100,000 net allocations of tracked objects. A rebuild allocates in chunks of
1,000 records and frees most of a chunk's objects once it is read, so with it a
10k-record rebuild ran no young collection after the freeze, and with
:data:`GC_THRESHOLD` ~10 (45-70 ms, measured with a ``gc.callbacks`` probe; peak RSS
the same). Its pauses (~5 ms at most) matter in no one-off rebuild."""
_MAX_ARENAS = 2
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (has ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()
_SETTINGS: dict[str, object] = {}
_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
NUMPY_ENV = "KYMWATCH_NUMPY"
"""Set to ``1`` to keep numpy importable in ``kymwatch run`` / ``rebuild``."""
_PLUGIN_GROUP = "kymwatch.indexers"  # kymwatch.index.registry.ENTRY_POINT_GROUP
_NUMPY_REFUSED = (
    "numpy is kept out of this kymwatch process: pyarrow was loaded without it, to save"
    " memory, as only kymwatch's own indexers run. A plug-in that needs numpy or pandas:"
    f" run kymwatch with {NUMPY_ENV}=1"
)


def use_system_allocator() -> bool:
    """Make the system allocator Arrow's C++ default pool, for this process and its
    children, if pyarrow is not imported yet (the choice is made once, at its import).

    A pool named in ``ARROW_DEFAULT_MEMORY_POOL`` already is kept (someone chose it).
    Returns True if Arrow will use the system allocator (False: pyarrow was imported
    first, or another pool was asked for).
    """
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(_POOL_ENV, "system")
    return os.environ.get(_POOL_ENV) == "system" and "pyarrow" not in sys.modules


class _NumpyRefused:
    """A ``sys.meta_path`` finder under which ``import numpy`` (or a submodule) fails
    with a ``ModuleNotFoundError`` that says why (see the module docstring)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "numpy" or fullname.startswith("numpy."):
            raise ModuleNotFoundError(_NUMPY_REFUSED, name=fullname)
        return None


def numpy_needed(
    indexers: Collection[str] | None, *, dask: bool, env: Mapping[str, str] = os.environ
) -> str | None:
    """Why this process must keep numpy importable, or None if nothing it runs needs it.

    Args:
        indexers: The configured indexer names (None: chosen per store, and every
            installed plug-in runs).
        dask: A Dask cluster is configured (Dask needs numpy and pandas).
        env: The environment (``KYMWATCH_NUMPY=1`` keeps numpy).
    """
    if env.get(NUMPY_ENV, "").strip() not in ("", "0"):
        return f"{NUMPY_ENV}={env[NUMPY_ENV].strip()}"
    if dask:
        return "dask"
    from importlib.metadata import entry_points  # here: only kymwatch run/rebuild ask

    plugins = {ep.name for ep in entry_points(group=_PLUGIN_GROUP)}
    used = plugins if indexers is None else plugins & set(indexers)
    if used:
        return "plug-in indexers: " + ", ".join(sorted(used))
    return None


def keep_numpy_out(indexers: Collection[str] | None, *, dask: bool) -> bool:
    """Keep numpy out of this process if nothing it will run needs it (see
    :func:`numpy_needed`) and neither numpy nor pyarrow is imported yet; call it before
    pyarrow is imported. Returns True if numpy is now kept out. ``daemon_started``
    logs the outcome as ``memory.numpy``."""
    if any(isinstance(f, _NumpyRefused) for f in sys.meta_path):
        return True
    reason = numpy_needed(indexers, dask=dask)
    if reason is not None:
        _SETTINGS["numpy"] = f"allowed ({reason})"
    elif "numpy" in sys.modules or "pyarrow" in sys.modules:
        _SETTINGS["numpy"] = "allowed (imported before kymwatch ran)"
    else:
        sys.meta_path.insert(0, _NumpyRefused())
        _SETTINGS["numpy"] = "kept out"
        return True
    return False


def settings() -> dict[str, object]:
    """What :func:`tune_process_memory` and :func:`keep_numpy_out` set in this process
    (``daemon_started`` logs it as ``memory``; empty when they were not called)."""
    return dict(_SETTINGS)


def tune_process_memory() -> dict[str, object]:
    """Make the settings above, once per process; returns what was set."""
    done = _SETTINGS
    try:
        import pyarrow as pa

        # Before the switch below, pyarrow's default is Arrow's C++ default pool.
        done.setdefault("arrow_cpp_pool", pa.default_memory_pool().backend_name)
        pa.set_memory_pool(pa.system_memory_pool())
        done["arrow_pool"] = pa.default_memory_pool().backend_name
    except Exception as e:  # an old pyarrow: keep its pool
        done["arrow_pool_error"] = f"{type(e).__name__}: {e}"
    if _LIBC is not None:
        done["malloc_arena_max"] = _MAX_ARENAS if _LIBC.mallopt(_M_ARENA_MAX, _MAX_ARENAS) else None
        ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        done["malloc_mmap_threshold"] = MMAP_THRESHOLD if ok else None
    return dict(done)


def trim() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); True if some was."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def tune_gc() -> None:
    """Set the process's collector up for daemons: the thresholds :data:`GC_THRESHOLD`,
    and each daemon freezes what it holds once it is up (see :func:`daemon_up`).
    ``daemon_started`` logs them as ``memory.gc`` and ``memory.gc_threshold``."""
    gc.set_threshold(*GC_THRESHOLD)
    _SETTINGS["gc_threshold"] = list(gc.get_threshold())
    _SETTINGS["gc"] = "freeze when up"


def tune_gc_for_rebuild() -> dict[str, object]:
    """Set the collector up for a one-off rebuild (``kymwatch rebuild``, and
    ``bench/rebuild_child.py`` as it): the thresholds :data:`REBUILD_GC_THRESHOLD`,
    and every object alive now (the imports, the indexers) collected once, then frozen,
    so the collections the rebuild still makes do not scan them. Returns what was
    done, as :func:`daemon_up` does."""
    gc.set_threshold(*REBUILD_GC_THRESHOLD)
    _SETTINGS["gc_threshold"] = list(gc.get_threshold())
    _SETTINGS["gc_rebuild"] = "frozen before the rebuild"  # not "gc": no daemon_up freezes
    return _collect_and_freeze()


def daemon_up() -> dict[str, object] | None:
    """A daemon's start-up is done: if :func:`tune_gc` was called, collect the
    garbage once, then freeze every object left (see the module docstring).

    Returns what was done (``frozen``: objects in the permanent generation,
    ``collected``: garbage found, ``duration_ms``), or None when the process did not
    ask for it (a ``Daemon`` run inside tests or another program).
    """
    if _SETTINGS.get("gc") is None:
        return None
    gc.unfreeze()  # garbage cycles among objects an earlier daemon_up froze are found too
    return _collect_and_freeze()


def _collect_and_freeze() -> dict[str, object]:
    """One full collection, then every object left frozen; what was done."""
    start = time.perf_counter()
    collected = gc.collect()
    gc.freeze()
    return {
        "frozen": gc.get_freeze_count(),
        "collected": collected,
        "duration_ms": round((time.perf_counter() - start) * 1000, 1),
    }
