"""One batch, several tables: merged one by one, written at the same time, caches kept true."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kymwatch.store.grouped as grouped_module
from helpers_store import events_frame, gen2_events_frame, write_parquet_artifact
from helpers_tables import spy_table_writes
from kymwatch.index import KymDataset, make_indexers
from kymwatch.store import SortedTable

VE, KVE = "velocity_events", "kym_velocity_events"


def _store(root: Path, n: int) -> tuple[KymDataset, list[str]]:
    """``n`` records with a generation-1 events artifact (read by both events indexers)."""
    ids = sorted(str(uuid.uuid4()) for _ in range(n))
    for k, image_id in enumerate(ids):
        (root / "images" / image_id).mkdir()
        write_parquet_artifact(root, image_id, VE, events_frame(3, start_s=k))
    return KymDataset(root, indexers=make_indexers([VE, KVE])), ids


def test_batch_writes_each_changed_table_once_on_writer_threads(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch feeding two tables writes each once, on the writer threads, and each
    table then equals a fresh rebuild."""
    kd, ids = _store(plain_v2_store, 6)
    kd.update_batch_report({VE: ids, KVE: ids})
    write_parquet_artifact(plain_v2_store, ids[2], VE, events_frame(5, start_s=40.0))
    threads: list[tuple[str, str]] = []
    real = grouped_module.write_grouped

    def spying(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        threads.append((path.stem, threading.current_thread().name))
        return real(path, st, **kwargs)

    monkeypatch.setattr(grouped_module, "write_grouped", spying)
    reports, unreadable = kd.update_batch_report({VE: [ids[2]], KVE: [ids[2]]})

    assert unreadable == {}
    assert sorted(r.table_name for r in reports if r.table_written) == [KVE, VE]
    assert sorted(name for name, _ in threads) == [KVE, VE]
    assert all(thread.startswith("kymwatch-write") for _, thread in threads)
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    for name in (VE, KVE):
        on_disk = pq.read_table(kd.store.table_path(name))
        assert on_disk.num_rows == 5 * 3 + 5
        assert on_disk.equals(kd.get_arrow(name))
        assert fresh.rebuild(name).equals(kd.get_table(name))


def test_a_failed_write_publishes_the_others_and_raises(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When one table of a batch cannot be written, the other is published and cached,
    the failed one keeps its old file and cache, and the error reaches the caller."""
    kd, ids = _store(plain_v2_store, 4)
    kd.update_batch_report({VE: ids, KVE: ids})
    before = kd.store.table_path(KVE).read_bytes()
    write_parquet_artifact(plain_v2_store, ids[0], VE, events_frame(2, start_s=90.0))
    real = grouped_module.write_grouped

    def failing(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        if path.stem == KVE:
            raise OSError(28, "No space left on device")
        return real(path, st, **kwargs)

    monkeypatch.setattr(grouped_module, "write_grouped", failing)
    with pytest.raises(OSError, match="No space"):
        kd.update_batch_report({VE: [ids[0]], KVE: [ids[0]]})

    assert kd.store.table_path(KVE).read_bytes() == before
    assert kd.get_arrow(KVE).num_rows == 4 * 3
    assert pq.read_table(kd.store.table_path(VE)).num_rows == 3 * 3 + 2
    assert kd.get_arrow(VE).num_rows == 3 * 3 + 2


def test_an_unreadable_table_is_named_and_the_others_written(plain_v2_store: Path) -> None:
    """A table file that cannot be parsed is returned as unreadable, untouched, while
    the batch's other table is written."""
    kd, ids = _store(plain_v2_store, 3)
    kd.update_batch_report({VE: ids, KVE: ids})
    damaged = kd.store.table_path(KVE)
    damaged.write_bytes(b"PAR1 torn")
    write_parquet_artifact(plain_v2_store, ids[1], VE, events_frame(1))

    reports, unreadable = KymDataset(
        plain_v2_store, indexers=make_indexers([VE, KVE])
    ).update_batch_report({VE: [ids[1]], KVE: [ids[1]]})

    assert list(unreadable) == [KVE]
    assert [r.table_name for r in reports] == [VE]
    assert damaged.read_bytes() == b"PAR1 torn"
    assert pq.read_table(kd.store.table_path(VE)).num_rows == 2 * 3 + 1


def test_gen2_rows_in_the_same_batch_keep_their_columns(plain_v2_store: Path) -> None:
    """A batch mixing a generation-2 record with generation-1 ones gives the
    generation-2 table the columns a fresh rebuild gives it."""
    kd, ids = _store(plain_v2_store, 3)
    gen2 = str(uuid.uuid4())
    (plain_v2_store / "images" / gen2).mkdir()
    write_parquet_artifact(plain_v2_store, gen2, "velocity_events/events", gen2_events_frame(2))
    kd.update_batch_report({VE: [*ids, gen2], KVE: [*ids, gen2]})
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    assert fresh.rebuild(KVE).equals(kd.get_table(KVE))


def test_the_smallest_table_is_merged_and_written_first(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table with the fewest cached rows (the generation-1 table a generation-1
    edit's user waits for) starts its write first; reports keep the work's order."""
    kd, ids = _store(plain_v2_store, 3)
    for _ in range(3):  # generation-2 records feed only the generation-2 table
        gen2 = str(uuid.uuid4())
        (plain_v2_store / "images" / gen2).mkdir()
        write_parquet_artifact(plain_v2_store, gen2, "velocity_events/events", gen2_events_frame(4))
        ids.append(gen2)
    kd.update_batch_report({VE: ids, KVE: ids})
    assert len(kd.get_arrow(KVE)) > len(kd.get_arrow(VE))
    write_parquet_artifact(plain_v2_store, ids[0], VE, events_frame(2, start_s=70.0))
    started = spy_table_writes(monkeypatch)
    reports, _ = kd.update_batch_report({VE: [ids[0]], KVE: [ids[0]]})

    assert started == [VE, KVE]
    assert [r.table_name for r in reports] == [VE, KVE]
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    assert fresh.rebuild(VE).equals(kd.get_table(VE))
    assert fresh.rebuild(KVE).equals(kd.get_table(KVE))


def test_an_edit_is_written_before_its_table_is_compacted(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-record edit hands the writer its spliced table as cut (no copy on the way to
    the write); the cached copy is compacted once written, and equals the file and a
    fresh rebuild."""
    kd, ids = _store(plain_v2_store, 5)
    kd.update_batch_report({VE: ids})
    assert kd.get_arrow(VE).column(0).num_chunks == 1
    write_parquet_artifact(plain_v2_store, ids[2], VE, events_frame(4, start_s=55.0))
    chunks: list[int] = []
    real = grouped_module.write_grouped

    def spying(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        chunks.append(st.table.column(0).num_chunks)
        return real(path, st, **kwargs)

    monkeypatch.setattr(grouped_module, "write_grouped", spying)
    kd.update_batch_report({VE: [ids[2]]})

    assert chunks == [3]  # the rows before, the new rows, the rows after
    cached = kd.get_arrow(VE)
    assert cached.column(0).num_chunks == 1
    assert pq.read_table(kd.store.table_path(VE)).equals(cached)
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    assert fresh.rebuild(VE).equals(kd.get_table(VE))


def _spy_writes(monkeypatch: pytest.MonkeyPatch, wait_s: float) -> list[str]:
    """Record each table write's start and end; the write of ``VE`` first waits (at most
    ``wait_s``) for another write to start, and records whether one did."""
    events: list[str] = []
    other_started = threading.Event()
    real = grouped_module.write_grouped

    def spying(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        events.append(f"start {path.stem}")
        if path.stem == VE:
            events.append(f"overlapped {other_started.wait(timeout=wait_s)}")
        else:
            other_started.set()
        try:
            return real(path, st, **kwargs)
        finally:
            events.append(f"end {path.stem}")

    monkeypatch.setattr(grouped_module, "write_grouped", spying)
    return events


def test_an_edit_writes_its_tables_one_after_another(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-record edit feeding two tables starts the larger table's write only once
    the smaller one's has ended; both then equal a fresh rebuild."""
    kd, ids = _store(plain_v2_store, 4)
    gen2 = str(uuid.uuid4())  # a generation-2 record: only the generation-2 table grows
    (plain_v2_store / "images" / gen2).mkdir()
    write_parquet_artifact(plain_v2_store, gen2, "velocity_events/events", gen2_events_frame(6))
    kd.update_batch_report({VE: [*ids, gen2], KVE: [*ids, gen2]})
    write_parquet_artifact(plain_v2_store, ids[1], VE, events_frame(2, start_s=30.0))
    events = _spy_writes(monkeypatch, wait_s=1.0)  # long enough for the other to start

    kd.update_batch_report({VE: [ids[1]], KVE: [ids[1]]})

    assert events == [
        f"start {VE}", "overlapped False", f"end {VE}", f"start {KVE}", f"end {KVE}"
    ]  # fmt: skip
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    assert fresh.rebuild(VE).equals(kd.get_table(VE))
    assert fresh.rebuild(KVE).equals(kd.get_table(KVE))


def test_a_burst_writes_its_tables_at_the_same_time(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of more records than an edit has starts every table's write without
    waiting for the others (the first write waits here until the second one starts)."""
    from kymwatch.index.publish import ONE_BY_ONE_RECORDS

    kd, ids = _store(plain_v2_store, ONE_BY_ONE_RECORDS + 1)
    kd.update_batch_report({VE: ids, KVE: ids})
    for k, image_id in enumerate(ids):
        write_parquet_artifact(plain_v2_store, image_id, VE, events_frame(2, start_s=k + 0.5))
    events = _spy_writes(monkeypatch, wait_s=60.0)

    kd.update_batch_report({VE: ids, KVE: ids})

    assert "overlapped True" in events
    assert events.index(f"start {KVE}") < events.index(f"end {VE}")
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([VE, KVE]))
    assert fresh.rebuild(KVE).equals(kd.get_table(KVE))


def test_the_encoder_options_are_chosen_on_the_callers_thread(
    plain_v2_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each table's encoder options are chosen by the batch's own thread before its write
    is handed over (a writer thread would wait for the GIL between the merges), and the
    writer uses those very options."""
    kd, ids = _store(plain_v2_store, 3)
    kd.update_batch_report({VE: ids, KVE: ids})
    write_parquet_artifact(plain_v2_store, ids[0], VE, events_frame(2, start_s=80.0))
    chosen: list[tuple[str, object]] = []
    used: list[object] = []
    real_options, real_write = grouped_module.write_options, grouped_module.write_grouped

    def options(table: pa.Table) -> dict[str, object]:
        out = real_options(table)
        chosen.append((threading.current_thread().name, out))
        return out

    def writing(path: Path, st: SortedTable, **kwargs: Any) -> Any:
        used.append(kwargs.get("options"))
        return real_write(path, st, **kwargs)

    monkeypatch.setattr(grouped_module, "write_options", options)
    monkeypatch.setattr(grouped_module, "write_grouped", writing)
    kd.update_batch_report({VE: [ids[0]], KVE: [ids[0]]})

    assert [thread for thread, _ in chosen] == [threading.current_thread().name] * 2
    assert [o for _, o in chosen] == used
    assert pq.read_table(kd.store.table_path(VE)).equals(kd.get_arrow(VE))
