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

__all__ = [
    "DatasetIndexer",
    "KymDataset",
    "OutcomeStatus",
    "RadonReportIndexer",
    "RecordOutcome",
    "UpdateReport",
    "VelocityEventsIndexer",
    "conform_rows",
    "default_indexers",
    "empty_table",
    "ensure_image_id_column",
    "log_outcome",
    "normalize_table_name",
]
