"""Crash and concurrency tests: SIGKILL the daemon during write bursts, kill a writer
mid-file, and run other processes (readers, rebuilds, table writers, a second daemon)
against a store the daemon is watching.

After every kill of the daemon, every table file parses, nothing but the daemon's
own ``.<name>.<hex>.tmp`` temporaries is left beside the tables (never a stray
``*.parquet``), the files under ``index/`` parse, and after a restart and a sync the
tables equal a fresh rebuild. A handful of cycles run here; ``tests/campaign`` runs
more than a hundred.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import (
    WAIT_S,
    DaemonProcess,
    assert_tables_match_rebuild,
    kymwatch,
    live_tables,
    wait_until,
)
from helpers_store import (
    analysis_file,
    delete_record,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import request_sync
from kymwatch.store import read_table_file
from test_reliability_model import parquet_bytes

pytestmark = pytest.mark.integration

TABLE_FILES = {"velocity_events.parquet", "radon_report.parquet"}


# -- a store and a writer that keeps it busy -----------------------------------------------
def seed_store(root: Path, records: int, events: int) -> list[str]:
    """A store of ``records`` records, each with ``events`` events and a radon report."""
    make_v2_store(root)
    ids = [f"seed{i:04d}" for i in range(records)]
    for i, image_id in enumerate(ids):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(events, start_s=i))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(float(i)))
    return ids


@dataclass
class Burst:
    """A thread writing random, always complete, artifacts and records into a store.

    With ``deletions`` it also deletes artifacts and records and overwrites records
    (delete and recreate the folder, as zarr does): the case of
    ``test_stale_rows_do_not_survive_a_crash_before_the_state_save``.
    """

    root: Path
    ids: list[str]
    rng: random.Random
    deletions: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    ops: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="burst", daemon=True)

    def start(self) -> Burst:
        """Begin writing."""
        self._thread.start()
        return self

    def finish(self) -> None:
        """Stop after the write in hand (each write completes) and re-raise its error."""
        self.stop.set()
        self._thread.join(WAIT_S)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._one()
                self.ops += 1
                time.sleep(self.rng.uniform(0, 0.01))
        except BaseException as e:  # reported by finish()
            self.error = e

    def _one(self) -> None:
        rng, root = self.rng, self.root
        op = rng.random()
        if op < 0.08 or len(self.ids) < 3:
            image_id = f"burst{rng.getrandbits(40):010x}"
            write_v2_record(root, image_id)
            write_parquet_artifact(
                root, image_id, "velocity_events", events_frame(rng.randint(0, 9))
            )
            self.ids.append(image_id)
            return
        image_id = rng.choice(self.ids)
        if op < 0.12 and self.deletions:
            delete_record(root, image_id)
            self.ids.remove(image_id)
        elif op < 0.16 and self.deletions:  # zarr overwrite: remove and recreate the record
            delete_record(root, image_id)
            write_v2_record(root, image_id)
            write_parquet_artifact(root, image_id, "velocity_events", events_frame(2))
        elif op < 0.60:
            df = events_frame(rng.randint(0, 30), start_s=rng.random())
            atomic = rng.random() < 0.7
            write_parquet_artifact(root, image_id, "velocity_events", df, atomic=atomic)
        elif op < 0.95:
            write_json_artifact(root, image_id, "radon_report", legacy_radon_report(rng.random()))
        elif self.deletions:
            analysis_file(root, image_id, "velocity_events", "parquet").unlink(missing_ok=True)


# -- what must hold after a kill -----------------------------------------------------------
def check_after_kill(root: Path) -> int:
    """Assert every file kymwatch owns parses; return how many table temporaries were left."""
    tables = root / "tables"
    temporaries = 0
    for entry in tables.iterdir() if tables.is_dir() else []:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            temporaries += 1
            continue
        assert entry.name in TABLE_FILES, f"stray file in tables/: {entry.name}"
        read_table_file(entry)
    index = root / "index"
    for name in ("status.json", "state.json"):
        if (index / name).exists():
            json.loads((index / name).read_bytes())
    if (index / "state-fingerprints.parquet").exists():
        read_table_file(index / "state-fingerprints.parquet")
    return temporaries


def leftover_temporaries(root: Path) -> list[str]:
    """Names of the atomic-write temporaries under ``tables/``."""
    return sorted(p.name for p in (root / "tables").glob(".*.tmp"))


@dataclass
class CrashStats:
    """What a series of kill cycles met."""

    cycles: int = 0
    writes: int = 0
    temporaries_left: int = 0


def crash_cycles(
    root: Path, scratch: Path, cycles: int, seed: int, stats: CrashStats, *, deletions: bool = False
) -> None:
    """Run ``cycles`` kill -9 cycles against the daemon on ``root`` while a burst writes."""
    rng = random.Random(seed)
    ids = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    daemon = DaemonProcess(root, quiet_ms=20).start()
    try:
        for _ in range(cycles):
            burst = Burst(root, ids, random.Random(rng.random()), deletions).start()
            time.sleep(rng.uniform(0.05, 0.8))
            daemon.kill()
            burst.finish()
            stats.writes += burst.ops
            stats.temporaries_left += check_after_kill(root)
            daemon = DaemonProcess(root, quiet_ms=20).start()
            assert leftover_temporaries(root) == [], "stale temporaries survived a restart"
            request_sync(root, timeout=WAIT_S)
            assert_tables_match_rebuild(root, scratch)
            stats.cycles += 1
    finally:
        daemon.stop()


def test_kill_9_during_bursts_never_tears_a_table(tmp_path: Path) -> None:
    """SIGKILL at random moments of a write burst leaves parseable tables that converge."""
    root = tmp_path / "store.zarr"
    seed_store(root, 100, 10)
    stats = CrashStats()
    crash_cycles(root, tmp_path / "scratch", 5, seed=20261125, stats=stats)
    assert stats.cycles == 5
    assert stats.writes > 0


def test_kill_9_during_bursts_that_delete_converges(tmp_path: Path) -> None:
    """Kill cycles whose bursts delete and overwrite records and artifacts still converge."""
    root = tmp_path / "store.zarr"
    seed_store(root, 100, 10)
    stats = CrashStats()
    crash_cycles(root, tmp_path / "scratch", 3, seed=20261126, stats=stats, deletions=True)
    assert stats.cycles == 3


def test_stale_table_temporary_from_a_crash_is_removed_at_start(tmp_path: Path) -> None:
    """A temporary left in tables/ by a killed daemon is deleted by the next one."""
    root = tmp_path / "store.zarr"
    seed_store(root, 2, 3)
    with DaemonProcess(root) as d:
        d.sync()
    stale = root / "tables" / ".velocity_events.parquet.0123456789ab.tmp"
    stale.write_bytes(b"PAR1 half a table")
    with DaemonProcess(root) as d:
        assert not stale.exists()
        assert any(e.get("path") == str(stale) for e in d.events("stale_temporary_removed"))
        d.sync()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- a writer killed half-way through a file -----------------------------------------------
_SLOW_WRITER = """
import os, pathlib, sys, time
path, data, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes(), sys.argv[3]
half = int(sys.argv[4])
with open(path, "wb") as f:          # in place, like df.to_parquet(path)
    f.write(data[:half])
    f.flush()
    os.fsync(f.fileno())
    pathlib.Path(marker).touch()
    if half < len(data):
        time.sleep(3600)             # killed here, half-way through the file
    f.write(data[half:])
