"""``kymwatch demo``: the seed flow, then a live acquisition watched by the daemon.

Everything happens in a store made on the spot (a temporary folder by default).
The acquisition is simulated with plain file I/O, as a microscope pipeline that
knows nothing of kymwatch would write it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kymwatch.daemon import Daemon, DaemonConfig, read_status, request_sync
from kymwatch.index import KymDataset
from kymwatch.logconfig import configure_logging
from kymwatch.logview import LogFilter, show_log
from kymwatch.store import INDEX_DIR, TABLES_DIR, ZarrDataset, atomic_write

__all__ = ["run_demo", "seed_flow"]

_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def _events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = np.sort(rng.uniform(0, 10, n))
    return pd.DataFrame(
        {
            "roi_id": np.ones(n, dtype="int64"),
            "event_id": [f"e{seed}-{k + 1}" for k in range(n)],
            "t0_s": t0,
            "t1_s": t0 + rng.uniform(0.1, 0.5, n),
            "kind": rng.choice(["stall", "reversal"], n),
            "score": rng.uniform(0, 1, n),
        }
    )


def seed_flow(ds: ZarrDataset) -> tuple[int, int, int, int]:
    """kymflow's seed demo (``demo_kym_dataset_v01.py``) on our library: 3 records, a
    rebuild of both tables, one record's events edited, then ``update_image``.

    Prints and returns the four counts kymflow prints: velocity events rows, radon
    report rows, velocity rows after the update, rows of the edited image (2/3/2/1).
    """
    ids = []
    for i in range(3):
        rec = ds.add_image(np.zeros((8, 8), dtype="uint8"), axes=["time", "space"])
        rec.save_json(
            "radon_report",
            {
                "mean_velocity": 0.1 + i * 0.1,
                "median_velocity": 0.08 + i * 0.1,
                "n_valid": 50 + i,
                "notes": f"img{i}",
            },
        )
        if i < 2:
            events = {
                "roi_id": [i + 1],
                "event_id": [f"e{i + 1}"],
                "t0_s": [0.1 + i],
                "t1_s": [0.2 + i],
                "kind": ["drop"],
                "score": [0.9 - i * 0.1],
            }
            rec.save_df_parquet("velocity_events", pd.DataFrame(events))
        ids.append(rec.image_id)
    kd = KymDataset(ds.path)
    ve = kd.rebuild("velocity_events", log_outcomes=False)
    rr = kd.rebuild("radon_report", log_outcomes=False)
    print(f"velocity events rows: {len(ve)}")
    print(f"radon report rows: {len(rr)}")
    edited = {
        "roi_id": [99],
        "event_id": ["edited"],
        "t0_s": [1.0],
        "t1_s": [1.5],
        "kind": ["rise"],
        "score": [0.42],
    }
    ds.record(ids[1]).save_df_parquet("velocity_events", pd.DataFrame(edited))
    updated = kd.update_image("velocity_events", ids[1])
    mine = int((updated["image_id"] == ids[1]).sum())
    print(f"updated velocity rows: {len(updated)}")
    print(f"rows for the edited image: {mine}")
    return len(ve), len(rr), len(updated), mine


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write like an analysis script would: temp file + rename, no kymwatch API."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp), fsync=False)


def _new_record(root: Path, image_id: str) -> Path:
    """A kymflow record written with plain file I/O (zarr format 2)."""
    rec = root / "images" / image_id
    (rec / "data").mkdir(parents=True)
    (rec / ".zgroup").write_text('{"zarr_format": 2}')
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    attrs = {"axes": ["time", "space"], "created_utc": now, "updated_utc": now}
    (rec / ".zattrs").write_text(json.dumps(attrs))
    zarray = {
        "zarr_format": 2, "shape": [64, 128], "chunks": [64, 128], "dtype": "<u2",
        "compressor": None, "fill_value": 0, "order": "C", "filters": None,
    }  # fmt: skip
    (rec / "data" / ".zarray").write_text(json.dumps(zarray))
    (rec / "analysis").mkdir()
    return rec


def _tables_equal_rebuild(root: Path, work: Path) -> bool:
    copy = work / "rebuild-copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(TABLES_DIR, INDEX_DIR))
    live, fresh = KymDataset(root, "r"), KymDataset(copy)
    same = True
    for ix in fresh.indexers:
        b = fresh.rebuild(ix, log_outcomes=False)
        a = live.get_table(ix.table_name)
        ok = a.equals(b)
        same &= ok
        print(
            f"  {ix.table_name}: {len(a)} rows, equal to a fresh rebuild: {'yes' if ok else 'NO'}"
        )
    return same


def _show(root: Path) -> None:
    kd = KymDataset(root, "r")
    s = read_status(root, running=True).data
    c = s.get("counters", {})
    rows = ", ".join(f"{ix.table_name} {len(kd.get_table(ix.table_name))}" for ix in kd.indexers)
    _say(
        f"  tables: {rows} rows | daemon {s.get('state')}, queue {s.get('queue_depth')}, "
        f"batches {c.get('batches', 0)}, records indexed {c.get('records_indexed', 0)}"
    )


def live_acquisition(root: Path) -> None:
    """Simulate an acquisition while a daemon watches ``root``."""
    images = root / "images"
    new_ids = [f"acq{i:03d}" for i in range(6)]
    _say(f"acquisition: {len(new_ids)} records appear, artifacts follow over a few seconds")
    for i, image_id in enumerate(new_ids):
        rec = _new_record(root, image_id)
        time.sleep(0.3)
        _write_parquet(rec / "analysis" / "velocity_events.parquet", _events(3 + i, seed=i))
        report = {"vel_mean": 2.0 + i / 10, "vel_median": 1.9, "vel_n_valid": 50, "note": "acq"}
        (rec / "analysis" / "radon_report.json").write_text(json.dumps(report))
    request_sync(root)
    _show(root)

    target = images / new_ids[0] / "analysis" / "velocity_events.parquet"
    _say(f"edit: {new_ids[0]} gets 1 event; no command is run, we just wait")
    start = time.monotonic()
    _write_parquet(target, _events(1, seed=99))
    kd = KymDataset(root, "r")
    while (kd.get_table("velocity_events")["image_id"] == new_ids[0]).sum() != 1:
        time.sleep(0.02)
    _say(f"  indexed by the daemon {time.monotonic() - start:.2f} s after the write")

    _say(f"delete: record {new_ids[1]} is removed")
    shutil.rmtree(images / new_ids[1])
    half = images / new_ids[2] / "analysis" / "velocity_events.parquet"
    whole = _events(4, seed=7)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(whole, preserve_index=False), buf)
    data = buf.getvalue().to_pybytes()
    _say(f"half-written: {new_ids[2]}'s events file is written half-way, in place")
    with half.open("wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        request_sync(root)
        rows = (KymDataset(root, "r").get_table("velocity_events")["image_id"] == new_ids[2]).sum()
        _say(f"  while torn: the table keeps its {rows} earlier rows for {new_ids[2]}")
        f.write(data[len(data) // 2 :])
    request_sync(root)
    _show(root)


def run_demo(store: Path | None = None, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 if the tables equal a fresh rebuild)."""
    work = Path(tempfile.mkdtemp(prefix="kymwatch-demo-"))
    root = store or work / "demo.zarr"
    if root.exists():
        print(f"kymwatch: error: {root} already exists; the demo makes a new store")
        return 2
    try:
        print(f"== 1. seed flow: the library on a new store at {root}")
        ds = ZarrDataset(root, "w")
        log_file = root / INDEX_DIR / "kymwatch.log"
        configure_logging(level="info", log_file=log_file, console="none")
        seed_flow(ds)
        print("\n== 2. live: the daemon watches the store while an acquisition writes into it")
        daemon = Daemon(DaemonConfig(store=root, quiet_s=0.3))
        thread = threading.Thread(target=daemon.run, name="kymwatch-daemon")
        thread.start()
        try:
            while read_status(root, running=True).data.get("state") != "watching":
                if not thread.is_alive():
                    raise RuntimeError("the daemon stopped during start-up")
                time.sleep(0.02)
            _say(f"daemon watching ({daemon.status.watch_mode}, {daemon.status.watches} watches)")
            live_acquisition(root)
            _show_status(root)
        finally:
            daemon.stop()
            thread.join()
        print("\n== 3. check: every table equals a fresh rebuild of the same store")
        ok = _tables_equal_rebuild(root, work)
        print("\n== 4. what the daemon logged about the problems it met")
        for event in ("record_removed", "artifact_unreadable"):
            show_log(log_file, LogFilter(event=event), lines=2)
        _next_steps(root, kept=keep or store is not None)
        return 0 if ok else 1
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _show_status(root: Path) -> None:
    """Show ``kymwatch status`` on the live store, as a user would run it."""
    from kymwatch.cli import main

    print(f"\n$ kymwatch status {root}", flush=True)
    main(["status", str(root)])


def _next_steps(root: Path, *, kept: bool) -> None:
    """Say where the store is (or how to keep it) and what to try next."""
    print("\n== 5. try it yourself")
    if kept:
        print(f"The demo store is kept at {root}. Try:")
        where = str(root)
    else:
        print("The demo store is deleted now. To keep it: kymwatch demo --keep")
        print("(or kymwatch demo --store PATH, a new folder that stays). Then try:")
        where = "STORE"
    for command, why in (
        (f"kymwatch run {where}", "watch it (Ctrl-C stops)"),
        (f"kymwatch status {where}", "is anything wrong right now? (--json for scripts)"),
        (f"kymwatch sync {where}", "wait until the tables reflect every write"),
        (f"kymwatch logs {where} --level warning", "what the daemon met"),
        ("kymwatch init NEW.zarr", "an empty store of your own (see the README)"),
    ):
        print(f"  {command:<44} # {why}")
