"""Kymflow-shaped tables as kymwatch writes them (typed, sorted, with pandas metadata)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import kymwatch.index.publish as publish_module
from helpers_store import events_frame, gen2_events_frame
from kymwatch.index.frames import with_pandas_metadata
from kymwatch.store import SortedTable


def kymflow_events(records: int, *, seed: int = 0) -> pa.Table:
    """A kymflow-shaped events table: UUID image ids (sorted), both generations'
    columns (generation 1's string ids ``e0``.., generation 2's UUID event ids), nulls."""
    frames = []
    ids = sorted(str(uuid.UUID(int=(seed << 64) + k * 7919 + 1)) for k in range(records))
    for k, image_id in enumerate(ids):
        n = 1 + k % 3  # 1-3 rows per record
        df = events_frame(n, start_s=float(k)) if k % 2 else gen2_events_frame(n, start_s=float(k))
        df.insert(0, "image_id", image_id)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if len(df):
        df.loc[df.index[::5], "score"] = None
        df.loc[df.index[::7], "kind"] = None
    df = df.astype({"image_id": "string", "event_id": "string", "kind": "string"})
    df["roi_id"] = df["roi_id"].astype("Int64")
    table = pa.Table.from_pandas(df, preserve_index=False)
    return with_pandas_metadata(table)


def spy_table_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables whose single-file write a publish starts, in the order started (the
    list grows as they start)."""
    started: list[str] = []
    real = publish_module.start_grouped_write

    def spying(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        started.append(path.stem)
        return real(path, st, **kwargs)

    monkeypatch.setattr(publish_module, "start_grouped_write", spying)
    return started
