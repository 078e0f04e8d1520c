"""Parquet footers decoded and encoded generically, and files stitched from row groups."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import struct
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_tables import kymflow_events
from kymwatch.store.stitch import Piece, Source, StitchRefusedError, stitch
from kymwatch.store.thrift import BINARY, ThriftError, TStruct, decode_struct, encode_struct

CONFORMANCE = Path("/work/shared/conformance")


def _encode(table: pa.Table, **options: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)  # type: ignore[arg-type]
    return buf.getvalue()


def _footer(data: bytes) -> bytes:
    (n,) = struct.unpack("<I", data[-8:-4])
    return data[-8 - n : -8]


def _stitched(tmp_path: Path, table: pa.Table, cuts: list[int], **options: object) -> Path:
    """``table`` cut at ``cuts`` (row offsets), each piece encoded alone, stitched."""
    bounds = [0, *cuts, table.num_rows]
    sources = [
        Source.of(_encode(table.slice(a, b - a), **options)) for a, b in itertools.pairwise(bounds)
    ]
    path = tmp_path / f"stitched-{len(cuts)}.parquet"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        stitch([Piece(s, 0) for s in sources], fd)
    finally:
        os.close(fd)
    return path


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"write_statistics": False},
        {"use_dictionary": ["image_id", "kind"], "row_group_size": 7},
        {"compression": "zstd", "data_page_version": "2.0"},
    ],
)
def test_pyarrow_footer_round_trips_byte_for_byte(options: dict[str, object]) -> None:
    """A footer pyarrow wrote decodes and encodes back to the very same bytes."""
    footer = _footer(_encode(kymflow_events(40), **options))
    meta, used = decode_struct(footer)
    assert used == len(footer)
    assert encode_struct(meta) == footer


def test_kymflow_written_footer_round_trips_byte_for_byte() -> None:
    """A table file kymflow itself wrote (conformance kit) round-trips byte for byte."""
    paths = sorted(CONFORMANCE.glob("**/tables/*.parquet"))
    if not paths:
        pytest.skip("conformance kit not present")
    for path in paths:
        footer = _footer(path.read_bytes())
        assert encode_struct(decode_struct(footer)[0]) == footer


def test_unknown_fields_round_trip() -> None:
    """Fields no schema here knows of (high ids, long-form headers) round-trip unchanged."""
    s = TStruct({1: (BINARY, b"x"), 40: (BINARY, b"far"), 41: (BINARY, b"")})
    assert decode_struct(encode_struct(s))[0] == s


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_stitched_file_reads_back_as_the_table(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A table cut anywhere, its pieces encoded alone and stitched, reads back equal with
    pyarrow (whole, per row group, in batches) and with pandas (kymflow's dtypes)."""
    tmp_path = tmp_path_factory.mktemp("stitch")
    table = kymflow_events(data.draw(st.integers(2, 30)))
    n = table.num_rows
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5))))
    cuts = [c for c in cuts if 0 < c < n]
    path = _stitched(tmp_path, table, cuts)
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_rows == n
    assert pf.num_row_groups == len(cuts) + 1
    assert pq.read_table(path).equals(table)
    bounds = [0, *cuts, n]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        assert pf.metadata.row_group(i).num_rows == b - a
        assert pf.read_row_group(i).equals(table.slice(a, b - a))
    batches = pa.Table.from_batches(list(pf.iter_batches(batch_size=3)), schema=table.schema)
    assert batches.equals(table)
    df = pd.read_parquet(path)
    pd.testing.assert_frame_equal(df, table.to_pandas())
    assert str(df["event_id"].dtype) == "string" and str(df["roi_id"].dtype) == "Int64"


def test_row_group_statistics_follow_their_groups(tmp_path: Path) -> None:
    """Each stitched row group keeps the statistics its own encode computed."""
    table = kymflow_events(20)
    path = _stitched(tmp_path, table, [5, 17], write_statistics=True)
    md = pq.ParquetFile(path).metadata
    col = table.schema.get_field_index("image_id")
    for i, (a, b) in enumerate([(0, 5), (5, 17), (17, table.num_rows)]):
        stats = md.row_group(i).column(col).statistics
        ids = table.column("image_id").slice(a, b - a).to_pylist()
        assert (stats.min, stats.max, stats.num_values) == (min(ids), max(ids), b - a)