"""


def run_writer(path: Path, data: bytes, tmp: Path, *, half: int) -> subprocess.Popen[bytes]:
    """Start a process writing ``data`` into ``path`` in place; it pauses after ``half`` bytes."""
    blob, marker = tmp / "writer.bin", tmp / "writer.marker"
    blob.write_bytes(data)
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(path), str(blob), str(marker), str(half)]
    )
    wait_until(marker.exists, what="the writer to write its first half")
    return proc


def test_writer_killed_mid_file_is_reported_and_recovered(tmp_path: Path) -> None:
    """A file left half-written by a killed writer is reported; old rows stay until it is whole."""
    root = tmp_path / "store.zarr"
    seed_store(root, 2, 3)
    path = analysis_file(root, "seed0001", "velocity_events", "parquet")
    new = parquet_bytes(events_frame(7, start_s=100.0))
    with DaemonProcess(root) as d:
        d.sync()
        before = live_tables(root)["velocity_events"]
        writer = run_writer(path, new, tmp_path, half=len(new) // 2)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(WAIT_S)

        def reported() -> bool:
            names = ("artifact_retry", "artifact_unreadable")
            return any(e["event"] in names and e.get("path") == str(path) for e in d.events())

        wait_until(reported, what="an artifact_retry/artifact_unreadable event for the file")
        d.sync()
        assert d.proc is not None and d.proc.poll() is None
        unreadable = [e for e in d.events("artifact_unreadable") if e.get("path") == str(path)]
        assert len(unreadable) == 1 and unreadable[0]["error"], unreadable
        assert unreadable[0]["kept_rows"] == 3
        assert live_tables(root)["velocity_events"].equals(before)

        finisher = run_writer(path, new, tmp_path, half=len(new))
        assert finisher.wait(WAIT_S) == 0
        d.sync()
        rows = live_tables(root)["velocity_events"]
        assert (rows["image_id"] == "seed0001").sum() == 7
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- rows indexed after the last state save, then their source deleted (fixed: 716d3f7 for
# records, adfdf1b for artifacts; found by the kill cycles) ---------------------------------
def saved_state_files(root: Path, image_id: str) -> set[str] | None:
    """The artifact files of one record in the daemon's saved state (None: not in it)."""
    path = root / "index" / "state-fingerprints.parquet"
    if not path.exists():
        return None
    state = read_table_file(path)
    rows = state[state["image_id"] == image_id]
    return None if rows.empty else set(rows["file"]) - {""}


