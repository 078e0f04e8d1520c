"""The schema policy: how artifact values and adopted tables become typed table columns.

It follows the data kymflow writes (see ``docs/layout.md``, "Schema policy"):

- Ids and text stay strings (``event_id`` ``"e1"``, ``"1"``; an integer id 1 becomes
  ``"1"``, a whole float 1.0 too). Text never fails: any value has a text form.
- A column is declared numeric only where the conversion loses nothing for the values
  kymflow writes (``n_valid`` is ``float64``: kymflow keeps 12.5). A numeric string
  that round-trips (``"0.5"``) is read as its number.
- A value that does not fit its column (``"n/a"`` in ``mean_velocity``) becomes null:
  the record keeps its rows, and the column is logged once per record
  (``value_coerced``) with the count and one example.
- A frame with no columns is no rows (kymflow's ``pd.DataFrame()`` means "no events").
- Extra artifact columns, where an indexer keeps them, are typed by their content
  across the whole table (one type per column): all booleans → ``boolean``, all
  numbers (or numeric strings that round-trip) → ``Int64`` when every value is
  integral, else ``float64``; anything else → ``string``. Text-named columns are
  always strings. Types depend only on the table's values, so an incrementally
  updated table equals a fresh rebuild (all-null extras: see ``shape_table``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import structlog

from kymwatch.errors import ArtifactInvalidError

__all__ = [
    "DTYPES",
    "TEXT_COLUMNS",
    "Coercions",
    "conform_rows",
    "convert_values",
    "empty_table",
    "infer_dtype",
    "shape_table",
]

log = structlog.get_logger(__name__)

IMAGE_ID = "image_id"
DTYPES = ("string", "Int64", "float64", "boolean")
"""Column dtypes an indexer may declare."""

TEXT_COLUMNS = frozenset(
    {"image_id", "event_id", "kind", "notes", "note", "analysis_version", "params_hash"}
)
"""Columns that hold text in every table, whatever type an artifact gives them."""

RowSource: TypeAlias = "pd.DataFrame | pa.Table | Mapping[str, Sequence[Any]]"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BOOL_TEXT = {"true": True, "false": False}
_COERCED = object()


@dataclass
class Coercions:
    """Values that did not fit their column, per column: (count, one example)."""

    columns: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def add(self, column: str, count: int, example: Any) -> None:
        """Record ``count`` coerced values of ``column``."""
        if count:
            old, first = self.columns.get(column, (0, example))
            self.columns[column] = (old + count, first)

    def log(self, **context: Any) -> None:
        """Log one ``value_coerced`` line per column that lost values."""
        for column, (count, example) in sorted(self.columns.items()):
            log.warning(
                "value_coerced", column=column, count=count, example=repr(example)[:80], **context
            )


# -- null and per-value conversion ----------------------------------------------------------
def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float | np.floating):
        return bool(np.isnan(v))
    return False


def _text(v: Any) -> Any:
    """The text form of any value (never coerced)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "True" if v else "False"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating | Decimal):
        f = float(v)
        if math.isfinite(f) and f.is_integer() and abs(f) < 2**63:
            return str(int(f))
        return repr(f)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=str)
    return str(v)


def _number(v: Any) -> Any:
    """``v`` as an int or float (a boolean as 0 or 1), or _COERCED."""
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating | Decimal):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return _COERCED
    return _COERCED


def _as_int(v: Any) -> Any:
    n = _number(v)
    if n is None or n is _COERCED:
        return n
    if isinstance(n, float):
        if not (math.isfinite(n) and n.is_integer()):
            return _COERCED
        n = int(n)
    return n if _INT64_MIN <= n <= _INT64_MAX else _COERCED


def _as_float(v: Any) -> Any:
    n = _number(v)
    return n if n is None or n is _COERCED else float(n)


def _as_bool(v: Any) -> Any:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer) and int(v) in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[v.strip().lower()]
    return _COERCED


_CONVERTERS = {"string": _text, "Int64": _as_int, "float64": _as_float, "boolean": _as_bool}


def _series(values: list[Any], dtype: str, index: pd.Index | None = None) -> pd.Series:
    if dtype == "float64":
        arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
        return pd.Series(arr, index=index, dtype="float64")
    return pd.Series(values, index=index, dtype=dtype)