def test_groups_copied_from_a_file_keep_their_bytes(tmp_path: Path) -> None:
    """Row groups copied from an open file (reordered) keep their bytes, with shifted
    offsets that pyarrow follows."""
    table = kymflow_events(24)
    path = _stitched(tmp_path, table, [10, 20])
    old = path.read_bytes()
    fd_in = os.open(path, os.O_RDONLY)
    try:
        src = Source.of(fd_in)
        out = tmp_path / "copied.parquet"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            spans = stitch([Piece(src, 2), Piece(src, 0)], fd).spans
        finally:
            os.close(fd)
    finally:
        os.close(fd_in)
    new = out.read_bytes()
    for (at, n), k in zip(spans, (2, 0), strict=True):
        start, length = src.spans[k]
        assert n == length and new[at : at + n] == old[start : start + length]
    rows = [(20, table.num_rows - 20), (0, 10)]
    assert pq.read_table(out).equals(pa.concat_tables([table.slice(a, n) for a, n in rows]))


def test_page_index_is_refused() -> None:
    """A file with a page index (offsets outside its row groups) is refused."""
    with pytest.raises(StitchRefusedError, match="index"):
        Source.of(_encode(kymflow_events(10), write_page_index=True))


def test_different_schemas_are_refused(tmp_path: Path) -> None:
    """Pieces whose schemas (or pandas metadata) differ are refused, nothing stitched."""
    table = kymflow_events(10)
    a = Source.of(_encode(table))
    b = Source.of(_encode(table.replace_schema_metadata(None)))
    fd = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(StitchRefusedError, match="differ"):
            stitch([Piece(a, 0), Piece(b, 0)], fd)
    finally:
        os.close(fd)
    assert (tmp_path / "x").stat().st_size == 0


_DAMAGE = {
    "empty": lambda d: b"",
    "three bytes": lambda d: d[:3],
    "head only": lambda d: d[:12],
    "tail magic cut": lambda d: d[:-1],
    "footer cut": lambda d: d[:-20] + d[-8:],
    "footer length too big": lambda d: d[:-8] + struct.pack("<I", len(d)) + b"PAR1",
    "footer byte damaged": lambda d: d[:-9] + b"\xff" + d[-8:],
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_truncated_or_corrupt_files_are_refused(damage: str) -> None:
    """A truncated or damaged file is refused with StitchRefusedError, never another error."""
    with pytest.raises(StitchRefusedError):
        Source.of(_DAMAGE[damage](_encode(kymflow_events(10))))


def test_encrypted_footer_is_refused() -> None:
    """A footer carrying an encryption algorithm (field 8) is refused."""
    data = _encode(kymflow_events(4))
    footer = _footer(data)
    meta, _ = decode_struct(footer)
    meta.fields[8] = (BINARY, b"")  # any value: its presence alone is refused
    new = encode_struct(meta)
    body = data[: len(data) - 8 - len(footer)]
    with pytest.raises(StitchRefusedError, match="encrypted"):
        Source.of(body + new + struct.pack("<I", len(new)) + b"PAR1")


def test_groups_encoded_with_different_dictionaries_read_back(tmp_path: Path) -> None:
    """Groups whose columns were dictionary-encoded differently (the encoder's options
    are chosen per write) stitch into a file that reads back as the table."""
    table = kymflow_events(20)
    a = Source.of(_encode(table.slice(0, 15), use_dictionary=True))
    b = Source.of(_encode(table.slice(15), use_dictionary=False, write_statistics=False))
    c = Source.of(_encode(table.slice(0, 15), use_dictionary=["image_id"]))
    assert a.common == b.common == c.common  # the encodings are per column chunk only
    path = tmp_path / "mixed.parquet"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        stitch([Piece(c, 0), Piece(b, 0)], fd)
    finally:
        os.close(fd)
    assert pq.read_table(path).equals(table)
    pd.testing.assert_frame_equal(pd.read_parquet(path), table.to_pandas())


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300), keep=st.integers(0, 400))
def test_garbage_is_refused_never_crashes(junk: bytes, keep: int) -> None:
    """Random bytes, as a footer of their own or spliced into a real one, are decoded
    or refused with ThriftError / StitchRefusedError, never another exception."""
    real = _encode(kymflow_events(3))
    footer = _footer(real)
    for candidate in (junk, footer[:keep] + junk, junk + footer[keep:]):
        with contextlib.suppress(ThriftError):
            decode_struct(candidate)
        body = real[: len(real) - 8 - len(footer)]
        with contextlib.suppress(StitchRefusedError):
            Source.of(body + candidate + struct.pack("<I", len(candidate)) + b"PAR1")


def test_deeply_nested_lists_are_refused() -> None:
    """A footer of lists nested thousands deep is refused, not a RecursionError."""
    nested = bytes([0x19]) + bytes([0x19]) * 5000  # field 1: list of lists of lists ...
    with pytest.raises(ThriftError):
        decode_struct(nested)
