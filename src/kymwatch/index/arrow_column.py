"""One column of Arrow values converted to a table dtype, or typed by its content.

The schema policy of :mod:`kymwatch.index.schema` on a whole column at once: a
vectorised cast where the source type already fits, else value by value through the
policy's converters (a value that does not fit becomes null and its position is
reported). Used per batch and per table by :mod:`kymwatch.index.arrow_schema`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from kymwatch.index.schema import _COERCED, _CONVERTERS, TEXT_COLUMNS, _is_null, infer_dtype

__all__ = ["ARROW_TYPES", "Values", "convert_column", "first_valid", "infer_column"]

ARROW_TYPES: Mapping[str, pa.DataType] = {
    "string": pa.string(),
    "Int64": pa.int64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
}

Values: TypeAlias = "pa.ChunkedArray | pa.Array | list[Any]"


def _fast(values: Values, dtype: str) -> pa.ChunkedArray | pa.Array | None:
    """A vectorised conversion when the source type fits ``dtype`` losslessly, else None."""
    target = ARROW_TYPES[dtype]
    if isinstance(values, list):
        if dtype == "boolean":
            return None
        try:
            return pa.array(values, type=target, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None
    t = values.type
    if pa.types.is_null(t):
        return pa.nulls(len(values), target)
    if dtype == "Int64" and pa.types.is_floating(t):
        # Whole numbers in range: a safe cast raises for anything else (a fraction, an
        # infinity, beyond int64), which then goes value by value.
        if pc.any(pc.is_nan(values)).as_py():
            values = pc.if_else(pc.is_nan(values), pa.scalar(None, t), values)
        return values.cast(pa.int64())
    ok = (
        (dtype == "string" and (pa.types.is_string(t) or pa.types.is_large_string(t)))
        or (dtype == "float64" and (pa.types.is_floating(t) or pa.types.is_integer(t)))
        or (dtype == "Int64" and pa.types.is_integer(t) and t != pa.uint64())
        or (dtype == "boolean" and pa.types.is_boolean(t))
    )
    if not ok:
        return None
    out = values if t == target else values.cast(target)
    if dtype == "float64" and pa.types.is_floating(t) and _may_hold_nan(out):
        out = pc.if_else(pc.is_nan(out), pa.scalar(None, target), out)
    return out


def _may_hold_nan(values: pa.ChunkedArray | pa.Array) -> bool:
    """True if ``values`` holds a NaN: a finite sum (one pass, nothing allocated)
    proves there is none; otherwise each value is checked."""
    total = pc.sum(values).as_py()
    if total is None or math.isfinite(total):
        return False
    return bool(pc.any(pc.is_nan(values)).as_py())


def convert_column(values: Values, dtype: str) -> tuple[pa.ChunkedArray | pa.Array, list[int]]:
    """``values`` converted to ``dtype``, and the positions of values that did not fit
    (now null). Never raises for a value."""
    try:
        fast = _fast(values, dtype)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        fast = None  # e.g. uint64 beyond int64: the per-value path decides
    if fast is not None:
        return fast, []
    conv = _CONVERTERS[dtype]
    py = values if isinstance(values, list) else values.to_pylist()
    out: list[Any] = []
    bad: list[int] = []
    for pos, v in enumerate(py):
        if _is_null(v):
            out.append(None)
            continue
        c = conv(v)
        if c is _COERCED:
            bad.append(pos)
            c = None
        out.append(c)
    return pa.array(out, type=ARROW_TYPES[dtype], from_pandas=True), bad


def _float64(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return values if values.type == pa.float64() else values.cast(pa.float64())


def _not_whole(arr: pa.ChunkedArray | pa.Array, *, int64: bool) -> pa.ChunkedArray | pa.Array:
    """Per value of a float64 column: true for a number that is not a whole finite one
    (a fraction, an infinity; with ``int64``, also one of 2**63 or more in magnitude),
    false for such a whole number and for NaN (not a number: ``v == v`` is false), null
    for null."""
    fits = pc.less(pc.abs(arr), pa.scalar(2.0**63)) if int64 else pc.is_finite(arr)
    return pc.and_not(pc.equal(arr, arr), pc.and_(fits, pc.equal(arr, pc.round(arr))))


def _fractional_prefix(values: pa.ChunkedArray | pa.Array, size: int = 1024) -> bool:
    """True if one of the first ``size`` values is a number that is not whole (or is
    infinite): the column is then float64 whatever follows."""
    head = _float64(values.slice(0, size))
    # The usual float column: a fraction among its first values (three kernels; a
    # NaN differs from its rounding too, hence the check of the value found).
    first = pc.index(pc.not_equal(head, pc.round(head)), True).as_py()
    if first >= 0 and not math.isnan(head[first].as_py()):
        return True
    return bool(pc.any(_not_whole(head, int64=False)).as_py())


def first_valid(values: pa.ChunkedArray | pa.Array) -> int | None:
    """The position of the first non-null value (None if all are null), looking no
    further than the chunk that holds it."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    at = 0
    for chunk in chunks:
        if chunk.null_count < len(chunk):
            if chunk.null_count == 0:
                return at
            return at + int(pc.index(chunk.is_valid(), True).as_py())
        at += len(chunk)
    return None


def infer_column(name: str, values: Values) -> str:
    """The dtype an extra column gets from its values (the policy's ``infer_dtype``)."""
    if name in TEXT_COLUMNS:
        return "string"
    if isinstance(values, list):
        return infer_dtype(name, values)
    t = values.type
    if pa.types.is_null(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "boolean" if values.null_count < len(values) else "float64"
    if pa.types.is_integer(t) and t != pa.uint64():
        return "Int64"
    if pa.types.is_floating(t):
        if _fractional_prefix(values):  # the usual float column, decided at its start
            return "float64"
        arr = _float64(values)
        if pc.any(_not_whole(arr, int64=True)).as_py():
            return "float64"
        numbers = pc.sum(pc.equal(arr, arr)).as_py()  # not null, not NaN
        return "Int64" if numbers else "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:  # the first value alone first: Arrow's cast parses every value before failing
            first = first_valid(values)  # no pass over the whole column
            if first is not None:
                values.slice(first, 1).cast(pa.float64())
            values.cast(pa.float64())
        except (pa.ArrowException, ValueError):
            return "string" if values.null_count < len(values) else "float64"
    return infer_dtype(name, values.to_pylist())
