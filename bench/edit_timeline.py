"""Timeline of single edits in an in-process daemon (issue 14; hand-run, not in the suite).

Runs ``Daemon`` (real inotify source) on a thread over a hard-link copy of the bench's
indexed store, makes ``--edits`` atomic edits (kymflow's ``.partial`` + rename) on random
records alternating events / radon, and stamps with ``perf_counter`` what happens between
the rename's return and the replacement of the table holding the record's rows: the
watcher's hand-off, the loop's wake-up, the debouncer's due time, the worker's phases,
every Python ``fsync`` and ``Path.replace``. Prints, per edit kind, the median and p90 of
each stamp relative to the write.

    .venv/bin/python bench/edit_timeline.py --records 10000 --edits 40
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storegen

STAMPS: list[tuple[float, str, str]] = []  # (perf_counter, label, thread name)
_lock = threading.Lock()


def _stamp(label: str) -> None:
    with _lock:
        STAMPS.append((time.perf_counter(), label, threading.current_thread().name))


def _wrap(owner: Any, attr: str, label: str, *, end: bool = True) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        _stamp(label + ">")
        try:
            return fn(*a, **k)
        finally:
            if end:
                _stamp(label + "<")

    setattr(owner, attr, wrapper)


def note_renames() -> dict[str, float]:
    """From now on in this process, each file renamed into place by ``Path.replace``
    (the tables' atomic writes): its name → ``perf_counter`` time of the rename."""
    import pathlib

    renamed: dict[str, float] = {}
    real_replace = pathlib.Path.replace

    def replace(self: Path, target: Any) -> Any:
        out = real_replace(self, target)
        renamed[Path(target).name] = time.perf_counter()
        return out

    pathlib.Path.replace = replace  # type: ignore[assignment,method-assign]
    return renamed


def make_store(n: int, dest: Path) -> Path:
    """A hard-link copy of the cached ``n``-record store with the indexed template's
    tables and a seeded state."""
    cache = Path(os.environ.get("KW_CACHE", "/work/main/bench/out/cache"))
    src = cache / f"store-{n}x{storegen.ROWS_PER_RECORD}-v{storegen.GEN_VERSION}"
    tmpl = next(cache.glob(f"indexed-{n}x{storegen.ROWS_PER_RECORD}-*"))
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    (dest / ".bench-complete").unlink(missing_ok=True)
    shutil.copytree(tmpl / "tables", dest / "tables")
    from kymwatch.daemon import IndexState
    from kymwatch.index.registry import make_indexers, select_indexers
    from kymwatch.store import scan_dataset

    state = IndexState(
        records=scan_dataset(dest),
        schema_versions={ix.name: ix.schema_version for ix in make_indexers(select_indexers(dest))},
    )
    (dest / "index").mkdir(exist_ok=True)
    state.save(dest)
    state.close()
    return dest


def instrument() -> None:
    """Wrap the points of the daemon whose times make the timeline."""
    import pathlib

    from kymwatch.daemon import debouncer, indexing, intake, state, worker
    from kymwatch.index import kymdataset, publish
    from kymwatch.store import atomic, tables

    orig_put = intake.Intake.put

    def put(self: Any, item: Any) -> None:
        _stamp("event_put")
        orig_put(self, item)

    intake.Intake.put = put  # type: ignore[method-assign]
    orig_wait = intake.Intake.wait

    def wait(self: Any, timeout: float) -> Any:
        items = orig_wait(self, timeout)
        if items:
            _stamp("loop_woke")
        return items

    intake.Intake.wait = wait  # type: ignore[method-assign]
    orig_due = debouncer.Debouncer.due

    def due(self: Any, now: float) -> Any:
        deadline = self.next_deadline()
        batch = orig_due(self, now)
        if batch:
            with _lock:  # the due time, on the perf_counter scale (clock is monotonic)
                STAMPS.append((time.perf_counter() - (now - deadline), "due_at", "loop"))
            _stamp("batch_taken")
        return batch

    debouncer.Debouncer.due = due  # type: ignore[method-assign]
    _wrap(indexing.ChunkedIndexing, "index", "index")
    _wrap(worker.Worker, "process", "process")
    from kymwatch.daemon import choice, reporter, runner
    from kymwatch.daemon import tables as dtables

    _wrap(reporter.Reporter, "publish", "status")
    _wrap(reporter.Reporter, "batch_done", "batch_done")
    _wrap(choice.IndexerChoice, "decide", "decide")
    _wrap(dtables.TableKeeper, "regrow", "regrow")
    _wrap(runner, "hold_table_lock", "table_lock", end=False)
    _wrap(kymdataset.KymDataset, "update_batch_report", "update")
    _wrap(worker, "scan_records_settled", "scan")
    _wrap(state.IndexState, "note_publishing", "journal")
    _wrap(state.IndexState, "note_table", "note_table")
    _wrap(state.IndexState, "update_record", "update_record")
    _wrap(worker.Worker, "_update_manifest", "manifest")
    _wrap(kymdataset, "extract_jobs", "extract")
    _wrap(publish.Publisher, "merge", "merge")
    _wrap(publish.Publisher, "start", "start")
    _wrap(publish.Publisher, "finish", "finish")
    _wrap(tables.pq, "write_table", "encode")
    _wrap(os, "fsync", "fsync")
    _wrap(atomic, "fsync_dir", "fsync_dir")
    orig_replace = pathlib.Path.replace

    def replace(self: Any, target: Any) -> Any:
        r = orig_replace(self, target)
        _stamp("renamed:" + Path(target).name)
        return r

    pathlib.Path.replace = replace  # type: ignore[method-assign]


def run(n: int, edits: int, seed: int, workdir: Path) -> dict[str, list[dict[str, float]]]:
    store = make_store(n, workdir / f"s{n}")
    instrument()
    from kymwatch.daemon import Daemon, DaemonConfig

    d = Daemon(DaemonConfig(store=store, quiet_s=0.3, settle_s=0.02))
    th = threading.Thread(target=d.run, name="loop", daemon=True)
    th.start()
    status = store / "index" / "status.json"
    t0 = time.perf_counter()
    while b'"watching"' not in (status.read_bytes() if status.exists() else b""):
        time.sleep(0.01)
        if time.perf_counter() - t0 > 120:
            raise RuntimeError("daemon not ready")
    time.sleep(0.5)
    rng = random.Random(seed)
    out: dict[str, list[dict[str, float]]] = defaultdict(list)
    for k in range(edits):
        i, kind = rng.randrange(n), storegen.KINDS[k % 2]
        table = storegen.table_of(i, kind)
        path = storegen.artifact_path(store, i, kind)
        data = storegen.artifact_bytes(i, kind, 20_000.0 + k)
        tpath = store / "tables" / f"{table}.parquet"
        before = os.stat(tpath).st_ino
        with _lock:
            STAMPS.clear()
        storegen.atomic_write(path, data)
        tw = time.perf_counter()
        while os.stat(tpath).st_ino == before:
            time.sleep(0.0005)
        time.sleep(0.05)  # let the batch's after-work finish
        with _lock:
            stamps = list(STAMPS)
        row: dict[str, float] = {}
        for t, label, _thread in stamps:
            key = label if label not in row else label + "#2"
            if key in row:
                continue
            row[key] = (t - tw) * 1000
        row["visible"] = row.get(f"renamed:{table}.parquet", float("nan"))
        out[f"{table}"].append(row)
        time.sleep(rng.uniform(0.1, 0.3))
    d.stop()
    th.join(30)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--edits", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/kw-edit"))
    a = p.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    res = run(a.records, a.edits, a.seed, a.workdir)
    for table, rows in res.items():
        labels: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            for k, v in r.items():
                labels[k].append(v)
        print(f"\n{table}: {len(rows)} edits (ms after the write returned; p50 / p90)")
        for k in sorted(labels, key=lambda k: _pct(labels[k], 0.5)):
            v = labels[k]
            print(f"  {k:34s} {_pct(v, 0.5):8.2f} {_pct(v, 0.9):8.2f}  n={len(v)}")


if __name__ == "__main__":
    main()
