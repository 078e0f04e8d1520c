"""Which generation-2 records were analysed with other parameters than they have now.

kymflow's ``kym_dataset`` computes this for its incremental mode
(``KymDataset.get_staleness``) but shows it nowhere; kymwatch reports it
(``kymwatch stale``, ``kymwatch status``) with kymflow's reason names and rules,
and writes nothing: no run markers (a watcher that writes into the records it
watches triggers itself), no tables.

Per record and generation-2 indexer, three things are compared:

- the **current** ``params_hash`` and ``analysis_version`` (the params artifacts,
  for radon also the ROIs of ``metadata.json``; see :mod:`kymwatch.index.params`);
- the **run marker** kymflow wrote when it last ran the analysis:
  ``analysis/velocity_events/summary.json`` (a legacy summary with ``n_events``
  counts as a marker), else ``analysis/velocity_events_run.json``; for radon
  ``analysis/radon_run.json``. A marker that does not validate is no marker;
- the record's **rows** in ``tables/<indexer>.parquet`` and their stamps.

:func:`judge` is the pure decision, a line-by-line port of kymflow's rules.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kymwatch.errors import ArtifactNotFoundError, ArtifactUnreadableError
from kymwatch.index.gen2 import KymRadonIndexer, KymVelocityEventsIndexer
from kymwatch.index.params import RADON, VELOCITY_EVENTS, AnalysisParams, current_params_hash
from kymwatch.store import SortedTable, ZarrDataset, ZarrImageRecord, is_record_folder

__all__ = [
    "GEN2_ANALYSES",
    "RUN_MARKER_VERSION",
    "Staleness",
    "StalenessReason",
    "dataset_staleness",
    "judge",
    "load_marker",
    "stale_counts",
    "validate_marker",
]

RUN_MARKER_VERSION = "1"
GEN2_ANALYSES: Mapping[str, AnalysisParams] = {a.indexer: a for a in (VELOCITY_EVENTS, RADON)}
_RESULTS = {ix.analysis.indexer: ix for ix in (KymVelocityEventsIndexer, KymRadonIndexer)}

_MARKER_FIELDS: Mapping[str, type] = {
    "marker_version": str,
    "indexer_name": str,
    "params_hash": str,
    "analysis_version": str,
    "n_rows": int,
    "ran_utc_epoch_ns": int,
    "status": str,
}


class StalenessReason(enum.StrEnum):
    """kymflow's reason codes (``kym_dataset.staleness.StalenessReason``)."""

    FRESH_ROWS = "FRESH_ROWS"
    FRESH_ZERO_ROWS = "FRESH_ZERO_ROWS"
    STALE_MISSING_MARKER = "STALE_MISSING_MARKER"
    STALE_PARAMS_CHANGED = "STALE_PARAMS_CHANGED"
    STALE_VERSION_CHANGED = "STALE_VERSION_CHANGED"
    STALE_MARKER_TABLE_MISMATCH = "STALE_MARKER_TABLE_MISMATCH"
    STALE_UNKNOWN = "STALE_UNKNOWN"


