"""Parquet encoder options of the tables kymwatch writes: which columns get a dictionary.

pyarrow dictionary-encodes every column by default: each value is hashed into a
dictionary, and only once that dictionary outgrows its page limit (1 MiB) does the
column fall back to plain encoding, after all the hashing. A column of measurements
(``t_start_s``, ``score``: floats that rarely repeat) or of unique ids (UUID event ids)
pays that price on every write for a larger file: on a 100,000-row events table with
such floats, the default encode took 2.5x the CPU of the same table with plain float
columns (71 ms against 28 ms) and wrote 25 % more bytes. Columns whose values repeat
(the per-record stamps ``image_id``/``analysis_version``/``params_hash``, ``kind``,
``roi_id``) are where a dictionary pays.

Float columns are always plain: even where their values repeat (the benchmark's
synthetic events), the dictionary cost more CPU than it saved in bytes written (10k
records: 20.7 ms against 19.3 ms for the whole 100k-row table). For text and integer
columns the choice is made from a sample of the column's values: a few blocks of
consecutive rows (rows are grouped by record, so a value repeated within each record
shows up as repeated), deterministic for a given table. Only the encoding of the
column chunks changes: the Parquet schema, the stored Arrow schema and the pandas
metadata, hence what any reader gets back, do not.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["dictionary_columns", "write_options"]

_BLOCK_ROWS = 256
_BLOCKS = 4
_MAX_DISTINCT_SHARE = 0.5
"""A column is dictionary-encoded when at most this share of its sampled values are
distinct."""

_BASE_OPTIONS: dict[str, object] = {"write_statistics": False}
"""Options of every table write. Column statistics are left out: nothing reads them
(kymflow reads whole tables) and on text columns they cost about a fifth of the
encode. Compression stays pyarrow's default (snappy)."""


def _sample(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``_BLOCKS`` blocks of ``_BLOCK_ROWS`` consecutive values spread over the column
    (the whole column when it is that short)."""
    n = len(column)
    if n <= _BLOCK_ROWS * _BLOCKS:
        return column
    step = (n - _BLOCK_ROWS) // (_BLOCKS - 1)
    blocks = [column.slice(k * step, _BLOCK_ROWS) for k in range(_BLOCKS)]
    return pa.chunked_array([c for b in blocks for c in b.chunks], column.type)


def _sampled(t: pa.DataType) -> bool:
    """Whether the dictionary of a column of type ``t`` is judged by sampling (floats
    never get one; other types keep pyarrow's default: a dictionary)."""
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns of ``table`` worth a dictionary: text and integer columns whose
    sampled values repeat (at most half of them distinct), and columns of types neither
    sampled nor floating. A text or integer column without values keeps its dictionary
    (it costs nothing)."""
    names: list[str] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_floating(field.type):
            continue
        if _sampled(field.type):
            sample = _sample(column)
            valid = len(sample) - sample.null_count
            if valid and pc.count_distinct(sample).as_py() > valid * _MAX_DISTINCT_SHARE:
                continue
        names.append(field.name)
    return names


def write_options(table: pa.Table) -> dict[str, object]:
    """The keyword arguments of ``pyarrow.parquet.write_table`` for ``table``."""
    return {**_BASE_OPTIONS, "use_dictionary": dictionary_columns(table)}
