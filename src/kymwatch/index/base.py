"""The indexer protocol, per-record outcomes and the typed-row helpers indexers share."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kymwatch.errors import ArtifactInvalidError
from kymwatch.store import ZarrImageRecord, validate_table_name

__all__ = [
    "DatasetIndexer",
    "OutcomeStatus",
    "RecordOutcome",
    "UpdateReport",
    "conform_rows",
    "empty_table",
    "ensure_image_id_column",
    "normalize_table_name",
]

IMAGE_ID = "image_id"


@runtime_checkable
class DatasetIndexer(Protocol):
    """Derives the rows of one dataset table from each record's artifacts.

    Attributes:
        name: Stable identifier of the indexer (used in logs and state).
        table_name: The table it owns (``tables/<table_name>.parquet``).
        schema_version: Bump when the rows it produces change meaning; a daemon
            rebuilds the table when the version it indexed with differs.
        artifact_names: The artifact names it reads; a change to any file of these
            names (any format) re-runs this indexer for that record.
        columns: Table column → pandas dtype, ``image_id`` first.
    """

    @property
    def name(self) -> str: ...
    @property
    def table_name(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def artifact_names(self) -> frozenset[str]: ...
    @property
    def columns(self) -> Mapping[str, str]: ...

    def required_columns(self) -> list[str]:
        """Columns every table of this indexer has, in order (``image_id`` first)."""
        ...

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        """The typed rows of one record.

        Raises:
            ArtifactNotFoundError: the record has none of the artifacts read.
            ArtifactUnreadableError: an artifact file cannot be parsed.
            ArtifactInvalidError: an artifact parsed but does not fit the schema.
        """
        ...


class OutcomeStatus(enum.StrEnum):
    """What happened to one record in one indexer; the value is the log event name."""

    INDEXED = "record_indexed"
    MISSING = "artifact_missing"
    UNREADABLE = "artifact_unreadable"
    INVALID = "artifact_invalid"
    REMOVED = "record_removed"


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """The result of indexing one record with one indexer.

    Attributes:
        image_id: The record.
        indexer: The indexer's name.
        status: What happened.
        rows: Rows the table now holds for the record (kept rows for unreadable/invalid).
        keys: For MISSING, the artifact files looked for.
        path: The artifact file read (or that failed).
        error: For UNREADABLE/INVALID, the reason.
    """

    image_id: str
    indexer: str
    status: OutcomeStatus
    rows: int = 0
    keys: tuple[str, ...] = ()
    path: str | None = None
    error: str | None = None

    @property
    def keeps_old_rows(self) -> bool:
        """True when the table keeps the rows it already had for this record."""
        return self.status in (OutcomeStatus.UNREADABLE, OutcomeStatus.INVALID)


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """What one ``update_images``/``rebuild`` call did to one table."""

    indexer: str
    table_name: str
    outcomes: tuple[RecordOutcome, ...]
    table_rows: int
    rows_written: int
    table_written: bool
    duration_ms: float

    def count(self, status: OutcomeStatus) -> int:
        """How many records ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status is status)


def normalize_table_name(name: str) -> str:
    """Lower-case ``name`` and turn runs of other characters into ``_`` (``"Radon Report"``
    → ``"radon_report"``); raises InvalidNameError if nothing usable is left."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")
    return validate_table_name(slug)


def ensure_image_id_column(df: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """A copy of ``df`` whose first column ``image_id`` holds ``image_id`` on every row."""
    out = df.drop(columns=[IMAGE_ID], errors="ignore")
    out.insert(0, IMAGE_ID, pd.Series([image_id] * len(out), index=out.index, dtype="string"))
    return out


def empty_table(columns: Mapping[str, str]) -> pd.DataFrame:
    """A table with no rows and the given typed columns."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in columns.items()})


ARROW_TYPES: Mapping[str, pa.DataType] = {
    "string": pa.string(),
    "Int64": pa.int64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
}
"""Column dtypes an indexer may declare, and the Arrow type each is cast through."""

_PANDAS_TYPES = {
    pa.string(): pd.StringDtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

RowSource: TypeAlias = "pd.DataFrame | pa.Table | Mapping[str, Sequence[Any]]"


def conform_rows(
    rows: RowSource,
    columns: Mapping[str, str],
    *,
    image_id: str,
    key: str,
    path: str,
    must_have: Sequence[str] = (),
    num_rows: int | None = None,
) -> pd.DataFrame:
    """Cast artifact rows to the table schema: declared columns in order, typed.

    The work is done in Arrow (one pandas conversion per record). Columns the
    artifact lacks become nulls (unless listed in ``must_have``); columns the
    schema does not declare are dropped; ``image_id`` is set to the record's id.

    Args:
        rows: A DataFrame, an Arrow table, or column name → values (then give
            ``num_rows``).
        columns: Column → dtype (``string``, ``Int64``, ``float64``, ``boolean``).
        image_id, key, path: The record and artifact, for error messages.
        must_have: Columns the artifact must provide.
        num_rows: Row count for a mapping source.

    Raises:
        ArtifactInvalidError: a ``must_have`` column is absent or a value cannot be cast.
    """
    if isinstance(rows, pa.Table):
        names, n = set(rows.column_names), rows.num_rows
    elif isinstance(rows, pd.DataFrame):
        names, n = set(rows.columns), len(rows)
    else:
        names, n = set(rows), int(num_rows or 0)
    absent = [c for c in must_have if c not in names]
    if absent:
        raise ArtifactInvalidError(image_id, key, path, f"missing column(s) {absent}")
    arrays = []
    for col, dtype in columns.items():
        target = ARROW_TYPES[dtype]
        if col == IMAGE_ID:
            arrays.append(pa.array([image_id] * n, target))
        elif col not in names:
            arrays.append(pa.nulls(n, target))
        else:
            try:
                arrays.append(_cast(_column(rows, col), target))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
                reason = f"column {col!r} cannot be read as {dtype}: {e}"
                raise ArtifactInvalidError(image_id, key, path, reason) from e
    table = pa.Table.from_arrays(arrays, names=list(columns))
    df: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return df


def _column(rows: RowSource, name: str) -> pa.Array | pa.ChunkedArray:
    if isinstance(rows, pa.Table):
        return rows.column(name)
    if isinstance(rows, pd.DataFrame):
        return pa.array(rows[name], from_pandas=True)
    values: Sequence[Any] = rows[name]
    return pa.array(list(values), from_pandas=True)


def _cast(values: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    source = values.type
    if pa.types.is_null(source) or source == target:
        return values.cast(target)
    textual = (
        pa.types.is_string(source)
        or pa.types.is_large_string(source)
        or pa.types.is_integer(source)
        or pa.types.is_floating(source)
        or pa.types.is_boolean(source)
        or pa.types.is_dictionary(source)
    )
    if pa.types.is_string(target) and not textual:
        raise TypeError(f"{source} values are not text")
    return pc.cast(values, target, safe=True)
