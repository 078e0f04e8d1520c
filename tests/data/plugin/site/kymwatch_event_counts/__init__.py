"""A kymwatch plug-in indexer (the worked example of docs/indexers.md).

Table ``event_counts``: one row per record with velocity events, counting them.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from kymwatch.store import ArtifactFormat, ZarrImageRecord


class EventCountsIndexer:
    """``event_counts`` table ← ``analysis/velocity_events.parquet``: events per record."""

    name = "event_counts"
    table_name = "event_counts"
    schema_version = 1
    artifact_names = frozenset({"velocity_events"})
    columns: ClassVar[dict[str, str]] = {
        "image_id": "string",
        "n_events": "Int64",
        "first_t0_s": "float64",
    }

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        # ArtifactNotFoundError (no file) and ArtifactUnreadableError propagate:
        # KymDataset turns them into the record's outcome.
        events = rec.load_df("velocity_events", [ArtifactFormat.PARQUET])
        first = events["t0_s"].min() if "t0_s" in events and len(events) else None
        return pd.DataFrame(
            {"image_id": [rec.image_id], "n_events": [len(events)], "first_t0_s": [first]}
        )
