"""Synthetic kymflow-shaped stores written with plain file I/O, and a cache of them.

The shapes follow kymflow's own writers (``tests/data/conformance/README.md``):
records are ``images/<uuid>/`` zarr-format-2 groups (``.zgroup``, ``.zattrs`` with
``axes``/``created_utc``/``updated_utc``, a small ``data`` array, and
``analysis/metadata.json`` with ROIs), with a mix of both generations:

* **generation 1** (even record numbers): ``analysis/velocity_events.parquet``
  (``rows`` events, string ids ``"e1"``, ``"e2"``, ...) and
  ``analysis/radon_report.json`` → tables ``velocity_events``, ``radon_report``;
* **generation 2** (odd record numbers): ``analysis/velocity_events/events.parquet``
  (UUID event ids, kymflow's ``t_start_s``/``peak_value`` columns plus an extra
  column kept by the indexer), ``velocity_events/params.json``,
  ``radon/results.parquet``, ``radon/params.json`` and kymflow's run markers
  (``velocity_events/summary.json``, ``radon_run.json``) → tables
  ``kym_velocity_events``, ``kym_radon``.

Parquet artifacts are written through pandas (``DataFrame.to_parquet``) as kymflow
does, so they carry pandas metadata. Bytes are made once per shape and copied into
every record (the indexer stamps ``image_id`` itself).

Generated stores are cached under ``bench/out/cache`` and handed out as hard-link
copies (``cp -al``): a copy of 50k records takes seconds instead of minutes. This is
safe only because every write into a copy that may share an inode with the cache is
atomic (a new file renamed over the old name); an in-place writer must first call
:func:`unshare` on the file it rewrites.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

GEN_VERSION = 2
ROWS_PER_RECORD = 10
OUT = Path(__file__).resolve().parent / "out"
CACHE = OUT / "cache"

TABLES = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")
ROWS_OF_TABLE = {"velocity_events": ROWS_PER_RECORD, "radon_report": 1}
ROWS_OF_TABLE |= {"kym_velocity_events": ROWS_PER_RECORD, "kym_radon": 1}
MARKER_COLUMN = {
    "velocity_events": "score",
    "radon_report": "mean_velocity",
    "kym_velocity_events": "score",
    "kym_radon": "velocity",
}
KINDS = ("events", "radon")

_ZGROUP = b'{\n  "zarr_format": 2\n}'
_ZARRAY = json.dumps(
    {
        "chunks": [8, 8],
        "compressor": None,
        "dtype": "|u1",
        "fill_value": 0,
        "filters": None,
        "order": "C",
        "shape": [8, 8],
        "zarr_format": 2,
    },
    indent=4,
).encode()
_PIXELS = bytes(range(64))
_ROIS = [
    {
        "roi_id": 1,
        "roi_type": "rect",
        "version": "1.0",
        "name": "roi1",
        "note": "",
        "channel": 1,
        "z": 0,
        "data": {"x0": 1, "x1": 7, "y0": 2, "y1": 7},
        "meta": {},
    }
]
VE_PARAMS = {"threshold": 0.8, "window": 7}
RADON_PARAMS = {"window": 9, "step": 2}
VE_VERSION = "kymflow.velocity_events@0.1"
RADON_VERSION = "kymflow.radon@0.1"


def _hash(obj: object) -> str:
    """kymflow's params hash: SHA-256 of sorted-key compact JSON (see the kit's README)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


VE_HASH = _hash(VE_PARAMS)
RADON_HASH = _hash({"params": RADON_PARAMS, "rois": _ROIS})


def image_id(i: int) -> str:
    """The id of synthetic record number ``i``: a UUID, as kymflow names images."""
    return str(uuid.UUID(bytes=hashlib.md5(i.to_bytes(8, "little")).digest(), version=4))


def generation(i: int) -> int:
    """Which kymflow generation record number ``i`` belongs to (1 or 2)."""
    return 2 if i % 2 else 1


def table_of(i: int, kind: str) -> str:
    """The table an artifact of ``kind`` (``events``/``radon``) of record ``i`` feeds."""
    if generation(i) == 1:
        return "velocity_events" if kind == "events" else "radon_report"
    return "kym_velocity_events" if kind == "events" else "kym_radon"


def _rel(i: int, kind: str) -> str:
    if generation(i) == 1:
        return "velocity_events.parquet" if kind == "events" else "radon_report.json"
    return "velocity_events/events.parquet" if kind == "events" else "radon/results.parquet"


def artifact_path(root: Path, i: int, kind: str) -> Path:
    """The data artifact of ``kind`` of record number ``i``."""
    return root / "images" / image_id(i) / "analysis" / _rel(i, kind)


def events_path(root: Path, i: int) -> Path:
    """The velocity-events artifact of record number ``i`` (either generation)."""
    return artifact_path(root, i, "events")


def radon_path(root: Path, i: int) -> Path:
    """The radon artifact of record number ``i`` (either generation)."""
    return artifact_path(root, i, "radon")


