"""The indexer protocol, per-record outcomes and the typed-row helpers indexers share."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kymwatch.index.frames import conform_rows
from kymwatch.index.schema import empty_table
from kymwatch.store import ZarrImageRecord, validate_table_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DatasetIndexer",
    "OutcomeStatus",
    "RecordOutcome",
    "UpdateReport",
    "conform_rows",
    "empty_table",
    "ensure_image_id_column",
    "extras_position",
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
        columns: Declared table column → dtype (``string``, ``Int64``, ``float64``,
            ``boolean``), in table order.

    An indexer may also define ``extras_at: int``: then the artifact columns it does
    not declare are kept, inserted at that position among the declared ones and typed
    by their content (see :mod:`kymwatch.index.schema`). Without it they are dropped.
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
        """Columns every table of this indexer has, in order."""
        ...

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        """The typed rows of one record.

        Any exception it raises becomes that record's outcome (see ``KymDataset``);
        the documented ones give the precise outcome.

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


_KEEPS_OLD_ROWS = frozenset({OutcomeStatus.UNREADABLE, OutcomeStatus.INVALID})


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
        return self.status in _KEEPS_OLD_ROWS


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
    import pandas as pd

    out = df.drop(columns=[IMAGE_ID], errors="ignore")
    out.insert(0, IMAGE_ID, pd.Series([image_id] * len(out), index=out.index, dtype="string"))
    return out


def extras_position(ix: DatasetIndexer) -> int | None:
    """Where ``ix`` keeps extra artifact columns, or None if it drops them."""
    at = getattr(ix, "extras_at", None)
    return at if isinstance(at, int) else None
