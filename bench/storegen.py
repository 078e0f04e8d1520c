"""Synthetic kymflow stores written with plain file I/O, and a cache of them.

A record is what an acquisition pipeline plus two analysis steps leave behind:
the zarr-format-2 group (``.zgroup``, ``.zattrs``), a small pixel array ``data``
(one chunk), ``analysis/velocity_events.parquet`` (``rows`` events) and
``analysis/radon_report.json``. The parquet bytes are made once per shape and
copied into every record (the indexer stamps ``image_id`` itself); the JSON is
formatted per record.

Generated stores are cached under ``bench/out/cache`` and handed out as
hard-link copies (``cp -al``): a copy of 50k records takes seconds instead of
minutes. This is safe only because every later write into a copy is atomic (a
new file renamed over the old name, so the cached inode is never modified);
:func:`write_artifacts` is the only writer the benchmarks use.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

GEN_VERSION = 1
ROWS_PER_RECORD = 10
OUT = Path(__file__).resolve().parent / "out"
CACHE = OUT / "cache"

_ZGROUP = b'{\n  "zarr_format": 2\n}'
_ZARRAY = json.dumps(
    {
        "zarr_format": 2,
        "shape": [4, 8],
        "chunks": [4, 8],
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
        "order": "C",
        "dimension_separator": ".",
    },
    indent=2,
).encode()
_PIXELS = b"".join(i.to_bytes(2, "little") for i in range(32))


def image_id(i: int) -> str:
    """The id of synthetic record number ``i``."""
    return f"rec{i:06d}"


def events_parquet(rows: int = ROWS_PER_RECORD, *, marker: float = 0.9) -> bytes:
    """Parquet bytes of ``rows`` velocity events; ``score`` holds ``marker`` on every row."""
    t0 = [float(i) for i in range(rows)]
    table = pa.table(
        {
            "roi_id": pa.array([1] * rows, pa.int64()),
            "event_id": pa.array([f"e{i}" for i in range(rows)], pa.string()),  # as kymflow
            "t0_s": pa.array(t0, pa.float64()),
            "t1_s": pa.array([t + 0.5 for t in t0], pa.float64()),
            "kind": pa.array(["stall"] * rows, pa.string()),
            "score": pa.array([marker] * rows, pa.float64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def radon_json(i: int, *, marker: float | None = None) -> bytes:
    """A radon report (one ROI) for record number ``i``; ``mean_velocity`` = ``marker``."""
    mean = marker if marker is not None else 100.0 + (i % 997) * 0.25
    doc = {"roi_id": 1, "mean_velocity": mean, "median_velocity": mean / 2, "n_valid": 10}
    doc["notes"] = "ok"
    return json.dumps(doc).encode()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def generate(root: Path, n_records: int, rows: int = ROWS_PER_RECORD) -> None:
    """Write a fresh store of ``n_records`` records at ``root`` (which must not exist)."""
    events = events_parquet(rows)
    root.mkdir(parents=True)
    images = root / "images"
    images.mkdir()
    for group in (root, images):
        _write(os.path.join(group, ".zgroup"), _ZGROUP)
        _write(os.path.join(group, ".zattrs"), b"{}")
    stamp = "2026-11-01T00:00:00.000+00:00"
    attrs = json.dumps(
        {"axes": ["time", "space"], "created_utc": stamp, "updated_utc": stamp}
    ).encode()
    for i in range(n_records):
        rec = os.path.join(images, image_id(i))
        data = os.path.join(rec, "data")
        analysis = os.path.join(rec, "analysis")
        os.makedirs(data)
        os.mkdir(analysis)
        _write(os.path.join(rec, ".zgroup"), _ZGROUP)
        _write(os.path.join(rec, ".zattrs"), attrs)
        _write(os.path.join(data, ".zarray"), _ZARRAY)
        _write(os.path.join(data, ".zattrs"), b"{}")
        _write(os.path.join(data, "0.0"), _PIXELS)
        _write(os.path.join(analysis, "velocity_events.parquet"), events)
        _write(os.path.join(analysis, "radon_report.json"), radon_json(i))


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


ARTIFACTS = ("velocity_events.parquet", "radon_report.json")
_COPY_MARK = ".bench-copy-of"


def _reset(src: Path, dest: Path, n_records: int) -> bool:
    """Undo a copy's changes: relink rewritten artifacts, drop tables and index.

    Returns False when the copy differs in some other way (then it is recopied).
    """
    for sub in ("tables", "index"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    expected = sorted([*(image_id(i) for i in range(n_records)), ".zattrs", ".zgroup"])
    if sorted(os.listdir(dest / "images")) != expected:
        return False
    for i in range(n_records):
        rel = os.path.join("images", image_id(i), "analysis")
        if sorted(os.listdir(dest / rel)) != sorted(ARTIFACTS):
            return False
        for name in ARTIFACTS:
            mine, orig = dest / rel / name, src / rel / name
            if os.stat(mine).st_ino != os.stat(orig).st_ino:
                tmp = f"{mine}.reset.partial"
                os.link(orig, tmp)
                os.replace(tmp, mine)
    return True


def work_copy(n_records: int, dest: Path, rows: int = ROWS_PER_RECORD) -> Path:
    """A pristine hard-link copy of the cached store at ``dest``.

    An earlier copy at ``dest`` is reset (rewritten artifacts relinked to the
    cached ones, tables and index removed), which is much faster than deleting
    and copying a large store again.
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


def events_path(root: Path, i: int) -> Path:
    """The velocity-events artifact of record number ``i``."""
    return root / "images" / image_id(i) / "analysis" / "velocity_events.parquet"


def radon_path(root: Path, i: int) -> Path:
    """The radon-report artifact of record number ``i``."""
    return root / "images" / image_id(i) / "analysis" / "radon_report.json"


def write_artifacts(
    root: Path, indices: list[int], marker: float, rows: int = ROWS_PER_RECORD
) -> None:
    """Re-analysis: rewrite both artifacts of each record in ``indices`` (atomically)."""
    events = events_parquet(rows, marker=marker)
    for i in indices:
        atomic_write(events_path(root, i), events)
        atomic_write(radon_path(root, i), radon_json(i, marker=marker))
