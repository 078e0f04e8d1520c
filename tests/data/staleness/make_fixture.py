"""Recipe (not a test): how the staleness fixtures in this folder were made.

Run with kymflow's own code on the path, in a venv with ``zarr<3``, numcodecs,
numpy, pandas and pyarrow (see README.md here)::

    PYTHONPATH=<kymflow>/src:<kymflow>/src/kymflow/core/zarr/src \
        python make_fixture.py <conformance kit> <this folder>

Each case copies a generation-2 store of the conformance kit, has kymflow's
``KymDataset.update_index`` write its tables and run markers, then edits the
store the way a user would (new params, an edited ROI, a new record, ...), and
records kymflow's own ``get_staleness`` for every record and indexer in
``<case>/expected.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kymflow.core.kym_dataset import KymDataset, RadonIndexer, VelocityEventIndexer
from kymflow.core.kym_dataset.provenance import params_hash
from kymflow_zarr import ZarrDataset

EMPTY_EVENTS = pd.DataFrame(
    columns=["roi_id", "event_id", "t_start_s", "t_end_s", "peak_t_s", "peak_value", "score"]
)


def _copy(kit: Path, case: str, out: Path, name: str) -> ZarrDataset:
    dest = out / name / "dataset.zarr"
    shutil.rmtree(dest.parent, ignore_errors=True)
    shutil.copytree(kit / "gen2" / case / "dataset.zarr", dest)
    return ZarrDataset(str(dest), mode="a")


def _expected(ds: ZarrDataset, roles: dict[str, str]) -> dict[str, Any]:
    kd = KymDataset(ds)
    out: dict[str, Any] = {}
    for image_id in ds.list_image_ids():
        rec = ds.record(image_id)
        per: dict[str, Any] = {}
        for idx in (VelocityEventIndexer(), RadonIndexer()):
            table = f"kym_{idx.name}"
            r = kd.get_staleness(
                table,
                image_id,
                idx.params_hash(rec),
                analysis_version=idx.analysis_version(),
                indexer=idx,
                rec=rec,
            )
            per[table] = {
                "reason": str(r.reason),
                "is_stale": r.is_stale,
                "has_run_marker": r.has_run_marker,
                "table_rows_present": r.table_rows_present,
                "marker_n_rows": r.marker_n_rows,
                "params_hash_matches": r.params_hash_matches,
                "analysis_version_matches": r.analysis_version_matches,
            }
        out[image_id] = per
    return {"roles": roles, "staleness": out}


def _write(out: Path, name: str, doc: dict[str, Any]) -> None:
    (out / name / "expected.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def params_edit(kit: Path, out: Path) -> None:
    """Velocity events indexed, then one record's params changed."""
    ds = _copy(kit, "g2_test_ve_replace_incremental", out, "ve_params_edit")
    ids = json.loads((kit / "gen2/g2_test_ve_replace_incremental/notes.json").read_text())["ids"]
    kd = KymDataset(ds)
    kd.update_index(VelocityEventIndexer(), mode="replace")
    kd.update_index(RadonIndexer(), mode="replace")
    ds.record(ids["id1"]).save_json("velocity_events/params", {"threshold": 0.6, "window": 7})
    _write(
        out, "ve_params_edit", _expected(ds, {"params_changed": ids["id1"], "fresh": ids["id2"]})
    )


def zero_rows(kit: Path, out: Path) -> None:
    """A record whose analysis found no events: marker n_rows 0, no table rows."""
    ds = _copy(kit, "g2_test_ve_zero_rows_marker", out, "ve_zero_rows")
    image_id = ds.list_image_ids()[0]
    rec = ds.record(image_id)
    idx = VelocityEventIndexer()
    idx.write_run_marker(
        rec, params_hash=idx.params_hash(rec), analysis_version=idx.analysis_version(), n_rows=0
    )
    KymDataset(ds).update_index(idx, mode="replace")
    _write(out, "ve_zero_rows", _expected(ds, {"fresh_zero_rows": image_id}))


def roi_edit(kit: Path, out: Path) -> None:
    """Radon indexed, then an ROI of metadata.json edited (the radon hash covers ROIs)."""
    ds = _copy(kit, "g2_demo_radon_roi", out, "radon_roi_edit")
    kd = KymDataset(ds)
    kd.update_index(RadonIndexer(), mode="replace")
    image_id = ds.list_image_ids()[0]
    rec = ds.record(image_id)
    md = rec.load_metadata_payload()
    md["rois"][0]["data"]["x1"] = 8
    rec.save_metadata_payload(md)
    _write(out, "radon_roi_edit", _expected(ds, {"params_changed": image_id}))