def _fast(values: Any, dtype: str) -> pd.Series | None:
    """Vectorised conversion when the source type already fits, else None."""
    if isinstance(values, pd.Series):
        kind = values.dtype
        if dtype == "string" and isinstance(kind, pd.StringDtype):
            return values.astype("string")
        numeric = pd.api.types.is_numeric_dtype(kind)
        if dtype == "float64" and numeric and not pd.api.types.is_bool_dtype(kind):
            return values.astype("float64")
        if dtype == "Int64" and pd.api.types.is_integer_dtype(kind):
            return values.astype("Int64")
        if dtype == "boolean" and pd.api.types.is_bool_dtype(kind):
            return values.astype("boolean")
        return None
    if isinstance(values, pa.Array | pa.ChunkedArray):
        t = values.type
        if pa.types.is_null(t):
            return _series([None] * len(values), dtype)
        ok = (
            (dtype == "string" and (pa.types.is_string(t) or pa.types.is_large_string(t)))
            or (dtype == "float64" and (pa.types.is_floating(t) or pa.types.is_integer(t)))
            or (dtype == "Int64" and pa.types.is_integer(t) and t != pa.uint64())
            or (dtype == "boolean" and pa.types.is_boolean(t))
        )
        if not ok:
            return None
        target = {"string": pa.string(), "float64": pa.float64(), "Int64": pa.int64()}
        arr = values.cast(target.get(dtype, pa.bool_()))
        out: pd.Series = arr.to_pandas()
        return out if dtype == "float64" else out.astype(pd.api.types.pandas_dtype(dtype))
    return None


def _pylist(values: Any) -> list[Any]:
    if isinstance(values, pd.Series):
        return list(values.astype(object))
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return list(values.to_pylist())
    return list(values)


def convert_values(
    values: Any, dtype: str, coerced: Coercions | None = None, column: str = ""
) -> pd.Series:
    """Convert a column (pandas Series, Arrow array or sequence) to ``dtype``.

    Never raises for a value: one that does not fit becomes null and is counted in
    ``coerced``. The index of a Series is kept.
    """
    index = values.index if isinstance(values, pd.Series) else None
    try:
        fast = _fast(values, dtype)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        fast = None  # e.g. uint64 beyond int64: the per-value path decides
    if fast is not None:
        return fast if index is None else fast.set_axis(index)
    conv = _CONVERTERS[dtype]
    out: list[Any] = []
    bad, example = 0, None
    for v in _pylist(values):
        if _is_null(v):
            out.append(None)
            continue
        c = conv(v)
        if c is _COERCED:
            bad, example = bad + 1, example if bad else v
            c = None
        out.append(c)
    if coerced is not None:
        coerced.add(column, bad, example)
    return _series(out, dtype, index)


# -- inference for extra columns ------------------------------------------------------------
def infer_dtype(name: str, values: Any) -> str:
    """The dtype an extra column gets from its values (see the module docstring)."""
    if name in TEXT_COLUMNS:
        return "string"
    if isinstance(values, pd.Series):
        kind = values.dtype
        if pd.api.types.is_bool_dtype(kind):
            return "boolean"
        if pd.api.types.is_integer_dtype(kind):
            return "Int64"
        if pd.api.types.is_float_dtype(kind):
            arr = values.to_numpy(dtype="float64", na_value=np.nan)
            finite = arr[~np.isnan(arr)]
            whole = bool(np.all(np.isfinite(finite) & (finite == np.round(finite))))
            return "Int64" if whole and bool(np.all(np.abs(finite) < 2**63)) else "float64"
    textual = isinstance(values, pd.Series) and (
        values.dtype == object or isinstance(values.dtype, pd.StringDtype)
    )
    if textual:
        try:  # fails fast (in C) on the first non-numeric text: the usual text column
            pd.to_numeric(values.dropna().astype(object))
        except (ValueError, TypeError):
            return "string"
    seen = [v for v in _pylist(values) if not _is_null(v)]
    if not seen:
        return "float64"
    if all(isinstance(v, bool | np.bool_) for v in seen):
        return "boolean"
    nums: list[Any] = []
    for v in seen:
        n = _number(v)
        if n is None or n is _COERCED or (isinstance(v, str) and _text(n) != v):
            return "string"
        nums.append(n)
    whole = all(isinstance(n, int) or (math.isfinite(n) and n.is_integer()) for n in nums)
    return "Int64" if whole and all(_INT64_MIN <= n <= _INT64_MAX for n in nums) else "float64"


