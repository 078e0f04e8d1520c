"""A rebuild's merge of held chunk tables taken whole (``HeldResults.whole_tables``,
``tablework._merge_whole``) and its report without pairs: the same tables, ids, row
offsets, outcomes and row counts as the merge of every record's (outcome, rows) pair,
on kymflow-shaped data of both generations; the pairs are merged instead when a
record keeps its old rows or records come out of id order."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_store import write_mixed_generations
from kymwatch.index import OutcomeStatus, make_indexers
from kymwatch.index.arrow_schema import empty_arrow
from kymwatch.index.base import DatasetIndexer
from kymwatch.index.batch import HeldResults, extract_chunk
from kymwatch.index.tablework import merge_rebuild
from kymwatch.store import SortedTable, ZarrDataset

ALL = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")


def _store(root: Path, n: int) -> tuple[ZarrDataset, list[str]]:
    """``n`` records alternating generation 1 and 2 (UUID ids, "e1"-style and UUID
    event ids), the last without artifacts."""
    ids = write_mixed_generations(root, n, without_artifacts=n - 1)
    return ZarrDataset(root), ids


def _held(ds: ZarrDataset, ix: DatasetIndexer, chunks: list[list[str]]) -> HeldResults:
    held = HeldResults()
    for part in chunks:
        [chunk] = extract_chunk(ds, [ix], part)
        held.add(chunk)
    return held


def _empty(ix: DatasetIndexer) -> SortedTable:
    return SortedTable.of(empty_arrow(ix.columns), (), (0,))


def _same_merge(a: SortedTable, b: SortedTable) -> None:
    assert a.table.equals(b.table, check_metadata=True)
    assert a.table.schema.equals(b.table.schema, check_metadata=True)
    assert a.ids == b.ids
    assert list(a.offsets) == list(b.offsets)


@pytest.mark.parametrize("name", ALL)
def test_merge_of_whole_chunk_tables_equals_the_merge_of_pairs(tmp_path: Path, name: str) -> None:
    """Chunks of both generations' records (kym_velocity_events: two raw schemas in a
    chunk) held as one table each merge into the table the pairs give, and the held
    outcomes and row count are the pairs'."""
    ds, ids = _store(tmp_path / "s.zarr", 11)
    [ix] = make_indexers([name])
    held = _held(ds, ix, [ids[0:4], ids[4:8], ids[8:]])
    whole = held.whole_tables()
    assert whole is not None and whole
    pairs = list(held)
    assert len(pairs) == len(ids)
    _same_merge(merge_rebuild(_empty(ix), held, ix), merge_rebuild(_empty(ix), pairs, ix))
    assert tuple(held.outcomes()) == tuple(o for o, _ in pairs)
    assert held.rows() == sum(s.count for _, s in pairs if s is not None) > 0
    statuses = {o.status for o in held.outcomes()}
    assert OutcomeStatus.INDEXED in statuses and OutcomeStatus.MISSING in statuses


def test_a_record_keeping_its_rows_makes_the_merge_take_pairs(tmp_path: Path) -> None:
    """An unreadable generation-2 events file (its record keeps the rows the table had) makes the
    held results give no whole tables; the merge then keeps that record's current rows
    as the pairs' merge does."""
    ds, ids = _store(tmp_path / "s.zarr", 8)
    [ix] = make_indexers(["kym_velocity_events"])
    before = merge_rebuild(_empty(ix), _held(ds, ix, [ids]), ix)
    bad = Path(ds.images_dir) / ids[2] / "analysis" / "velocity_events" / "events.parquet"
    bad.write_bytes(b"PAR1 not really")
    held = _held(ds, ix, [ids[:4], ids[4:]])
    assert any(o.status is OutcomeStatus.UNREADABLE for o in held.outcomes())
    assert held.whole_tables() is None
    merged = merge_rebuild(before, held, ix)
    _same_merge(merged, merge_rebuild(before, list(held), ix))
    assert ids[2] in merged.ids


def test_chunks_out_of_id_order_are_merged_sorted(tmp_path: Path) -> None:
    """Chunks held in descending id order are merged in ``image_id`` order, as the
    pairs are (the whole tables cannot be taken as they are)."""
    ds, ids = _store(tmp_path / "s.zarr", 9)
    [ix] = make_indexers(["velocity_events"])
    held = _held(ds, ix, [ids[6:], ids[3:6], ids[:3]])
    merged = merge_rebuild(_empty(ix), held, ix)
    _same_merge(merged, merge_rebuild(_empty(ix), list(held), ix))
    assert list(merged.ids) == sorted(merged.ids) and merged.ids