def mixed(kit: Path, out: Path) -> None:
    """Every reason in one store: version bump, marker/table mismatch both ways, a new
    record without a marker, a legacy summary marker, and a fresh record."""
    ds = _copy(kit, "g2_demo_ve", out, "ve_mixed")
    a, b = ds.list_image_ids()
    kd = KymDataset(ds)
    idx = VelocityEventIndexer()
    kd.update_index(idx, mode="replace")
    kd.update_index(RadonIndexer(), mode="replace")
    roles = {"fresh_rows": a}

    # c: analysed (rows in the table), then its marker claims zero rows.
    c = ds.add_image(np.zeros((8, 8), dtype=np.uint8)).image_id
    rec_c = ds.record(c)
    rec_c.save_json("velocity_events/params", {"threshold": 0.3})
    rec_c.save_df_parquet(
        "velocity_events/events",
        pd.DataFrame(
            {
                "roi_id": [1],
                "event_id": ["9b2f4e0c-1d7a-4c55-8f0e-6a3b2c1d0e9f"],
                "t_start_s": [0.1],
                "t_end_s": [0.3],
                "peak_t_s": [0.2],
                "peak_value": [2.0],
                "score": [0.5],
            }
        ),
    )
    kd.update_index(idx, mode="incremental")
    idx.write_run_marker(
        rec_c, params_hash=idx.params_hash(rec_c), analysis_version=idx.analysis_version(), n_rows=0
    )
    roles["marker_says_zero_rows"] = c

    # b: table rows and marker from an older analysis version.
    table = ds.load_table("kym_velocity_events")
    table.loc[table["image_id"] == b, "analysis_version"] = "kymflow.velocity_events@0.0"
    ds.save_table("kym_velocity_events", table)
    rec_b = ds.record(b)
    marker = rec_b.load_json("velocity_events/summary")
    marker["analysis_version"] = "kymflow.velocity_events@0.0"
    rec_b.save_json("velocity_events/summary", marker)
    roles["version_changed"] = b

    # d: a new record with params and events but never indexed: no marker, no rows.
    d = ds.add_image(np.zeros((8, 8), dtype=np.uint8)).image_id
    ds.record(d).save_json("velocity_events/params", {"threshold": 0.4})
    ds.record(d).save_df_parquet("velocity_events/events", EMPTY_EVENTS)
    roles["missing_marker"] = d

    # e: marker says 2 rows, but the table has none for it.
    e = ds.add_image(np.zeros((8, 8), dtype=np.uint8)).image_id
    rec_e = ds.record(e)
    idx.write_run_marker(
        rec_e, params_hash=idx.params_hash(rec_e), analysis_version=idx.analysis_version(), n_rows=2
    )
    roles["marker_rows_not_in_table"] = e

    # f: legacy summary (n_events, no marker_version) with zero events, current params.
    f = ds.add_image(np.zeros((8, 8), dtype=np.uint8)).image_id
    rec_f = ds.record(f)
    rec_f.save_json("velocity_events/params", {"threshold": 0.1})
    rec_f.save_json(
        "velocity_events/summary",
        {
            "n_events": 0,
            "params_hash": params_hash({"threshold": 0.1}),
            "analysis_version": idx.analysis_version(),
            "computed_utc_epoch_ns": 1_700_000_000_000_000_000,
        },
    )
    roles["legacy_summary_zero"] = f

    # g: standard marker file velocity_events_run.json (no summary), old params.
    g = ds.add_image(np.zeros((8, 8), dtype=np.uint8)).image_id
    rec_g = ds.record(g)
    rec_g.save_json("velocity_events/params", {"threshold": 0.9})
    kd._write_standard_run_marker(
        rec_g,
        indexer_name="velocity_events",
        params_hash=params_hash({"threshold": 0.5}),
        analysis_version=idx.analysis_version(),
        n_rows=0,
    )
    roles["standard_marker_params_changed"] = g
    _write(out, "ve_mixed", _expected(ds, roles))


def main(kit: Path, out: Path) -> None:
    params_edit(kit, out)
    zero_rows(kit, out)
    roi_edit(kit, out)
    mixed(kit, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
