"""Integer vectors without numpy: row offsets as a stdlib ``array("q")``, and the few
bulk operations the table code needs (shift, repeat, concatenated ranges) run by Arrow.

The daemon runs without numpy (pyarrow loaded without it saves ~47 MiB per process:
see :mod:`kymwatch.daemon.memory`), so nothing on its paths may import it. Each
function here is one vectorised Arrow call or a copy of bytes: no Python int is made
per value.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["as_int64s", "concat_ranges", "int64_view", "repeat_each", "shift_into"]


def as_int64s(values: pa.Array, out: array[int] | None = None) -> array[int]:
    """An int64 Arrow array without nulls as an ``array("q")`` (one copy of its bytes),
    appended to ``out`` if given."""
    out = array("q") if out is None else out
    data = values.buffers()[1]
    if data is not None and len(values):
        out.frombytes(memoryview(data)[values.offset * 8 : (values.offset + len(values)) * 8])
    return out


def int64_view(values: array[int]) -> pa.Array:
    """An ``array("q")`` as an int64 Arrow array sharing its memory (the Arrow array keeps
    it alive; it must not be resized meanwhile)."""
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def shift_into(out: array[int], pieces: Sequence[tuple[array[int], int, int, int]]) -> None:
    """Append ``values[start:stop] + delta`` to ``out`` for each piece ``(values, start,
    stop, delta)``, in order: copies of bytes when no delta is set, else one Arrow
    addition over zero-copy views of all pieces (whatever their number)."""
    pieces = [p for p in pieces if p[2] > p[1]]
    if not any(delta for _, _, _, delta in pieces):
        for values, start, stop, _ in pieces:
            out.extend(values[start:stop])
        return
    views: dict[int, pa.Array] = {}
    parts: list[pa.Array] = []
    for values, start, stop, _ in pieces:
        view = views.get(id(values))
        if view is None:
            view = views[id(values)] = int64_view(values)
        parts.append(view.slice(start, stop - start))
    joined = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
    deltas = pa.array([delta for _, _, _, delta in pieces], pa.int64())
    as_int64s(pc.add(joined, repeat_each(deltas, [len(p) for p in parts])), out)


def repeat_each(values: pa.Array, counts: Sequence[int]) -> pa.Array:
    """Each value repeated ``counts[i]`` times, in order (numpy's ``repeat``): the
    run-end encoding of the values, decoded."""
    if len(values) != len(counts):
        raise ValueError(f"{len(values)} values but {len(counts)} counts")
    keep = [i for i, c in enumerate(counts) if c > 0]
    if not keep:
        return values.slice(0, 0)
    if len(keep) < len(counts):
        values = values.take(pa.array(keep, pa.int64()))
    ends = pa.array(list(accumulate(counts[i] for i in keep)), pa.int64())
    return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(ends, values))


def concat_ranges(begins: Sequence[int], counts: Sequence[int]) -> pa.Array:
    """The int64 positions ``begins[i], ..., begins[i] + counts[i] - 1``, for each ``i``
    in order (numpy's ``concatenate`` of ``arange`` s): ``0..n-1`` plus, per range, the
    shift from its place in the result to its ``begins``."""
    total = sum(counts)
    if not total:
        return pa.array([], pa.int64())
    places = accumulate(counts, initial=0)
    shifts = pa.array([b - p for b, p in zip(begins, places, strict=False)], pa.int64())
    positions = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), total)), 1)
    return pc.add(positions, repeat_each(shifts, counts))
