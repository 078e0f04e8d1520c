"""An edit routed by an artifact's name runs only the indexers that can read its file.

``radon_report`` names both generation 1's report (parquet, else JSON) and one of
``kym_radon``'s lookups (parquet only). A generation-1 ``radon_report.json`` edit of a
record with no generation-2 radon artifact and no ``kym_radon`` rows has nothing for
``kym_radon`` to read or remove: it is not run for it (no ``artifact_missing`` line per
edit), and the record's files are still settled in the state. A record that has a file
``kym_radon`` reads, or rows in its table, still reaches it. kymflow-shaped stores (UUID
ids, both generations); the oracle is a fresh rebuild.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness import assert_tables_match_rebuild
from helpers_store import (
    legacy_radon_report,
    write_json_artifact,
    write_mixed_generations,
    write_parquet_artifact,
)
from kymwatch.daemon import Daemon, DaemonConfig, DaemonState, RecordChange
from kymwatch.daemon.reconcile import diff_fingerprints
from kymwatch.store import scan_dataset

Logs = list[MutableMapping[str, Any]]
RADON = frozenset({"radon_report"})


def _daemon(tmp_path: Path) -> tuple[Path, list[str], Daemon]:
    """A store of both generations, every record indexed by a daemon (not running)."""
    store = tmp_path / "store.zarr"
    ids = write_mixed_generations(store, 6, without_artifacts=-1)
    daemon = Daemon(DaemonConfig(store=store))
    daemon._load_state()
    daemon.reporter.set_state(DaemonState.WATCHING)
    assert daemon.indexing.index([RecordChange(i) for i in ids], 0.0, source="reconcile")
    assert sorted(ix.name for ix in daemon.kd.indexers) == [
        "kym_radon",
        "kym_velocity_events",
        "radon_report",
        "velocity_events",
    ]
    return store, ids, daemon


def _outcomes(logs: Logs, image_id: str) -> set[tuple[str, str]]:
    """(event, indexer) of the record's outcome lines."""
    return {(e["event"], e["indexer"]) for e in logs if e.get("image_id") == image_id}


def _assert_settled_and_rebuilt(tmp_path: Path, store: Path, daemon: Daemon, image_id: str) -> None:
    """The state holds the record's files as they are on disk (no reconcile work left),
    and once the daemon's state is closed the tables equal a fresh rebuild."""
    disk = scan_dataset(store)
    assert not diff_fingerprints(
        {image_id: disk[image_id]}, {image_id: daemon.state.records[image_id]}
    )
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_generation_1_report_edit_does_not_run_kym_radon(
    tmp_path: Path, captured_logs: Logs
) -> None:
    """A radon_report.json edit of a generation-1 record indexes ``radon_report`` only: no
    ``artifact_missing`` for ``kym_radon``, the record's files settled, tables = rebuild."""
    store, ids, daemon = _daemon(tmp_path)
    gen1 = ids[1]
    captured_logs.clear()
    write_json_artifact(store, gen1, "radon_report", legacy_radon_report(7.25, note="edited"))
    assert daemon.indexing.index([RecordChange(gen1, RADON)], 0.0, source="events")
    assert _outcomes(captured_logs, gen1) == {("record_indexed", "radon_report")}
    [line] = [e for e in captured_logs if e["event"] == "batch_indexed"]
    assert line["tables"] == ["radon_report"] and "artifact_missing" not in line
    _assert_settled_and_rebuilt(tmp_path, store, daemon, gen1)


def test_a_record_with_a_generation_2_radon_file_still_reaches_kym_radon(
    tmp_path: Path, captured_logs: Logs
) -> None:
    """A generation-1 record that also holds ``radon/results.parquet`` (both generations)
    is read by both radon indexers when its report changes."""
    store, ids, daemon = _daemon(tmp_path)
    both = ids[3]
    results = pd.DataFrame({"roi_id": [1, 2], "velocity": [0.5, 0.75]})
    write_parquet_artifact(store, both, "radon/results", results)
    assert daemon.indexing.index(
        [RecordChange(both, frozenset({"radon/results"}))], 0.0, source="events"
    )
    captured_logs.clear()
    write_json_artifact(store, both, "radon_report", legacy_radon_report(3.5))
    assert daemon.indexing.index([RecordChange(both, RADON)], 0.0, source="events")
    assert _outcomes(captured_logs, both) == {
        ("record_indexed", "radon_report"),
        ("record_indexed", "kym_radon"),
    }
    _assert_settled_and_rebuilt(tmp_path, store, daemon, both)


def test_rows_of_a_removed_report_parquet_are_still_dropped(
    tmp_path: Path, captured_logs: Logs
) -> None:
    """A record whose ``radon_report.parquet`` (read by both generations) gives way to a
    ``radon_report.json`` still reaches ``kym_radon``: its rows there are removed."""
    store, ids, daemon = _daemon(tmp_path)
    rec = ids[5]
    report = pd.DataFrame({"roi_id": [1], "mean_velocity": [2.0], "n_valid": [4], "notes": ["p"]})
    write_parquet_artifact(store, rec, "radon_report", report)
    assert daemon.indexing.index([RecordChange(rec, RADON)], 0.0, source="events")
    assert daemon.kd.has_rows("kym_radon", rec)
    captured_logs.clear()
    (store / "images" / rec / "analysis" / "radon_report.parquet").unlink()
    assert daemon.indexing.index([RecordChange(rec, RADON)], 0.0, source="events")
    assert ("artifact_missing", "kym_radon") in _outcomes(captured_logs, rec)
    assert not daemon.kd.has_rows("kym_radon", rec)
    _assert_settled_and_rebuilt(tmp_path, store, daemon, rec)