@pytest.mark.parametrize("deleted", ["record", "artifact"])
def test_stale_rows_do_not_survive_a_crash_before_the_state_save(
    tmp_path: Path, deleted: str
) -> None:
    """Rows indexed after the last state save go once their source is deleted (after a crash)."""
    root = tmp_path / "store.zarr"
    seed_store(root, 1, 2)
    if deleted == "artifact":
        write_v2_record(root, "late")  # known to the saved state, without artifacts
    d = DaemonProcess(root, quiet_ms=20).start()
    d.sync()  # the state is saved here; later saves are throttled (every 2 s at most)
    write_v2_record(root, "late")
    write_parquet_artifact(root, "late", "velocity_events", events_frame(4))
    wait_until(
        lambda: "late" in set(live_tables(root)["velocity_events"]["image_id"]),
        what="the new record's rows in the table",
    )
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGSTOP)  # nothing more happens in the daemon from here
    if deleted == "record":
        delete_record(root, "late")
    else:
        analysis_file(root, "late", "velocity_events", "parquet").unlink()
    d.kill()
    saved = saved_state_files(root, "late")
    if saved != (None if deleted == "record" else set()):
        pytest.skip("the daemon saved its state before the kill: the scenario was not reached")
    with DaemonProcess(root, quiet_ms=20) as again:
        again.sync()
    assert_tables_match_rebuild(root, tmp_path / "scratch")


# -- concurrency: other processes working on the store while the daemon runs --------------
_READER = """
import io, json, sys, time, pathlib
import pandas as pd
import pyarrow.parquet as pq
from kymwatch.store import read_table_file
tables, stop, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ways = {
    "read_table_file": read_table_file,
    "ParquetFile": lambda p: pq.ParquetFile(p).read().to_pandas(),
    "bytes": lambda p: pd.read_parquet(io.BytesIO(p.read_bytes())),
    "pd.read_parquet(path)": pd.read_parquet,
}
stats = {w: {"reads": 0, "errors": [], "partial": []} for w in ways}
while not stop.exists():
    for way, read in ways.items():
        for name in ("velocity_events", "radon_report"):
            path = tables / f"{name}.parquet"
            try:
                df = read(path)
            except FileNotFoundError:
                continue
            except Exception as e:
                stats[way]["errors"].append(f"{name}: {type(e).__name__}: {e}"[:300])
                continue
            stats[way]["reads"] += 1
            if name == "velocity_events" and len(df):
                # every record's events are written whole: event_id runs e0..e<n-1>
                for image_id, ids in df.groupby("image_id")["event_id"]:
                    if sorted(ids, key=lambda i: int(i[1:])) != [f"e{i}" for i in range(len(ids))]:
                        stats[way]["partial"].append(str(image_id))
out.write_text(json.dumps(stats))
"""


