"""The long reliability campaign (``./dev campaign``): the in-suite tests, scaled up.

- kill -9 cycles during write bursts (at least 100), with a reader process loading
  the tables four ways the whole time;
- kill cycles whose bursts also delete and overwrite artifacts and records;
- writers killed at random points of a file;
- the model-based state machine with many random examples.

Each test fills a result row that ``conftest.py`` writes into docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis.stateful import run_state_machine_as_test

from harness import (
    WAIT_S,
    DaemonProcess,
    assert_tables_match_rebuild,
    live_tables,
)
from helpers_store import analysis_file, events_frame
from kymwatch.daemon import request_sync
from test_reliability_crash import (
    CrashStats,
    crash_cycles,
    run_writer,
    seed_store,
    start_reader,
    stop_reader,
)
from test_reliability_model import StoreMachine, machine_settings, parquet_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

KILL_CHUNK = 20


def env_int(name: str, default: int) -> int:
    """An integer scale knob from the environment (see conftest.py)."""
    return int(os.environ.get(name, default))


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    """``total`` split into (chunk number, size) parts of at most ``size``."""
    return [(i + 1, min(size, total - i * size)) for i in range(max(1, -(-total // size)))]


@pytest.mark.parametrize(
    ("chunk", "cycles"), chunks(env_int("KYMWATCH_CAMPAIGN_KILLS", 120), KILL_CHUNK)
)
def test_campaign_kill_9_during_bursts(
    tmp_path: Path, chunk: int, cycles: int, campaign_record: dict[str, Any]
) -> None:
    """Kill cycles during bursts: tables always parse, converge, and readers never tear."""
    campaign_record["fault"] = "kill -9 of the daemon during write bursts (+ tight-loop reader)"
    root = tmp_path / "store.zarr"
    seed_store(root, 200, 15)
    reader = start_reader(root, tmp_path)
    stats = CrashStats()
    try:
        crash_cycles(root, tmp_path / "scratch", cycles, seed=1000 + chunk, stats=stats)
    finally:
        result = stop_reader(*reader)
        campaign_record["cycles"] = stats.cycles
    safe = ("read_table_file", "ParquetFile", "bytes")
    notes = [
        f"{stats.writes} writes",
        f"{stats.temporaries_left} kills left a table temporary (removed at restart)",
        "reads/errors/partial: "
        + ", ".join(
            f"{w} {r['reads']}/{len(r['errors'])}/{len(r['partial'])}" for w, r in result.items()
        ),
    ]
    campaign_record["notes"] = "; ".join(notes)
    for way in safe:
        assert result[way]["errors"] == [] and result[way]["partial"] == [], result[way]
    campaign_record["result"] = "passed"


@pytest.mark.parametrize(
    ("chunk", "cycles"), chunks(env_int("KYMWATCH_CAMPAIGN_DELETION_KILLS", 120), KILL_CHUNK)
)
def test_campaign_kill_9_during_bursts_with_deletions(
    tmp_path: Path, chunk: int, cycles: int, campaign_record: dict[str, Any]
) -> None:
    """Kill cycles whose bursts also delete and overwrite records and artifacts converge."""
    campaign_record["fault"] = "kill -9 during bursts that also delete and overwrite"
    root = tmp_path / "store.zarr"
    seed_store(root, 200, 15)
    stats = CrashStats()
    try:
        crash_cycles(
            root, tmp_path / "scratch", cycles, seed=2000 + chunk, stats=stats, deletions=True
        )
    finally:
        campaign_record["cycles"] = stats.cycles
        campaign_record["notes"] = (
            f"{stats.writes} writes; {stats.temporaries_left} kills left a table temporary"
        )
    campaign_record["result"] = "passed"


def test_campaign_writer_killed_mid_file(tmp_path: Path, campaign_record: dict[str, Any]) -> None:
    """Writers killed at random offsets of a parquet: reported each time, recovered each time."""
    campaign_record["fault"] = "artifact writer SIGKILLed at a random offset of the file"
    cycles = env_int("KYMWATCH_CAMPAIGN_WRITER_KILLS", 20)
    root = tmp_path / "store.zarr"
    seed_store(root, 5, 3)
    rng = random.Random(99)
    path = analysis_file(root, "seed0002", "velocity_events", "parquet")
    done = 0
    with DaemonProcess(root) as d:
        d.sync()
        try:
            for n in range(cycles):
                data = parquet_bytes(events_frame(4 + n, start_s=float(n)))
                cut = rng.randint(1, len(data) - 1)
                writer = run_writer(path, data, tmp_path, half=cut)
                os.kill(writer.pid, signal.SIGKILL)
                writer.wait(WAIT_S)
                request_sync(root, timeout=WAIT_S)
                reported = [
                    e
                    for e in d.events()
                    if e["event"] in ("artifact_unreadable", "artifact_invalid")
                    and e.get("path") == str(path)
                ]
                assert len(reported) >= n + 1, f"cycle {n}: cut at {cut} not reported"
                finisher = run_writer(path, data, tmp_path, half=len(data))
                assert finisher.wait(WAIT_S) == 0
                request_sync(root, timeout=WAIT_S)
                rows = live_tables(root)["velocity_events"]
                assert (rows["image_id"] == "seed0002").sum() == 4 + n
                done += 1
        finally:
            campaign_record["cycles"] = done
    assert_tables_match_rebuild(root, tmp_path / "scratch")
    campaign_record["notes"] = "every cut reported (artifact_unreadable) and old rows kept"
    campaign_record["result"] = "passed"


MODEL_CHUNK = 10


@pytest.mark.parametrize(
    ("chunk", "examples"), chunks(env_int("KYMWATCH_CAMPAIGN_EXAMPLES", 40), MODEL_CHUNK)
)
def test_campaign_model_based(chunk: int, examples: int, campaign_record: dict[str, Any]) -> None:
    """Random histories (random seeds, long runs) keep every table equal to a rebuild."""
    steps = env_int("KYMWATCH_CAMPAIGN_STEPS", 40)
    campaign_record["fault"] = f"model-based random histories ({steps} steps each)"
    campaign_record["cycles"] = f"{examples} examples"
    run_state_machine_as_test(
        StoreMachine, settings=machine_settings(examples, steps, derandomize=False)
    )
    campaign_record["notes"] = "random seed; Hypothesis prints the shrunk history on failure"
    campaign_record["result"] = "passed"
