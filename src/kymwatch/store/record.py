"""One record of a dataset: ``images/<image_id>/`` and its analysis artifacts."""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from kymwatch.errors import ArtifactUnreadableError
from kymwatch.store.artifactio import parse_json_bytes, parse_table_bytes
from kymwatch.store.atomic import atomic_write, atomic_write_bytes
from kymwatch.store.layout import (
    ANALYSIS_ARRAYS_DIR,
    ANALYSIS_DIR,
    ArtifactFormat,
    split_artifact_file,
    validate_artifact_name,
    validate_image_id,
)
from kymwatch.store.lookup import ArtifactFiles, file_name
from kymwatch.store.scan import walk_artifacts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kymwatch.store.dataset import ZarrDataset

__all__ = ["ZarrImageRecord"]

_JSON_FORMATS = (ArtifactFormat.JSON, ArtifactFormat.JSON_GZ)


class ZarrImageRecord(ArtifactFiles):
    """A record group ``images/<image_id>/`` with its artifacts.

    Artifacts are plain files under ``analysis/``; every write is atomic. Reads raise
    :class:`ArtifactNotFoundError` when no file exists and
    :class:`ArtifactUnreadableError` when a file exists but cannot be parsed.

    With ``snapshot``, artifact look-ups are made as
    :class:`~kymwatch.store.lookup.ArtifactFiles` says (each folder checked once, files
    in folders found by opening them), and a table two indexers read is parsed once:
    for one pass of reads (the indexers' batches), not for an object kept while files
    change. ``listed`` (snapshot mode) gives folders as a scan just listed them
    (:func:`~kymwatch.store.scan_records_settled`'s ``listings``), which are then not
    listed again.
    """

    def __init__(
        self,
        dataset: ZarrDataset,
        image_id: str,
        *,
        snapshot: bool = False,
        listed: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.dataset = dataset
        self.image_id = validate_image_id(image_id)
        # Plain strings on the hot path (one record read per artifact change).
        self._dir = f"{dataset.images_dir}{os.sep}{image_id}"  # os.path.join's result
        self._analysis = f"{self._dir}{os.sep}{ANALYSIS_DIR}"
        self._init_lookups(snapshot, listed)
        # Tables read in this snapshot: two indexers reading one file parse it once.
        self._read_tables: dict[str, pa.Table] | None = {} if snapshot else None

    @functools.cached_property
    def path(self) -> Path:
        """The record folder ``images/<image_id>/``."""
        return Path(self._dir)

    @functools.cached_property
    def analysis_path(self) -> Path:
        """The record's ``analysis/`` folder."""
        return Path(self._analysis)

    def __repr__(self) -> str:
        return f"ZarrImageRecord({self.image_id!r})"

    # -- metadata -------------------------------------------------------------------------
    def exists(self) -> bool:
        """True while the record folder exists (a symbolic link to a folder is no record).

        Always looked up (a snapshot asks after a failed read: was the record removed
        meanwhile?); a snapshot keeps what it says of the record folder as that
        folder's symbolic-link check, if none was made yet (one ``lstat`` less)."""
        try:
            mode = os.lstat(self._dir).st_mode
        except OSError:
            return False
        if self._links is not None:
            self._links.setdefault(self._dir, stat.S_ISLNK(mode))
        return stat.S_ISDIR(mode)

    @property
    def attrs(self) -> dict[str, Any]:
        """The record group's attributes (``.zattrs`` or ``zarr.json``), {} if absent."""
        for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
            f = self.path / name
            if f.is_file():
                data = json.loads(f.read_bytes() or b"{}")
                return dict(data.get(key, {}) if key else data)
        return {}

    def load_array(self) -> np.ndarray[Any, Any]:
        """The pixel array ``data`` of this record."""
        import numpy as np  # here: the daemon never reads pixels and runs without numpy
        import zarr

        arr = zarr.open_array(str(self.path / "data"), mode="r")
        return np.asarray(arr[...])

    # -- artifact paths -------------------------------------------------------------------
    def artifact_path(self, name: str, fmt: ArtifactFormat) -> Path:
        """Where artifact ``name`` in format ``fmt`` lives (whether or not it exists)."""
        return self.analysis_path / file_name(name, fmt)

    def find_artifact(
        self, name: str, formats: Sequence[ArtifactFormat]
    ) -> tuple[Path, ArtifactFormat] | None:
        """The first existing file of ``name`` among ``formats`` (in order), or None.

        Raises:
            ArtifactUnreadableError: a folder on the way cannot be searched (permission
                denied): the artifact may well be there, so it is not "missing".
        """
        found = self.find_artifact_file(name, formats)
        return None if found is None else (Path(found[0]), found[1])

    def list_analysis_keys(self) -> list[str]:
        """Sorted artifact names present under ``analysis/`` (each once, any format)."""
        names = {
            split[0]
            for rel, _ in walk_artifacts(self.analysis_path)
            if (split := split_artifact_file(rel))
        }
        return sorted(names)

    def _require(self, name: str, formats: Sequence[ArtifactFormat]) -> tuple[Path, ArtifactFormat]:
        path, fmt = self._require_file(name, formats)
        return Path(path), fmt

    # -- writes ---------------------------------------------------------------------------
    def _before_write(self) -> None:
        self.dataset.check_writable()

    def save_json(self, name: str, obj: Any) -> Path:
        """Write artifact ``name`` as ``analysis/<name>.json`` (atomically)."""
        self._before_write()
        path = self.artifact_path(name, ArtifactFormat.JSON)
        atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())
        return path

    def save_df_parquet(self, name: str, df: pd.DataFrame) -> Path:
        """Write artifact ``name`` as ``analysis/<name>.parquet`` (atomically)."""
        self._before_write()
        path = self.artifact_path(name, ArtifactFormat.PARQUET)
        table = pa.Table.from_pandas(df, preserve_index=False)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return path

    def save_df_csv_gz(self, name: str, df: pd.DataFrame) -> Path:
        """Write artifact ``name`` as ``analysis/<name>.csv.gz`` (atomically)."""
        self._before_write()
        path = self.artifact_path(name, ArtifactFormat.CSV_GZ)
        data = gzip.compress(df.to_csv(index=False).encode(), mtime=0)
        atomic_write_bytes(path, data)
        return path

    def save_array_artifact(self, name: str, arr: np.ndarray[Any, Any]) -> Path:
        """Write an N-D array artifact to ``analysis_arrays/<name>/data`` (zarr format 2)."""
        import zarr

        self._before_write()
        path = self.path / ANALYSIS_ARRAYS_DIR / validate_artifact_name(name) / "data"
        if path.exists():
            shutil.rmtree(path)
        zarr.create_array(str(path), data=arr, zarr_format=self.dataset.zarr_format)  # type: ignore[arg-type]
        return path

    def delete_artifact(self, name: str) -> list[Path]:
        """Remove every file of artifact ``name`` (any format); returns what was removed."""
        self._before_write()
        removed = []
        for fmt in ArtifactFormat:
            p = self.artifact_path(name, fmt)
            if os.path.lexists(p):
                p.unlink()
                removed.append(p)
        return removed

    # -- reads ----------------------------------------------------------------------------
    def load_json(
        self, name: str, *, found: tuple[str | Path, ArtifactFormat] | None = None
    ) -> Any:
        """Read artifact ``name`` from ``.json``, falling back to legacy ``.json.gz``
        (``found``: the file :meth:`find_artifact` just found, not looked up again)."""
        path, fmt = found or self._require_file(name, _JSON_FORMATS)
        return self.parse_json(name, (path, fmt), self._read_bytes(name, path))

    def read_artifact_bytes(self, name: str, found: tuple[str | Path, ArtifactFormat]) -> bytes:
        """The bytes of the file :meth:`find_artifact_file` found for artifact ``name``
        (read as every artifact is: no symbolic link, only a regular file).

        Raises:
            ArtifactUnreadableError: the file cannot be opened or read.
        """
        return self._read_bytes(name, found[0])

    def parse_json(self, name: str, found: tuple[str | Path, ArtifactFormat], raw: bytes) -> Any:
        """Parse ``raw``, the bytes of JSON artifact ``name`` read from ``found`` (as
        :meth:`load_json` does).

        Raises:
            ArtifactUnreadableError: not JSON (or not gzip for ``.json.gz``).
            ArtifactInvalidError: JSON nested too deeply to parse.
        """
        return parse_json_bytes(self.image_id, name, found, raw)

    def load_df_parquet(self, name: str) -> pd.DataFrame:
        """Read artifact ``analysis/<name>.parquet``."""
        path, _ = self._require(name, (ArtifactFormat.PARQUET,))
        raw = self._read_bytes(name, path)
        try:
            df: pd.DataFrame = (
                pq.ParquetFile(pa.BufferReader(raw)).read(use_threads=False).to_pandas()
            )
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ArtifactUnreadableError(self.image_id, name, str(path), str(e)) from e
        return df

    def load_df_csv_gz(self, name: str) -> pd.DataFrame:
        """Read artifact ``analysis/<name>.csv.gz``."""
        path, _ = self._require(name, (ArtifactFormat.CSV_GZ,))
        raw = self._read_bytes(name, path)
        import pandas as pd

        try:
            return pd.read_csv(io.BytesIO(gzip.decompress(raw)))
        except (OSError, EOFError, ValueError, pd.errors.ParserError) as e:
            raise ArtifactUnreadableError(self.image_id, name, str(path), str(e)) from e

    def load_df(self, name: str, formats: Sequence[ArtifactFormat]) -> pd.DataFrame:
        """Read the first present tabular file of ``name`` among ``formats``."""
        _, fmt = self._require(name, formats)
        if fmt is ArtifactFormat.PARQUET:
            return self.load_df_parquet(name)
        if fmt is ArtifactFormat.CSV_GZ:
            return self.load_df_csv_gz(name)
        raise ValueError(f"{fmt} is not a tabular format")

    def load_arrow(
        self,
        name: str,
        formats: Sequence[ArtifactFormat],
        *,
        found: tuple[str | Path, ArtifactFormat] | None = None,
    ) -> pa.Table:
        """Read the first present tabular file (parquet or csv.gz) of ``name`` as Arrow.

        The fast path of the indexers: no pandas objects per record. ``found``: the
        file :meth:`find_artifact` just found (not looked up again).
        """
        path, fmt = found or self._require_file(name, formats)
        if fmt not in (ArtifactFormat.PARQUET, ArtifactFormat.CSV_GZ):
            raise ValueError(f"{fmt} is not a tabular format")
        cache = self._read_tables
        key = os.fspath(path)
        if cache is not None and key in cache:
            return cache[key]
        table = parse_table_bytes(self.image_id, name, (path, fmt), self._read_bytes(name, path))
        if cache is not None:
            cache[key] = table
        return table
