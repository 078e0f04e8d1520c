"""The schema policy's shortcuts decide as the full check would, on large columns."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from kymwatch.index.arrow_column import convert_column, infer_column
from kymwatch.index.arrow_schema import _joined_dtype, finish_table


def test_text_extra_column_is_typed_string_from_its_first_value() -> None:
    """An extra text column is typed string however many rows follow its first value,
    and numbers written as text are still typed as numbers."""
    detector = pa.chunked_array([[None] * 5 + ["threshold"] * 50_000])
    assert infer_column("detector", detector) == "string"
    assert infer_column("gain", pa.chunked_array([[None, "1.5", "2"]])) == "float64"
    assert infer_column("gain", pa.chunked_array([["1", "2", "x"]])) == "string"
    assert infer_column("gain", pa.chunked_array([[None, None]], pa.string())) == "float64"


def test_float_extra_column_is_decided_by_its_whole_length() -> None:
    """A float column whose first thousands of values are whole is Int64 only if every
    value is; one fraction or infinity far down makes it float64."""
    whole = [float(i) for i in range(5000)]
    assert infer_column("gain", pa.chunked_array([whole])) == "Int64"
    assert infer_column("gain", pa.chunked_array([[*whole, 2.5]])) == "float64"
    assert infer_column("gain", pa.chunked_array([[*whole, math.inf]])) == "float64"
    assert infer_column("gain", pa.chunked_array([[math.nan, 0.25, *whole]])) == "float64"
    assert infer_column("gain", pa.chunked_array([[math.nan] * 3], pa.float64())) == "float64"


def test_nan_far_down_a_float_column_becomes_null() -> None:
    """A NaN anywhere in a float64 column is stored as null, also after huge values
    whose sum overflows; a column without NaN is kept as it is."""
    values = pa.chunked_array([[1.5] * 3000, [2.0, math.nan]])
    out, bad = convert_column(values, "float64")
    assert bad == [] and out.null_count == 1 and out.to_pylist()[-1] is None
    big = pa.chunked_array([[1e308, 1e308, math.nan, 3.0]])
    assert convert_column(big, "float64")[0].to_pylist() == [1e308, 1e308, None, 3.0]
    clean = pa.chunked_array([[0.5] * 10])
    assert convert_column(clean, "float64")[0].null_count == 0


def test_extras_are_ordered_by_their_first_value_across_chunks() -> None:
    """Extra columns are ordered by the first row holding a value, found across chunks
    and nulls; an all-null extra goes last when kept."""
    table = pa.table(
        {
            "image_id": pa.chunked_array([["a", "b"], ["c", "d"]]),
            "late": pa.chunked_array([[None, None], [None, 1.5]], pa.float64()),
            "early": pa.chunked_array([[None, 2.5], [3.5, None]], pa.float64()),
            "empty": pa.chunked_array([[None, None], [None, None]], pa.float64()),
        }
    )
    out = finish_table(table, {"image_id": "string"}, 0, keep_null={"empty"})
    assert out.column_names == ["early", "late", "empty", "image_id"]


def _finished_events() -> pa.Table:
    """A generation-2 events table as a merge leaves it: declared columns, UUID ids,
    kymflow-style string event ids, extras typed (``t0_s`` whole: Int64)."""
    ids = ["0f8e0c1a-8e51-4d0b-9a57-3c1f5d3b0a11", "7c2d9b4e-1f6a-4e3b-8c5d-2a9e0f1b6c77"]
    raw = pa.table(
        {
            "event_id": pa.chunked_array([["e1", "e2"], ["e1", "e2"]]),
            "t_start_s": pa.chunked_array([[0.5, math.nan], [1.25, 2.0]]),
            "detector": pa.chunked_array([[None, "threshold"], ["threshold", None]]),
            "t0_s": pa.chunked_array([[1.0, 2.0], [None, 4.0]]),
            "image_id": pa.chunked_array([[ids[0]] * 2, [ids[1]] * 2]),
        }
    )
    return finish_table(raw, _DECLARED, 1)


_DECLARED = {"event_id": "string", "t_start_s": "float64", "image_id": "string"}


def test_a_typed_table_that_needs_nothing_is_returned_as_it_is() -> None:
    """Finishing an already finished table as typed (a merge's usual case) builds no
    new table and gives what the full typing pass gives."""
    table = _finished_events()
    assert table.column("t_start_s").null_count == 1  # the NaN became null once
    assert table.column_names == ["event_id", "t0_s", "detector", "t_start_s", "image_id"]
    assert table.schema.field("t0_s").type == pa.int64()
    assert finish_table(table, _DECLARED, 1, typed=True) is table
    assert finish_table(table, _DECLARED, 1).equals(table)


def test_a_typed_table_is_still_retyped_and_reordered_by_its_content() -> None:
    """As typed, an extra column whose content now calls for another dtype is converted
    (a fraction spliced in where whole numbers were) and the extras are reordered by
    their first value, exactly as the full pass does."""
    table = _finished_events()
    fraction = pa.chunked_array([[None, None], [None, 4.5]], pa.float64())
    spliced = table.set_column(table.column_names.index("t0_s"), "t0_s", fraction)
    typed = finish_table(spliced, _DECLARED, 1, typed=True)
    assert typed.equals(finish_table(spliced, _DECLARED, 1))
    assert typed.schema.field("t0_s").type == pa.float64()
    assert typed.column_names == ["event_id", "detector", "t0_s", "t_start_s", "image_id"]


_NUMERIC_TEXT = ["1", "2.5", "01", "1.50", "nan", "x", "-3", ""]
_PART = st.one_of(  # (Arrow type, values) of one table's column
    st.tuples(st.just(pa.int64()), st.lists(st.none() | st.integers(-(2**63), 2**63 - 1))),
    st.tuples(st.just(pa.uint64()), st.lists(st.none() | st.integers(0, 2**64 - 1))),
    st.tuples(
        st.just(pa.float64()),
        st.lists(st.none() | st.floats() | st.integers(-(2**70), 2**70).map(float)),
    ),
    st.tuples(st.just(pa.bool_()), st.lists(st.none() | st.booleans())),
    st.tuples(st.just(pa.string()), st.lists(st.none() | st.sampled_from(_NUMERIC_TEXT))),
    st.tuples(st.just(pa.null()), st.lists(st.none())),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_PART, min_size=2, max_size=4))
def test_a_column_over_several_tables_is_typed_as_all_its_values_together(
    parts: list[tuple[pa.DataType, list[object]]],
) -> None:
    """``unify`` types a column from each table's own verdict; that equals the policy's
    verdict over every value of every table, whatever mix of types the tables hold."""
    columns = [pa.chunked_array([pa.array(values, type)]) for type, values in parts]
    together = [v for c in columns for v in c.to_pylist()]
    assert _joined_dtype("score", columns) == infer_column("score", together)