def _parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    return sink.getvalue()


@functools.lru_cache(maxsize=64)
def events_parquet(rows: int = ROWS_PER_RECORD, *, marker: float = 0.9, gen: int = 1) -> bytes:
    """Events parquet bytes as kymflow writes them; ``score`` holds ``marker`` on every row.

    Generation 1: ``roi_id, event_id ("e1".."eN"), t0_s, t1_s, kind, score``.
    Generation 2: ``roi_id, event_id (UUIDs), t_start_s, t_end_s, peak_t_s,
    peak_value, score, detector`` (the last one an extra column the indexer keeps).
    """
    t0 = [float(k) for k in range(rows)]
    if gen == 1:
        frame = pd.DataFrame(
            {
                "roi_id": [1] * rows,
                "event_id": [f"e{k + 1}" for k in range(rows)],
                "t0_s": t0,
                "t1_s": [t + 0.5 for t in t0],
                "kind": ["stall"] * rows,
                "score": [marker] * rows,
            }
        )
    else:
        seed = hashlib.md5(repr(marker).encode()).digest()
        ids = [str(uuid.UUID(bytes=hashlib.md5(seed + bytes([k])).digest())) for k in range(rows)]
        frame = pd.DataFrame(
            {
                "roi_id": [1] * rows,
                "event_id": ids,
                "t_start_s": t0,
                "t_end_s": [t + 0.5 for t in t0],
                "peak_t_s": [t + 0.25 for t in t0],
                "peak_value": [0.9] * rows,
                "score": [marker] * rows,
                "detector": ["threshold"] * rows,
            }
        )
    return _parquet(frame)


@functools.lru_cache(maxsize=64)
def radon_results_parquet(velocity: float) -> bytes:
    """A generation-2 ``radon/results.parquet`` (one ROI) with ``velocity``."""
    return _parquet(pd.DataFrame({"roi_id": [1], "velocity": [velocity], "n_valid": [10]}))


def radon_json(i: int, *, marker: float | None = None) -> bytes:
    """A generation-1 radon report (one ROI) for record ``i``; ``mean_velocity`` = ``marker``."""
    mean = marker if marker is not None else 100.0 + (i % 997) * 0.25
    doc = {"roi_id": 1, "mean_velocity": mean, "median_velocity": mean / 2, "n_valid": 10}
    doc["notes"] = "ok"
    return json.dumps(doc).encode()


def artifact_bytes(i: int, kind: str, marker: float | None = None) -> bytes:
    """New contents of the ``kind`` artifact of record ``i`` carrying ``marker``."""
    gen = generation(i)
    if kind == "events":
        return events_parquet(marker=0.9 if marker is None else marker, gen=gen)
    if gen == 1:
        return radon_json(i, marker=marker)
    return radon_results_parquet(100.0 + (i % 16) * 0.5 if marker is None else marker)


def _marker_json(indexer: str, params_hash: str, version: str, rows: int) -> bytes:
    doc = {
        "marker_version": "1",
        "indexer_name": indexer,
        "params_hash": params_hash,
        "analysis_version": version,
        "n_rows": rows,
        "ran_utc_epoch_ns": 1_795_670_939_153_781_705,
        "status": "ok",
    }
    return json.dumps(doc, indent=2).encode()


def record_files(i: int, rows: int = ROWS_PER_RECORD) -> dict[str, bytes]:
    """Every file of record ``i`` (path relative to the record → bytes)."""
    stamp = "2026-11-01T00:00:00Z"
    files = {
        ".zgroup": _ZGROUP,
        ".zattrs": json.dumps(
            {"axes": ["y", "x"], "created_utc": stamp, "updated_utc": stamp}, indent=4
        ).encode(),
        "data/.zarray": _ZARRAY,
        "data/0.0": _PIXELS,
        "analysis/metadata.json": json.dumps({"version": "2.0", "rois": _ROIS}, indent=2).encode(),
    }
    if generation(i) == 1:
        files["analysis/velocity_events.parquet"] = events_parquet(rows, gen=1)
        files["analysis/radon_report.json"] = radon_json(i)
    else:
        files["analysis/velocity_events/events.parquet"] = events_parquet(rows, gen=2)
        files["analysis/velocity_events/params.json"] = json.dumps(VE_PARAMS, indent=2).encode()
        files["analysis/velocity_events/summary.json"] = _marker_json(
            "velocity_events", VE_HASH, VE_VERSION, rows
        )
        files["analysis/radon/results.parquet"] = artifact_bytes(i, "radon")
        files["analysis/radon/params.json"] = json.dumps(RADON_PARAMS, indent=2).encode()
        files["analysis/radon_run.json"] = _marker_json("radon", RADON_HASH, RADON_VERSION, 1)
    return files


