"""Analysis parameters and ROIs of generation-2 records, and kymflow's ``params_hash``.

kymflow's later ``kym_dataset`` package stamps every row of ``kym_velocity_events``
and ``kym_radon`` with ``analysis_version`` and ``params_hash``, and compares them
with the run markers it writes into each record to tell stale records from fresh
ones. This module reproduces both values exactly, so a table kymwatch writes agrees
with kymflow's incremental mode:

- ``params_hash(obj)``: SHA-256 hex of ``obj`` serialised as JSON with sorted keys,
  separators ``(",", ":")``, ``ensure_ascii=False``, UTF-8.
- velocity events hash the params object (``{}`` when there is none), read from the
  first of ``velocity_events/params``, ``velocity_events_params``,
  ``velocity_events.params`` that holds a JSON object;
- radon hashes ``{"params": <params or {}>, "rois": <ROIs>}`` with the params read
  from ``radon/params``, ``radon_params``, ``radon.params`` and the ROIs from
  ``metadata.json`` (key ``rois``: its object items when it is a list, else ``[]``).

Each lookup reads ``<name>.json``, falling back to legacy ``<name>.json.gz``. A file
that exists but cannot be parsed raises ``ArtifactUnreadableError`` (the record's
rows are then kept, never re-stamped with a wrong hash).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kymwatch.store import ArtifactFormat, ZarrImageRecord

__all__ = [
    "METADATA_ARTIFACT",
    "RADON",
    "VELOCITY_EVENTS",
    "AnalysisParams",
    "current_params",
    "current_params_hash",
    "params_hash",
    "radon_params",
    "radon_params_hash",
    "velocity_events_params",
    "velocity_events_params_hash",
]

METADATA_ARTIFACT = "metadata"
"""``analysis/metadata.json``: kymflow's per-record metadata payload (ROIs under ``rois``)."""


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    """Where one generation-2 analysis keeps its parameters, and how kymflow names it.

    Attributes:
        indexer: kymwatch's indexer name (also the table name).
        kymflow_name: kymflow's indexer name (used in its run markers).
        analysis_version: The ``analysis_version`` stamped on every row.
        params_names: JSON artifacts holding the params, first found wins.
        uses_rois: Whether the ROIs of ``metadata.json`` are part of the hash.
        marker_name: The artifact kymflow writes its run marker to.
    """

    indexer: str
    kymflow_name: str
    analysis_version: str
    params_names: tuple[str, ...]
    uses_rois: bool
    marker_name: str

    @property
    def artifact_names(self) -> frozenset[str]:
        """Every artifact whose change alters the params hash."""
        names = set(self.params_names)
        if self.uses_rois:
            names.add(METADATA_ARTIFACT)
        return frozenset(names)


VELOCITY_EVENTS = AnalysisParams(
    indexer="kym_velocity_events",
    kymflow_name="velocity_events",
    analysis_version="kymflow.velocity_events@0.1",
    params_names=("velocity_events/params", "velocity_events_params", "velocity_events.params"),
    uses_rois=False,
    marker_name="velocity_events/summary",
)
RADON = AnalysisParams(
    indexer="kym_radon",
    kymflow_name="radon",
    analysis_version="kymflow.radon@0.1",
    params_names=("radon/params", "radon_params", "radon.params"),
    uses_rois=True,
    marker_name="radon_run",
)
_BY_INDEXER: Mapping[str, AnalysisParams] = {a.indexer: a for a in (VELOCITY_EVENTS, RADON)}


def params_hash(obj: Any) -> str:
    """kymflow's params hash: SHA-256 hex of canonical JSON (sorted keys, compact, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_ABSENT = object()
_JSON = (ArtifactFormat.JSON, ArtifactFormat.JSON_GZ)


def _sources(spec: AnalysisParams, rec: ZarrImageRecord) -> list[_Source | None]:
    """The files that decide ``spec``'s params object: the first params file holding a
    JSON object, and for an analysis with ROIs ``metadata.json``."""
    sources = [_first_source(rec, spec.params_names)]
    if spec.uses_rois:
        sources.append(_source(rec, METADATA_ARTIFACT))
    return sources


def velocity_events_params(rec: ZarrImageRecord) -> dict[str, Any]:
    """The velocity-events params object of ``rec`` (``{}`` when there is none).

    Raises:
        ArtifactUnreadableError: a params file exists but cannot be parsed.
    """
    obj: dict[str, Any] = _decide(rec, _sources(VELOCITY_EVENTS, rec))
    return obj


def velocity_events_params_hash(rec: ZarrImageRecord) -> str:
    """The ``params_hash`` kymflow gives ``rec``'s velocity-events rows."""
    return params_hash(velocity_events_params(rec))


