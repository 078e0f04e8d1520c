"""Process-level memory settings of the daemon: give back what a batch used.

A daemon lives for months; what matters is the memory it keeps between batches,
not only its peak. Three settings, made once by ``kymwatch run`` (and ``rebuild``)
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
- :func:`trim` (``malloc_trim``) after big batches hands freed heap pages back, and
  (once :func:`tune_process_memory` ran) the **pages of shared libraries** the process
  mapped but never wrote: their code and read-only data (pyarrow's libraries alone map
  ~75 MiB, mostly touched once, while loading and resolving symbols). They count in the
  process's RSS as long as they are mapped; ``madvise(MADV_DONTNEED)`` unmaps them from
  this process only (the page cache keeps them, shared and reclaimable, and what the
  daemon runs again is faulted back in from there, a minor fault per 64 KiB): a 10k
  daemon's file-backed RSS went from ~80 to ~30 MiB (``bench/ANALYSIS.md``, session 6).
  Only mappings of libraries (``*.so*``), private, not writable and without a page
  of their own (``Anonymous: 0``: no relocated or written page, which would be lost)
  are released, read from ``/proc/self/smaps`` each time (12-17 ms of CPU), each one
  checked through ``/proc/self/map_files`` just before (a library unloaded meanwhile,
  its range reused for data, would be zeroed; Python does not unload extension
  modules). Tuning releases those the imports touched, before the daemon starts.

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
import os
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = [
    "MMAP_THRESHOLD",
    "NUMPY_ENV",
    "RELEASE_EVERY_S",
    "keep_numpy_out",
    "numpy_needed",
    "release_library_pages",
    "settings",
    "trim",
    "tune_process_memory",
    "use_system_allocator",
]

MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size up are mapped (and unmapped when freed)."""
_MAX_ARENAS = 2
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
_MADV_DONTNEED = 4
RELEASE_EVERY_S = 10.0
"""Library pages are released by :func:`trim` at most this often (12-16 ms of CPU each,
and what is used again is faulted back in)."""
_RELEASED: dict[str, float] = {}
_clock = time.monotonic


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
    """Make the settings above, once per process, and release the library pages that
    loading the imports so far touched; returns what was set."""
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
        if "library_pages" not in done:  # those loading pyarrow & co. touched, once
            release_library_pages()
        done["library_pages"] = "released when trimming"
        done["malloc_arena_max"] = _MAX_ARENAS if _LIBC.mallopt(_M_ARENA_MAX, _MAX_ARENAS) else None
        ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        done["malloc_mmap_threshold"] = MMAP_THRESHOLD if ok else None
    return dict(done)


def trim() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``) and, once
    :func:`tune_process_memory` ran, unmap the library pages not written
    (:func:`release_library_pages`, at most every :data:`RELEASE_EVERY_S`: a burst
    trims after each of its chunks); True if some memory was handed back."""
    if _LIBC is None:
        return False
    trimmed = bool(_LIBC.malloc_trim(0))
    now = _clock()
    if "library_pages" in _SETTINGS and now >= _RELEASED.get("next", now):
        _RELEASED["next"] = now + RELEASE_EVERY_S
        trimmed |= release_library_pages() > 0
    return trimmed


def release_library_pages() -> int:
    """Unmap from this process the resident pages of shared libraries it never wrote
    (see the module docstring); returns how many KiB were resident in them. 0 where
    this cannot be done (not Linux with glibc, no ``/proc``)."""
    if _LIBC is None:
        return 0
    try:
        with open("/proc/self/smaps") as f:
            ranges = releasable(f)
    except OSError:
        return 0
    madvise = _LIBC.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for start, stop, kib, path in ranges:
        # Still that library's mapping (checked microseconds before, not ~10 ms: a
        # library unloaded meanwhile and its range reused for data would be zeroed).
        try:
            if os.readlink(f"/proc/self/map_files/{start:x}-{stop:x}") != path:
                continue
        except OSError:  # gone, or a kernel that does not show it: keep the pages
            continue
        if madvise(start, stop - start, _MADV_DONTNEED) == 0:
            released += kib
    return released


def releasable(smaps: Iterable[str]) -> list[tuple[int, int, int, str]]:
    """The mappings of ``/proc/<pid>/smaps`` whose resident pages may be unmapped:
    ``(start, stop, resident KiB, path)`` of each private, not writable mapping of a shared
    library (``*.so`` or ``*.so.*``) with resident pages and none of its own
    (``Anonymous: 0 kB``: a relocated or otherwise written page would be lost)."""
    out: list[tuple[int, int, int, str]] = []
    current: tuple[list[int], str] | None = None  # [start, stop, rss, anonymous], path
    for line in smaps:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            _close(current, out)
            current = None
            perms, name = head[1], head[5] if len(head) > 5 else ""
            base = os.path.basename(name)
            if perms[1] == "-" and perms[3] == "p" and (base.endswith(".so") or ".so." in base):
                start, stop = (int(x, 16) for x in head[0].split("-"))
                current = [start, stop, 0, -1], " ".join(head[5:])
        elif current is not None and head[0] == "Rss:":
            current[0][2] = int(head[1])
        elif current is not None and head[0] == "Anonymous:":
            current[0][3] = int(head[1])
    _close(current, out)
    return out


def _close(mapping: tuple[list[int], str] | None, out: list[tuple[int, int, int, str]]) -> None:
    if mapping is not None:
        (start, stop, rss, anonymous), path = mapping
        if rss > 0 and anonymous == 0:
            out.append((start, stop, rss, path))
