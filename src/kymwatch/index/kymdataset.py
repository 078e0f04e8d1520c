"""``KymDataset``: a dataset plus its indexers, and the table updates they drive."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import structlog

from kymwatch.errors import (
    ArtifactInvalidError,
    ArtifactNotFoundError,
    ArtifactUnreadableError,
    TableNotFoundError,
    TableUnreadableError,
)
from kymwatch.index.base import (
    IMAGE_ID,
    DatasetIndexer,
    OutcomeStatus,
    RecordOutcome,
    UpdateReport,
    extras_position,
)
from kymwatch.index.indexers import default_indexers
from kymwatch.index.schema import Coercions, empty_table, shape_table
from kymwatch.store import (
    Fingerprint,
    Mode,
    ZarrDataset,
    ZarrImageRecord,
    read_table_file,
    table_fingerprint,
    write_table_file,
)

__all__ = ["KymDataset", "log_outcome"]

log = structlog.get_logger(__name__)

IndexerRef = DatasetIndexer | str


def log_outcome(outcome: RecordOutcome) -> None:
    """Log one record outcome under its stable event name."""
    fields: dict[str, object] = {"image_id": outcome.image_id, "indexer": outcome.indexer}
    if outcome.status is OutcomeStatus.INDEXED:
        log.debug(outcome.status.value, rows=outcome.rows, **fields)
    elif outcome.status is OutcomeStatus.MISSING:
        log.info(outcome.status.value, looked_for=list(outcome.keys), **fields)
    elif outcome.status is OutcomeStatus.REMOVED:
        log.info(outcome.status.value, **fields)
    else:
        log.warning(
            outcome.status.value,
            path=outcome.path,
            error=outcome.error,
            kept_rows=outcome.rows,
            **fields,
        )


class KymDataset:
    """A kymflow dataset with its indexers and dataset-level tables.

    kymflow's API: :meth:`rebuild`, :meth:`update_image` and :meth:`update_images`
    return the table as a DataFrame; what happened to each record is in
    :attr:`last_report`. A daemon calls :meth:`update_images_report` and
    :meth:`rebuild_report`, which return the :class:`UpdateReport` itself.

    Tables are cached in memory and re-read only when the file changed on disk
    (another process wrote it). Each update reads the table at most once and writes
    it at most once, under the store's table lock. A table written by kymflow
    (pandas object columns, float ``n_valid``) is adopted: its columns are converted
    by the schema policy, never rejected.

    Args:
        dataset_path: The Zarr store folder.
        mode: ``"a"`` (default) or ``"r"``; see :class:`ZarrDataset`.
        indexers: The indexers to run (default: velocity events and radon report).
    """

    def __init__(
        self,
        dataset_path: str | Path,
        mode: Mode = "a",
        *,
        indexers: Sequence[DatasetIndexer] | None = None,
    ) -> None:
        self.store = ZarrDataset(dataset_path, mode)
        self.indexers: list[DatasetIndexer] = list(
            default_indexers() if indexers is None else indexers
        )
        self._tables: dict[str, pd.DataFrame] = {}
        self._stamps: dict[str, Fingerprint | None] = {}
        self._foreign: set[str] = set()  # tables read in another program's schema
        self.last_report: UpdateReport | None = None

    @property
    def path(self) -> Path:
        """The store folder."""
        return self.store.path

    def indexer(self, ref: IndexerRef) -> DatasetIndexer:
        """The indexer object for ``ref`` (an indexer, or its name or table name)."""
        if not isinstance(ref, str):
            return ref
        for ix in self.indexers:
            if ref in (ix.name, ix.table_name):
                return ix
        known = ", ".join(ix.name for ix in self.indexers)
        raise KeyError(f"no indexer named {ref!r} (known: {known})")

    def _indexer_for_table(self, name: str) -> DatasetIndexer | None:
        return next((ix for ix in self.indexers if ix.table_name == name), None)

    # -- tables ---------------------------------------------------------------------------
    def _read_current(self, name: str) -> pd.DataFrame:
        """The table as on disk now, from cache when the file did not change."""
        path = self.store.table_path(name)
        stamp = table_fingerprint(path)
        if name in self._tables and stamp == self._stamps.get(name):
            return self._tables[name]
        ix = self._indexer_for_table(name)
        if stamp is None:
            if ix is None:
                raise TableNotFoundError(f"no table {name!r} in {self.path}")
            df = empty_table(ix.columns)
        else:
            raw = read_table_file(path)
            df = raw
            self._foreign.discard(name)
            if ix is not None:
                coerced = Coercions()
                df = shape_table(raw, ix.columns, extras_position(ix), coerced)
                coerced.log(table=name, path=str(path))
                if not _same_frame(raw, df):
                    # e.g. kymflow's object columns: adopted, rewritten in our schema
                    # by the next update even when no row changes.
                    self._foreign.add(name)
        self._tables[name], self._stamps[name] = df, stamp
        return df

    def load_tables(self, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Load (or refresh) tables; default: every indexer's table and every table on disk."""
        if names is None:
            names = {ix.table_name for ix in self.indexers} | set(self.store.list_table_names())
        return {name: self._read_current(name) for name in sorted(names)}

    def get_table(self, name: str) -> pd.DataFrame:
        """Table ``name`` (empty with its schema if an indexer owns it but it is not built)."""
        return self._read_current(name)

    def save_table(self, name: str, df: pd.DataFrame | None = None) -> None:
        """Write table ``name`` atomically under the store lock, and cache it.

        Without ``df`` the cached table is written (kymflow's ``save_table(name)``;
        KeyError if it was never loaded).
        """
        self.store.check_writable()
        if df is None:
            if name not in self._tables:
                raise KeyError(f"table not loaded in cache: {name}")
            df = self._tables[name]
        with self.store.table_lock():
            self._write(name, df)

    def save_all_tables(self) -> None:
        """Write every cached table."""
        for name, df in list(self._tables.items()):
            self.save_table(name, df)

    def _write(self, name: str, df: pd.DataFrame) -> None:
        self._stamps[name] = write_table_file(self.store.table_path(name), df)
        self._tables[name] = df
        self._foreign.discard(name)

    # -- indexing -------------------------------------------------------------------------
    def extract(self, ref: IndexerRef, image_id: str) -> tuple[RecordOutcome, pd.DataFrame | None]:
        """Run one indexer on one record without touching the table.

        Returns the outcome and, for INDEXED, the rows (MISSING/REMOVED: no rows).
        """
        ix = self.indexer(ref)
        rec = ZarrImageRecord(self.store, image_id)
        if not rec.exists():
            return RecordOutcome(image_id, ix.name, OutcomeStatus.REMOVED), None
        failed: RecordOutcome | None = None
        try:
            rows = ix.extract_rows(rec)
        except ArtifactNotFoundError as e:
            failed = RecordOutcome(image_id, ix.name, OutcomeStatus.MISSING, keys=e.looked_for)
        except ArtifactUnreadableError as e:
            status = OutcomeStatus.UNREADABLE
            failed = RecordOutcome(image_id, ix.name, status, path=e.path, error=e.reason)
        except ArtifactInvalidError as e:
            status = OutcomeStatus.INVALID
            failed = RecordOutcome(image_id, ix.name, status, path=e.path, error=e.reason)
        except MemoryError:
            raise
        except Exception as e:  # any failure on one record is that record's outcome
            error = f"{type(e).__name__}: {str(e)[:500]}"
            failed = RecordOutcome(image_id, ix.name, OutcomeStatus.INVALID, error=error)
        if not rec.exists():  # removed while we read it (often the cause of the failure)
            return RecordOutcome(image_id, ix.name, OutcomeStatus.REMOVED), None
        if failed is not None:
            return failed, None
        try:
            rows = _typed(rows, ix)
        except MemoryError:
            raise
        except Exception as e:  # an indexer that returned something unusable
            error = f"rows cannot be typed: {type(e).__name__}: {str(e)[:500]}"
            return RecordOutcome(image_id, ix.name, OutcomeStatus.INVALID, error=error), None
        return RecordOutcome(image_id, ix.name, OutcomeStatus.INDEXED, rows=len(rows)), rows

    def update_images_report(
        self, ref: IndexerRef, image_ids: Iterable[str], *, log_outcomes: bool = True
    ) -> UpdateReport:
        """Re-index ``image_ids`` with one indexer: one table read, one table write.

        Indexed records get their new rows; missing artifacts and removed records
        lose their rows; unreadable or invalid artifacts keep the rows the table had.
        One bad record never stops the others: any exception while reading or
        converting a record becomes its outcome.

        Raises:
            TableUnreadableError: the table file exists but cannot be parsed.
        """
        ix = self.indexer(ref)
        ids = list(dict.fromkeys(image_ids))
        return self._apply(ix, ids, replace_all=False, log_outcomes=log_outcomes)

    def rebuild_report(
        self, ref: IndexerRef, image_ids: Iterable[str] | None = None, *, log_outcomes: bool = True
    ) -> UpdateReport:
        """Build the table from scratch from ``image_ids`` (default: every record).

        Records whose artifact is unreadable or invalid keep the rows the table had.
        A table file that cannot be parsed is logged (``table_unreadable``, with the
        reason) and then replaced.
        """
        ix = self.indexer(ref)
        ids = self.store.list_image_ids() if image_ids is None else list(dict.fromkeys(image_ids))
        return self._apply(ix, ids, replace_all=True, log_outcomes=log_outcomes)

    def update_images(
        self, ref: IndexerRef, image_ids: Iterable[str], *, log_outcomes: bool = True
    ) -> pd.DataFrame:
        """Re-index ``image_ids`` (see :meth:`update_images_report`); returns the table.

        The per-record outcomes are in :attr:`last_report`.
        """
        self.update_images_report(ref, image_ids, log_outcomes=log_outcomes)
        return self.get_table(self.indexer(ref).table_name)

    def update_image(self, ref: IndexerRef, image_id: str) -> pd.DataFrame:
        """Re-index one record; returns the whole table (outcome in :attr:`last_report`)."""
        return self.update_images(ref, [image_id])

    def rebuild(
        self, ref: IndexerRef, image_ids: Iterable[str] | None = None, *, log_outcomes: bool = True
    ) -> pd.DataFrame:
        """Rebuild the table from the artifacts (see :meth:`rebuild_report`); returns it.

        The per-record outcomes are in :attr:`last_report`.
        """
        self.rebuild_report(ref, image_ids, log_outcomes=log_outcomes)
        return self.get_table(self.indexer(ref).table_name)

    def _read_for_update(self, ix: DatasetIndexer, *, replace_all: bool) -> pd.DataFrame:
        """The current table; for a rebuild, an unparseable table file counts as empty."""
        try:
            return self._read_current(ix.table_name)
        except MemoryError:
            raise
        except Exception as e:  # any parse failure: the file is not a table we can read
            path = str(self.store.table_path(ix.table_name))
            if not replace_all:
                raise TableUnreadableError(f"table file {path} cannot be read: {e}") from e
            log.warning("table_unreadable", table=ix.table_name, path=path, error=str(e))
            return empty_table(ix.columns)

    def _apply(
        self, ix: DatasetIndexer, ids: list[str], *, replace_all: bool, log_outcomes: bool
    ) -> UpdateReport:
        self.store.check_writable()
        start = time.perf_counter()
        results = [self.extract(ix, image_id) for image_id in ids]
        with self.store.table_lock():
            current = self._read_for_update(ix, replace_all=replace_all)
            kept_ids = {o.image_id for o, _ in results if o.keeps_old_rows}
            if replace_all:
                kept = current[current[IMAGE_ID].isin(kept_ids)]
            else:
                replaced = {o.image_id for o, _ in results if not o.keeps_old_rows}
                kept = current[~current[IMAGE_ID].isin(replaced)]
            new_parts = [rows for _, rows in results if rows is not None and len(rows)]
            rows_written = sum(len(p) for p in new_parts)
            table = _merge(current, kept, new_parts, ix)
            # Rewrite only when the content differs: re-indexing unchanged records is a no-op.
            changed = (
                replace_all
                or self._stamps.get(ix.table_name) is None
                or ix.table_name in self._foreign
                or not _same_frame(table, current)
            )
            if changed:
                self._write(ix.table_name, table)
            else:
                table = current
        counts = table[IMAGE_ID].value_counts() if kept_ids else None
        outcomes = tuple(_with_kept_rows(o, counts) if o.keeps_old_rows else o for o, _ in results)
        if log_outcomes:
            for o in outcomes:
                log_outcome(o)
        duration_ms = round((time.perf_counter() - start) * 1000, 2)
        log.debug(
            "table_updated",
            table=ix.table_name,
            indexer=ix.name,
            records=len(ids),
            rows=len(table),
            written=changed,
            duration_ms=duration_ms,
        )
        report = UpdateReport(
            ix.name, ix.table_name, outcomes, len(table), rows_written, changed, duration_ms
        )
        self.last_report = report
        return report


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Same columns, dtypes and values (``DataFrame.equals`` ignores column names)."""
    return list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes) and a.equals(b)


def _typed(df: pd.DataFrame, ix: DatasetIndexer) -> pd.DataFrame:
    """``df`` shaped to the indexer's columns (declared, typed, extras where kept)."""
    return shape_table(df, ix.columns, extras_position(ix))


