"""A kymflow dataset: a Zarr directory store of records plus dataset tables."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from kymwatch.errors import (
    NotAStoreError,
    ReadOnlyStoreError,
    RecordNotFoundError,
    TableNotFoundError,
)
from kymwatch.store.engine import SortedTable
from kymwatch.store.layout import IMAGES_DIR, INDEX_DIR, TABLES_DIR
from kymwatch.store.record import ZarrImageRecord
from kymwatch.store.root import detect_zarr_format, not_a_store_error, utc_now_iso
from kymwatch.store.scan import iter_record_folders
from kymwatch.store.tables import (
    read_table_arrow,
    read_table_file,
    table_lock,
    table_path,
    write_table_arrow,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Mode", "ZarrDataset", "detect_zarr_format", "utc_now_iso"]

Mode = Literal["r", "a", "w"]


def _open_group(path: Path, mode: str, zarr_format: int | None = None) -> Any:
    import zarr

    with warnings.catch_warnings():
        # zarr 3 warns about tables/ and analysis/: they are not zarr nodes.
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        warnings.filterwarnings("ignore", message=".*Object at .* is not recognized.*")
        return zarr.open_group(str(path), mode=mode, zarr_format=zarr_format)  # type: ignore[arg-type]


class ZarrDataset:
    """A kymflow Zarr dataset.

    Args:
        path: The store folder.
        mode: ``"r"`` read-only (writes raise PermissionError), ``"a"`` open or create,
            ``"w"`` create anew (an existing kymflow dataset at ``path`` is removed).
        zarr_format: Format of a store this call creates (2, kymflow-compatible, by default).

    Raises:
        StoreNotFoundError: ``mode="r"`` and the path does not exist.
        NotAStoreError: the path exists but is not a Zarr group (and is not an empty folder
            we may create one in).
    """

    def __init__(self, path: str | Path, mode: Mode = "a", *, zarr_format: int = 2) -> None:
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', not {mode!r}")
        self.path = Path(path).absolute()
        self.images_dir: str = os.path.join(self.path, IMAGES_DIR)
        """``images/`` as a string (for the per-record hot paths)."""
        self.mode: Mode = mode
        found = detect_zarr_format(self.path) if self.path.is_dir() else None
        if mode == "w" and found is not None:
            shutil.rmtree(self.path)
            found = None
        if found is None:
            if mode == "r" or (self.path.exists() and not self.path.is_dir()):
                raise self._not_a_store()
            if self.path.is_dir() and any(self.path.iterdir()):
                raise NotAStoreError(f"{self.path} is not empty and not a kymflow Zarr dataset")
            self.path.mkdir(parents=True, exist_ok=True)
            group = _open_group(self.path, "a", zarr_format)
            group.require_group(IMAGES_DIR)
            found = zarr_format
        self.zarr_format: int = found

    def _not_a_store(self) -> Exception:
        return not_a_store_error(self.path)

    def __repr__(self) -> str:
        return f"ZarrDataset({str(self.path)!r}, mode={self.mode!r})"

    @property
    def read_only(self) -> bool:
        """True for ``mode="r"``."""
        return self.mode == "r"

    def check_writable(self) -> None:
        """Raise ReadOnlyStoreError if this dataset was opened read-only."""
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.path} is open read-only (mode='r')")

    @property
    def images_path(self) -> Path:
        """``images/``."""
        return self.path / IMAGES_DIR

    @property
    def tables_path(self) -> Path:
        """``tables/``."""
        return self.path / TABLES_DIR

    @property
    def index_path(self) -> Path:
        """``index/``: kymwatch's state, status and logs."""
        return self.path / INDEX_DIR

    # -- records --------------------------------------------------------------------------
    def list_image_ids(self) -> list[str]:
        """Sorted ids of every record folder under ``images/`` (symbolic links are skipped,
        as the daemon's scan skips them: they may lead out of the store)."""
        return sorted(image_id for image_id, _ in iter_record_folders(self.path))

    def iter_records(self) -> Iterator[ZarrImageRecord]:
        """Every record, in image-id order."""
        for image_id in self.list_image_ids():
            yield ZarrImageRecord(self, image_id)

    def record(self, image_id: str) -> ZarrImageRecord:
        """The record ``image_id`` (RecordNotFoundError if it does not exist)."""
        rec = ZarrImageRecord(self, image_id)
        if not rec.exists():
            raise RecordNotFoundError(f"no record {image_id!r} in {self.path}")
        return rec

    def add_image(
        self,
        arr: np.ndarray[Any, Any],
        axes: Sequence[str] | None = None,
        chunks: tuple[int, ...] | None = None,
        *,
        image_id: str | None = None,
    ) -> ZarrImageRecord:
        """Create a record holding pixel array ``arr``; the id is a new uuid4 by default."""
        import numpy as np  # here: the daemon never adds images and runs without numpy

        self.check_writable()
        arr = np.asarray(arr)
        image_id = image_id or uuid.uuid4().hex
        rec = ZarrImageRecord(self, image_id)
        now = utc_now_iso()
        axes = list(axes) if axes is not None else [f"dim_{i}" for i in range(arr.ndim)]
        if len(axes) != arr.ndim:
            raise ValueError(f"axes has {len(axes)} names for a {arr.ndim}-d array")
        root = _open_group(self.path, "a", self.zarr_format)
        group = root.require_group(IMAGES_DIR).create_group(image_id)
        group.attrs.update({"axes": axes, "created_utc": now, "updated_utc": now})
        group.create_array("data", data=arr, chunks=chunks or "auto")
        return rec

    def delete_image(self, image_id: str) -> None:
        """Remove record ``image_id`` and all its artifacts."""
        self.check_writable()
        shutil.rmtree(self.record(image_id).path)

    # -- tables ---------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        """The file of table ``name``."""
        return table_path(self.path, name)

    def table_lock(self, timeout: float = -1) -> Any:
        """Hold the store's inter-process table lock (a context manager, re-entrant per thread)."""
        return table_lock(self.path, timeout)

    def list_table_names(self) -> list[str]:
        """Names of the tables present under ``tables/``."""
        try:
            return sorted(p.stem for p in self.tables_path.glob("*.parquet") if p.is_file())
        except FileNotFoundError:
            return []

    def load_table(self, name: str) -> pd.DataFrame:
        """Read table ``name`` (TableNotFoundError if it does not exist)."""
        try:
            return read_table_file(self.table_path(name))
        except FileNotFoundError as e:
            raise TableNotFoundError(f"no table {name!r} in {self.path}") from e

    def save_table(self, name: str, df: pd.DataFrame) -> None:
        """Replace table ``name`` atomically, under the store lock (written as given)."""
        self.check_writable()
        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        with self.table_lock():
            write_table_arrow(self.table_path(name), table, within=self.path)

    def replace_rows_for_image_id(
        self, name: str, image_id: str, rows: pd.DataFrame, image_id_col: str = "image_id"
    ) -> pd.DataFrame:
        """Replace the rows of one record in table ``name`` (read-modify-write under lock).

        The table engine's splice (:mod:`kymwatch.store.engine`): the table is kept
        sorted by ``image_id_col`` (a table that is not is sorted once, stably), the
        record's rows are replaced in place. Columns the rows add are appended (null
        elsewhere). Returns the table as written. A missing table is created from
        ``rows``.
        """
        self.check_writable()
        rows = rows.reset_index(drop=True).assign(**{image_id_col: image_id})
        new = pa.Table.from_pandas(rows, preserve_index=False)
        new = new.cast(
            new.schema.set(
                new.schema.get_field_index(image_id_col), pa.field(image_id_col, pa.string())
            )
        )
        with self.table_lock():
            path = self.table_path(name)
            try:
                current = read_table_arrow(path)
            except FileNotFoundError:
                table = new
            else:
                st, _ = SortedTable.adopt(current, image_id_col)
                st, _ = st.splice({image_id: new if new.num_rows else None})
                table = st.table
            write_table_arrow(path, table, within=self.path)
        df: pd.DataFrame = table.to_pandas()
        return df
