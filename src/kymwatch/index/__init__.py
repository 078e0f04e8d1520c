"""Index layer: indexers derive dataset tables from record artifacts via ``KymDataset``."""

from kymwatch.index.base import (
    DatasetIndexer,
    OutcomeStatus,
    RecordOutcome,
    UpdateReport,
    conform_rows,
    empty_table,
    ensure_image_id_column,
    normalize_table_name,
)
from kymwatch.index.indexers import RadonReportIndexer, VelocityEventsIndexer, default_indexers
from kymwatch.index.kymdataset import KymDataset, log_outcome
from kymwatch.index.manifest import ManifestIndexer, ManifestUpdate, build_manifest, load_manifest

__all__ = [
    "DatasetIndexer",
    "KymDataset",
    "ManifestIndexer",
    "ManifestUpdate",
    "OutcomeStatus",
    "RadonReportIndexer",
    "RecordOutcome",
    "UpdateReport",
    "VelocityEventsIndexer",
    "build_manifest",
    "conform_rows",
    "default_indexers",
    "empty_table",
    "ensure_image_id_column",
    "load_manifest",
    "log_outcome",
    "normalize_table_name",
]