def expected_rows(n: int, rows: int = ROWS_PER_RECORD) -> dict[str, int]:
    """Rows of each table once a store of ``n`` records is fully indexed.

    Half the records are of each generation; the generation-2 velocity table also
    holds the generation-1 records' events (kymflow's lookups read
    ``velocity_events.parquet`` too).
    """
    gen1, gen2 = (n + 1) // 2, n // 2
    return {
        "velocity_events": gen1 * rows,
        "radon_report": gen1,
        "kym_velocity_events": n * rows,
        "kym_radon": gen2,
    }


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def generate(root: Path, n_records: int, rows: int = ROWS_PER_RECORD) -> None:
    """Write a fresh store of ``n_records`` records at ``root`` (which must not exist)."""
    root.mkdir(parents=True)
    for group in (root, root / "images", root / "index"):
        group.mkdir(exist_ok=True)
        _write(os.path.join(group, ".zgroup"), _ZGROUP)
        if group != root / "index":
            _write(os.path.join(group, ".zattrs"), b"{}")
    for i in range(n_records):
        rec = os.path.join(root, "images", image_id(i))
        made: set[str] = set()
        for rel, data in record_files(i, rows).items():
            folder = os.path.dirname(os.path.join(rec, rel))
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            _write(os.path.join(rec, rel), data)


def cached_store(n_records: int, rows: int = ROWS_PER_RECORD) -> tuple[Path, float | None]:
    """The cached pristine store of this size, generating it if needed.

    Returns the path and the generation time in seconds (None if it was cached).
    """
    path = CACHE / f"store-{n_records}x{rows}-v{GEN_VERSION}"
    done = path / ".bench-complete"
    if done.exists():
        return path, None
    if path.exists():
        shutil.rmtree(path)
    start = time.perf_counter()
    generate(path, n_records, rows)
    elapsed = time.perf_counter() - start
    done.write_text(json.dumps({"records": n_records, "rows": rows, "seconds": elapsed}))
    return path, elapsed


_COPY_MARK = ".bench-copy-of"


def _files_under(folder: str) -> set[str]:
    out = set()
    for dirpath, _, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        out |= {f if rel == "." else f"{rel}/{f}" for f in filenames}
    return out


def _reset(src: Path, dest: Path, n_records: int) -> bool:
    """Undo a copy's changes: relink rewritten files, drop tables and kymwatch's index files.

    Returns False when the copy differs in some other way (then it is recopied).
    """
    shutil.rmtree(dest / "tables", ignore_errors=True)
    shutil.rmtree(dest / "index", ignore_errors=True)
    (dest / "index").mkdir()
    _write(str(dest / "index" / ".zgroup"), _ZGROUP)
    expected = sorted([*(image_id(i) for i in range(n_records)), ".zattrs", ".zgroup"])
    if sorted(os.listdir(dest / "images")) != expected:
        return False
    for i in range(n_records):
        rec = os.path.join("images", image_id(i))
        names = set(record_files(i))
        if _files_under(str(dest / rec)) != names:
            return False
        for name in names:
            mine, orig = dest / rec / name, src / rec / name
            if os.stat(mine).st_ino != os.stat(orig).st_ino:
                tmp = f"{mine}.reset.partial"
                os.link(orig, tmp)
                os.replace(tmp, mine)
    return True


def work_copy(n_records: int, dest: Path, rows: int = ROWS_PER_RECORD) -> Path:
    """A pristine hard-link copy of the cached store at ``dest``.

    An earlier copy at ``dest`` is reset (rewritten files relinked to the cached
    ones, tables and index removed), which is much faster than deleting and copying
    a large store again.
    """
    src, _ = cached_store(n_records, rows)
    mark = dest / _COPY_MARK
    if mark.exists() and mark.read_text() == src.name and _reset(src, dest, n_records):
        return dest
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    (dest / ".bench-complete").unlink()
    mark.write_text(src.name)
    return dest


def atomic_write(path: Path, data: bytes) -> None:
    """Write like zarr and kymflow do: ``<name>.<hex>.partial``, then rename over ``path``."""
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def unshare(path: Path) -> None:
    """Give ``path`` its own inode (atomically) so an in-place write cannot reach the cache."""
    atomic_write(path, path.read_bytes())


def inplace_write(path: Path, data: bytes) -> None:
    """Write like ``DataFrame.to_parquet(path)`` does: truncate the file, write, close.

    The file must not share its inode with the cache (see :func:`unshare`).
    """
    with open(path, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Edit:
    """One artifact rewrite: which record, which artifact, the table it feeds."""

    index: int
    kind: str

    @property
    def table(self) -> str:
        """The table whose rows this artifact gives."""
        return table_of(self.index, self.kind)

    @property
    def image_id(self) -> str:
        """The record's id."""
        return image_id(self.index)


def write_artifacts(
    root: Path, indices: list[int], marker: float, rows: int = ROWS_PER_RECORD
) -> None:
    """Re-analysis: rewrite both data artifacts of each record in ``indices`` (atomically)."""
    for i in indices:
        for kind in KINDS:
            atomic_write(artifact_path(root, i, kind), artifact_bytes(i, kind, marker))
