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
from kymwatch.index.gen2 import KymRadonIndexer, KymVelocityEventsIndexer
from kymwatch.index.indexers import RadonReportIndexer, VelocityEventsIndexer, default_indexers
from kymwatch.index.kymdataset import KymDataset, log_outcome
from kymwatch.index.manifest import ManifestIndexer, ManifestUpdate
from kymwatch.index.manifest_doc import build_manifest, load_manifest
from kymwatch.index.params import params_hash
from kymwatch.index.partition import PartitionPolicy
from kymwatch.index.registry import (
    ENTRY_POINT_GROUP,
    GENERATION_1,
    GENERATION_2,
    UNDECIDED,
    Selection,
    available_indexers,
    decide_from_artifacts,
    make_indexers,
    record_artifact_names,
    rows_files,
    select_indexers,
    widen_selection,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GENERATION_1",
    "GENERATION_2",
    "UNDECIDED",
    "DatasetIndexer",
    "KymDataset",
    "KymRadonIndexer",
    "KymVelocityEventsIndexer",
    "ManifestIndexer",
    "ManifestUpdate",
    "OutcomeStatus",
    "PartitionPolicy",
    "RadonReportIndexer",
    "RecordOutcome",
    "Selection",
    "UpdateReport",
    "VelocityEventsIndexer",
    "available_indexers",
    "build_manifest",
    "conform_rows",
    "decide_from_artifacts",
    "default_indexers",
    "empty_table",
    "ensure_image_id_column",
    "load_manifest",
    "log_outcome",
    "make_indexers",
    "normalize_table_name",
    "params_hash",
    "record_artifact_names",
    "rows_files",
    "select_indexers",
    "widen_selection",
]
