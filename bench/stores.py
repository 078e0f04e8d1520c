"""Indexed stores for the benchmarks: a store plus the tables and daemon state of it.

An *indexed template* holds ``tables/*.parquet`` and the daemon's state files
(``index/state*``) produced for a pristine cached store (see :mod:`storegen`).
Installed into a fresh hard-link copy of that store, it gives a daemon that
starts with nothing to do: hard links share inodes, sizes and mtimes, so the
state's fingerprints match the copy. Templates are keyed by a hash of the
kymwatch sources, so a code change never reuses tables made by older code.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import measure
import pyarrow.parquet as pq
import storegen

SRC = measure.PINNED_ROOT / "src" / "kymwatch"


_FROZEN: list[str] = []


def code_hash(*, fresh: bool = False) -> str:
    """A short hash of the kymwatch sources (store, index and daemon layers).

    Computed once per run (other people may edit ``src/`` while the benchmarks
    run; a template made at the start stays usable); ``fresh`` re-reads the files.
    """
    if _FROZEN and not fresh:
        return _FROZEN[0]
    h = hashlib.sha256()
    files = [p for sub in ("store", "index", "daemon") for p in (SRC / sub).rglob("*.py")]
    for p in sorted(files):
        h.update(str(p.relative_to(SRC)).encode())
        h.update(p.read_bytes())
    digest = h.hexdigest()[:12]
    if not _FROZEN:
        _FROZEN.append(digest)
    return digest


def template_dir(n_records: int) -> Path:
    """Where the indexed template of the ``n_records`` store lives (may not exist)."""
    return storegen.CACHE / f"indexed-{n_records}x{storegen.ROWS_PER_RECORD}-{code_hash()}"


def has_template(n_records: int) -> bool:
    """True if an indexed template for this size and this code exists."""
    return (template_dir(n_records) / "complete").exists()


def save_template(store: Path, n_records: int, how: str) -> None:
    """Keep ``store``'s tables as the template (store must be unedited).

    The daemon state is not kept: its fingerprints include the ctime, which every
    hard link of a work copy changes; :func:`indexed_copy` seeds it afresh.
    """
    dest = template_dir(n_records)
    for old in storegen.CACHE.glob(f"indexed-{n_records}x{storegen.ROWS_PER_RECORD}-*"):
        shutil.rmtree(old)  # made by other versions of the code
    (dest / "index").mkdir(parents=True)
    shutil.copytree(store / "tables", dest / "tables")
    (dest / "complete").write_text(how)


def seed_state(store: Path) -> None:
    """Write the daemon state for a store whose tables were just rebuilt.

    Equivalent to what a first daemon start records (every artifact fingerprint,
    every indexer's schema version) without indexing everything a second time.
    """
    from kymwatch.daemon import IndexState
    from kymwatch.index import default_indexers
    from kymwatch.store import scan_dataset

    state = IndexState(
        records=scan_dataset(store),
        schema_versions={ix.name: ix.schema_version for ix in default_indexers()},
    )
    (store / "index").mkdir(exist_ok=True)
    state.save(store)
    state.close()


def indexed_copy(n_records: int, dest: Path) -> Path:
    """A fresh hard-link copy of the ``n_records`` store with its template installed."""
    src = template_dir(n_records)
    if not has_template(n_records):
        raise FileNotFoundError(f"no indexed template for {n_records} records")
    storegen.work_copy(n_records, dest)
    shutil.copytree(src / "tables", dest / "tables")
    (dest / "index").mkdir()
    seed_state(dest)  # after the hard links: they changed every artifact's ctime
    return dest


def read_table(store: Path, name: str) -> dict[str, list[object]]:
    """Columns of ``tables/<name>.parquet`` as Python lists (fast; no pandas)."""
    return pq.read_table(store / "tables" / f"{name}.parquet").to_pydict()


def records_with_marker(store: Path, ids: set[str], marker: float) -> tuple[int, int]:
    """How many of ``ids`` carry ``marker`` in (velocity_events, radon_report)."""
    ev = read_table(store, "velocity_events")
    rr = read_table(store, "radon_report")
    ev_ok = {
        i for i, s in zip(ev["image_id"], ev["score"], strict=True) if i in ids and s == marker
    }
    rr_ok = {
        i
        for i, m in zip(rr["image_id"], rr["mean_velocity"], strict=True)
        if i in ids and m == marker
    }
    return len(ev_ok), len(rr_ok)
