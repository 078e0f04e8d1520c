"""The kymflow conformance kit (tests/data/conformance) and its rule, for every test.

The kit holds stores written by kymflow's own code and the tables kymflow's own
``KymDataset`` built from them (``expected/<table>.json``). :func:`assert_conforms`
is the kit README's "What conforms means", written once:

- the same records with the same number of rows;
- for every column kymflow has, the same values, rows compared as a multiset
  (floats to 1e-12, null equals null);
- kymwatch may be stricter: text columns hold strings (kymflow's number 7 is "7",
  an integer id 1 is "1"), a numeric column may hold the number where kymflow kept
  a numeric string ("0.5" → 0.5), and it may add columns;
- where kymflow turned garbage into rows (a radon JSON list of non-objects gives
  all-null rows), kymwatch answers ``artifact_invalid``: those rows are not expected;
- where kymflow itself failed (``upstream_run.json`` says ``ok: false``), the
  expected rows are what kymflow gives for each record on its own: every record
  is indexed (see :func:`per_record_reference`).

Nothing here imports kymwatch: the rule must not share code with what it checks.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

KIT = Path(__file__).parent / "data" / "conformance"
TEXT_COLUMNS = frozenset(
    {"image_id", "event_id", "kind", "notes", "analysis_version", "params_hash"}
)
TABLES = {
    "gen1": ("velocity_events", "radon_report"),
    "gen2": ("kym_velocity_events", "kym_radon"),
}
INDEXERS = {"gen1": "velocity_events,radon_report", "gen2": "kym_velocity_events,kym_radon"}
_LEGACY = {"vel_mean": "mean_velocity", "vel_median": "median_velocity"}
_LEGACY |= {"vel_n_valid": "n_valid", "note": "notes"}


def cases(gen: str) -> list[Path]:
    """Every case folder of generation ``gen`` ("gen1" or "gen2"), sorted."""
    return sorted(p for p in (KIT / gen).iterdir() if (p / "dataset.zarr").is_dir())


def case_ids(gen: str) -> list[str]:
    """The case names of ``gen``, for pytest ids."""
    return [p.name for p in cases(gen)]


def copy_store(case: Path, dst: Path) -> Path:
    """A private, writable copy of the case's store at ``dst`` (returned)."""
    shutil.copytree(case / "dataset.zarr", dst, symlinks=True)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dst


def upstream(case: Path, table: str) -> dict[str, Any]:
    """kymflow's own run on ``table``: ``{"ok": bool, "rows": n}`` or the error."""
    doc: dict[str, Any] = json.loads((case / "expected" / "upstream_run.json").read_text())
    return dict(doc[table])


def expected_table(case: Path, table: str) -> tuple[list[str], list[list[Any]]] | None:
    """kymflow's table as (columns, rows), or None where kymflow failed."""
    path = case / "expected" / f"{table}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return list(doc["columns"]), [list(r) for r in doc["rows"]]


# -- normalisation ----------------------------------------------------------------------
def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    try:
        return isinstance(v, float) and math.isnan(v)
    except TypeError:
        return False


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _norm(column: str, v: Any) -> Any:
    """One cell in a comparable form: None, a str, or a float."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        v = v.item()  # numpy scalars
    if _is_null(v):
        return None
    if column in TEXT_COLUMNS:
        return _as_text(v)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return str(v)


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        (0, "") if v is None else (1, round(v, 9)) if isinstance(v, float) else (2, v) for v in row
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return bool(a == b)


# -- references ---------------------------------------------------------------------------
def _radon_json(path: Path) -> Any:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.name.endswith(".gz") else raw)


def garbage_records(store: Path, table: str) -> set[str]:
    """Records whose radon JSON is a list with non-object items: kymflow makes all-null
    rows of them, kymwatch answers ``artifact_invalid`` (the better answer)."""
    if table != "radon_report":
        return set()
    out = set()
    for rec in (store / "images").iterdir():
        analysis = rec / "analysis"
        if (analysis / "radon_report.parquet").exists():
            continue
        for name in ("radon_report.json", "radon_report.json.gz"):
            if (analysis / name).is_file():
                obj = _radon_json(analysis / name)
                if isinstance(obj, list) and not all(isinstance(r, dict) for r in obj):
                    out.add(rec.name)
                break
    return out


def per_record_reference(store: Path, table: str) -> tuple[list[str], list[list[Any]]]:
    """What kymflow's generation-1 radon indexer gives each record on its own (used
    where kymflow failed on the whole store): an object is a row, a list of objects
    rows; a new key wins over its legacy name."""
    assert table == "radon_report", f"no per-record reference for {table}"
    columns = ["image_id", "mean_velocity", "median_velocity", "n_valid", "notes"]
    rows: list[list[Any]] = []
    for rec in sorted((store / "images").iterdir()):
        analysis = rec / "analysis"
        if (analysis / "radon_report.parquet").is_file():
            df = pd.read_parquet(analysis / "radon_report.parquet")
            objs = df.to_dict("records")
        else:
            found = [analysis / n for n in ("radon_report.json", "radon_report.json.gz")]
            path = next((p for p in found if p.is_file()), None)
            if path is None:
                continue
            obj = _radon_json(path)
            objs = [obj] if isinstance(obj, dict) else obj if isinstance(obj, list) else []
            if not all(isinstance(o, dict) for o in objs):
                continue
        for o in objs:
            merged = {_LEGACY.get(k, k): v for k, v in o.items() if k in _LEGACY}
            merged.update({k: v for k, v in o.items() if k not in _LEGACY})
            rows.append([rec.name, *(merged.get(c) for c in columns[1:])])
    return columns, rows


def reference(case: Path, table: str, store: Path | None = None) -> tuple[list[str], list[list]]:
    """The rows kymwatch's ``table`` must hold for ``case`` (see the module docstring)."""
    store = store or case / "dataset.zarr"
    found = expected_table(case, table)
    if found is None or not upstream(case, table).get("ok", False):
        return per_record_reference(store, table)
    columns, rows = found
    garbage = garbage_records(store, table)
    return columns, [r for r in rows if r[columns.index("image_id")] not in garbage]


# -- the rule ------------------------------------------------------------------------------
def assert_conforms(ours: pd.DataFrame, columns: list[str], rows: list[list[Any]]) -> None:
    """``ours`` conforms to kymflow's ``rows`` (over ``columns``) by the kit's rule."""
    assert len(ours) == len(rows), f"{len(ours)} rows, kymflow has {len(rows)}"
    if not rows:
        return
    want_ids = Counter(str(r[columns.index("image_id")]) for r in rows)
    got_ids = Counter(str(i) for i in ours["image_id"])
    assert got_ids == want_ids, f"rows per record differ: {got_ids} != {want_ids}"
    missing = [c for c in columns if c not in ours.columns]
    assert not missing, f"kymflow's columns {missing} are missing"
    for col in TEXT_COLUMNS & set(columns):
        values = [v for v in ours[col].tolist() if not _is_null(v)]
        assert all(isinstance(v, str) for v in values), f"text column {col} holds non-text"
    want = sorted(
        (tuple(_norm(c, v) for c, v in zip(columns, r, strict=True)) for r in rows), key=_key
    )
    got = sorted(
        (
            tuple(_norm(c, v) for c, v in zip(columns, r, strict=True))
            for r in ours[columns].itertuples(index=False)
        ),
        key=_key,
    )
    for g, w in zip(got, want, strict=True):
        assert all(_same(a, b) for a, b in zip(g, w, strict=True)), f"row {g} != kymflow's {w}"
