"""Which indexers exist (built in, or plug-ins) and which run on a given store.

Built in: the generation-1 indexers ``velocity_events`` and ``radon_report`` and the
generation-2 indexers ``kym_velocity_events`` and ``kym_radon``. Third-party indexers
are found through the entry-point group ``kymwatch.indexers``: each entry point names
a class (or any callable) that, called with no arguments, returns an object following
the :class:`~kymwatch.index.base.DatasetIndexer` protocol. The entry point's name is
the indexer's name.

Per store (:func:`select_indexers`), from what it holds:

- generation 1 when it has a generation-1 table (``velocity_events``,
  ``radon_report``) or a record with a generation-1 artifact
  (``velocity_events.parquet``, ``radon_report.{parquet,json,json.gz}``);
- generation 2 when it has a ``kym_*`` table or a record with an artifact only
  generation 2 reads (``velocity_events/events``, ``radon/results``, ``radon.*``,
  params, run markers);
- both when both are present;
- a store with nothing yet is *undecided*: generation 1 runs (the seed's tables), and
  the daemon switches to the generation(s) of the first artifacts that arrive
  (:func:`decide_from_artifacts`);
- a running daemon adds the other generation's indexers when artifacts of it arrive
  later (:func:`widen_selection`: a lab moving to kymflow's later analyses);
  ``--indexers`` fixes the choice instead;
- a table with no rows signals nothing (kymwatch may have written it while undecided);
- plug-ins run on every store (they were installed to run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow.parquet as pq
import structlog

from kymwatch.index.base import DatasetIndexer
from kymwatch.index.gen2 import KymRadonIndexer, KymVelocityEventsIndexer
from kymwatch.index.indexers import RadonReportIndexer, VelocityEventsIndexer, _TableIndexer
from kymwatch.store import (
    ANALYSIS_DIR,
    IMAGES_DIR,
    TABLES_DIR,
    ArtifactFormat,
    is_temporary_name,
    is_valid_image_id,
    split_artifact_file,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GENERATION_1",
    "GENERATION_2",
    "UNDECIDED",
    "Selection",
    "available_indexers",
    "decide_from_artifacts",
    "generations_of",
    "make_indexers",
    "record_artifact_names",
    "rows_files",
    "select_indexers",
    "widen_selection",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "kymwatch.indexers"
GENERATION_1 = ("velocity_events", "radon_report")
GENERATION_2 = ("kym_velocity_events", "kym_radon")
UNDECIDED = "no data yet: generation 1 until the first artifacts"

Factory = Callable[[], DatasetIndexer]

_BUILTIN: Mapping[str, Factory] = {
    "velocity_events": VelocityEventsIndexer,
    "radon_report": RadonReportIndexer,
    "kym_velocity_events": KymVelocityEventsIndexer,
    "kym_radon": KymRadonIndexer,
}

_GEN1_ARTIFACTS = frozenset({"velocity_events", "radon_report"})
_GEN2_ARTIFACTS = frozenset(
    {
        "velocity_events/events",
        "velocity_events/params",
        "velocity_events/summary",
        "velocity_events_params",
        "velocity_events.params",
        "radon/results",
        "radon/params",
        "radon",
        "radon_params",
        "radon.params",
        "radon_run",
    }
)
"""Artifacts only generation 2 reads. Not ``metadata.json``: kymflow's storage library
writes it in records of either generation (the manifest reads its header)."""


def _plugins() -> dict[str, Factory]:
    found: dict[str, Factory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTIN:
            log.warning("indexer_plugin_skipped", name=ep.name, reason="shadows a built-in")
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as e:  # a broken plug-in must not stop the daemon
            log.warning("indexer_plugin_skipped", name=ep.name, reason=f"{type(e).__name__}: {e}")
    return found


def available_indexers() -> dict[str, Factory]:
    """Every indexer kymwatch can run: built-in ones, then plug-ins, by name."""
    return {**_BUILTIN, **_plugins()}


def make_indexers(names: Iterable[str]) -> list[DatasetIndexer]:
    """Instances of the indexers ``names`` (built-in or plug-in), in that order.

    Raises:
        KeyError: a name is not a known indexer (the message lists the known ones).
    """
    known = available_indexers()
    out: list[DatasetIndexer] = []
    for name in dict.fromkeys(names):
        if name not in known:
            raise KeyError(f"no indexer named {name!r} (known: {', '.join(sorted(known))})")
        ix = known[name]()
        if not isinstance(ix, DatasetIndexer):
            raise KeyError(f"indexer {name!r} does not follow the DatasetIndexer protocol")
        out.append(ix)
    return out


class Selection(tuple[str, ...]):
    """The indexer names chosen for a store, and why (``reason``)."""

    reason: str

    def __new__(cls, names: Iterable[str], reason: str) -> Selection:
        self = super().__new__(cls, tuple(names))
        self.reason = reason
        return self


def _generations(root: Path) -> tuple[bool, bool]:
    """(has generation 1, has generation 2), from the tables, then the records."""
    tables = root / TABLES_DIR
    gen1 = any(_has_rows(tables / f"{name}.parquet") for name in GENERATION_1)
    gen2 = any(_has_rows(tables / f"{name}.parquet") for name in GENERATION_2)
    try:
        records = sorted(os.scandir(root / IMAGES_DIR), key=lambda e: e.name)
    except OSError:
        return gen1, gen2
    for entry in records:
        if gen1 and gen2:
            break
        if not is_valid_image_id(entry.name):
            continue
        for name in _artifact_names(Path(entry.path) / ANALYSIS_DIR):
            gen1 |= name in _GEN1_ARTIFACTS
            gen2 |= name in _GEN2_ARTIFACTS
    return gen1, gen2


def _has_rows(table: Path) -> bool:
    """True if ``table`` is a parquet file with rows (unreadable files count as rows)."""
    if not table.is_file():
        return False
    try:
        return bool(pq.ParquetFile(table).metadata.num_rows)
    except Exception:  # a damaged table still says which generation the store is
        return True


def _artifact_names(analysis: Path) -> set[str]:
    names: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(analysis):
        dirnames[:] = [d for d in dirnames if not is_temporary_name(d)]
        rel = os.path.relpath(dirpath, analysis).replace(os.sep, "/")
        for fname in filenames:
            split = split_artifact_file(fname if rel == "." else f"{rel}/{fname}")
            if split is not None and not is_temporary_name(fname):
                names.add(split[0])
    return names


def select_indexers(root: Path, requested: Iterable[str] | None = None) -> Selection:
    """The indexers to run on the store at ``root`` (see the module docstring).

    Args:
        root: The dataset folder.
        requested: Names given by the user (``--indexers``): used as they are.
    """
    if requested is not None:
        return Selection(requested, "requested")
    gen1, gen2 = _generations(root)
    plugins = list(_plugins())
    if gen1 and gen2:
        return Selection([*GENERATION_1, *GENERATION_2, *plugins], "generation 1 and 2 data")
    if gen2:
        return Selection([*GENERATION_2, *plugins], "generation 2 data")
    if gen1:
        return Selection([*GENERATION_1, *plugins], "generation 1 data")
    return Selection([*GENERATION_1, *plugins], UNDECIDED)


def generations_of(artifact_names: Iterable[str]) -> tuple[bool, bool]:
    """(generation 1, generation 2): which generations these artifact names signal."""
    names = set(artifact_names)
    return bool(names & _GEN1_ARTIFACTS), bool(names & _GEN2_ARTIFACTS)


def record_artifact_names(record: Path) -> set[str]:
    """The artifact names present in one record folder (any format)."""
    return _artifact_names(record / ANALYSIS_DIR)


def decide_from_artifacts(artifact_names: Iterable[str]) -> Selection | None:
    """For an undecided store: the selection the first artifacts call for, or None
    while they signal no generation yet."""
    gen1, gen2 = generations_of(artifact_names)
    plugins = list(_plugins())
    if gen1 and gen2:
        return Selection([*GENERATION_1, *GENERATION_2, *plugins], "first artifacts: both")
    if gen2:
        return Selection([*GENERATION_2, *plugins], "first artifacts: generation 2")
    if gen1:
        return Selection([*GENERATION_1, *plugins], "first artifacts: generation 1")
    return None


def widen_selection(current: Iterable[str], artifact_names: Iterable[str]) -> Selection | None:
    """For a decided store: the selection with the indexers of any generation these
    artifacts signal and ``current`` lacks, or None if it already has them."""
    names = list(current)
    gen1, gen2 = generations_of(artifact_names)
    added = [
        n
        for n in (*(GENERATION_1 if gen1 else ()), *(GENERATION_2 if gen2 else ()))
        if n not in names
    ]
    if not added:
        return None
    has1 = any(n in names for n in GENERATION_1) or gen1
    has2 = any(n in names for n in GENERATION_2) or gen2
    reason = "new artifacts: generation " + ("1 and 2" if has1 and has2 else "2" if has2 else "1")
    return Selection([*names, *added], reason)


def rows_files(ix: DatasetIndexer) -> frozenset[tuple[str, ArtifactFormat]] | None:
    """The artifact files, as ``(name, format)``, that a built-in indexer can read its
    rows from (it reads the first one a record has); None for any other indexer (a
    plugin may read what it likes).

    Routing by artifact name alone sends a generation-1 ``radon_report.json`` to
    ``kym_radon`` too (it reads a ``radon_report`` *parquet*): a record that holds none
    of these files has nothing for that indexer to read (see
    ``kymwatch.daemon.worker.Worker``).
    """
    if not isinstance(ix, _TableIndexer):
        return None
    return frozenset((name, fmt) for name, formats in ix.lookups for fmt in formats)
