"""The pandas boundary of the index layer: tables are Arrow inside, DataFrames outside.

kymflow's API returns DataFrames (``KymDataset.rebuild``, ``update_images``,
``get_table``) and plug-in indexers may return them; everything between works on
Arrow (:mod:`kymwatch.index.arrow_schema`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from kymwatch.index.arrow_schema import RawRows, conform_batch

__all__ = ["conform_rows", "from_frame", "to_frame", "with_pandas_metadata"]

_PANDAS_TYPES: dict[pa.DataType, Any] = {
    pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def conform_rows(
    rows: pd.DataFrame | pa.Table | Mapping[str, Sequence[Any]],
    columns: Mapping[str, str],
    *,
    image_id: str,
    key: str,
    path: str,
    num_rows: int | None = None,
    extras_at: int | None = None,
    constants: Mapping[str, str] | None = None,
    indexer: str | None = None,
) -> pd.DataFrame:
    """Cast one artifact's rows to a table schema (for plug-in indexers; a batch of
    records is converted at once by :func:`conform_batch`).

    Args:
        rows: A DataFrame, an Arrow table, or column name → values (give ``num_rows``).
        columns: Declared column → dtype (``string``, ``Int64``, ``float64``,
            ``boolean``), in table order.
        image_id, key, path: The record and artifact (``image_id`` is set on every row,
            replacing an ``image_id`` column of the artifact).
        num_rows: Row count for a mapping source.
        extras_at: Where the artifact's other columns go among the declared ones;
            None drops them.
        constants: Declared columns given one value on every row.
        indexer: For the ``value_coerced`` log line.

    Raises:
        ArtifactInvalidError: the artifact repeats a column name.
    """
    source: pa.Table | dict[str, list[Any]]
    if isinstance(rows, pd.DataFrame):
        source, n = from_frame(rows), len(rows)
    elif isinstance(rows, pa.Table):
        source, n = rows, rows.num_rows
    else:
        source, n = {str(c): list(v) for c, v in rows.items()}, int(num_rows or 0)
    raw = RawRows(image_id, key, path, source, n, dict(constants or {}))
    raw.check()
    [span] = conform_batch([raw], columns, extras_at, indexer=indexer)
    return to_frame(span.table())


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The table as a DataFrame with the policy's dtypes (``string``, ``Int64``,
    ``float64``, ``boolean``)."""
    df: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return df


def from_frame(df: pd.DataFrame) -> pa.Table | dict[str, list[Any]]:
    """A DataFrame as an Arrow table, or as column lists when Arrow cannot type a
    column (an object column of mixed values: the policy converts it value by value)."""
    try:
        return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return {str(c): df[c].astype(object).tolist() for c in df.columns}


_METADATA: dict[pa.Schema, Mapping[bytes, bytes] | None] = {}


def with_pandas_metadata(table: pa.Table) -> pa.Table:
    """``table`` with the pandas metadata a ``DataFrame`` of the policy's dtypes would
    carry, so that ``pandas.read_parquet`` gives ``string``/``Int64``/``boolean`` back
    (as for a table kymflow wrote from pandas)."""
    schema = table.schema.remove_metadata()
    if schema not in _METADATA:
        if len(_METADATA) > 64:
            _METADATA.clear()
        frame = to_frame(schema.empty_table())
        _METADATA[schema] = pa.Table.from_pandas(frame, preserve_index=False).schema.metadata
    return table.replace_schema_metadata(_METADATA[schema])
