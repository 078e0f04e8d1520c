"""What ``kymwatch sync`` promises, and what status counts (issue 10, part 13).

The sync answer names every record that is not current and why (unreadable after
retries, invalid, probably still being written); ``--strict`` turns that into exit
code 4. Status counts problems, not attempts, and shows the current ones; the
lifetime totals stay apart, under ``counters``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch, wait_until
from helpers_loop import add_kym_record, kym_events
from helpers_store import analysis_file, make_v2_store, write_json_artifact, write_parquet_artifact
from kymwatch.daemon import request_sync

pytestmark = pytest.mark.integration

EXIT_NOT_CURRENT = 4
UUID_ID = "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


def status_json(store: Path) -> dict[str, Any]:
    """The status document as ``kymwatch status --json`` prints it."""
    doc: dict[str, Any] = json.loads(kymwatch("status", store, "--json").stdout)["status"]
    return doc


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two kymflow-shaped records, one with a UUID id."""
    root = make_v2_store(tmp_path / "store.zarr")
    add_kym_record(root, "20261125_cell1")
    add_kym_record(root, UUID_ID, n_events=4)
    return root


def test_sync_names_an_unreadable_artifact_and_strict_exits_4(store: Path, tmp_path: Path) -> None:
    """A torn events file: sync lists the record (probably still being written), --strict
    exits 4; once the file is whole, sync is clean again and the oracle holds."""
    with DaemonProcess(store) as daemon:
        daemon.sync()
        analysis_file(store, UUID_ID, "velocity_events", "parquet").write_bytes(b"PAR1 torn")
        answer = request_sync(store)
        assert [(p["image_id"], p["indexer"], p["problem"]) for p in answer["not_current"]] == [
            (UUID_ID, "velocity_events", "artifact_unreadable")
        ]
        assert answer["not_current"][0]["recently_modified"] is True
        plain = kymwatch("sync", store)
        assert plain.returncode == 0
        assert UUID_ID in plain.stderr and "artifact_unreadable" in plain.stderr
        assert "still being written" in plain.stderr
        strict = kymwatch("sync", store, "--strict")
        assert strict.returncode == EXIT_NOT_CURRENT, strict.stdout + strict.stderr
        doc = status_json(store)
        assert doc["problem_counts"] == {"artifact_unreadable": 1}
        assert doc["problems"][0]["image_id"] == UUID_ID
        write_parquet_artifact(store, UUID_ID, "velocity_events", kym_events(2))
        fixed = kymwatch("sync", store, "--strict")
        assert fixed.returncode == 0 and "up to date" in fixed.stdout, fixed.stderr
        assert status_json(store)["problem_counts"] == {}
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_invalid_artifact_is_not_current_until_fixed(store: Path, tmp_path: Path) -> None:
    """A radon report of the wrong shape is listed as artifact_invalid with its path."""
    with DaemonProcess(store) as daemon:
        daemon.sync()
        write_json_artifact(store, "20261125_cell1", "radon_report", 42)
        strict = kymwatch("sync", store, "--strict")
        assert strict.returncode == EXIT_NOT_CURRENT
        assert "20261125_cell1 radon_report: artifact_invalid" in strict.stderr
        assert "radon_report.json" in strict.stderr
        write_json_artifact(store, "20261125_cell1", "radon_report", {"mean_velocity": 2.0})
        assert kymwatch("sync", store, "--strict").returncode == 0
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_status_counts_one_problem_for_a_file_read_many_times(store: Path) -> None:
    """A torn file retried four times is one current problem and one lifetime failure; the
    retries are counted apart; repeated syncs do not add to it."""
    with DaemonProcess(store) as daemon:
        daemon.sync()
        analysis_file(store, UUID_ID, "velocity_events", "parquet").write_bytes(b"PAR1 torn")
        wait_until(lambda: daemon.events("artifact_unreadable"), what="retries to be used up")
        assert len(daemon.events("artifact_retry")) >= 4
        for _ in range(3):
            kymwatch("sync", store, "-q")
        doc = status_json(store)
        assert doc["problem_counts"] == {"artifact_unreadable": 1}
        assert doc["counters"]["artifact_unreadable"] == 1
        assert doc["counters"]["retries"] >= 4
        problem = doc["problems"][0]
        assert problem["path"].endswith("velocity_events.parquet")
        assert problem["retrying"] is False
        text = kymwatch("status", store).stdout
        assert "problems now: artifact_unreadable 1" in text
        assert len(daemon.events("artifact_unreadable")) == 1
