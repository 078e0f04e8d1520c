"""Index on completion: a rename or a close after writing settles a record, not the quiet window.

The daemon runs here with a quiet window of 30 s, so a record indexed from its events
within the test shows the completion path at work; the ``due_by`` field of each
``batch_indexed`` line says which signal made its records due. Writes use kymflow's
own pattern (zarr's ``<name>.<hex>.partial`` + rename, then the record's ``.zgroup`` /
``.zattrs`` rewritten the same way) and ``df.to_parquet(path)`` in place. The oracle:
once the writes stop, every table equals a fresh rebuild. No upper time bound is
asserted anywhere.
"""

from __future__ import annotations

import asyncio
import io
import os
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from harness import DaemonProcess, assert_tables_match_rebuild, live_tables, wait_until
from helpers_loop import running
from helpers_store import (
    analysis_file,
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    make_v2_store,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import (
    DUE_BY,
    Batch,
    BatchResult,
    ChangeKind,
    Daemon,
    DaemonConfig,
    DaemonStatus,
    FileChange,
    InotifyWatcher,
    RecordChange,
    Reporter,
    Rescan,
    Signal,
    SystemdNotifier,
)

SLOW_QUIET = ["--max-delay-ms", "60000"]  # with quiet_ms=30_000: only signals are quick
GEN1 = "velocity_events,radon_report"
GEN2 = "kym_velocity_events,kym_radon"


# -- writers ---------------------------------------------------------------------------------
def kymflow_save(store: Path, image_id: str, name: str, data: bytes) -> None:
    """Save an artifact the way kymflow's ``ZarrImageRecord`` does: ``store[key] = bytes``
    (zarr writes ``<name>.<hex>.partial`` and renames it), then ``_touch_updated`` sets the
    record group's ``updated_utc`` (zarr rewrites ``.zgroup``/``.zattrs`` the same way)."""
    key = f"images/{image_id}/analysis/{name}"
    buffer = default_buffer_prototype().buffer.from_bytes(data)
    asyncio.run(LocalStore(str(store)).set(key, buffer))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        group = zarr.open_group(str(store / "images" / image_id), mode="r+", zarr_format=2)
        group.attrs["updated_utc"] = pd.Timestamp.now(tz="UTC").isoformat()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as parquet bytes (kymflow's ``df.to_parquet(BytesIO)``)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def gzip_json(obj: Any) -> bytes:
    """``obj`` as kymflow's ``save_json`` stores it (gzipped JSON)."""
    import gzip
    import json

    return gzip.compress(json.dumps(obj, indent=2).encode())


# -- observations ----------------------------------------------------------------------------
def due_by_totals(batches: list[dict[str, Any]]) -> Counter[str]:
    """``due_by`` summed over the ``batch_indexed`` lines of the debouncer (source events)."""
    total: Counter[str] = Counter()
    for ev in batches:
        if ev.get("source") == "events":
            total.update(ev["due_by"])
    return total


def matches_rebuild(store: Path, scratch: Path, indexers: str) -> bool:
    """True if every table equals a fresh rebuild now."""
    try:
        assert_tables_match_rebuild(store, scratch, indexers=indexers.split(","))
    except AssertionError:
        return False
    return True


def record_ids(n: int) -> list[str]:
    """``n`` record ids shaped like kymflow's (UUIDs)."""
    return [str(uuid.uuid4()) for _ in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty zarr-format-2 dataset."""
    return make_v2_store(tmp_path / "store.zarr")


# -- the batch line ----------------------------------------------------------------------------
def test_batch_line_counts_what_made_each_record_due(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """``batch_indexed`` carries ``due_by`` with every reason counted for a debouncer batch, and
    no ``due_by`` for other batches (reconcile, sync)."""

    notifier = SystemdNotifier.from_env({})  # outside systemd: sends nothing
    reporter = Reporter(tmp_path, DaemonStatus(store=str(tmp_path)), notifier, lambda: 1.0)
    ids = record_ids(3)
    changes = tuple(RecordChange(i) for i in sorted(ids))
    reporter.batch_done(Batch(changes, 0.5, ("moved", "closed", "moved")), BatchResult(3), "x", 0)
    reporter.batch_done(Batch(changes, 0.5), BatchResult(3), "startup", 0)
    lines = [e for e in captured_logs if e["event"] == "batch_indexed"]
    assert lines[0]["due_by"] == {k: {"moved": 2, "closed": 1}.get(k, 0) for k in DUE_BY}
    assert "due_by" not in lines[1]


# -- what the inotify watcher reports --------------------------------------------------------
class Collect:
    """A sink keeping the file changes reported under one folder, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)
        self.seen: list[FileChange] = []

    def __call__(self, item: FileChange | Rescan) -> None:
        if isinstance(item, FileChange) and item.path.startswith(self.folder):
            self.seen.append(item)

    def until(
        self, name: str, signal: Signal | None = None
    ) -> list[tuple[str, ChangeKind, Signal]]:
        """Wait for a change of file ``name`` (with ``signal``, if given), then return and
        forget everything seen so far as (file name, kind, signal)."""

        def seen() -> bool:
            return any(
                os.path.basename(c.path) == name and signal in (None, c.signal) for c in self.seen
            )

        wait_until(seen, what=f"{name} {signal}")
        got = [(os.path.basename(c.path), c.kind, c.signal) for c in self.seen]
        self.seen.clear()
        return got


@pytest.mark.integration
def test_inotify_watcher_reports_renames_and_closes_after_writing(store: Path) -> None:
    """The real watcher marks a rename onto a name ``moved`` and the close of a file opened for
    writing ``closed``; a read-only open and close reports nothing, a chmod no signal."""
    (image_id,) = record_ids(1)
    write_v2_record(store, image_id)
    analysis = store / "images" / image_id / "analysis"
    analysis.mkdir()
    (store / "index" / "sync").mkdir(parents=True)  # as the daemon has it before watching
    sink = Collect(analysis)
    watcher = InotifyWatcher(store, sink)
    watcher.start()
    try:
        kymflow_save(store, image_id, "velocity_events.parquet", parquet_bytes(events_frame(2)))
        got = sink.until("velocity_events.parquet")
        assert got[-1] == ("velocity_events.parquet", ChangeKind.ADDED, Signal.MOVED)
        assert all(name.endswith(".partial") for name, _, _ in got[:-1])  # zarr's partial

        path = analysis_file(store, image_id, "radon_report", "parquet")
        events_frame(2).to_parquet(path)
        got = sink.until("radon_report.parquet", Signal.CLOSED)
        assert got[0][1:] == (ChangeKind.ADDED, Signal.NONE)
        assert got[-1][1:] == (ChangeKind.MODIFIED, Signal.CLOSED)
        assert {s for _, _, s in got[:-1]} == {Signal.NONE}

        path.read_bytes()  # opened for reading only: no event at all
        os.chmod(path, 0o644)
        marker = analysis / "marker.json"
        with open(marker, "w") as f:
            f.write("{}")
        got = sink.until("marker.json", Signal.CLOSED)
        assert got[0] == ("radon_report.parquet", ChangeKind.MODIFIED, Signal.NONE)  # chmod
        assert [g[0] for g in got[1:]] == ["marker.json"] * (len(got) - 1)
    finally:
        watcher.stop()


# -- the real daemon -------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("generation", ["gen1", "gen2"])
def test_kymflow_saves_are_indexed_on_their_renames(
    store: Path, tmp_path: Path, generation: str
) -> None:
    """Artifacts saved with kymflow's write pattern (partial + rename, then the record's
    .zattrs rewritten) are indexed from their renames, long before the 30 s quiet window,
    and the tables equal a fresh rebuild."""
    ids = record_ids(4)
    indexers = GEN1 if generation == "gen1" else GEN2
    for image_id in ids:
        write_v2_record(store, image_id)
        # An earlier analysis run left its folders (new folders are watched as they
        # appear, but a rename racing the new watch would fall back to the quiet window).
        for sub in ("velocity_events", "radon"):
            (store / "images" / image_id / "analysis" / sub).mkdir(parents=True)
    with DaemonProcess(store, "--indexers", indexers, *SLOW_QUIET, quiet_ms=30_000) as d:
        for n, image_id in enumerate(ids, 1):
            if generation == "gen1":
                kymflow_save(
                    store, image_id, "velocity_events.parquet", parquet_bytes(events_frame(n))
                )
                kymflow_save(
                    store, image_id, "radon_report.json.gz", gzip_json(legacy_radon_report(n))
                )
            else:
                events = parquet_bytes(gen2_events_frame(n))
                kymflow_save(store, image_id, "velocity_events/events.parquet", events)
                radon = pd.DataFrame({"roi_id": [1], "velocity_mean": [0.5 * n]})
                kymflow_save(store, image_id, "radon/results.parquet", parquet_bytes(radon))
        scratch = tmp_path / "scratch"
        wait_until(lambda: matches_rebuild(store, scratch, indexers), what="tables == rebuild")
        due_by = due_by_totals(d.events("batch_indexed"))
    assert due_by["moved"] >= len(ids), due_by
    assert due_by["quiet"] == due_by["max_delay"] == due_by["closed"] == 0, due_by
    for table in live_tables(store, indexers.split(",")).values():
        assert set(table["image_id"]) == set(ids)


@pytest.mark.integration
def test_in_place_to_parquet_is_indexed_on_its_close(store: Path, tmp_path: Path) -> None:
    """``df.to_parquet(path)`` written in place (created, modified, closed) is indexed from the
    close, and the tables equal a fresh rebuild."""
    ids = record_ids(4)
    for image_id in ids:
        write_v2_record(store, image_id)
        (store / "images" / image_id / "analysis").mkdir()
    with DaemonProcess(store, "--indexers", GEN1, *SLOW_QUIET, quiet_ms=30_000) as d:
        for n, image_id in enumerate(ids, 1):
            events_frame(n).to_parquet(analysis_file(store, image_id, "velocity_events", "parquet"))
        scratch = tmp_path / "scratch"
        wait_until(lambda: matches_rebuild(store, scratch, GEN1), what="tables == rebuild")
        due_by = due_by_totals(d.events("batch_indexed"))
    assert due_by["closed"] >= len(ids), due_by
    assert due_by["quiet"] == due_by["max_delay"] == 0, due_by
    events = live_tables(store, GEN1.split(","))["velocity_events"]
    assert events.groupby("image_id").size().to_dict() == {i: n for n, i in enumerate(ids, 1)}


@pytest.mark.integration
def test_two_phase_writer_reopening_its_file_is_not_forgotten(store: Path, tmp_path: Path) -> None:
    """A writer that closes a half-written parquet, then reopens the file and writes it whole,
    ends in the table with the whole file: the half-read is retried, and the second close
    makes the record due again."""
    (image_id,) = record_ids(1)
    write_v2_record(store, image_id)
    path = analysis_file(store, image_id, "velocity_events", "parquet")
    path.parent.mkdir()
    data = parquet_bytes(events_frame(7))
    with DaemonProcess(store, "--indexers", GEN1, *SLOW_QUIET, quiet_ms=30_000) as d:
        with open(path, "wb") as f:  # phase one: closed half-way
            f.write(data[: len(data) // 2])
        wait_until(
            lambda: any(e.get("image_id") == image_id for e in d.events("artifact_retry")),
            what="the half-written file to be read (and handed back for a retry)",
        )
        with open(path, "wb") as f:  # phase two: reopened, written whole
            f.write(data)
        scratch = tmp_path / "scratch"
        wait_until(lambda: matches_rebuild(store, scratch, GEN1), what="tables == rebuild")
        assert not [e for e in d.events("artifact_unreadable") if e.get("image_id") == image_id]
    events = live_tables(store, GEN1.split(","))["velocity_events"]
    assert (events["image_id"] == image_id).sum() == 7


@pytest.mark.integration
def test_in_place_rewrite_right_after_a_close_ends_with_the_last_content(
    store: Path, tmp_path: Path
) -> None:
    """A file rewritten in place again and again, without pause (each write may land during
    the settle or while the worker reads the previous one), ends with its last content."""
    ids = record_ids(3)
    for image_id in ids:
        write_v2_record(store, image_id)
        (store / "images" / image_id / "analysis").mkdir()
    with DaemonProcess(store, "--indexers", GEN1, *SLOW_QUIET, quiet_ms=30_000):
        for n in range(1, 9):
            for image_id in ids:
                path = analysis_file(store, image_id, "velocity_events", "parquet")
                events_frame(n, start_s=float(n)).to_parquet(path)
        scratch = tmp_path / "scratch"
        wait_until(lambda: matches_rebuild(store, scratch, GEN1), what="tables == rebuild")
    events = live_tables(store, GEN1.split(","))["velocity_events"]
    assert events.groupby("image_id").size().to_dict() == dict.fromkeys(ids, 8)


# -- the in-process daemon: due_by through chunked batches -----------------------------------
@pytest.fixture
def quiet_store(tmp_path: Path) -> Iterator[Path]:
    """A store with six records and their analysis folders, nothing indexed yet."""
    root = make_v2_store(tmp_path / "store.zarr")
    for image_id in record_ids(6):
        write_v2_record(root, image_id)
        (root / "images" / image_id / "analysis").mkdir()
    yield root


@pytest.mark.integration
def test_due_by_follows_records_through_chunks(
    quiet_store: Path, tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    """A batch cut into chunks reports, on the line of the write that covers its chunks, why
    each of their records was due; atomic writes (partial + rename) are settled by their
    renames."""
    root = quiet_store
    ids = sorted(os.listdir(root / "images"))
    ids = [i for i in ids if not i.startswith(".")]
    config = DaemonConfig(
        root,
        quiet_s=30.0,
        max_delay_s=60.0,
        settle_s=0.05,
        batch_records=2,
        indexers=("velocity_events",),
    )
    with running(Daemon(config)):
        for n, image_id in enumerate(ids, 1):
            write_parquet_artifact(root, image_id, "velocity_events", events_frame(n))
        wait_until(
            lambda: matches_rebuild(root, tmp_path / "scratch", "velocity_events"),
            what="tables == rebuild",
        )
    lines = [e for e in captured_logs if e["event"] == "batch_indexed" and e["source"] == "events"]
    assert lines and all(e["records"] <= 2 * e["chunks"] for e in lines)
    assert all(sum(e["due_by"].values()) == e["records"] for e in lines)
    assert due_by_totals(lines) == Counter({"moved": sum(e["records"] for e in lines)})
    started = next(e for e in captured_logs if e["event"] == "daemon_started")
    assert started["settle_ms"] == 50 and started["quiet_ms"] == 30_000