@dataclass(frozen=True, slots=True)
class Staleness:
    """The staleness of one record for one generation-2 indexer.

    Attributes:
        image_id: The record.
        indexer: kymwatch's indexer (and table) name, e.g. ``kym_velocity_events``.
        reason: kymflow's reason code.
        is_stale: True unless the reason is ``FRESH_*``.
        has_run_marker: A valid run marker was found.
        table_rows_present: The table holds rows of the record.
        marker_n_rows: The marker's ``n_rows`` (None without a marker).
        params_hash_matches: The table's or the marker's hash equals the current one.
        analysis_version_matches: Same for the analysis version.
        analysed: Anything says the analysis ran or has output: a marker, table
            rows, or a results artifact (``kymwatch stale`` lists only these
            unless asked for all).
        error: Why the current params could not be read (then ``STALE_UNKNOWN``),
            why a marker file was unreadable, or that the table was unreadable.
    """

    image_id: str
    indexer: str
    reason: StalenessReason
    is_stale: bool
    has_run_marker: bool
    table_rows_present: bool
    marker_n_rows: int | None
    params_hash_matches: bool
    analysis_version_matches: bool
    analysed: bool = True
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``reason`` as its string)."""
        return {
            "image_id": self.image_id,
            "indexer": self.indexer,
            "reason": str(self.reason),
            "is_stale": self.is_stale,
            "has_run_marker": self.has_run_marker,
            "table_rows_present": self.table_rows_present,
            "marker_n_rows": self.marker_n_rows,
            "params_hash_matches": self.params_hash_matches,
            "analysis_version_matches": self.analysis_version_matches,
            "analysed": self.analysed,
            "error": self.error,
        }


# -- the decision -------------------------------------------------------------------------
def judge(
    *,
    image_id: str,
    indexer: str,
    params_hash: str,
    analysis_version: str,
    marker: Mapping[str, Any] | None,
    table_stamps: Sequence[tuple[object, object]],
    has_table_stamps: bool = True,
) -> Staleness:
    """kymflow's staleness rules (``KymDataset.get_staleness``), without any I/O.

    Args:
        image_id: The record.
        indexer: The indexer (table) name.
        params_hash: The record's current params hash.
        analysis_version: The indexer's current analysis version.
        marker: The record's valid run marker (see :func:`validate_marker`), or None.
        table_stamps: ``(params_hash, analysis_version)`` of each of the record's
            rows in the table (empty: no rows).
        has_table_stamps: The table has both stamp columns (else its rows match
            nothing, as in kymflow).
    """
    rows_present = len(table_stamps) > 0
    marker_rows = int(marker["n_rows"]) if marker is not None else None
    marker_params_match = (
        marker is not None
        and str(marker["params_hash"]) == params_hash
        and str(marker["analysis_version"]) == analysis_version
    )
    table_params_match = table_version_match = False
    if rows_present and has_table_stamps:
        table_params_match = all(str(p) == params_hash for p, _ in table_stamps)
        table_version_match = all(str(v) == analysis_version for _, v in table_stamps)
    marker_params_only = marker is not None and str(marker.get("params_hash", "")) == params_hash
    marker_version_only = (
        marker is not None and str(marker.get("analysis_version", "")) == analysis_version
    )
    params_ok = table_params_match or marker_params_only
    version_ok = table_version_match or marker_version_only

    reason, stale = StalenessReason.STALE_UNKNOWN, True
    if rows_present:
        if marker_params_match and marker_rows == 0:
            reason = StalenessReason.STALE_MARKER_TABLE_MISMATCH
        elif table_params_match and table_version_match:
            reason, stale = StalenessReason.FRESH_ROWS, False
        elif not version_ok:
            reason = StalenessReason.STALE_VERSION_CHANGED
        elif not params_ok:
            reason = StalenessReason.STALE_PARAMS_CHANGED
    elif marker_params_match and marker_rows == 0:
        reason, stale = StalenessReason.FRESH_ZERO_ROWS, False
    elif marker is None:
        reason = StalenessReason.STALE_MISSING_MARKER
    elif marker_rows is not None and marker_rows > 0:
        reason = StalenessReason.STALE_MARKER_TABLE_MISMATCH
    elif not version_ok:
        reason = StalenessReason.STALE_VERSION_CHANGED
    elif not params_ok:
        reason = StalenessReason.STALE_PARAMS_CHANGED
    return Staleness(
        image_id=image_id,
        indexer=indexer,
        reason=reason,
        is_stale=stale,
        has_run_marker=marker is not None,
        table_rows_present=rows_present,
        marker_n_rows=marker_rows,
        params_hash_matches=params_ok,
        analysis_version_matches=version_ok,
    )


def validate_marker(payload: Any) -> dict[str, Any] | None:
    """The marker if it has kymflow's shape (``run_marker.validate_run_marker``), else None."""
    if not isinstance(payload, dict):
        return None
    for key, typ in _MARKER_FIELDS.items():
        if not isinstance(payload.get(key), typ):
            return None
    if payload["marker_version"] != RUN_MARKER_VERSION or payload["n_rows"] < 0:
        return None
    if payload["ran_utc_epoch_ns"] <= 0 or not payload["indexer_name"].strip():
        return None
    return dict(payload)


def _from_legacy_summary(payload: dict[str, Any], kymflow_name: str) -> Any:
    """kymflow's conversion of an old velocity summary (``n_events``) into a marker."""
    if "marker_version" in payload or "n_events" not in payload:
        return payload
    try:
        return {
            "marker_version": RUN_MARKER_VERSION,
            "indexer_name": kymflow_name,
            "params_hash": str(payload.get("params_hash", "")),
            "analysis_version": str(payload.get("analysis_version", "")),
            "n_rows": int(payload.get("n_events", 0)),
            "ran_utc_epoch_ns": int(payload.get("computed_utc_epoch_ns", 1)),
            "status": str(payload.get("status", "ok")),
        }
    except (TypeError, ValueError):
        return None