def radon_params(rec: ZarrImageRecord) -> dict[str, Any]:
    """The object kymflow hashes for radon: ``{"params": ..., "rois": ...}``, the ROIs
    being the object items of ``metadata.json``'s ``rois`` (``[]`` without them).

    Raises:
        ArtifactUnreadableError: a params file or ``metadata.json`` cannot be parsed.
    """
    obj: dict[str, Any] = _decide(rec, _sources(RADON, rec))
    return obj


def radon_params_hash(rec: ZarrImageRecord) -> str:
    """The ``params_hash`` kymflow gives ``rec``'s radon rows (params and ROIs)."""
    return params_hash(radon_params(rec))


def current_params(indexer: str, rec: ZarrImageRecord) -> tuple[dict[str, Any], str]:
    """The params object and its hash for generation-2 indexer ``indexer`` on ``rec``.

    Args:
        indexer: ``"kym_velocity_events"`` or ``"kym_radon"``.
        rec: The record.

    Raises:
        KeyError: ``indexer`` is not a generation-2 indexer.
        ArtifactUnreadableError: a params or metadata file cannot be parsed.
    """
    obj: dict[str, Any] = _decide(rec, _sources(_BY_INDEXER[indexer], rec))
    return obj, params_hash(obj)


# The bytes of the files that decide a hash -> the hash, and a file's bytes -> whether
# it holds a JSON object: records of one store mostly share their params files, so
# their hash is computed once (both are pure functions of the bytes). Bounded: cleared
# when full, and files larger than _CACHE_BYTES are not kept (at most ~8 MiB held).
# Files that cannot be parsed are never kept (parsed, and raise, each time).
_CACHE_MAX = 256
_CACHE_BYTES = 16 << 10
_hashes: dict[tuple[object, ...], str] = {}
_objects: dict[tuple[ArtifactFormat, bytes], bool] = {}

_Found = tuple[str, ArtifactFormat]
_Source = tuple[str, _Found, bytes]
"""A JSON artifact read: its name, where it was found, its bytes."""


def _source(rec: ZarrImageRecord, name: str) -> _Source | None:
    """JSON artifact ``name`` read, None when there is no such file."""
    found = rec.find_artifact_file(name, _JSON)
    return None if found is None else (name, found, rec.read_artifact_bytes(name, found))


def _holds_object(rec: ZarrImageRecord, source: _Source) -> bool:
    name, found, raw = source
    key = (found[1], raw)
    known = _objects.get(key)
    if known is None:
        known = isinstance(rec.parse_json(name, found, raw), dict)
        if len(raw) <= _CACHE_BYTES:
            if len(_objects) >= _CACHE_MAX:
                _objects.clear()
            _objects[key] = known
    return known


def _first_source(rec: ZarrImageRecord, names: tuple[str, ...]) -> _Source | None:
    """The first of ``names`` that holds a JSON object (files that hold something else
    are skipped; one that cannot be parsed raises), None when none does."""
    for name in names:
        source = _source(rec, name)
        if source is not None and _holds_object(rec, source):
            return source
    return None


def current_params_hash(indexer: str, rec: ZarrImageRecord) -> str:
    """``current_params(indexer, rec)[1]``, the hash alone: the same files read, the
    same errors raised, the JSON parsed and hashed only for bytes not seen lately.

    Raises:
        KeyError: ``indexer`` is not a generation-2 indexer.
        ArtifactUnreadableError: a params or metadata file cannot be parsed.
    """
    sources = _sources(_BY_INDEXER[indexer], rec)
    key = (indexer, *(None if s is None else (s[1][1], s[2]) for s in sources))
    digest = _hashes.get(key)
    if digest is None:  # parsed here: a metadata file that cannot be parsed raises here
        digest = params_hash(_decide(rec, sources))
        if sum(len(src[2]) for src in sources if src is not None) <= _CACHE_BYTES:
            if len(_hashes) >= _CACHE_MAX:
                _hashes.clear()
            _hashes[key] = digest
    return digest


def _decide(rec: ZarrImageRecord, sources: list[_Source | None]) -> Any:
    """The object hashed for the params source (and, for radon, the metadata's)."""
    parsed = [_ABSENT if s is None else rec.parse_json(*s) for s in sources]
    obj = dict(parsed[0]) if isinstance(parsed[0], dict) else {}
    if len(parsed) == 1:
        return obj
    payload = parsed[1]
    rois = payload.get("rois", []) if isinstance(payload, dict) else []
    if not isinstance(rois, list):
        rois = []
    return {"params": obj, "rois": [dict(item) for item in rois if isinstance(item, dict)]}