def start_reader(root: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A process reading both tables in a tight loop, four ways, until told to stop."""
    stop, out = tmp / "reader.stop", tmp / "reader.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", _READER, str(root / "tables"), str(stop), str(out)]
    )
    return proc, stop, out


def stop_reader(proc: subprocess.Popen[bytes], stop: Path, out: Path) -> dict[str, dict]:
    """Stop the reader and return its counts per way of reading."""
    stop.touch()
    assert proc.wait(WAIT_S) == 0
    stats: dict[str, dict] = json.loads(out.read_text())
    return stats


def test_reader_in_a_tight_loop_never_sees_a_torn_table(tmp_path: Path) -> None:
    """A reader loading tables in a loop during bursts and kills never sees a torn table."""
    root = tmp_path / "store.zarr"
    ids = seed_store(root, 100, 10)
    reader = start_reader(root, tmp_path)
    crash_cycles(root, tmp_path / "scratch", 2, seed=7, stats=CrashStats())
    with DaemonProcess(root, quiet_ms=20) as d:
        burst = Burst(root, [i for i in ids if (root / "images" / i).is_dir()], random.Random(3))
        burst.start()
        time.sleep(1.5)
        burst.finish()
        d.sync()
    result = stop_reader(*reader)
    for way in ("read_table_file", "ParquetFile", "bytes"):
        assert result[way]["reads"] > 0
        assert result[way]["errors"] == [], result[way]["errors"][:3]
        assert result[way]["partial"] == [], result[way]["partial"][:3]
    assert_tables_match_rebuild(root, tmp_path / "scratch")


def test_second_daemon_on_the_same_store_is_refused(tmp_path: Path) -> None:
    """A second ``kymwatch run`` on a watched store exits non-zero with one clear line."""
    root = tmp_path / "store.zarr"
    seed_store(root, 2, 3)
    with DaemonProcess(root) as first:
        second = kymwatch("run", root, timeout=WAIT_S)
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "already" in lines[0], second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        assert first.proc is not None and first.proc.poll() is None
        write_parquet_artifact(root, "seed0000", "velocity_events", events_frame(6))
        first.sync()
        status = json.loads((root / "index" / "status.json").read_bytes())
        assert status["pid"] == first.proc.pid
    assert_tables_match_rebuild(root, tmp_path / "scratch")


_REPLACE_ROWS = """
import sys
import pandas as pd
from kymwatch.store import ZarrDataset
root, n = sys.argv[1], int(sys.argv[2])
ds = ZarrDataset(root, "a")
for i in range(n):
    ds.replace_rows_for_image_id("annotations", f"seed{i % 50:04d}", pd.DataFrame({"v": [i]}))
"""


def test_rebuild_and_replace_rows_from_other_processes_while_the_daemon_runs(
    tmp_path: Path,
) -> None:
    """``kymwatch rebuild`` and ``replace_rows_for_image_id`` racing the daemon lose nothing."""
    root = tmp_path / "store.zarr"
    ids = seed_store(root, 100, 10)
    with DaemonProcess(root, quiet_ms=20) as d:
        d.sync()
        burst = Burst(root, list(ids), random.Random(11)).start()
        writer = subprocess.Popen([sys.executable, "-c", _REPLACE_ROWS, str(root), "200"])
        rebuilds = [kymwatch("rebuild", root, timeout=WAIT_S) for _ in range(3)]
        assert writer.wait(WAIT_S) == 0
        burst.finish()
        d.sync()
        assert d.proc is not None and d.proc.poll() is None
    for r in rebuilds:
        assert r.returncode == 0, r.stderr
    annotations = read_table_file(root / "tables" / "annotations.parquet")
    assert sorted(annotations["image_id"]) == sorted(f"seed{i:04d}" for i in range(50))
    assert sorted(annotations["v"]) == list(range(150, 200))  # each record's last write
    assert_tables_match_rebuild(root, tmp_path / "scratch")
