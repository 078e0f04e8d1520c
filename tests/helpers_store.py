"""Build kymflow datasets with plain file I/O, without the kymwatch API.

These helpers play the part of the *other* programs that write into a dataset
(acquisition, upstream kymflow, analysis scripts), so tests can check that kymwatch
reads what it did not write. They use only the standard library, pandas' frames
as input and pyarrow; nothing here imports kymwatch.

Every writer is atomic by default, the way zarr and upstream kymflow write: the
bytes go to ``<file>.<hex>.partial`` in the same folder, which is then renamed over
the final name. Pass ``atomic=False`` to write the final file in place instead
(a reader may then see it half-written, like ``df.to_parquet(path)`` does).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "analysis_file",
    "delete_record",
    "events_frame",
    "gen2_events_frame",
    "legacy_radon_report",
    "make_v2_store",
    "write_csv_gz_artifact",
    "write_file",
    "write_json_artifact",
    "write_parquet_artifact",
    "write_v2_record",
]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def write_file(path: Path, data: bytes, *, atomic: bool = True) -> Path:
    """Write ``data`` to ``path`` (creating parent folders) and return ``path``.

    Args:
        path: The final file.
        data: Its complete content.
        atomic: Write ``<name>.<hex>.partial`` next to it, then rename it over ``path``;
            when False, open ``path`` itself and write into it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not atomic:
        path.write_bytes(data)
        return path
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_json(path: Path, obj: Any, *, atomic: bool = True) -> Path:
    return write_file(path, json.dumps(obj, indent=2).encode(), atomic=atomic)


def make_v2_store(root: Path) -> Path:
    """Create an empty zarr-format-2 dataset at ``root`` (root and ``images/`` groups)."""
    for group in (root, root / "images"):
        _write_json(group / ".zgroup", {"zarr_format": 2})
        _write_json(group / ".zattrs", {})
    return root


def write_v2_record(
    root: Path,
    image_id: str,
    *,
    shape: tuple[int, int] = (4, 8),
    axes: tuple[str, ...] = ("time", "space"),
    created_utc: str | None = None,
    atomic: bool = True,
) -> Path:
    """Create (or overwrite) record ``images/<image_id>/`` as zarr format 2 and return it.

    The record group has ``.zgroup`` and ``.zattrs`` (``axes``, ``created_utc``,
    ``updated_utc``); its pixel array ``data`` is uint16 with one uncompressed chunk
    holding ``0, 1, 2, ...`` in C order, so zarr can read it back.
    """
    rec = root / "images" / image_id
    now = _now()
    _write_json(rec / ".zgroup", {"zarr_format": 2}, atomic=atomic)
    attrs = {"axes": list(axes), "created_utc": created_utc or now, "updated_utc": now}
    _write_json(rec / ".zattrs", attrs, atomic=atomic)
    zarray = {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(shape),
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
        "order": "C",
        "dimension_separator": ".",
    }
    _write_json(rec / "data" / ".zarray", zarray, atomic=atomic)
    _write_json(rec / "data" / ".zattrs", {}, atomic=atomic)
    n = shape[0] * shape[1]
    pixels = b"".join(i.to_bytes(2, "little") for i in range(n))
    write_file(rec / "data" / ".".join("0" * len(shape)), pixels, atomic=atomic)
    return rec


def delete_record(root: Path, image_id: str) -> None:
    """Remove record ``images/<image_id>/`` with everything in it."""
    shutil.rmtree(root / "images" / image_id)


def analysis_file(root: Path, image_id: str, name: str, ext: str) -> Path:
    """The file of artifact ``name`` (may contain ``/``) with suffix ``ext`` (no dot)."""
    return root / "images" / image_id / "analysis" / f"{name}.{ext}"


