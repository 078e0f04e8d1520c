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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
    name = f"indexed-{n_records}x{storegen.ROWS_PER_RECORD}-v{storegen.GEN_VERSION}-{code_hash()}"
    return storegen.CACHE / name


def has_template(n_records: int) -> bool:
    """True if an indexed template for this size and this code exists."""
    return (template_dir(n_records) / "complete").exists()


def save_template(store: Path, n_records: int, how: str) -> None:
    """Keep ``store``'s tables as the template (store must be unedited).

    The daemon state is not kept: its fingerprints include the ctime, which every
    hard link of a work copy changes; :func:`indexed_copy` seeds it afresh.
    """
    got, want = table_rows(store), storegen.expected_rows(n_records)
    if any(got.get(t, 0) != r for t, r in want.items()):
        raise RuntimeError(f"not keeping an incomplete index as a template: {got} != {want}")
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
    from kymwatch.store import scan_dataset

    state = IndexState(
        records=scan_dataset(store),
        schema_versions={ix.name: ix.schema_version for ix in indexers_for(store)},
    )
    (store / "index").mkdir(exist_ok=True)
    state.save(store)
    state.close()


def unshare_artifacts(store: Path, artifacts: Iterable[tuple[int, str]]) -> None:
    """Give each artifact (record index, kind) of ``store`` its own inode, then record
    the state again, so a daemon started on the store has nothing to re-index.

    A hard-link copy's artifacts share their inodes with the cache: an in-place write
    would reach the cache, and a rename over one frees nothing (a user's rename frees
    the file it replaces; ``bench/ANALYSIS.md``, "Burst, session 9").
    """
    for i, kind in sorted(set(artifacts)):
        storegen.unshare(storegen.artifact_path(store, i, kind))
    seed_state(store)


def indexed_copy(n_records: int, dest: Path) -> Path:
    """A fresh hard-link copy of the ``n_records`` store with its template installed."""
    src = template_dir(n_records)
    if not has_template(n_records):
        raise FileNotFoundError(f"no indexed template for {n_records} records")
    storegen.work_copy(n_records, dest)
    shutil.copytree(src / "tables", dest / "tables")
    (dest / "index").mkdir(exist_ok=True)
    seed_state(dest)  # after the hard links: they changed every artifact's ctime
    return dest


def indexers_for(store: Path) -> list[Any]:
    """The indexers a daemon runs on ``store`` (chosen from what it holds, when this
    build can choose; the library's default indexers otherwise)."""
    try:
        from kymwatch.index.registry import make_indexers, select_indexers
    except ImportError:  # a build without generation 2
        from kymwatch.index import default_indexers

        return list(default_indexers())
    return make_indexers(select_indexers(store))


def kym_dataset(store: Path) -> Any:
    """A library ``KymDataset`` on ``store`` with the indexers a daemon would run."""
    from kymwatch.index import KymDataset

    return KymDataset(store, indexers=indexers_for(store))


def update(kd: Any, name: str, ids: list[str]) -> None:
    """One ``update_images`` call (the report variant where the build has it)."""
    if hasattr(kd, "update_images_report"):
        kd.update_images_report(name, ids, log_outcomes=False)
    else:
        kd.update_images(name, ids)


def rebuild(kd: Any, name: str) -> int:
    """One full rebuild of a table; returns its row count."""
    if hasattr(kd, "rebuild_report"):
        return int(kd.rebuild_report(name, log_outcomes=False).table_rows)
    return len(kd.rebuild(name))


def tables_fed(i: int, kind: str) -> list[str]:
    """Every table whose rows the ``kind`` artifact of record ``i`` gives.

    kymflow's generation-2 velocity indexer also reads the generation-1 name
    ``velocity_events.parquet`` (its lookups: first found wins), so a generation-1
    events artifact feeds ``velocity_events`` and ``kym_velocity_events``.
    """
    first = storegen.table_of(i, kind)
    if first == "velocity_events":
        return [first, "kym_velocity_events"]
    return [first]


def write_kymflow_tables(store: Path) -> dict[str, int]:
    """Rewrite every table of ``store`` the way kymflow's ``KymDataset`` writes it.

    pandas ``DataFrame.to_parquet`` of a frame whose text columns are ``object``
    (kymflow runs pandas 2.x) and whose integer columns are ``int64`` or
    ``float64``: the tables a lab has when kymflow built them before kymwatch came.
    Returns the rows per table.
    """
    import pandas as pd

    rows = {}
    for path in sorted((store / "tables").glob("*.parquet")):
        df = pq.read_table(path).to_pandas()
        for col in df.columns:
            if pd.api.types.is_string_dtype(df[col].dtype):
                df[col] = df[col].astype(object)
            elif isinstance(df[col].dtype, pd.Int64Dtype):
                na = bool(df[col].isna().any())
                df[col] = df[col].astype("float64" if na else "int64")
        tmp = path.with_name(path.name + ".kymflow.partial")
        df.to_parquet(tmp, index=False)
        tmp.replace(path)
        rows[path.stem] = len(df)
    return rows


def table_rows(store: Path) -> dict[str, int]:
    """Rows per table file of ``store`` (from the parquet footers)."""
    return {
        p.stem: pq.ParquetFile(p).metadata.num_rows
        for p in sorted((store / "tables").glob("*.parquet"))
    }


def read_table(store: Path, name: str) -> dict[str, list[object]]:
    """Columns of ``tables/<name>.parquet`` as Python lists (fast; no pandas)."""
    return pq.read_table(store / "tables" / f"{name}.parquet").to_pydict()


def records_with_marker(store: Path, idx: list[int], marker: float) -> dict[str, list[int]]:
    """Per table: [records of ``idx`` carrying ``marker`` in every row, records expected]."""
    want: dict[str, set[str]] = {t: set() for t in storegen.TABLES}
    for i in idx:
        for kind in storegen.KINDS:
            for t in tables_fed(i, kind):
                want[t].add(storegen.image_id(i))
    out = {}
    for t, ids in want.items():
        if not ids:
            continue
        col = storegen.MARKER_COLUMN[t]
        try:
            tb = pq.read_table(store / "tables" / f"{t}.parquet", columns=["image_id", col])
        except (OSError, ValueError):
            out[t] = [0, len(ids)]
            continue
        good: dict[str, bool] = {}
        for i, m in zip(tb["image_id"].to_pylist(), tb[col].to_pylist(), strict=True):
            if i in ids:
                good[i] = good.get(i, True) and m == marker
        out[t] = [sum(good.values()), len(ids)]
    return out


def markers_ok(check: dict[str, list[int]]) -> bool:
    """True if every table of a :func:`records_with_marker` check has every record right."""
    return all(ok == want for ok, want in check.values())
