"""The generation-1 (seed) indexers: velocity events and the radon velocity report."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from kymwatch.errors import ArtifactInvalidError, ArtifactNotFoundError
from kymwatch.index.arrow_schema import RawRows, conform_batch
from kymwatch.index.base import DatasetIndexer, extras_position
from kymwatch.index.frames import to_frame
from kymwatch.store import ArtifactFormat, ZarrImageRecord, artifact_file_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RadonReportIndexer", "VelocityEventsIndexer", "default_indexers", "raw_reader"]

_PARQUET = (ArtifactFormat.PARQUET,)


@functools.lru_cache(maxsize=64)
def _looked_for(lookups: tuple[tuple[str, tuple[ArtifactFormat, ...]], ...]) -> tuple[str, ...]:
    """The file names an indexer looks for, in order (said when none is found)."""
    return tuple(artifact_file_name(n, f) for n, fs in lookups for f in fs)


class _TableIndexer:
    """Shared parts: column list and the ordered artifact lookup."""

    name: ClassVar[str]
    columns: ClassVar[Mapping[str, str]]
    #: (artifact name, formats) in the order they are tried; the first present wins.
    lookups: ClassVar[tuple[tuple[str, tuple[ArtifactFormat, ...]], ...]]

    @property
    def artifact_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.lookups)

    def required_columns(self) -> list[str]:
        return list(self.columns)

    @property
    def indexer_label(self) -> str:
        """The indexer name ``value_coerced`` lines carry."""
        return self.name

    def read_raw(self, rec: ZarrImageRecord) -> RawRows:
        """One record's rows as read, before conversion (see :mod:`arrow_schema`)."""
        name, fmt, found = self._find(rec)
        path = str(found)
        table = rec.load_arrow(name, (fmt,), found=(found, fmt))
        return RawRows(rec.image_id, name, path, table, table.num_rows)

    def extract_rows(self, rec: ZarrImageRecord) -> pd.DataFrame:
        """The typed rows of one record (a batch converts many at once: ``KymDataset``)."""
        raw = self.read_raw(rec)
        raw.check()
        ix: Any = self
        [rows] = conform_batch([raw], self.columns, extras_position(ix), indexer=self.indexer_label)
        return to_frame(rows.table())

    def _find(self, rec: ZarrImageRecord) -> tuple[str, ArtifactFormat, str]:
        found = rec.find_first(self.lookups)
        if found is not None:
            return found[0], found[2], found[1]
        raise ArtifactNotFoundError(rec.image_id, self.lookups[0][0], _looked_for(self.lookups))


class VelocityEventsIndexer(_TableIndexer):
    """Generation 1: ``velocity_events`` table ← ``analysis/velocity_events.parquet``.

    ``event_id`` is text, as kymflow writes it (``"e1"``, UUIDs); an artifact with
    integer ids gives ``"1"``, ``"2"``. An artifact with no columns means no events.
    """

    name = "velocity_events"
    table_name = "velocity_events"
    schema_version = 2
    columns: ClassVar[Mapping[str, str]] = {
        "image_id": "string",
        "roi_id": "Int64",
        "event_id": "string",
        "t0_s": "float64",
        "t1_s": "float64",
        "kind": "string",
        "score": "float64",
    }
    lookups = (("velocity_events", _PARQUET),)


class RadonReportIndexer(_TableIndexer):
    """Generation 1: ``radon_report`` table ← ``radon_report.parquet``, else
    ``radon_report.json`` (or legacy ``.json.gz``): an object is one row, a list of
    objects is rows (anything else is ``artifact_invalid``). Legacy keys ``vel_mean,
    vel_median, vel_n_valid, note`` are read as ``mean_velocity, median_velocity,
    n_valid, notes`` where the new key is absent. ``n_valid`` is a float column:
    kymflow keeps 12.5."""

    name = "radon_report"
    table_name = "radon_report"
    schema_version = 2
    columns: ClassVar[Mapping[str, str]] = {
        "image_id": "string",
        "roi_id": "Int64",
        "mean_velocity": "float64",
        "median_velocity": "float64",
        "n_valid": "float64",
        "notes": "string",
    }
    legacy_keys: ClassVar[Mapping[str, str]] = {
        "vel_mean": "mean_velocity",
        "vel_median": "median_velocity",
        "vel_n_valid": "n_valid",
        "note": "notes",
    }
    lookups = (
        (
            "radon_report",
            (ArtifactFormat.PARQUET, ArtifactFormat.JSON, ArtifactFormat.JSON_GZ),
        ),
    )

    def read_raw(self, rec: ZarrImageRecord) -> RawRows:
        name, fmt, found = self._find(rec)
        path = str(found)
        image_id = rec.image_id
        if fmt is ArtifactFormat.PARQUET:
            table = rec.load_arrow(name, (fmt,), found=(found, fmt))
            present = set(table.column_names)
            # A legacy column is read only where its new name is absent.
            shadowed = [o for o, n in self.legacy_keys.items() if o in present and n in present]
            table = table.drop_columns(shadowed)
            renames = self.legacy_keys
            table = table.rename_columns([renames.get(c, c) for c in table.column_names])
            return RawRows(image_id, name, path, table, table.num_rows)
        records = self._records_from_json(
            rec.load_json(name, found=(found, fmt)), image_id, name, path
        )
        legacy = {new: old for old, new in self.legacy_keys.items()}
        # Per row: a key wins over its legacy name, which is read where the key is absent.
        source = {
            col: [r[col] if col in r else r.get(legacy.get(col, col)) for r in records]
            for col in self.columns
            if col != "image_id"
        }
        return RawRows(image_id, name, path, source, len(records))

    @staticmethod
    def _records_from_json(obj: Any, image_id: str, key: str, path: str) -> list[dict[str, Any]]:
        if isinstance(obj, dict):
            obj = [obj]
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            kind = type(obj).__name__
            raise ArtifactInvalidError(
                image_id, key, path, f"expected a JSON object or a list of objects, got {kind}"
            )
        return obj


def default_indexers() -> list[DatasetIndexer]:
    """The generation-1 indexers (the seed's): what a library ``KymDataset`` runs when
    none are named."""
    return [VelocityEventsIndexer(), RadonReportIndexer()]


def raw_reader(ix: DatasetIndexer) -> Callable[[ZarrImageRecord], RawRows] | None:
    """``ix.read_raw`` when ``ix`` is a built-in indexer whose ``extract_rows`` is not
    overridden (a subclass that overrides it is called through it), else None."""
    if isinstance(ix, _TableIndexer) and type(ix).extract_rows is _TableIndexer.extract_rows:
        return ix.read_raw
    return None