def write_parquet_artifact(
    root: Path, image_id: str, name: str, df: pd.DataFrame, *, atomic: bool = True
) -> Path:
    """Write ``df`` as ``analysis/<name>.parquet`` of record ``image_id``; returns the file."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    data = sink.getvalue().to_pybytes()
    return write_file(analysis_file(root, image_id, name, "parquet"), data, atomic=atomic)


def write_csv_gz_artifact(
    root: Path, image_id: str, name: str, df: pd.DataFrame, *, atomic: bool = True
) -> Path:
    """Write ``df`` as ``analysis/<name>.csv.gz`` of record ``image_id``; returns the file."""
    data = gzip.compress(df.to_csv(index=False).encode())
    return write_file(analysis_file(root, image_id, name, "csv.gz"), data, atomic=atomic)


def write_json_artifact(
    root: Path, image_id: str, name: str, obj: Any, *, gz: bool = False, atomic: bool = True
) -> Path:
    """Write ``obj`` as ``analysis/<name>.json`` (``.json.gz`` when ``gz``); returns the file."""
    data = json.dumps(obj).encode()
    if gz:
        return write_file(
            analysis_file(root, image_id, name, "json.gz"), gzip.compress(data), atomic=atomic
        )
    return write_file(analysis_file(root, image_id, name, "json"), data, atomic=atomic)


# -- sample artifact content ---------------------------------------------------------------
def events_frame(n: int, *, roi_id: int = 1, start_s: float = 0.0) -> pd.DataFrame:
    """``n`` velocity events in kymflow's generation-1 layout: string ids ``"e0"``,
    ``"e1"``, ... as kymflow writes them, t0_s = start_s, start_s + 1, ..."""
    t0 = [start_s + i for i in range(n)]
    return pd.DataFrame(
        {
            "roi_id": [roi_id] * n,
            "event_id": [f"e{i}" for i in range(n)],
            "t0_s": t0,
            "t1_s": [t + 0.5 for t in t0],
            "kind": ["stall"] * n,
            "score": [0.9] * n,
        }
    )


def gen2_events_frame(n: int, *, roi_id: int = 1, start_s: float = 0.0) -> pd.DataFrame:
    """``n`` velocity events in kymflow's generation-2 layout (``velocity_events/events``):
    UUID event ids, as kymflow's analysis code writes them."""
    t0 = [start_s + i for i in range(n)]
    return pd.DataFrame(
        {
            "roi_id": [roi_id] * n,
            "event_id": [str(uuid.uuid4()) for _ in range(n)],
            "t_start_s": t0,
            "t_end_s": [t + 0.5 for t in t0],
            "peak_t_s": [t + 0.25 for t in t0],
            "peak_value": [1.5] * n,
            "score": [0.9] * n,
        }
    )


def legacy_radon_report(mean: float, *, roi_id: int = 1, note: str = "ok") -> dict[str, Any]:
    """A radon report dict with the legacy keys ``vel_mean, vel_median, vel_n_valid, note``."""
    return {
        "roi_id": roi_id,
        "vel_mean": mean,
        "vel_median": mean / 2,
        "vel_n_valid": 10,
        "note": note,
    }


def write_mixed_generations(root: Path, n: int, *, without_artifacts: int) -> list[str]:
    """A store of ``n`` records alternating generation 1 and 2 (sorted UUID ids, string
    and UUID event ids, kymflow's layouts; most generation-2 records share their params);
    record number ``without_artifacts`` has none. Returns the ids."""
    make_v2_store(root)
    ids = sorted(str(uuid.UUID(int=(k * 7919) << 64)) for k in range(1, n + 1))
    for k, image_id in enumerate(ids):
        write_v2_record(root, image_id)
        if k == without_artifacts:
            continue
        if k % 2:
            write_parquet_artifact(root, image_id, "velocity_events", events_frame(k % 4 + 1))
            radon = {"roi_id": 1, "mean_velocity": k + 0.5, "n_valid": 3, "notes": "ok"}
            write_json_artifact(root, image_id, "radon_report", radon)
        else:
            frame = gen2_events_frame(k % 3 + 1)
            frame["detector"] = "v2"
            write_parquet_artifact(root, image_id, "velocity_events/events", frame)
            write_json_artifact(root, image_id, "velocity_events/params", {"thr": k % 3})
            res = frame[["roi_id"]].head(1).assign(velocity=float(k))
            write_parquet_artifact(root, image_id, "radon/results", res)
            write_json_artifact(root, image_id, "radon/params", {"win": 16})
            write_json_artifact(root, image_id, "metadata", {"rois": [{"roi_id": 1, "k": k}]})
    return ids
