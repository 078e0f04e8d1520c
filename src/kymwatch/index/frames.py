"""The pandas boundary of the index layer: tables are Arrow inside, DataFrames outside.

kymflow's API returns DataFrames (``KymDataset.rebuild``, ``update_images``,
``get_table``) and plug-in indexers may return them; everything between works on
Arrow (:mod:`kymwatch.index.arrow_schema`).
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeGuard

import pyarrow as pa

from kymwatch.index.arrow_schema import RawRows, conform_batch

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "conform_rows",
    "from_frame",
    "is_frame",
    "skip_pyarrow_pandas_probe",
    "to_frame",
    "with_pandas_metadata",
]

# Arrow type → (pandas_type, numpy_type) of the pandas metadata of a column of the
# policy's dtypes: pyarrow's logical type, and the pandas dtype ``read_parquet`` restores.
_PANDAS_COLUMN: dict[pa.DataType, tuple[str, str]] = {
    pa.string(): ("unicode", "string"),
    pa.large_string(): ("object", "string"),
    pa.int64(): ("int64", "Int64"),
    pa.float64(): ("float64", "float64"),
    pa.bool_(): ("bool", "boolean"),
}


@cache
def _pandas_types() -> dict[pa.DataType, Any]:
    import pandas as pd

    return {
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
    if isinstance(rows, pa.Table):
        source, n = rows, rows.num_rows
    elif is_frame(rows):
        source, n = from_frame(rows), len(rows)
    else:
        source, n = {str(c): list(v) for c, v in rows.items()}, int(num_rows or 0)
    raw = RawRows(image_id, key, path, source, n, dict(constants or {}))
    raw.check()
    [span] = conform_batch([raw], columns, extras_at, indexer=indexer)
    return to_frame(span.table())


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The table as a DataFrame with the policy's dtypes (``string``, ``Int64``,
    ``float64``, ``boolean``)."""
    df: pd.DataFrame = table.to_pandas(types_mapper=_pandas_types().get)
    return df


def is_frame(obj: object) -> TypeGuard[pd.DataFrame]:
    """Whether ``obj`` is a DataFrame, without importing pandas (if no code imported it,
    nothing is one)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


def from_frame(df: pd.DataFrame) -> pa.Table | dict[str, list[Any]]:
    """A DataFrame as an Arrow table, or as column lists when Arrow cannot type a
    column (an object column of mixed values: the policy converts it value by value)."""
    try:
        return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return {str(c): df[c].astype(object).tolist() for c in df.columns}


def _pandas_version() -> str | None:
    try:
        return metadata.version("pandas")
    except metadata.PackageNotFoundError:
        return None


_METADATA: dict[pa.Schema, dict[bytes, bytes]] = {}


def with_pandas_metadata(table: pa.Table) -> pa.Table:
    """``table`` with the pandas metadata a ``DataFrame`` of the policy's dtypes would
    carry, so that ``pandas.read_parquet`` gives ``string``/``Int64``/``boolean`` back
    (as for a table kymflow wrote from pandas).

    Written without importing pandas (the daemon never loads it): the metadata is
    pyarrow's documented ``b"pandas"`` schema key, with no index and one entry per
    column; a column of another Arrow type is described by what pandas restores it as
    (``object``).
    """
    schema = table.schema.remove_metadata()
    if schema not in _METADATA:
        if len(_METADATA) > 64:
            _METADATA.clear()
        columns = [
            {
                "name": f.name,
                "field_name": f.name,
                "pandas_type": _PANDAS_COLUMN.get(f.type, ("object", "object"))[0],
                "numpy_type": _PANDAS_COLUMN.get(f.type, ("object", "object"))[1],
                "metadata": None,
            }
            for f in schema
        ]
        doc = {
            "index_columns": [],
            "column_indexes": [],
            "columns": columns,
            "attributes": {},
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": _pandas_version(),
        }
        _METADATA[schema] = {b"pandas": json.dumps(doc).encode()}
    return table.replace_schema_metadata(_METADATA[schema])


def skip_pyarrow_pandas_probe() -> bool:
    """Spare a process that has not imported pandas pyarrow's import of it.

    ``pyarrow.array`` asks, on its first call, whether its argument is a pandas object,
    and its type inference looks up pandas' ``NA``/``NaT``; both import pandas
    (~40 MiB) to find out, once per process. A process that has not imported pandas
    holds no pandas object: this lets both probes find pandas absent. pyarrow's explicit
    pandas calls (``Table.from_pandas``, ``to_pandas``) still import it when a DataFrame
    does appear (the DataFrame API, a plug-in that imports pandas only when it runs);
    values pyarrow then no longer recognises as null in such a plug-in's object column
    (``pd.NA``) fall back to the value-by-value policy (:func:`from_frame`).

    Call it once the plug-ins are imported (one that imports pandas keeps pyarrow's
    probes) and before other threads run (during the probes ``import pandas`` fails).
    Returns whether the probes were skipped (False: pandas is imported).
    """
    if "pandas" in sys.modules:
        return False
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([], type=pa.null())  # the Python probe of pyarrow.array
        pa.array([None], from_pandas=True)  # type inference's probe (pandas' NA, NaT)
    finally:
        sys.meta_path.remove(blocker)
    return True


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import hook under which ``import pandas`` fails (for one pyarrow probe)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
