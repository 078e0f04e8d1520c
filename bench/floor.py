"""The fast floor of a burst: the least work that leaves every table right.

No daemon and no kymwatch code: each changed artifact is read once
(``pq.ParquetFile(...).read()`` for parquet, ``json.loads`` for JSON), stamped with
its record's ``image_id`` (and, for generation 2, kymflow's ``analysis_version`` and
``params_hash``), each table is read once, the changed records' rows are replaced
(one ``is_in`` filter, one concatenation, one sort by ``image_id``) and each table
is written once (atomically). Issue 11's "daemon ÷ floor" ratio compares the daemon
with this.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import storegen
import stores


def _hash(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _stamp(t: pa.Table, image_id: str, extra: dict[str, str]) -> pa.Table:
    n = t.num_rows
    t = t.append_column("image_id", pa.array([image_id] * n, pa.string()))
    for k, v in extra.items():
        t = t.append_column(k, pa.array([v] * n, pa.string()))
    return t


def _conform(new: pa.Table, schema: pa.Schema) -> pa.Table:
    """``new``'s columns cast to the table's schema, in its order (nulls where absent)."""
    cols = []
    for f in schema:
        if f.name in new.column_names:
            cols.append(new[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(new.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def update(store: Path, idx: list[int]) -> dict[str, int]:
    """Bring every table of ``store`` up to date after ``idx``'s artifacts were rewritten.

    Returns the rows written per table.
    """
    cache: dict[Path, pa.Table] = {}

    def parquet(path: Path) -> pa.Table:
        if path not in cache:
            cache[path] = pq.ParquetFile(path).read()
        return cache[path]

    parts: dict[str, list[pa.Table]] = {t: [] for t in storegen.TABLES}
    changed: dict[str, set[str]] = {t: set() for t in storegen.TABLES}
    for i in idx:
        iid = storegen.image_id(i)
        analysis = storegen.artifact_path(store, i, "events").parent
        if storegen.generation(i) == 1:
            ev = parquet(storegen.artifact_path(store, i, "events"))
            parts["velocity_events"].append(_stamp(ev, iid, {}))
            doc = _read_json(storegen.artifact_path(store, i, "radon"))
            rows = doc if isinstance(doc, list) else [doc]
            parts["radon_report"].append(_stamp(pa.Table.from_pylist(rows), iid, {}))
            ve_params = _read_json(analysis / "velocity_events" / "params.json") or {}
        else:
            ev = parquet(storegen.artifact_path(store, i, "events"))
            ve_params = _read_json(analysis / "params.json") or {}
            radon_dir = analysis.parent / "radon"
            rp = _read_json(radon_dir / "params.json") or {}
            rois = (_read_json(analysis.parent / "metadata.json") or {}).get("rois", [])
            extra = {
                "analysis_version": storegen.RADON_VERSION,
                "params_hash": _hash({"params": rp, "rois": rois}),
            }
            parts["kym_radon"].append(_stamp(parquet(radon_dir / "results.parquet"), iid, extra))
        extra = {"analysis_version": storegen.VE_VERSION, "params_hash": _hash(ve_params)}
        parts["kym_velocity_events"].append(_stamp(ev, iid, extra))
        for kind in storegen.KINDS:
            for t in stores.tables_fed(i, kind):
                changed[t].add(iid)
    written = {}
    for t, new_parts in parts.items():
        if not changed[t]:
            continue
        path = store / "tables" / f"{t}.parquet"
        old = pq.ParquetFile(path).read()
        keep = old.filter(pc.invert(pc.is_in(old["image_id"], pa.array(sorted(changed[t])))))
        new = pa.concat_tables(new_parts, promote_options="permissive")
        table = pa.concat_tables([keep, _conform(new, old.schema)]).sort_by("image_id")
        tmp = f"{path}.floor.partial"
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        written[t] = table.num_rows
    return written