def _marker_names(spec: AnalysisParams) -> tuple[str, ...]:
    standard = f"{spec.kymflow_name}_run"
    return (spec.marker_name, standard) if spec.marker_name != standard else (standard,)


def load_marker(rec: ZarrImageRecord, spec: AnalysisParams) -> tuple[dict[str, Any] | None, str]:
    """The record's valid run marker for ``spec`` (first valid one wins), and the
    errors of marker files that exist but cannot be parsed ("" when none)."""
    errors: list[str] = []
    for name in _marker_names(spec):
        try:
            payload = rec.load_json(name)
        except ArtifactNotFoundError:
            continue
        except ArtifactUnreadableError as e:
            errors.append(str(e))
            continue
        if name == spec.marker_name and isinstance(payload, dict):
            payload = _from_legacy_summary(payload, spec.kymflow_name)
        marker = validate_marker(payload)
        if marker is not None:
            return marker, "; ".join(errors)
    return None, "; ".join(errors)


# -- a whole store ------------------------------------------------------------------------
_STAMP_COLUMNS = ("image_id", "params_hash", "analysis_version")


Stamps = dict[str, list[tuple[object, object]]]
"""A table's (params_hash, analysis_version) of each row, per image_id."""

CachedTable = Callable[[str], SortedTable | None]
"""A daemon's in-memory copy of a table by name, or None when it has none that is
current (see :meth:`~kymwatch.index.tableaccess.TableAccess.current_cached`)."""


def _table_stamps(
    root: Path,
    table: str,
    only: Collection[str] | None = None,
    cached: CachedTable | None = None,
) -> tuple[Stamps, bool, str | None]:
    """Row stamps per image_id of ``tables/<table>.parquet`` (empty if absent): of the
    records ``only`` when given (the stale counter judges a batch's few records; the
    stamp columns alone are read, and only those records' rows become Python objects).

    With ``cached`` and ``only``, the rows come from the cached copy when it has one
    (a daemon's: a few records' rows are sliced out; a 100,000-row table's stamp
    columns were read from disk in ~6 ms for each batch judged)."""
    st = cached(table) if cached is not None and only is not None else None
    if st is not None and only is not None:
        return _cached_stamps(st, only), True, None
    path = Path(root) / "tables" / f"{table}.parquet"
    try:
        stored = _read_stamp_columns(path)
    except FileNotFoundError:
        return {}, True, None
    except Exception as e:  # any damaged table: judge as if it had no rows, and say so
        return {}, True, f"{path}: {e}"
    if "image_id" not in stored.column_names:
        return {}, True, None
    if only is not None:
        ids_column = stored.column("image_id")
        if not _is_text_dictionary(ids_column.type):
            ids_column = ids_column.cast(pa.string())
        stored = stored.filter(pc.is_in(ids_column, value_set=pa.array(list(only), pa.string())))
    has = {"params_hash", "analysis_version"} <= set(stored.column_names)
    out: dict[str, list[tuple[object, object]]] = {}
    ids = stored.column("image_id").to_pylist()
    nulls: list[object] = [None] * stored.num_rows
    params = stored.column("params_hash").to_pylist() if has else nulls
    versions = stored.column("analysis_version").to_pylist() if has else nulls
    for image_id, p, v in zip(ids, params, versions, strict=True):
        out.setdefault(str(image_id), []).append((p, v))
    return out, has, None


def _cached_stamps(st: SortedTable, only: Collection[str]) -> Stamps:
    """The stamps of the records ``only`` in a sorted table (a column it lacks: None)."""
    names = st.table.column_names
    out: Stamps = {}
    for image_id in only:
        start, count = st.range_of(image_id)
        if not count:
            continue
        rows = st.table.slice(start, count)
        params, versions = (
            rows.column(c).to_pylist() if c in names else [None] * count
            for c in ("params_hash", "analysis_version")
        )
        out[image_id] = list(zip(params, versions, strict=True))
    return out