# -- frames ---------------------------------------------------------------------------------
def empty_table(columns: Mapping[str, str]) -> pd.DataFrame:
    """A table with no rows and the given typed columns."""
    return pd.DataFrame({c: _series([], t) for c, t in columns.items()})


def shape_table(
    df: pd.DataFrame,
    columns: Mapping[str, str],
    extras_at: int | None,
    coerced: Coercions | None = None,
    keep_null: Collection[str] | None = None,
) -> pd.DataFrame:
    """``df`` with the declared columns (typed, in order) and, where ``extras_at`` is
    not None, its other columns inserted at that position, typed by content.

    Extra columns are ordered by the first row holding a value in them (then by their
    position in ``df``; all-null ones last). An all-null extra column is kept only if
    it is in ``keep_null`` (None: keep every one). Never raises for a value.
    """
    declared = list(columns)
    if (
        extras_at is None
        and list(df.columns) == declared
        and [str(t) for t in df.dtypes] == list(columns.values())
    ):
        return df  # already in shape: the common case of a table kymwatch wrote
    out: dict[str, pd.Series] = {}
    for col, dtype in columns.items():
        if col in df.columns:
            out[col] = convert_values(df[col], dtype, coerced, col)
        else:
            out[col] = _series([None] * len(df), dtype, df.index)
    extras: list[str] = []
    if extras_at is not None:
        firsts = []
        for pos, col in enumerate(df.columns):
            if col in columns:
                continue
            present = df[col].notna().to_numpy()
            if present.any():
                firsts.append((int(np.argmax(present)), pos, col))
            elif keep_null is None or col in keep_null:
                firsts.append((len(df), pos, col))
        extras = [str(col) for _, _, col in sorted(firsts)]
        for col in extras:
            out[col] = convert_values(df[col], infer_dtype(col, df[col]), coerced, col)
    at = len(declared) if extras_at is None else extras_at
    order = declared[:at] + extras + declared[at:]
    return pd.DataFrame({c: out[c] for c in order}, index=df.index)


def _names(rows: RowSource) -> list[str]:
    if isinstance(rows, pa.Table):
        return list(rows.column_names)
    if isinstance(rows, pd.DataFrame):
        return [str(c) for c in rows.columns]
    return [str(c) for c in rows]


def _column(rows: RowSource, name: str) -> Any:
    if isinstance(rows, pa.Table):
        return rows.column(name)
    if isinstance(rows, pd.DataFrame):
        return rows[name]
    return list(rows[name])


def conform_rows(
    rows: RowSource,
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
    """Cast one artifact's rows to a table schema (see the module docstring).

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
    names = _names(rows)
    if not names:  # kymflow's pd.DataFrame(): no events
        return empty_table(columns)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ArtifactInvalidError(image_id, key, path, f"repeated column name(s) {dupes}")
    if isinstance(rows, pa.Table):
        n = rows.num_rows
    elif isinstance(rows, pd.DataFrame):
        n = len(rows)
    else:
        n = int(num_rows or 0)
    fixed = {IMAGE_ID: image_id, **(constants or {})}
    data: dict[str, Any] = {}
    coerced = Coercions()
    for col, dtype in columns.items():
        if col in fixed:
            data[col] = _series([fixed[col]] * n, dtype)
        elif col in names:
            data[col] = convert_values(_column(rows, col), dtype, coerced, col).reset_index(
                drop=True
            )
        else:
            data[col] = _series([None] * n, dtype)
    if extras_at is not None:
        for col in names:
            if col not in columns:
                values = _column(rows, col)
                dtype = infer_dtype(col, _as_series(values))
                data[col] = convert_values(values, dtype, coerced, col).reset_index(drop=True)
    declared = list(columns)
    extras = [c for c in names if c not in columns] if extras_at is not None else []
    at = len(declared) if extras_at is None else extras_at
    order = declared[:at] + extras + declared[at:]
    coerced.log(image_id=image_id, indexer=indexer, path=path)
    return pd.DataFrame({c: data[c] for c in order})


def _as_series(values: Any) -> Any:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        t = values.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return values.to_pandas()
    return values
