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
- :func:`trim` (``malloc_trim``) after big batches hands freed heap pages back.

pyarrow's cloud file systems (S3 & co., ~7 MiB) are left as pyarrow loads them: keeping
them out of ``pyarrow.fs`` also kept out its exit hook, and a process that imported one
anyway (a plugin indexer reading from S3) could abort at exit.

Elsewhere these are no-ops (macOS, musl): nothing here raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = [
    "MMAP_THRESHOLD",
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


def settings() -> dict[str, object]:
    """What :func:`tune_process_memory` set in this process (``daemon_started`` logs it
    as ``memory``; empty when it was not called)."""
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
