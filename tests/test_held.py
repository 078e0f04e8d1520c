"""Results held back for a later publish (``update_batch_report(hold=True)``,
:mod:`kymwatch.index.held`), seen from the library.

A held call merges and writes nothing; the next call without ``hold`` (or
``write_held``) merges the held results with its own, a record's last result winning,
writes each table once, smallest table first, and reports only its own records. A
failed write drops what was held; a table with results held is not exported. Stores are
kymflow-shaped (sorted UUID image ids, string event ids in generation 1, UUID ones in
generation 2); the oracle is a fresh rebuild.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import kymwatch.store.grouped as grouped_module
from harness import assert_tables_match_rebuild, fresh_rebuild
from helpers_store import (
    events_frame,
    gen2_events_frame,
    write_mixed_generations,
    write_parquet_artifact,
)
from helpers_tables import spy_table_writes
from kymwatch.index import KymDataset, PartitionPolicy, make_indexers
from kymwatch.store import table_fingerprint

VE, KVE = "velocity_events", "kym_velocity_events"
INDEXERS = [VE, KVE]


def _indexed(root: Path, **kwargs: Any) -> tuple[KymDataset, list[str]]:
    """Six records of both generations (record 0 without artifacts), every one indexed
    in both events tables (``velocity_events`` holds fewer rows than
    ``kym_velocity_events``, which holds both generations)."""
    ids = write_mixed_generations(root, 6, without_artifacts=0)
    kd = KymDataset(root, indexers=make_indexers(INDEXERS), **kwargs)
    kd.update_batch_report({VE: ids, KVE: ids})
    assert len(kd.get_arrow(VE)) < len(kd.get_arrow(KVE))
    return kd, ids


def _gen1_edit(root: Path, image_id: str, n: int) -> None:
    """Rewrite a record's generation-1 events artifact with ``n`` events."""
    write_parquet_artifact(root, image_id, VE, events_frame(n, start_s=30.0 + n))


def _stamps(root: Path) -> list[object]:
    return [table_fingerprint(root / "tables" / f"{name}.parquet") for name in INDEXERS]


def test_held_results_are_written_once_with_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two held calls write nothing (yet the held record counts as having rows); the
    next call writes each table once, with every held result, and reports its own
    records only."""
    root = tmp_path / "store.zarr"
    kd, ids = _indexed(root)
    before = _stamps(root)
    started = spy_table_writes(monkeypatch)
    _gen1_edit(root, ids[0], 3)  # record 0 had no artifact: no rows yet
    write_parquet_artifact(root, ids[2], "velocity_events/events", gen2_events_frame(5))
    reports, _ = kd.update_batch_report({VE: [ids[0]], KVE: [ids[0]]}, hold=True)
    assert not any(r.table_written for r in reports)
    reports, _ = kd.update_batch_report({KVE: [ids[2]]}, hold=True)
    assert not reports[0].table_written
    assert kd.held_tables() == [KVE, VE]
    assert kd.has_rows(VE, ids[0]) and not kd.get_table(VE)["image_id"].eq(ids[0]).any()
    assert _stamps(root) == before and started == []

    _gen1_edit(root, ids[3], 4)
    reports, unreadable = kd.update_batch_report({VE: [ids[3]], KVE: [ids[3]]})

    assert unreadable == {}
    assert sorted(started) == [KVE, VE]
    assert [[o.image_id for o in r.outcomes] for r in reports] == [[ids[3]], [ids[3]]]
    assert all(r.table_written for r in reports)
    assert sorted(kd.held_written()) == [KVE, VE] and kd.held_tables() == []
    assert_tables_match_rebuild(root, tmp_path / "scratch", indexers=INDEXERS)


def test_write_held_writes_the_smallest_table_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held tables that no later call names are written by ``write_held`` smallest first
    (the table an edit's user waits for), whatever the order of the held work."""
    root = tmp_path / "store.zarr"
    kd, ids = _indexed(root)
    started = spy_table_writes(monkeypatch)
    _gen1_edit(root, ids[1], 2)
    kd.update_batch_report({KVE: [ids[1]], VE: [ids[1]]}, hold=True)

    assert sorted(kd.write_held()) == [KVE, VE]

    assert started == [VE, KVE]
    assert kd.write_held() == [] and started == [VE, KVE]
    assert_tables_match_rebuild(root, tmp_path / "scratch", indexers=INDEXERS)


def test_a_records_last_held_result_wins(tmp_path: Path) -> None:
    """A record held twice, its artifact rewritten between, ends with the rows of its
    last result."""
    root = tmp_path / "store.zarr"
    kd, ids = _indexed(root)
    _gen1_edit(root, ids[1], 2)
    kd.update_batch_report({VE: [ids[1]], KVE: [ids[1]]}, hold=True)
    _gen1_edit(root, ids[1], 5)
    kd.update_batch_report({VE: [ids[1]], KVE: [ids[1]]}, hold=True)

    assert sorted(kd.write_held()) == [KVE, VE]

    for name in INDEXERS:
        assert int(kd.get_table(name)["image_id"].eq(ids[1]).sum()) == 5
    assert_tables_match_rebuild(root, tmp_path / "scratch", indexers=INDEXERS)


def test_a_failed_write_drops_every_held_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held table whose write fails raises and holds nothing more (the caller's records
    stay due); the table keeps its old rows, and re-indexing the records once the disk
    works again ends equal to a rebuild."""
    root = tmp_path / "store.zarr"
    kd, ids = _indexed(root)
    old = kd.get_table(VE)
    _gen1_edit(root, ids[3], 6)
    kd.update_batch_report({VE: [ids[3]], KVE: [ids[3]]}, hold=True)
    real = grouped_module.write_grouped

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grouped_module, "write_grouped", fail)
    with pytest.raises(OSError, match="No space left"):
        kd.write_held()
    assert kd.held_tables() == []
    assert KymDataset(root, indexers=make_indexers(INDEXERS)).get_table(VE).equals(old)

    monkeypatch.setattr(grouped_module, "write_grouped", real)
    kd.update_batch_report({VE: [ids[3]], KVE: [ids[3]]})
    assert_tables_match_rebuild(root, tmp_path / "scratch", indexers=INDEXERS)


def test_a_partitioned_table_with_held_results_is_not_exported(tmp_path: Path) -> None:
    """While results are held for a partitioned table its export is not written (it
    would be stale at once); once they are written the export equals a rebuild."""
    root = tmp_path / "store.zarr"
    policy = PartitionPolicy(partition_rows=8, part_rows=4, export_interval_s=3600.0)
    kd, ids = _indexed(root, partitions=policy)
    assert sorted(kd.export_tables(force=True)) == [KVE, VE]
    export = root / "tables" / f"{KVE}.parquet"
    write_parquet_artifact(root, ids[4], "velocity_events/events", gen2_events_frame(7))
    kd.update_batch_report({KVE: [ids[4]]})  # written as a part: its export is due
    _gen1_edit(root, ids[5], 3)
    kd.update_batch_report({KVE: [ids[5]]}, hold=True)
    stamp = table_fingerprint(export)

    assert kd.export_tables(force=True) == []
    assert table_fingerprint(export) == stamp

    assert kd.write_held() == [KVE]
    assert kd.export_tables(force=True) == [KVE]
    assert kd.exported_stamp(KVE) == table_fingerprint(export)
    expected = fresh_rebuild(root, tmp_path / "scratch", INDEXERS)[KVE]
    pd.testing.assert_frame_equal(pq.read_table(export).to_pandas(), expected)
