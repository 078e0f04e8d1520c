"""End-to-end at the size where watchdog 7's recursive watch went silent (DESIGN field notes).

A 2,000-record store has over 6,000 folders (each record, its ``data/`` and its
``analysis/``). The daemon must index all of it on startup, then keep receiving
events: edits made while it runs are checked WITHOUT ``kymwatch sync`` (which
would run a reconcile and hide lost events).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness import (
    DaemonProcess,
    assert_tables_match_rebuild,
    count_inotify_watches,
    live_tables,
    wait_until,
)
from helpers_store import (
    analysis_file,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)

pytestmark = pytest.mark.integration

N_RECORDS = 2000
NESTED_EVERY = 10  # every 10th record stores its events as velocity_events/events.parquet
RADON_EVERY = 5  # every 5th record has a radon report (the others log artifact_missing)
N_EDITS = 20


def _events_name(i: int) -> str:
    return "velocity_events/events" if i % NESTED_EVERY == 0 else "velocity_events"


def _has_radon(i: int) -> bool:
    return i % RADON_EVERY == 0


def _build_store(root: Path, scratch: Path) -> tuple[list[str], int]:
    """A store of ``N_RECORDS`` records; returns the ids and the number of ``analysis/``
    sub-folders.

    One record is written with the plain-file helpers; its files are then copied
    byte for byte into every other record (much quicker than serialising each one).
    """
    make_v2_store(root)
    write_v2_record(scratch, "template", atomic=False)
    template = scratch / "images" / "template"
    files = {p.relative_to(template): p.read_bytes() for p in template.rglob("*") if p.is_file()}
    events = write_parquet_artifact(scratch, "template", "e", events_frame(2)).read_bytes()
    ids = [f"rec{i:05d}" for i in range(N_RECORDS)]
    for i, image_id in enumerate(ids):
        rec = root / "images" / image_id
        for rel, data in files.items():
            (rec / rel).parent.mkdir(parents=True, exist_ok=True)
            (rec / rel).write_bytes(data)
        target = analysis_file(root, image_id, _events_name(i), "parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(events)
        if _has_radon(i):
            write_json_artifact(
                root, image_id, "radon_report", legacy_radon_report(float(i)), atomic=False
            )
    subfolders = sum(1 for p in (root / "images").glob("*/analysis/*") if p.is_dir())
    return ids, subfolders


def test_large_store_keeps_delivering_events(tmp_path: Path) -> None:
    """On a 2,000-record store the daemon indexes everything at startup, then indexes
    edits from file events alone, with about two inotify watches per record."""
    store = tmp_path / "store.zarr"
    t0 = time.monotonic()
    ids, subfolders = _build_store(store, tmp_path / "template")
    folders = sum(1 for p in store.rglob("*") if p.is_dir())
    print(f"\nbuilt {N_RECORDS} records ({folders} folders) in {time.monotonic() - t0:.1f} s")
    assert folders > 6000

    with DaemonProcess(store) as d:
        assert d.proc is not None
        startup = [ev for ev in d.events("reconcile_done") if ev.get("reason") == "startup"]
        assert [ev["changed"] for ev in startup] == [N_RECORDS]
        print(f"startup reconcile indexed {N_RECORDS} records in {startup[0]['duration_ms']} ms")
        tables = live_tables(store)
        # velocity_events/events (a generation-2 name) makes the store both generations:
        # kym_velocity_events reads either spelling, velocity_events the flat one only.
        assert tables["kym_velocity_events"]["image_id"].nunique() == N_RECORDS
        flat = N_RECORDS - len(range(0, N_RECORDS, NESTED_EVERY))
        assert tables["velocity_events"]["image_id"].nunique() == flat
        assert tables["radon_report"]["image_id"].nunique() == N_RECORDS // RADON_EVERY

        watches = count_inotify_watches(d.proc.pid)
        limit = 2 * N_RECORDS + 10 + subfolders
        print(f"inotify watches for {N_RECORDS} records: {watches} (limit {limit})")
        assert watches <= limit, (
            f"{watches} inotify watches for {N_RECORDS} records "
            f"({subfolders} analysis sub-folders); limit {limit}"
        )

        # Spread over the store; some nested, some gaining a radon report they lacked.
        step = N_RECORDS // N_EDITS
        edited_at = [k * step + k % 10 for k in range(N_EDITS)]
        edited = [ids[i] for i in edited_at]
        t0 = time.monotonic()
        for k, i in enumerate(edited_at):
            image_id = ids[i]
            write_parquet_artifact(store, image_id, _events_name(i), events_frame(5 + k % 3))
            write_json_artifact(store, image_id, "radon_report", legacy_radon_report(-1.0 - k))

        def reflected() -> bool:
            t = live_tables(store)
            ev = t["kym_velocity_events"].groupby("image_id").size()
            radon = t["radon_report"].set_index("image_id")["mean_velocity"]
            return all(
                ev.get(image_id) == 5 + k % 3 and radon.get(image_id) == -1.0 - k
                for k, image_id in enumerate(edited)
            )

        wait_until(reflected, what=f"{N_EDITS} edits to reach the tables through events")
        print(f"{N_EDITS} edits indexed from events in {time.monotonic() - t0:.2f} s")
        reasons = [ev["reason"] for ev in d.events("reconcile_done")]
        print(f"reconciles so far: {reasons}")

        d.sync()
        assert_tables_match_rebuild(store, tmp_path / "rebuild")
        assert d.stop() == 0