def _merge(
    current: pd.DataFrame, kept: pd.DataFrame, parts: list[pd.DataFrame], ix: DatasetIndexer
) -> pd.DataFrame:
    """Kept rows plus new rows, stably sorted by image_id: the canonical table order.

    Extra columns are typed from the merged rows alone, so the result does not depend
    on which records were re-indexed (equal to a rebuild). An extra column left with
    only nulls stays if an artifact read now has it, or if it held only nulls before
    (a kept record has it); it goes if the rows that held its values went.
    """
    frames = [f for f in (kept, *parts) if len(f)]
    if not frames:
        return empty_table(ix.columns)
    keep_null = {c for p in parts for c in p.columns}
    keep_null |= {c for c in kept.columns if c in current and not current[c].notna().any()}
    if len(frames) == 1:
        table = frames[0]
    else:
        with warnings.catch_warnings():
            # Frames whose extra columns differ: the dtype is re-derived below anyway.
            warnings.simplefilter("ignore", FutureWarning)
            table = pd.concat(frames, ignore_index=True)
    table = table.sort_values(IMAGE_ID, kind="stable", ignore_index=True)
    return shape_table(table, ix.columns, extras_position(ix), keep_null=keep_null)


def _with_kept_rows(o: RecordOutcome, counts: pd.Series | None) -> RecordOutcome:
    n = int(counts.get(o.image_id, 0)) if counts is not None else 0
    return RecordOutcome(o.image_id, o.indexer, o.status, n, o.keys, o.path, o.error)
