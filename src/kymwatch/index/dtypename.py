"""numpy's name of a zarr array's dtype (``"<u2"`` → ``"uint16"``), as kymflow's
manifest writes it (``str(arr.dtype)``), without importing numpy.

The daemon runs without numpy (see :mod:`kymwatch.daemon.memory`), and the manifest
needs only the name. The dtypes an image array has (zarr format 2 typestrings of
booleans, integers, floats, complex numbers, datetimes, and format 3's names of them)
are named here by numpy's rules, pinned against numpy in ``tests/test_nonumpy_ops.py``.
Any other dtype (structured, text, platform-dependent sizes) is named by numpy when it
can be imported, else given as written.
"""

from __future__ import annotations

import re
import sys
from typing import Any

__all__ = ["dtype_name"]

_TYPESTR = re.compile(r"([<>|=]?)([biufcmM])(\d+)(?:\[(\w+)\])?")
_KINDS = {"i": "int", "u": "uint", "f": "float", "c": "complex"}
_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}
_NAMES = frozenset(
    {"bool"}
    | {f"{k}{8 * n}" for k in ("int", "uint") for n in (1, 2, 4, 8)}
    | {"float16", "float32", "float64", "complex64", "complex128"}
)
_DATETIME_UNITS = frozenset({"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"})
_NON_NATIVE = ">" if sys.byteorder == "little" else "<"


def _plain(raw: str) -> str | None:
    """The name of a numeric or datetime dtype by numpy's rules, None for another."""
    if raw in _NAMES:
        return raw
    m = _TYPESTR.fullmatch(raw)
    if m is None:
        return None
    order, kind, digits, unit = m.groups()
    size = int(digits)
    if kind in "mM":
        if size != 8 or (unit is not None and unit not in _DATETIME_UNITS):
            return None
        name = ("datetime64" if kind == "M" else "timedelta64") + (f"[{unit}]" if unit else "")
        return raw if order == _NON_NATIVE else name
    if unit is not None or size not in _SIZES[kind]:
        return None
    if order == _NON_NATIVE and size > 1 and kind != "b":
        return raw  # numpy names a non-native byte order by its typestring
    return "bool" if kind == "b" else f"{_KINDS[kind]}{8 * size}"


def dtype_name(raw: Any) -> str:
    """numpy's name of the zarr dtype ``raw`` (``str(raw)`` if numpy does not know it)."""
    if isinstance(raw, str):
        name = _plain(raw)
        if name is not None:
            return name
    try:
        import numpy as np  # other dtypes (not in the daemon: its images are numeric)

        if isinstance(raw, list):
            return str(np.dtype([tuple(f) for f in raw]))
        return str(np.dtype(raw))
    except (ImportError, TypeError, ValueError):
        return str(raw)
