"""Table files: a dictionary only for columns whose values repeat, the same data for readers."""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kymwatch.index.frames import with_pandas_metadata
from kymwatch.store import read_table_arrow, write_table_arrow
from kymwatch.store.encoding import dictionary_columns

KIT = Path(__file__).parent / "data" / "conformance"


def _events(records: int, rows: int = 10, seed: int = 1) -> pa.Table:
    """A kymflow-shaped generation-2 events table: UUID records and event ids, measured
    floats, a few ROIs, the three per-record stamps last."""
    rng = random.Random(seed)
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(records))
    n = records * rows
    image_ids = [i for i in ids for _ in range(rows)]
    return pa.table(
        {
            "roi_id": pa.array([rng.randrange(1, 4) for _ in range(n)], pa.int64()),
            "event_id": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)],
            "t_start_s": [rng.uniform(0, 60) for _ in range(n)],
            "score": [rng.random() for _ in range(n)],
            "kind": [rng.choice(["stall", "reversal"]) for _ in range(n)],
            "image_id": image_ids,
            "analysis_version": ["kymflow.velocity_events@0.1"] * n,
            "params_hash": [hashlib.sha256(i.encode()).hexdigest() for i in image_ids],
        }
    )


def _dictionary_encoded(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    return {
        meta.row_group(0).column(k).path_in_schema
        for k in range(meta.num_columns)
        if meta.row_group(0).column(k).has_dictionary_page
    }


def test_repeating_columns_get_a_dictionary_and_measurements_do_not(tmp_path: Path) -> None:
    """Per-record stamps, ROIs and kinds are dictionary-encoded; floats and unique ids plain."""
    table = _events(400)
    path = tmp_path / "t.parquet"
    write_table_arrow(path, table)
    repeated = {"roi_id", "kind", "image_id", "analysis_version", "params_hash"}
    assert _dictionary_encoded(path) == repeated
    assert set(dictionary_columns(table)) == repeated


def test_a_table_reads_back_as_written_with_pyarrow_defaults(tmp_path: Path) -> None:
    """Only the encoding differs from pyarrow's defaults: same schema, metadata and frame."""
    table = with_pandas_metadata(_events(300))
    ours, default = tmp_path / "ours.parquet", tmp_path / "default.parquet"
    write_table_arrow(ours, table)
    pq.write_table(table, default)
    assert pq.read_schema(ours).equals(pq.read_schema(default), check_metadata=True)
    assert read_table_arrow(ours).equals(read_table_arrow(default))
    pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(default))
    assert pd.read_parquet(ours)["image_id"].dtype == pd.StringDtype()  # not categorical


@pytest.mark.parametrize(
    "path", sorted(KIT.glob("gen*/*/expected/*.parquet")), ids=lambda p: p.parent.parent.name
)
def test_kymflow_tables_rewritten_read_the_same_in_pandas(tmp_path: Path, path: Path) -> None:
    """A table kymflow wrote, rewritten by kymwatch's writer, gives pandas the same frame."""
    out = tmp_path / path.name
    write_table_arrow(out, read_table_arrow(path))
    before, after = pd.read_parquet(path), pd.read_parquet(out)
    assert after.dtypes.to_dict() == before.dtypes.to_dict()
    pd.testing.assert_frame_equal(after, before)


def test_columns_without_values_and_tables_without_rows_are_written(tmp_path: Path) -> None:
    """All-null and empty columns keep the default dictionary and round-trip."""
    nulls = pa.table({"image_id": ["a", "b"], "notes": pa.nulls(2, pa.string()), "x": [1.0, None]})
    assert dictionary_columns(nulls) == ["notes"]  # two distinct ids of two are not repeats
    empty = nulls.schema.empty_table()
    for name, table in (("nulls", nulls), ("empty", empty)):
        path = tmp_path / f"{name}.parquet"
        write_table_arrow(path, table)
        assert read_table_arrow(path).equals(table)
