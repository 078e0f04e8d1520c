"""Each Arrow replacement of a numpy computation on the daemon's paths gives what the
numpy code gave (the reference implementations below are the replaced code, verbatim
where it was a formula): run boundaries, row offsets after a splice, repeats and
ranges, float columns typed by content (NaN, null, ±inf, beyond int64, float16/32),
per-value conversions of numpy scalars, zarr dtype names, and the numpy switch."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kymwatch.daemon import memory
from kymwatch.index import registry
from kymwatch.index.arrow_column import _fractional_prefix, convert_column, infer_column
from kymwatch.index.arrow_schema import _owners
from kymwatch.index.dtypename import dtype_name
from kymwatch.index.gather import _increasing
from kymwatch.index.schema import _as_bool, _is_null, _number, _text, infer_dtype
from kymwatch.store.arrowints import concat_ranges, repeat_each, shift_into
from kymwatch.store.engine import SortedTable, id_ranges

# _EXIT: subprocesses here end with os._exit: pyarrow's teardown at interpreter exit
# aborts now and then ("terminate called without an active exception", ~4 % of runs of a
# parquet round trip on this machine, with numpy as without: apache/arrow#34314), which
# is not what these tests pin.

# -- the replaced numpy code ----------------------------------------------------------------


def _np_starts(ids: list[str]) -> list[int]:
    col = pa.array(ids, pa.string())
    n = len(ids)
    differs = np.asarray(
        [
            a != b
            for a, b in zip(col.slice(1).to_pylist(), col.slice(0, n - 1).to_pylist(), strict=True)
        ],
        dtype=bool,
    )
    return [int(s) for s in np.flatnonzero(np.concatenate(([True], differs)))]


def _np_float_dtype(values: pa.ChunkedArray | pa.Array) -> str:
    arr = np.asarray(values.to_numpy(zero_copy_only=False), dtype="float64")
    finite = arr[~np.isnan(arr)]
    if not len(finite):
        return "float64"
    whole = bool(np.all(np.isfinite(finite) & (finite == np.round(finite))))
    return "Int64" if whole and bool(np.all(np.abs(finite) < 2**63)) else "float64"


def _np_fractional_prefix(values: pa.ChunkedArray | pa.Array, size: int = 1024) -> bool:
    head = values.slice(0, size)
    arr = np.asarray(head.to_numpy(zero_copy_only=False), dtype="float64")
    number = ~np.isnan(arr)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(arr) & (arr == np.round(arr))
    return bool(np.any(number & ~whole))


# -- strategies -----------------------------------------------------------------------------
_IDS = st.lists(st.sampled_from(["a", "b", "c", "e1", "e10", "e2", "0f3c", "ffff"]), max_size=40)
_FLOATS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**62), 2**62).map(float),
    st.sampled_from([0.0, -0.0, 0.5, -2.5, 2.0**63, -(2.0**63), 2.0**63 - 1024, 1e300]),
)


@settings(max_examples=200, deadline=None)
@given(_IDS)
def test_id_ranges_equal_numpys_run_boundaries(ids: list[str]) -> None:
    """The distinct ids of a sorted column and their row offsets are numpy's run starts
    (an empty column: no ids, offset 0)."""
    ids = sorted(ids)
    got = id_ranges(pa.array(ids, pa.string()))
    if not ids:
        assert got == ([], [0])
        return
    starts = _np_starts(ids)
    assert got == ([ids[s] for s in starts], [*starts, len(ids)])
    assert got == id_ranges(pa.chunked_array([ids[:3], ids[3:]], pa.string()))


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 4), max_size=8),
    st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 5), max_size=6),
)
def test_splice_offsets_equal_numpys_running_sum(
    before: dict[str, int], edits: dict[str, int]
) -> None:
    """After any splice (rows replaced, grown, shrunk, removed, new ids) the offsets are
    numpy's running sum of the row counts, and those of the new table's id column."""
    ids = sorted(before)
    rows = [i for i in ids for _ in range(before[i])]
    table = pa.table({"image_id": pa.array(rows, pa.string()), "v": list(range(len(rows)))})
    st_ = SortedTable.of(table, ids, np.cumsum([0] + [before[i] for i in ids]).tolist())
    replace = {
        i: (None if n == 0 else pa.table({"image_id": [i] * n, "v": list(range(100, 100 + n))}))
        for i, n in edits.items()
    }
    new, _ = st_.splice(replace)
    after = {i: n for i, n in {**before, **edits}.items() if n}
    want_ids = sorted(after)
    want = np.cumsum([0] + [after[i] for i in want_ids]).tolist()
    assert (list(new.ids), new.offsets.tolist()) == (want_ids, want)
    assert isinstance(new.offsets, array) and new.offsets.typecode == "q"
    assert id_ranges(new.table.column("image_id")) == (want_ids, want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=20))
def test_repeat_and_ranges_equal_numpys(counts: list[int]) -> None:
    """``repeat_each`` is ``np.repeat``; ``concat_ranges`` is the concatenation of
    ``np.arange`` s (zero counts included); ``shift_into`` adds each piece's delta."""
    values = pa.array([f"r{k}" for k in range(len(counts))], pa.string())
    assert (
        repeat_each(values, counts).to_pylist()
        == np.repeat(np.array(values.to_pylist(), dtype=object), counts).tolist()
    )
    begins = [3 * k + 7 for k in range(len(counts))]
    ranges = [np.arange(b, b + c, dtype=np.int64) for b, c in zip(begins, counts, strict=True)]
    want = np.concatenate(ranges).tolist() if ranges else []
    assert concat_ranges(begins, counts).to_pylist() == want
    base = array("q", range(100))
    out: array[int] = array("q")
    pieces = [(base, 2 * k, 2 * k + c, k - 2) for k, c in enumerate(counts)]
    shift_into(out, pieces)
    assert out.tolist() == [v + d for b, s, e, d in pieces for v in b[s:e]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 4)), max_size=8))
