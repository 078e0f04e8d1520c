"""Bad-input catalogue: each bad file or store state the daemon may meet, and recovery.

For each case the daemon (a real ``kymwatch run`` subprocess unless noted) must stay
up, log one explicit event naming the path and the reason, keep the rows the tables
already had, and index the record again once the cause goes away. The sync barrier is
``request_sync`` in-process (the barrier behind ``kymwatch sync``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers_store import (
    events_frame,
    legacy_radon_report,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.index import KymDataset, OutcomeStatus

# -- zero-row artifacts (found by the model-based test) ------------------------------------


@pytest.mark.parametrize(
    ("write", "table"),
    [
        (
            lambda root: write_parquet_artifact(root, "r1", "velocity_events", events_frame(0)),
            "velocity_events",
        ),
        (lambda root: write_json_artifact(root, "r1", "radon_report", []), "radon_report"),
    ],
    ids=["events-parquet-no-rows", "radon-json-empty-list"],
)
def test_zero_row_artifact_is_indexed_and_clears_old_rows(
    plain_v2_store: Path, write: Callable[[Path], Any], table: str
) -> None:
    """A valid artifact with no rows is indexed (0 rows), replacing the record's old rows."""
    root = plain_v2_store
    write_v2_record(root, "r1")
    write_parquet_artifact(root, "r1", "velocity_events", events_frame(3))
    write_json_artifact(root, "r1", "radon_report", legacy_radon_report(1.0))
    kd = KymDataset(root)
    kd.update_images(table, ["r1"])
    assert len(kd.get_table(table)) > 0
    write(root)
    outcome = kd.update_image(table, "r1")
    assert outcome.status is OutcomeStatus.INDEXED, outcome
    assert len(kd.get_table(table)) == 0
