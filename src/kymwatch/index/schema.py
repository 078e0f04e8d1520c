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
  updated table equals a fresh rebuild (all-null extras: see
  ``kymwatch.index.arrow_schema.finish_table``). The conversions run on Arrow columns
  in bulk (:mod:`kymwatch.index.arrow_schema`); the per-value converters here decide
  every value that does not already fit its column.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import structlog

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DTYPES",
    "TEXT_COLUMNS",
    "Coercions",
    "empty_table",
    "infer_dtype",
]

log = structlog.get_logger(__name__)

IMAGE_ID = "image_id"
DTYPES = ("string", "Int64", "float64", "boolean")
"""Column dtypes an indexer may declare."""

TEXT_COLUMNS = frozenset(
    {"image_id", "event_id", "kind", "notes", "note", "analysis_version", "params_hash"}
)
"""Columns that hold text in every table, whatever type an artifact gives them."""


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
def _loaded_pandas() -> Any:
    """pandas if some code imported it, else None: without it no value is a pandas one,
    so the daemon's Arrow path never imports pandas for a check."""
    return sys.modules.get("pandas")


@dataclass(frozen=True, slots=True)
class _Kinds:
    """The scalar types each per-value rule accepts: Python's, plus numpy's once some
    code imported numpy (before that no value can be a numpy one, and the daemon runs
    without numpy: see :mod:`kymwatch.daemon.memory`)."""

    bools: tuple[type[Any], ...] = (bool,)
    ints: tuple[type[Any], ...] = (int,)
    floats: tuple[type[Any], ...] = (float, Decimal)
    arrays: tuple[type[Any], ...] = ()


_PLAIN = _Kinds()


@functools.cache
def _numpy_kinds(np: Any) -> _Kinds:
    return _Kinds((bool, np.bool_), (int, np.integer), (float, np.floating, Decimal), (np.ndarray,))


def _kinds() -> _Kinds:
    np = sys.modules.get("numpy")
    return _PLAIN if np is None else _numpy_kinds(np)


def _is_series(values: Any) -> bool:
    pd = _loaded_pandas()
    return pd is not None and isinstance(values, pd.Series)


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    pd = _loaded_pandas()
    if pd is not None and (v is pd.NA or v is pd.NaT):
        return True
    if isinstance(v, float):
        return math.isnan(v)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.floating):
        return bool(np.isnan(v))
    return False


def _text(v: Any) -> Any:
    """The text form of any value (never coerced)."""
    if isinstance(v, str):
        return v
    k = _kinds()
    if isinstance(v, k.bools):
        return "True" if v else "False"
    if isinstance(v, k.ints):
        return str(int(v))
    if isinstance(v, k.floats):
        f = float(v)
        if math.isfinite(f) and f.is_integer() and abs(f) < 2**63:
            return str(int(f))
        return repr(f)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, k.arrays):
        v = v.tolist()
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=str)
    return str(v)


def _number(v: Any) -> Any:
    """``v`` as an int or float (a boolean as 0 or 1), or _COERCED."""
    k = _kinds()
    if isinstance(v, k.bools):
        return int(v)
    if isinstance(v, k.ints):
        return int(v)
    if isinstance(v, k.floats):
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
    k = _kinds()
    if isinstance(v, k.bools):
        return bool(v)
    if isinstance(v, k.ints) and int(v) in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[v.strip().lower()]
    return _COERCED


_CONVERTERS = {"string": _text, "Int64": _as_int, "float64": _as_float, "boolean": _as_bool}


def _series(values: list[Any], dtype: str, index: pd.Index | None = None) -> pd.Series:
    import numpy as np  # the DataFrame API: pandas needs numpy anyway
    import pandas as pd

    if dtype == "float64":
        arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
        return pd.Series(arr, index=index, dtype="float64")
    return pd.Series(values, index=index, dtype=dtype)


def _pylist(values: Any) -> list[Any]:
    if _is_series(values):
        return list(values.astype(object))
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return list(values.to_pylist())
    return list(values)


# -- inference for extra columns ------------------------------------------------------------
def infer_dtype(name: str, values: Any) -> str:
    """The dtype an extra column gets from its values (see the module docstring)."""
    if name in TEXT_COLUMNS:
        return "string"
    if _is_series(values):
        import pandas as pd

        kind = values.dtype
        if pd.api.types.is_bool_dtype(kind):
            return "boolean"
        if pd.api.types.is_integer_dtype(kind):
            return "Int64"
        if pd.api.types.is_float_dtype(kind):
            import numpy as np  # a Series: pandas imported it

            arr = values.to_numpy(dtype="float64", na_value=np.nan)
            finite = arr[~np.isnan(arr)]
            whole = bool(np.all(np.isfinite(finite) & (finite == np.round(finite))))
            return "Int64" if whole and bool(np.all(np.abs(finite) < 2**63)) else "float64"
    textual = _is_series(values) and (
        values.dtype == object or isinstance(values.dtype, _loaded_pandas().StringDtype)
    )
    if textual:
        import pandas as pd

        try:  # fails fast (in C) on the first non-numeric text: the usual text column
            pd.to_numeric(values.dropna().astype(object))
        except (ValueError, TypeError):
            return "string"
    seen = [v for v in _pylist(values) if not _is_null(v)]
    if not seen:
        return "float64"
    bools = _kinds().bools
    if all(isinstance(v, bools) for v in seen):
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
    import pandas as pd

    return pd.DataFrame({c: _series([], t) for c, t in columns.items()})