def test_gathered_order_check_is_numpys(ranges: list[tuple[int, int]]) -> None:
    """The check that gathered spans are already in order says what numpy's check of
    the concatenated positions said (empty spans included)."""
    begins, counts = [b for b, _ in ranges], [c for _, c in ranges]
    order = np.concatenate([np.arange(b, b + c) for b, c in ranges] or [np.arange(0)])
    assert _increasing(begins, counts) == bool(np.all(order[1:] > order[:-1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FLOATS, max_size=30), st.sampled_from([pa.float64(), pa.float32()]))
def test_float_columns_are_typed_as_numpy_typed_them(
    values: list[float | None], typ: pa.DataType
) -> None:
    """A float extra column is Int64 or float64 as the numpy code decided, for nulls,
    NaN, ±inf, ±0, fractions and values at and beyond int64's range, in chunks."""
    try:
        col = pa.chunked_array([values[:7], values[7:]], typ)
    except (pa.ArrowInvalid, OverflowError):  # a float64 beyond float32
        return
    assert infer_column("gain", col) == _np_float_dtype(col)
    assert _fractional_prefix(col) == _np_fractional_prefix(col)
    assert _fractional_prefix(col, 3) == _np_fractional_prefix(col, 3)


def test_float16_columns_are_typed_as_numpy_typed_them() -> None:
    """Half floats (cast by Arrow, not numpy) are typed alike."""
    for values in ([1.0, 2.0, None], [1.5, None], [math.nan, None], [math.inf, 1.0], []):
        arr = np.array([0.0 if v is None else v for v in values], np.float16)
        col = pa.array(arr, mask=np.array([v is None for v in values], bool), type=pa.float16())
        assert infer_column("gain", col) == _np_float_dtype(col)
        assert _fractional_prefix(col) == _np_fractional_prefix(col)


@pytest.mark.parametrize(
    ("value", "text", "number", "boolean"),
    [
        (np.float32(1.5), "1.5", 1.5, None),
        (np.float64(2.0), "2", 2.0, None),
        (np.int16(7), "7", 7, None),
        (np.uint8(1), "1", 1, True),
        (np.bool_(True), "True", 1, True),
        (np.array([1, 2]), "[1, 2]", None, None),
        ("0.5", "0.5", 0.5, None),
        (" 12 ", " 12 ", 12, None),
        ("n/a", "n/a", None, None),
        ("true", "true", None, True),
        (True, "True", 1, True),
        (3, "3", 3, None),
        (1e20, "1e+20", 1e20, None),
        (math.inf, "inf", math.inf, None),
    ],
)
def test_per_value_rules_take_numpy_scalars_once_numpy_is_loaded(
    value: object, text: str, number: object, boolean: object
) -> None:
    """With numpy imported, its scalars and arrays convert as Python's numbers did;
    strings that parse and those that do not keep their rules (None: coerced)."""
    assert _text(value) == text
    n = _number(value)
    assert (None if n is not None and not isinstance(n, int | float) else n) == number
    b = _as_bool(value)
    assert (b if isinstance(b, bool) else None) == boolean


def test_nulls_are_python_and_numpy_nans() -> None:
    """None, float NaN and numpy's NaNs are null; other values are not."""
    assert all(_is_null(v) for v in (None, math.nan, np.float32("nan"), np.float64("nan")))
    assert not any(_is_null(v) for v in (0.0, np.float32(1), "nan", np.int8(0)))
    assert infer_dtype("gain", [np.float32(1.0), None, np.int64(2)]) == "Int64"
    assert infer_dtype("gain", [np.bool_(True), False]) == "boolean"


_TEXTS = [
    None,
    "",
    " ",
    "0.5",
    " 12 ",
    "-3",
    "1e3",
    "1E-2",
    "inf",
    "-Infinity",
    "nan",
    "NaN",
    "0x10",
    "1_000",
    "١٢",
    "1.5.2",
    "n/a",
    "e1",
    "true",
    "12abc",
    "+7",
    ".5",
    "5.",
    "9223372036854775808",
    "1e400",
    "-0",
]


def test_strings_convert_alike_with_and_without_numpy() -> None:
    """Text cast to float64 and Int64 (strings that parse and those that do not) gives
    the same values, coerced positions and inferred type in a process without numpy."""
    import json

    def run(values: list[str | None]) -> list[object]:
        col = pa.array(values, pa.string())
        out: list[object] = []
        for dtype in ("float64", "Int64", "boolean"):
            got, bad = convert_column(col, dtype)
            out.append([[repr(v) for v in got.to_pylist()], bad])
        return [*out, infer_column("gain", col)]

    cases = [_TEXTS, [t for t in _TEXTS if t not in ("n/a", "e1", "true", "12abc", "1.5.2")]]
    code = (
        "import sys, json; sys.modules['numpy'] = None\n"
        "import pyarrow as pa\n"
        "from kymwatch.index.arrow_column import convert_column, infer_column\n"
        "def run(values):\n"
        "    col = pa.array(values, pa.string())\n"
        "    out = []\n"
        "    for dtype in ('float64', 'Int64', 'boolean'):\n"
        "        got, bad = convert_column(col, dtype)\n"
        "        out.append([[repr(v) for v in got.to_pylist()], bad])\n"
        "    return [*out, infer_column('gain', col)]\n"
        "print(json.dumps([run(v) for v in json.loads(sys.stdin.read())]), flush=True)\n"
        "import os; os._exit(0)  # see _EXIT\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == json.loads(json.dumps([run(v) for v in cases]))


def test_zarr_dtype_names_are_numpys() -> None:
    """A zarr typestring (any byte order, kind, size and unit) is named as
    ``str(numpy.dtype(...))`` names it (as written if numpy does not know it)."""
    wrong = {}
    for order, kind, size, unit in itertools.product(
        ["", "<", ">", "|", "="],
        "biufcmMUSVO",
        [0, 1, 2, 3, 4, 8, 16],
        ["", "[ns]", "[D]", "[generic]", "[2s]", "[Y]"],
    ):
        raw = f"{order}{kind}{size}{unit}"
        try:
            want = str(np.dtype(raw))
        except (TypeError, ValueError):
            want = raw
        if dtype_name(raw) != want:
            wrong[raw] = (dtype_name(raw), want)
    assert wrong == {}


def test_zarr_v3_and_structured_dtype_names_are_numpys() -> None:
    """Format-3 names and structured dtypes are named as numpy names them."""
    for raw in ["bool", "int8", "uint16", "float32", "complex128", "string", "r16"]:
        try:
            want = str(np.dtype(raw))
        except (TypeError, ValueError):
            want = raw
        assert dtype_name(raw) == want
    fields = [["a", "<u2"], ["b", "<f4", [2]]]
    assert dtype_name(fields) == str(np.dtype([tuple(f) for f in fields]))


def test_owners_are_numpys_searchsorted() -> None:
    """A row position is owned by the record whose rows hold it (records of no rows
    own none), as ``searchsorted(side="right") - 1`` said."""

    class _Rows:
        def __init__(self, n: int) -> None:
            self.num_rows = n

    group = [_Rows(n) for n in (2, 0, 3, 1, 0, 4)]
    positions = list(range(10))
    offsets = np.cumsum([0] + [r.num_rows for r in group])
    want = (np.searchsorted(offsets, positions, side="right") - 1).tolist()
    assert _owners(group, positions) == want  # type: ignore[arg-type]


def test_numpy_is_needed_only_by_dask_plugins_or_the_switch() -> None:
    """numpy is kept for ``KYMWATCH_NUMPY`` (not 0), Dask, or a configured plug-in;
    the plug-in group is the registry's."""
    assert memory._PLUGIN_GROUP == registry.ENTRY_POINT_GROUP
    assert memory.numpy_needed(None, dask=False, env={}) is None
    assert memory.numpy_needed(["kym_radon"], dask=False, env={"KYMWATCH_NUMPY": "0"}) is None
    assert memory.numpy_needed(None, dask=False, env={"KYMWATCH_NUMPY": "1"}) == (
        "KYMWATCH_NUMPY=1"
    )
    assert memory.numpy_needed(None, dask=True, env={}) == "dask"


def test_installed_plugins_keep_numpy_unless_indexers_name_only_builtins() -> None:
    """An installed plug-in keeps numpy when the indexers are chosen per store or name
    it; ``--indexers`` naming built-ins only keeps numpy out all the same."""
    site = Path(__file__).parent / "data" / "plugin" / "site"
    code = (
        "from kymwatch.daemon.memory import numpy_needed\n"
        "print(numpy_needed(None, dask=False, env={}))\n"
        "print(numpy_needed(['event_counts', 'kym_radon'], dask=False, env={}))\n"
        "print(numpy_needed(['kym_radon', 'velocity_events'], dask=False, env={}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "plug-in indexers: event_counts",
        "plug-in indexers: event_counts",
        "None",
    ]


def test_numpy_kept_out_fails_clearly_and_arrow_still_works() -> None:
    """Once kept out, ``import numpy`` (and pandas, which needs it) raises an
    ImportError naming ``KYMWATCH_NUMPY``, while pyarrow reads and writes parquet."""
    code = (
        "import io, sys\n"
        "from kymwatch.daemon import memory\n"
        "assert memory.keep_numpy_out(None, dask=False)\n"
        "import pyarrow as pa, pyarrow.parquet as pq\n"
        "b = io.BytesIO(); pq.write_table(pa.table({'a': [1.5, None]}), b); b.seek(0)\n"
        "assert pq.read_table(b).column('a').to_pylist() == [1.5, None]\n"
        "for name in ('numpy', 'numpy.core', 'pandas'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as e:\n"
        "        chain = [e, e.__cause__]  # pandas re-raises it as its own\n"
        "        assert any('KYMWATCH_NUMPY=1' in str(c) for c in chain), e\n"
        "    else:\n"
        "        raise SystemExit(name + ' imported')\n"
        "print(memory.settings()['numpy'], flush=True)\n"
        "import os; os._exit(0)  # see _EXIT\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kept out"


def test_numpy_stays_when_it_was_imported_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a process that already imported numpy (a notebook, this test run) the switch
    does nothing and says why."""
    monkeypatch.delenv(memory.NUMPY_ENV, raising=False)
    assert "numpy" in sys.modules
    saved = dict(memory._SETTINGS)
    try:
        assert memory.keep_numpy_out(None, dask=False) is False
        assert memory.settings()["numpy"] == "allowed (imported before kymwatch ran)"
        assert not any(isinstance(f, memory._NumpyRefused) for f in sys.meta_path)
    finally:
        memory._SETTINGS.clear()
        memory._SETTINGS.update(saved)
