"""The daemon's process-level memory settings: the system allocator for pyarrow, glibc
arenas and mmap threshold, and trimming after big work; `kymwatch run` makes them."""

from __future__ import annotations

import json
import os
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


_POOL_CHILD = """
import json, sys
from kymwatch.daemon import memory
first = "--pyarrow-first" in sys.argv
if first:
    import pyarrow
chosen = memory.use_system_allocator()
import pyarrow as pa
cpp = pa.default_memory_pool().backend_name  # Arrow's C++ default, before any switch
done = memory.tune_process_memory()
print(json.dumps({"chosen": chosen, "cpp": cpp, "reported": done["arrow_cpp_pool"],
                  "pool": pa.default_memory_pool().backend_name}))
"""


def _pool_child(*args: str, pool: str | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    proc = subprocess.run(
        [sys.executable, "-c", _POOL_CHILD, *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
        env=env,
    )
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_system_allocator_chosen_before_pyarrow_is_imported() -> None:
    """Called before pyarrow's import, the choice makes the system allocator Arrow's C++
    default pool too (the one the parquet reader and writer use internally), and tuning
    reports it."""
    doc = _pool_child()
    assert doc == {"chosen": True, "cpp": "system", "reported": "system", "pool": "system"}


def test_system_allocator_too_late_after_pyarrow_is_imported() -> None:
    """Once pyarrow is imported the C++ default pool is fixed: the choice says it came too
    late, tuning reports the bundled pool that stays, and pyarrow's own default is still
    switched to the system allocator."""
    doc = _pool_child("--pyarrow-first")
    assert doc["chosen"] is False
    assert doc["cpp"] == doc["reported"] != "system"
    assert doc["pool"] == "system"


def test_system_allocator_keeps_a_pool_the_user_chose() -> None:
    """A pool named in ARROW_DEFAULT_MEMORY_POOL is left as it is."""
    doc = _pool_child(pool="mimalloc")
    assert doc["chosen"] is False
    assert doc["cpp"] == doc["reported"] == "mimalloc"


def test_trim_never_raises() -> None:
    """Trimming answers a bool wherever it runs (a no-op without glibc)."""
    assert memory.trim() in (True, False)


@pytest.mark.integration
def test_kymwatch_run_logs_its_memory_settings(tmp_path: Path) -> None:
    """`kymwatch run` tunes the process before indexing: `daemon_started` says the
    pyarrow pool and Arrow's C++ default pool are the system allocator."""
    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    daemon = DaemonProcess(root).start()
    try:
        daemon.sync()
    finally:
        assert daemon.stop() == 0
    (started,) = daemon.events("daemon_started")
    assert started["memory"]["arrow_pool"] == "system"
    assert started["memory"]["arrow_cpp_pool"] == "system"
    assert started["memory"]["gc"] == "freeze when up"
    assert started["memory"]["gc_threshold"] == list(memory.GC_THRESHOLD)
    (frozen,) = daemon.events("gc_frozen")  # once, after the start-up reconcile
    assert frozen["frozen"] > 10_000 and frozen["collected"] >= 0


_FREEZE_CHILD = """
import gc, json
from kymwatch.daemon import memory
before = memory.daemon_up()
counts = [gc.get_freeze_count()]
memory.tune_gc()
kept = [[]]
kept[0].append(kept)  # a cycle still in use at the first freeze, dropped after it
junk = [[]]
junk[0].append(junk)  # a garbage cycle at the first freeze
del junk
first = memory.daemon_up()
counts.append(gc.get_freeze_count())
gc.collect()  # frozen objects are not scanned: the dropped cycle stays
del kept
gc.collect()
second = memory.daemon_up()  # a later daemon's start-up unfreezes and finds it
counts.append(gc.get_freeze_count())
print(json.dumps({"before": before, "first": first, "second": second, "counts": counts,
                  "setting": memory.settings()["gc"], "threshold": gc.get_threshold()}))
"""


def test_daemon_up_freezes_only_when_the_process_asked() -> None:
    """Without `tune_gc` (a Daemon inside another program) a daemon's start-up
    leaves the collector alone; with it, the thresholds are set, garbage is collected
    and the rest frozen, and a later start-up (a folder of stores) first unfreezes, so a
    cycle dropped meanwhile is freed."""
    proc = subprocess.run(
        [sys.executable, "-c", _FREEZE_CHILD],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert doc["before"] is None and doc["counts"][0] == 0
    assert doc["setting"] == "freeze when up"
    assert tuple(doc["threshold"]) == memory.GC_THRESHOLD
    assert doc["first"]["collected"] >= 2 and doc["first"]["frozen"] == doc["counts"][1] > 0
    assert doc["second"]["collected"] >= 2  # the cycle that was frozen while in use
    assert doc["second"]["frozen"] == doc["counts"][2] > 0


_IN_PROCESS_CHILD = """
import gc, json, shutil, sys, threading, time
from pathlib import Path
from kymwatch.daemon import Daemon, DaemonConfig, memory
from kymwatch.daemon.status import DaemonState
if "--asked" in sys.argv:
    memory.tune_gc()
store = Path(sys.argv[1])
daemon = Daemon(DaemonConfig(store=store, quiet_s=0.05))
thread = threading.Thread(target=daemon.run)
thread.start()
deadline = time.monotonic() + 120
while daemon.reporter.state is not DaemonState.WATCHING and time.monotonic() < deadline:
    time.sleep(0.02)
frozen = gc.get_freeze_count()
daemon.stop()
thread.join(120)
print(json.dumps({"watching": daemon.reporter.state is not DaemonState.STARTING,
                  "frozen": frozen, "threshold": gc.get_threshold()}))
"""


@pytest.mark.integration
@pytest.mark.parametrize("asked", [False, True])
def test_a_daemon_freezes_its_start_up_only_in_kymwatch_run(tmp_path: Path, asked: bool) -> None:
    """A `Daemon` run inside another program (tests, a notebook) neither freezes the
    process's objects once it is up nor changes the collector's thresholds; the same
    daemon in a process that asked (as `kymwatch run` does) has frozen them by the time
    it is watching."""
    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    args = [sys.executable, "-c", _IN_PROCESS_CHILD, str(root), *(["--asked"] if asked else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S, check=True)
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["watching"]
    assert (doc["frozen"] > 10_000) is asked
    assert (doc["frozen"] == 0) is not asked
    assert (tuple(doc["threshold"]) == memory.GC_THRESHOLD) is asked


def test_stale_counter_trims_after_a_full_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stale counter hands freed heap memory back after judging every record (a
    full pass reads every record's markers and each table's stamps), not after the
    few records of a batch."""
    from kymwatch.daemon.stalecount import StaleCounter

    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    trims: list[bool] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(True) or True)
    counter = StaleCounter(root, lambda counts: None)
    counter.mark_all()
    counts = counter.run_pass()
    assert counts and trims == [True]
    some = next(iter(counter.stale_records().values()))
    counter.mark(list(some)[:1] or ["e1"])
    counter.run_pass()
    assert trims == [True]


def test_stale_counter_reads_table_stamps_dictionary_encoded(tmp_path: Path) -> None:
    """The stamp columns the stale counter reads per slice come dictionary-encoded (one
    string per distinct id, hash and version), other types as they are, and a slice's
    stamps equal those of a plain read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kymwatch.index import staleness

    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    path = root / "tables" / "kym_velocity_events.parquet"
    plain = pq.read_table(path, columns=["image_id", "params_hash", "analysis_version"])
    read = staleness._read_stamp_columns(path)
    assert all(pa.types.is_dictionary(f.type) for f in read.schema)
    assert read.cast(plain.schema).equals(plain)
    ids = sorted(set(plain.column("image_id").to_pylist()))[:2]
    got, has, error = staleness._table_stamps(root, "kym_velocity_events", ids)
    assert has and error is None and sorted(got) == ids
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"image_id": ["e1"], "params_hash": pa.nulls(1), "x": [1]}), odd)
    assert staleness._read_stamp_columns(odd).schema.field("params_hash").type == pa.null()


@pytest.mark.integration
def test_each_daemon_of_a_folder_of_stores_freezes_once_it_is_up(tmp_path: Path) -> None:
    """`kymwatch run ROOT` (several daemons in one process) freezes once per store daemon,
    each after its own start-up, logged in that store's log; the tables equal a rebuild."""
    from harness import assert_tables_match_rebuild
    from test_root_daemon import RootProcess, make_store

    root = tmp_path / "lab"
    stores = [make_store(root / "exp1.zarr"), make_store(root / "exp2.zarr", gen2=True)]
    with RootProcess(root).start(wait_ready=False) as fleet:
        fleet.wait_watching(stores)
    for store in stores:
        lines = (store / "index" / "kymwatch.log").read_text().splitlines()
        frozen = [doc for doc in map(json.loads, lines) if doc.get("event") == "gc_frozen"]
        assert len(frozen) == 1 and frozen[0]["frozen"] > 10_000
        assert_tables_match_rebuild(store, tmp_path / "scratch")


_REBUILD_GC_CHILD = """
import gc, json, os, sys
from kymwatch.cli import main
before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
rc = main(["rebuild", "--no-progress", sys.argv[1]])
from kymwatch.daemon import memory
print(json.dumps({"rc": rc, "before": before, "threshold": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "settings": memory.settings()}), flush=True)
os._exit(0)  # pyarrow's teardown may abort (apache/arrow#34314)
"""


@pytest.mark.integration
def test_kymwatch_rebuild_freezes_its_imports_and_raises_the_thresholds(tmp_path: Path) -> None:
    """`kymwatch rebuild` sets the collector up for a rebuild: the thresholds
    `REBUILD_GC_THRESHOLD` and what its imports and indexers left frozen before it
    reads the records; it still writes every table, and no daemon_up would freeze."""
    root = tmp_path / "dataset.zarr"
    shutil.copytree(DATA / "ve_mixed" / "dataset.zarr", root)
    shutil.rmtree(root / "tables")
    proc = subprocess.run(
        [sys.executable, "-c", _REBUILD_GC_CHILD, str(root)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["rc"] == 0
    assert doc["before"]["frozen"] == 0
    assert tuple(doc["before"]["threshold"]) != memory.REBUILD_GC_THRESHOLD
    assert tuple(doc["threshold"]) == memory.REBUILD_GC_THRESHOLD
    assert doc["frozen"] > 10_000  # the imports (pyarrow, kymwatch) and the indexers
    assert doc["settings"]["gc_rebuild"] == "frozen before the rebuild"
    assert "gc" not in doc["settings"]  # a daemon_up in this process would not freeze
    assert (root / "tables" / "kym_velocity_events.parquet").exists()


def test_tune_gc_for_rebuild_freezes_what_is_alive_and_collects_garbage_first() -> None:
    """`tune_gc_for_rebuild` collects a garbage cycle before freezing (it is not kept in
    the permanent generation) and freezes the objects alive."""
    code = (
        "import gc, json\n"
        "from kymwatch.daemon import memory\n"
        "gc.disable()\n"
        "a = []; a.append(a); del a\n"
        "done = memory.tune_gc_for_rebuild()\n"
        "print(json.dumps({'done': done, 'frozen': gc.get_freeze_count(),"
        " 'threshold': gc.get_threshold()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    doc = json.loads(proc.stdout)
    assert doc["done"]["collected"] >= 1
    assert doc["done"]["frozen"] == doc["frozen"] > 0
    assert tuple(doc["threshold"]) == memory.REBUILD_GC_THRESHOLD