def _read_stamp_columns(path: Path) -> pa.Table:
    """The stamp columns of a table file, text read dictionary-encoded: the stale
    counter reads them once per slice of records, and a 100k-row table's three stamp
    columns as plain strings were 13 MiB of Arrow memory (~1.5 MiB so).

    Read through one handle, as :func:`~kymwatch.store.read_table_arrow` does (an
    atomic replace between two opens would mix two versions)."""
    import pyarrow.parquet as pq

    with pa.OSFile(str(path)) as f:
        schema = pq.ParquetFile(f).schema_arrow
        have = [c for c in _STAMP_COLUMNS if c in schema.names]
        text = [c for c in have if pa.types.is_string(schema.field(c).type)]
        f.seek(0)
        return pq.ParquetFile(f, read_dictionary=text).read(columns=have, use_threads=False)


def _is_text_dictionary(t: pa.DataType) -> bool:
    return bool(pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))


def _has_results(rec: ZarrImageRecord, indexer: str) -> bool:
    """The record has a results artifact the indexer reads."""
    lookups = _RESULTS[indexer].lookups
    return any(rec.find_artifact(name, formats) is not None for name, formats in lookups)


def dataset_staleness(
    root: Path,
    indexers: Iterable[str] | None = None,
    image_ids: Iterable[str] | None = None,
    *,
    cached: CachedTable | None = None,
) -> list[Staleness]:
    """Staleness of every record for each generation-2 indexer, by image id.

    Args:
        root: The store folder.
        indexers: Generation-2 indexer names (default: both).
        image_ids: Only these records (default: every record); ids of records the
            store does not hold are left out (each is looked up: ``images/`` is not
            listed, ~14 ms at 10k records).
        cached: A daemon's current in-memory tables, read instead of the table files
            when ``image_ids`` is given.

    Raises:
        KeyError: a name is not a generation-2 indexer.
    """
    names = list(indexers) if indexers is not None else list(GEN2_ANALYSES)
    specs = [GEN2_ANALYSES[n] for n in names]
    ds = ZarrDataset(root, "r")
    if image_ids is None:
        ids = ds.list_image_ids()
    else:
        ids = sorted(i for i in set(image_ids) if is_record_folder(ds.path, i))
    out: list[Staleness] = []
    for spec in specs:
        only = ids if image_ids is not None else None
        stamps, has_stamps, table_error = _table_stamps(ds.path, spec.indexer, only, cached)
        for image_id in ids:
            s = _record(ds, image_id, spec, stamps.get(image_id, []), has_stamps)
            if table_error and s.error is None:
                s = _with(s, error=f"table unreadable, judged without rows: {table_error}")
            out.append(s)
    return sorted(out, key=lambda s: (s.indexer, s.image_id))


def _record(
    ds: ZarrDataset,
    image_id: str,
    spec: AnalysisParams,
    stamps: list[tuple[object, object]],
    has_stamps: bool,
) -> Staleness:
    rec = ZarrImageRecord(ds, image_id)
    marker, marker_error = load_marker(rec, spec)
    try:
        digest = current_params_hash(spec.indexer, rec)
    except (ArtifactUnreadableError, OSError) as e:
        return Staleness(
            image_id=image_id,
            indexer=spec.indexer,
            reason=StalenessReason.STALE_UNKNOWN,
            is_stale=True,
            has_run_marker=marker is not None,
            table_rows_present=bool(stamps),
            marker_n_rows=int(marker["n_rows"]) if marker else None,
            params_hash_matches=False,
            analysis_version_matches=False,
            error=str(e),
        )
    result = judge(
        image_id=image_id,
        indexer=spec.indexer,
        params_hash=digest,
        analysis_version=spec.analysis_version,
        marker=marker,
        table_stamps=stamps,
        has_table_stamps=has_stamps,
    )
    analysed = result.has_run_marker or result.table_rows_present or _has_results(rec, spec.indexer)
    return _with(result, analysed=analysed, error=marker_error or None)


def _with(s: Staleness, **changes: Any) -> Staleness:
    return Staleness(**{**s.to_dict(), "reason": s.reason, **changes})


def stale_counts(results: Iterable[Staleness], *, analysed_only: bool = True) -> dict[str, int]:
    """Number of stale records per indexer (only analysed ones by default)."""
    counts: dict[str, int] = {}
    for s in results:
        counts.setdefault(s.indexer, 0)
        if s.is_stale and (s.analysed or not analysed_only):
            counts[s.indexer] += 1
    return counts
