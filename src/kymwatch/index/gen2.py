"""The generation-2 indexers of kymflow's later ``kym_dataset`` package.

``kym_velocity_events`` and ``kym_radon``: the artifact's rows, its extra columns kept,
each row stamped with the record's ``image_id``, kymflow's ``analysis_version`` and
the ``params_hash`` of the parameters (and, for radon, the ROIs of ``metadata.json``)
the record has now (see :mod:`kymwatch.index.params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from kymwatch.index.arrow_schema import RawRows
from kymwatch.index.indexers import _TableIndexer
from kymwatch.index.params import RADON, VELOCITY_EVENTS, AnalysisParams, current_params_hash
from kymwatch.store import ArtifactFormat, ZarrImageRecord

__all__ = ["KymRadonIndexer", "KymVelocityEventsIndexer"]

_P, _C = ArtifactFormat.PARQUET, ArtifactFormat.CSV_GZ
_STAMPS: Mapping[str, str] = {
    "image_id": "string",
    "analysis_version": "string",
    "params_hash": "string",
}


class _Gen2Indexer(_TableIndexer):
    """Shared parts: params-aware artifact names and the provenance stamps."""

    analysis: ClassVar[AnalysisParams]
    extras_at: ClassVar[int]

    @property
    def artifact_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.lookups) | self.analysis.artifact_names

    @property
    def analysis_version(self) -> str:
        """kymflow's version string stamped on every row."""
        return self.analysis.analysis_version

    @property
    def indexer_label(self) -> str:
        """The name ``value_coerced`` lines carry (kymflow's analysis name)."""
        return self.analysis.indexer

    def read_raw(self, rec: ZarrImageRecord) -> RawRows:
        name, fmt, found = self._find(rec)
        path = str(found)
        table = rec.load_arrow(name, (fmt,), found=(found, fmt))
        digest = current_params_hash(self.analysis.indexer, rec)
        constants = {"analysis_version": self.analysis_version, "params_hash": digest}
        return RawRows(rec.image_id, name, path, table, table.num_rows, constants)


class KymVelocityEventsIndexer(_Gen2Indexer):
    """``kym_velocity_events`` ← ``velocity_events/events`` or ``velocity_events``
    (parquet first, then csv.gz; first found wins). Columns: ``roi_id, event_id,
    t_start_s, t_end_s, peak_t_s, peak_value, score``, the artifact's other columns,
    then ``image_id, analysis_version, params_hash``."""

    name = "kym_velocity_events"
    table_name = "kym_velocity_events"
    schema_version = 1
    analysis = VELOCITY_EVENTS
    columns: ClassVar[Mapping[str, str]] = {
        "roi_id": "Int64",
        "event_id": "string",
        "t_start_s": "float64",
        "t_end_s": "float64",
        "peak_t_s": "float64",
        "peak_value": "float64",
        "score": "float64",
        **_STAMPS,
    }
    extras_at = 7
    lookups = (
        ("velocity_events/events", (_P,)),
        ("velocity_events", (_P,)),
        ("velocity_events/events", (_C,)),
        ("velocity_events", (_C,)),
    )


class KymRadonIndexer(_Gen2Indexer):
    """``kym_radon`` ← ``radon/results``, ``radon_report`` or ``radon`` parquet, then
    ``radon/results`` or ``radon`` csv.gz (first found wins). Columns: ``roi_id`` (null
    when the artifact has none), the artifact's own columns, then ``image_id,
    analysis_version, params_hash``; the hash covers the params and the ROIs."""

    name = "kym_radon"
    table_name = "kym_radon"
    schema_version = 1
    analysis = RADON
    columns: ClassVar[Mapping[str, str]] = {"roi_id": "Int64", **_STAMPS}
    extras_at = 1
    lookups = (
        ("radon/results", (_P,)),
        ("radon_report", (_P,)),
        ("radon", (_P,)),
        ("radon/results", (_C,)),
        ("radon", (_C,)),
    )
