"""Store layer: the kymflow Zarr dataset layout, records, artifacts and tables."""

from typing import TYPE_CHECKING

from kymwatch._lazy import lazy_exports
from kymwatch.store.atomic import atomic_write, atomic_write_bytes, remove_stale_temporaries
from kymwatch.store.discover import ROOT_DEPTH, RootScan, existing_root, scan_root
from kymwatch.store.layout import (
    ANALYSIS_DIR,
    IMAGES_DIR,
    INDEX_DIR,
    TABLES_DIR,
    ArtifactFormat,
    ArtifactRef,
    PathKind,
    StorePath,
    artifact_file_name,
    artifact_from_path,
    is_temporary_name,
    is_valid_image_id,
    parse_store_path,
    split_artifact_file,
    validate_image_id,
    validate_table_name,
)
from kymwatch.store.root import (
    check_not_inside_dataset,
    detect_zarr_format,
    enclosing_dataset,
    existing_store,
    store_is_whole,
    utc_now_iso,
)
from kymwatch.store.scan import (
    UNKNOWN_CTIME,
    Fingerprint,
    Listing,
    RecordFiles,
    fs_stamp,
    is_record_folder,
    iter_record_folders,
    scan_dataset,
    scan_record,
    scan_records_settled,
    scan_stamp,
    walk_artifacts,
)

if TYPE_CHECKING:  # imported on first use: they pull in pandas, pyarrow, zarr
    from kymwatch.store.create import init_store
    from kymwatch.store.dataset import Mode, ZarrDataset
    from kymwatch.store.engine import SortedTable
    from kymwatch.store.record import ZarrImageRecord
    from kymwatch.store.tables import (
        read_table_arrow,
        read_table_file,
        start_table_writes,
        sync_table_folders,
        table_fingerprint,
        write_table_arrow,
        write_table_file,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "init_store": "create",
        "Mode": "dataset",
        "ZarrDataset": "dataset",
        "SortedTable": "engine",
        "ZarrImageRecord": "record",
        "read_table_arrow": "tables",
        "read_table_file": "tables",
        "table_fingerprint": "tables",
        "write_table_arrow": "tables",
        "write_table_file": "tables",
        "start_table_writes": "tables",
        "sync_table_folders": "tables",
    },
)

__all__ = [
    "ANALYSIS_DIR",
    "IMAGES_DIR",
    "INDEX_DIR",
    "ROOT_DEPTH",
    "TABLES_DIR",
    "UNKNOWN_CTIME",
    "ArtifactFormat",
    "ArtifactRef",
    "Fingerprint",
    "Listing",
    "Mode",
    "PathKind",
    "RecordFiles",
    "RootScan",
    "SortedTable",
    "StorePath",
    "ZarrDataset",
    "ZarrImageRecord",
    "artifact_file_name",
    "artifact_from_path",
    "atomic_write",
    "atomic_write_bytes",
    "check_not_inside_dataset",
    "detect_zarr_format",
    "enclosing_dataset",
    "existing_root",
    "existing_store",
    "fs_stamp",
    "init_store",
    "is_record_folder",
    "is_temporary_name",
    "is_valid_image_id",
    "iter_record_folders",
    "parse_store_path",
    "read_table_arrow",
    "read_table_file",
    "remove_stale_temporaries",
    "scan_dataset",
    "scan_record",
    "scan_records_settled",
    "scan_root",
    "scan_stamp",
    "split_artifact_file",
    "start_table_writes",
    "store_is_whole",
    "sync_table_folders",
    "table_fingerprint",
    "utc_now_iso",
    "validate_image_id",
    "validate_table_name",
    "walk_artifacts",
    "write_table_arrow",
    "write_table_file",
]
