"""Recipe (not a test): how the manifest fixtures in this folder were made.

Run with kymflow's own code on the path, in a venv with ``zarr<3``, numcodecs,
numpy, pandas and pyarrow (see README.md here)::

    PYTHONPATH=<kymflow>/src:<kymflow>/src/kymflow/core/zarr/src \
        python make_fixture.py <conformance kit> <this folder>

It copies a few stores of the conformance kit, writes one more store with
kymflow's ``ZarrDataset.add_image`` and metadata payloads (so
``acquired_local_epoch_ns`` is set), and has kymflow's
``ZarrDataset.update_manifest()`` write ``index/manifest.json.gz`` into each.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from kymflow_zarr import ZarrDataset

KIT_CASES = {
    "gen1_demo_v01": "gen1/demo_v01",
    "gen2_demo_ve": "gen2/g2_demo_ve",
    "gen2_demo_radon_roi": "gen2/g2_demo_radon_roi",
}


def _with_acquired(rec, acquired: object) -> None:
    """kymflow's header from the array, plus the acquisition time in its header."""
    rec.save_metadata_objects(auto_header_from_array=True)
    payload = rec.load_metadata_payload()
    payload["header"]["acquired_local_epoch_ns"] = acquired
    rec.save_metadata_payload(payload)


def _kymflow_written(path: Path) -> dict[str, str]:
    ds = ZarrDataset(str(path), mode="a")
    ids: dict[str, str] = {}

    rec = ds.add_image((np.arange(48, dtype=np.uint16) * 7).reshape(6, 8))
    _with_acquired(rec, 1_732_600_000_123_456_789)
    ids["acquired_2d"] = rec.image_id

    rec = ds.add_image(np.arange(60, dtype=np.uint8).reshape(2, 5, 6))
    # Legacy gzipped payload, acquisition time as a numeric string.
    payload = {"version": "2.0", "header": {"acquired_local_epoch_ns": "1700000000000000000"}}
    key = f"images/{rec.image_id}/analysis/metadata.json.gz"
    ds.store[key] = gzip.compress(json.dumps(payload).encode())
    ids["legacy_gz_3d"] = rec.image_id

    rec = ds.add_image(np.ones((4, 4), dtype=np.float32), chunks=(2, 4))
    events = pd.DataFrame(
        {
            "roi_id": [1, 1],
            "event_id": ["e1", "8d1f6c1e-8a51-4d0e-9a55-0b5f1f1d0c11"],
            "t_start_s": [0.1, 0.5],
            "t_end_s": [0.2, 0.7],
            "peak_t_s": [0.15, 0.6],
            "peak_value": [1.0, 2.0],
            "score": [0.9, 0.8],
        }
    )
    rec.save_df_parquet("velocity_events/events", events)
    rec.save_json("velocity_events/params", {"threshold": 0.5})
    rec.save_df_csv_gz("radon/results", pd.DataFrame({"roi_id": [1], "velocity": [0.3]}))
    rec.save_array_artifact("kymo_filtered", np.zeros((4, 4), dtype=np.float32))
    ds.store[f"images/{rec.image_id}/analysis/metadata.json"] = b"{not valid json"
    ids["artifacts_bad_metadata"] = rec.image_id

    rec = ds.add_image(np.zeros((3, 2, 4, 5, 2), dtype=np.int16))  # no metadata at all
    ids["no_metadata_5d"] = rec.image_id

    rec = ds.add_image(np.zeros((3, 7), dtype=np.uint8), axes=["x", "t"])
    rec.save_metadata_objects(auto_header_from_array=True)  # a header without the time
    ids["header_without_time"] = rec.image_id

    ds.root.require_group("images/nodata")  # a group without pixels: not in the manifest
    ds.update_manifest()
    return ids


def main(kit: Path, out: Path) -> None:
    notes: dict[str, object] = {}
    for name, case in KIT_CASES.items():
        dest = out / name / "dataset.zarr"
        shutil.rmtree(dest.parent, ignore_errors=True)
        shutil.copytree(kit / case / "dataset.zarr", dest)
        ZarrDataset(str(dest), mode="a").update_manifest()
        notes[name] = {"from": case}
    dest = out / "kymflow_written" / "dataset.zarr"
    shutil.rmtree(dest.parent, ignore_errors=True)
    notes["kymflow_written"] = {"ids": _kymflow_written(dest)}
    (out / "notes.json").write_text(json.dumps(notes, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
