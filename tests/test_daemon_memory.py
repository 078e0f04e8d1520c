"""The daemon's process-level memory settings: the system allocator for pyarrow, glibc
arenas and mmap threshold, and trimming after big work; `kymwatch run` makes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import WAIT_S, DaemonProcess
from kymwatch.daemon import memory

DATA = Path(__file__).parent / "data" / "staleness"

_CHILD = """
import json, pyarrow as pa
from kymwatch.daemon import memory
before = memory.settings()
done = memory.tune_process_memory()
again = memory.tune_process_memory()
table = pa.table({"x": list(range(100_000))})
print(json.dumps({"before": before, "done": done, "again": again,
                  "pool": pa.default_memory_pool().backend_name,
                  "allocated_by_pool": pa.total_allocated_bytes() >= table.nbytes}))
"""


def test_tuning_switches_pyarrow_to_the_system_allocator() -> None:
    """In a fresh process, tuning makes pyarrow allocate with malloc and reports the glibc
    settings it made (nothing before it is called; calling twice changes nothing)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    doc = json.loads(proc.stdout)
    assert doc["before"] == {}
    assert doc["pool"] == "system" and doc["done"]["arrow_pool"] == "system"
    assert doc["allocated_by_pool"]
    if memory._LIBC is not None:  # glibc
        assert doc["done"]["malloc_arena_max"] == 2
        assert doc["done"]["malloc_mmap_threshold"] == memory.MMAP_THRESHOLD
    assert doc["again"] == doc["done"]


def test_trim_never_raises() -> None:
    """Trimming answers a bool wherever it runs (a no-op without glibc)."""
    assert memory.trim() in (True, False)


@pytest.mark.integration
def test_kymwatch_run_logs_its_memory_settings(tmp_path: Path) -> None:
    """`kymwatch run` tunes the process before indexing: `daemon_started` says the
    pyarrow pool is the system allocator."""
    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    daemon = DaemonProcess(root).start()
    try:
        daemon.sync()
    finally:
        assert daemon.stop() == 0
    (started,) = daemon.events("daemon_started")
    assert started["memory"]["arrow_pool"] == "system"
