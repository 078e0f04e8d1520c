"""Table files in row groups: an edit encodes the groups it touched and copies the rest."""

from __future__ import annotations

import os
import uuid
from array import array
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kymwatch.store.grouped as grouped_module
from helpers_store import gen2_events_frame, write_parquet_artifact
from helpers_tables import kymflow_events
from kymwatch.index import KymDataset, make_indexers
from kymwatch.index.frames import with_pandas_metadata
from kymwatch.store import Fingerprint, SortedTable, table_fingerprint
from kymwatch.store.grouped import GroupedFile, write_grouped
from kymwatch.store.groupplan import plan_edit, plan_full
from kymwatch.store.stitch import Source

TARGET = 12
KVE, GEN2_EVENTS = "kym_velocity_events", "velocity_events/events"


@pytest.fixture(autouse=True)
def _small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of about TARGET rows, so small tables have several."""
    monkeypatch.setattr(grouped_module, "TARGET_ROWS", TARGET)


def _sorted(table: pa.Table) -> SortedTable:
    st, _ = SortedTable.adopt(table)
    return SortedTable(with_pandas_metadata(st.table), st.ids, st.offsets)


def _rows_for(st: SortedTable, image_id: str, n: int) -> pa.Table:
    """``n`` rows for ``image_id`` in the table's schema (copies of its first rows)."""
    rows = st.table.slice(0, 0)
    while rows.num_rows < n:
        rows = pa.concat_tables([rows, st.table.slice(0, n - rows.num_rows)])
    k = rows.schema.get_field_index("image_id")
    ids = pa.array([image_id] * n, rows.schema.field(k).type)
    return rows.set_column(k, rows.schema.field(k), ids)


def _edit(st: SortedTable, replace: dict[str, int]) -> SortedTable:
    """``st`` with each record in ``replace`` given that many rows (0: removed)."""
    spliced, _ = st.splice({i: _rows_for(st, i, n) if n else None for i, n in replace.items()})
    return SortedTable(with_pandas_metadata(spliced.table), spliced.ids, spliced.offsets)


def _write(
    path: Path, st: SortedTable, touched: set[str] | None, previous: GroupedFile | None
) -> GroupedFile:
    out = write_grouped(path, st, touched=touched, previous=previous)
    assert isinstance(out, GroupedFile)
    return out


def _group_bytes(path: Path) -> list[bytes]:
    """The bytes of each row group of a file."""
    data = path.read_bytes()
    return [data[a : a + n] for a, n in Source.of(data).spans]


def _assert_reads_as(path: Path, st: SortedTable) -> None:
    assert pq.read_table(path).equals(st.table)
    pd.testing.assert_frame_equal(pd.read_parquet(path), st.table.to_pandas())


def test_a_full_write_cuts_groups_between_records(tmp_path: Path) -> None:
    """A table written whole has about rows/target groups, none splitting a record, and
    reads back as the table."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    written = _write(path, st, None, None)
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == len(written.groups) == round(len(st) / TARGET)
    assert written.encoded == md.num_row_groups
    ids = st.table.column("image_id").to_pylist()
    at = 0
    for k, g in enumerate(written.groups):
        assert md.row_group(k).num_rows == g.rows
        assert (ids[at], ids[at + g.rows - 1]) == (g.first_id, g.last_id)
        assert at == 0 or ids[at - 1] != ids[at]  # a record's rows stay in one group
        at += g.rows
    _assert_reads_as(path, st)
    assert written.stamp == table_fingerprint(path)


def test_an_edit_encodes_only_the_touched_group(tmp_path: Path) -> None:
    """Changing one record's rows re-encodes its group only: every other group's bytes
    are those of the previous file."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    first = _write(path, st, None, None)
    before = _group_bytes(path)
    target = st.ids[17]
    st2 = _edit(st, {target: 3})
    second = _write(path, st2, {target}, first)
    assert second.encoded == 1
    after = _group_bytes(path)
    k = next(i for i, g in enumerate(second.groups) if g.first_id <= target <= g.last_id)
    assert [b for i, b in enumerate(after) if i != k] == [b for i, b in enumerate(before) if i != k]
    _assert_reads_as(path, st2)


def test_a_new_record_goes_to_the_group_covering_it(tmp_path: Path) -> None:
    """A record added between two groups' ids joins the earlier group; only it is encoded."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    first = _write(path, st, None, None)
    g = first.groups[1]
    new_id = g.last_id + "0"  # after group 1's last id, before group 2's first
    st2 = _edit(st, {new_id: 2})
    second = _write(path, st2, {new_id}, first)
    assert second.encoded == 1
    assert second.groups[1].last_id == new_id
    _assert_reads_as(path, st2)


def test_a_file_replaced_by_another_writer_is_written_whole(tmp_path: Path) -> None:
    """When the file is no longer the one written (another program replaced it), every
    group is encoded, none copied from it."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    first = _write(path, st, None, None)
    pq.write_table(kymflow_events(5, seed=3), tmp_path / "other.parquet")
    os.replace(tmp_path / "other.parquet", path)
    st2 = _edit(st, {st.ids[3]: 1})
    second = _write(path, st2, {st.ids[3]}, first)
    assert second.encoded == len(second.groups)
    _assert_reads_as(path, st2)


def test_a_schema_change_is_written_whole(tmp_path: Path) -> None:
    """A new column (or other pandas metadata) encodes every group."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    first = _write(path, st, None, None)
    table = st.table.append_column("extra", pa.array([1.5] * len(st)))
    st2 = SortedTable(with_pandas_metadata(table), st.ids, st.offsets)
    second = _write(path, st2, {st.ids[0]}, first)
    assert second.encoded == len(second.groups)
    _assert_reads_as(path, st2)


@pytest.mark.parametrize("written_by", ["a whole write", "an edit"])
def test_a_truncated_previous_file_is_written_whole(tmp_path: Path, written_by: str) -> None:
    """A previous file cut short under the same fingerprint (so it looks unchanged) is
    not copied from, whether its footer is to be read (written whole) or was kept (an
    edit's): the table is encoded whole and nothing is lost."""
    path = tmp_path / "t.parquet"
    st = _sorted(kymflow_events(40))
    first = _write(path, st, None, None)
    if written_by == "an edit":
        st = _edit(st, {st.ids[30]: 1})
        first = _write(path, st, {st.ids[30]}, first)
        assert first.footer is not None
    os.truncate(path, Source.of(path.read_bytes()).spans[-1][0])  # the last group gone
    stamp = table_fingerprint(path)
    assert stamp is not None
    looks_same = GroupedFile(stamp, first.schema, first.groups, first.footer, first.encoded)
    st2 = _edit(st, {st.ids[0]: 2})
    second = _write(path, st2, {st.ids[0]}, looks_same)
    assert second.encoded == len(second.groups)
    _assert_reads_as(path, st2)


def test_rows_without_an_id_are_written_in_one_piece(tmp_path: Path) -> None:
    """A table with rows of no record (adopted from another program) is written in one
    piece, as before."""
    path = tmp_path / "t.parquet"
    table = kymflow_events(10)
    ids = table.column("image_id").to_pylist()
    ids[-1] = None
    k = table.schema.get_field_index("image_id")
    table = table.set_column(k, table.schema.field(k), pa.array(ids, table.schema.field(k).type))
    st = _sorted(table)
    out = write_grouped(path, st, touched=None, previous=None)
    assert isinstance(out, Fingerprint)
    assert pq.read_table(path).equals(st.table)


def test_a_grown_group_is_split_and_a_shrunk_one_merged() -> None:
    """A group grown past twice the target is cut again; one shrunk below half of it is
    cut together with its smaller neighbour; untouched groups are copied."""
    ids = [f"r{i:03d}" for i in range(30)]
    offsets = array("q", range(0, 301, 10))
    old = [c.group for c in plan_full(ids, offsets, 50)]
    assert [g.rows for g in old] == [50] * 6
    grown = array("q", [0])
    for i in range(30):
        grown.append(grown[-1] + (80 if i in (11, 12) else 10))
    cuts = plan_edit(ids, grown, old, {"r011", "r012"}, 50)
    assert cuts is not None
    assert [c.old for c in cuts if c.old is not None] == [0, 1, 3, 4, 5]
    assert [c.rows for c in cuts if c.old is None] == [90, 100]  # 190 rows: cut in two
    gone = {"r021", "r022", "r023", "r024"}
    kept = [i for i in ids if i not in gone]
    cuts = plan_edit(kept, array("q", range(0, 261, 10)), old, gone, 50)
    assert cuts is not None
    assert [c.old for c in cuts] == [0, 1, 2, None, 5]
    assert [c.rows for c in cuts] == [
        50,
        50,
        50,
        60,
        50,
    ]  # group 4's 10 rows left: cut with group 3


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_random_edits_end_in_the_same_table(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """After any sequence of edits (records added, removed, grown, shrunk), each written
    file reads back as the table (pyarrow and pandas), and edits that touch few records
    copy most groups."""
    path = tmp_path_factory.mktemp("grouped") / "t.parquet"
    sorted_table = _sorted(kymflow_events(data.draw(st.integers(2, 60))))
    previous = _write(path, sorted_table, None, None)
    for _ in range(data.draw(st.integers(1, 6))):
        ids = list(sorted_table.ids)
        picks = data.draw(st.lists(st.sampled_from(ids), max_size=3))
        adds = [
            str(uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1))))
            for _ in range(data.draw(st.integers(0, 2)))
        ]
        replace = {i: data.draw(st.integers(0, 40)) for i in [*picks, *adds]}
        if sum(replace.values()) == 0 and set(replace) >= set(ids):
            continue  # the table would be empty
        sorted_table = _edit(sorted_table, replace)
        written = write_grouped(path, sorted_table, touched=set(replace), previous=previous)
        assert pq.read_table(path).equals(sorted_table.table)
        assert isinstance(written, GroupedFile)
        assert sum(g.rows for g in written.groups) == len(sorted_table)
        previous = written
    pd.testing.assert_frame_equal(pd.read_parquet(path), sorted_table.table.to_pandas())
    fresh = path.with_name("fresh.parquet")
    _write(fresh, sorted_table, None, None)
    assert pq.read_table(fresh).equals(pq.read_table(path))


def test_groups_unchanged_by_an_edit_are_never_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting encodes: an edit of two records in two groups encodes exactly two."""
    path = tmp_path / "t.parquet"
    st0 = _sorted(kymflow_events(60))
    first = _write(path, st0, None, None)
    encoded: list[int] = []
    real = grouped_module._encode

    def counting(table: pa.Table, options: dict[str, object]) -> object:
        encoded.append(table.num_rows)
        return real(table, options)

    monkeypatch.setattr(grouped_module, "_encode", counting)
    a, b = first.groups[0].first_id, first.groups[-1].last_id
    st1 = _edit(st0, {a: 2, b: 1})
    _write(path, st1, {a, b}, first)
    assert len(encoded) == 2
    _assert_reads_as(path, st1)


def test_a_one_row_group_file_is_still_written(tmp_path: Path) -> None:
    """A table smaller than half the target is one group, edited in place."""
    path = tmp_path / "t.parquet"
    st0 = _sorted(kymflow_events(2))
    first = _write(path, st0, None, None)
    assert len(first.groups) == 1
    st1 = _edit(st0, {st0.ids[0]: 1})
    second = _write(path, st1, {st0.ids[0]}, first)
    assert second.encoded == 1 and len(second.groups) == 1
    _assert_reads_as(path, st1)


def test_a_deleted_previous_file_is_written_whole_and_logged(
    tmp_path: Path, captured_logs: list[dict[str, object]]
) -> None:
    """When the file written last is gone, the edit writes the table whole and says why."""
    path = tmp_path / "t.parquet"
    st0 = _sorted(kymflow_events(40))
    first = _write(path, st0, None, None)
    path.unlink()
    st1 = _edit(st0, {st0.ids[5]: 2})
    second = _write(path, st1, {st0.ids[5]}, first)
    assert second.encoded == len(second.groups)
    _assert_reads_as(path, st1)
    assert [e["event"] for e in captured_logs if e["event"] == "table_groups_rewritten"] == [
        "table_groups_rewritten"
    ]


# -- through the publisher ----------------------------------------------------------------
def _indexed(root: Path, n: int) -> tuple[KymDataset, list[str]]:
    """``n`` generation-2 records (UUID ids, UUID event ids), indexed."""
    ids = sorted(str(uuid.UUID(int=k * 104729 + 7)) for k in range(n))
    for k, image_id in enumerate(ids):
        (root / "images" / image_id).mkdir()
        write_parquet_artifact(root, image_id, GEN2_EVENTS, gen2_events_frame(1 + k % 3))
    kd = KymDataset(root, indexers=make_indexers([KVE]))
    kd.update_batch_report({KVE: ids})
    return kd, ids


def test_an_edit_through_the_publisher_reencodes_one_group(plain_v2_store: Path) -> None:
    """After a burst (written in one piece), the first edit writes the table whole in
    row groups and the next one re-encodes one of them; the file then equals a fresh
    rebuild and reads in pandas as before."""
    kd, ids = _indexed(plain_v2_store, 30)
    path = kd.store.table_path(KVE)
    assert pq.ParquetFile(path).num_row_groups == 1  # a burst's write: one piece
    for k, image_id in enumerate((ids[3], ids[13])):
        frame = gen2_events_frame(4, start_s=9.0 + k)
        write_parquet_artifact(plain_v2_store, image_id, GEN2_EVENTS, frame)
        kd.update_batch_report({KVE: [image_id]})
    assert pq.ParquetFile(path).num_row_groups > 2  # cut into groups by the first edit
    assert kd._pub.layouts[KVE].encoded == 1  # the second edit encoded one of them
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    pd.testing.assert_frame_equal(pd.read_parquet(path), fresh.rebuild(KVE))
    assert pq.read_table(path).equals(kd.get_arrow(KVE))


def test_a_table_rewritten_by_kymflow_is_written_whole_by_the_next_edit(
    plain_v2_store: Path,
) -> None:
    """After another program rewrites the table file (kymflow's pandas ``to_parquet``),
    the next edit copies nothing from it and the table equals a fresh rebuild."""
    kd, ids = _indexed(plain_v2_store, 30)
    path = kd.store.table_path(KVE)
    df = pd.read_parquet(path).astype(object)  # kymflow's object columns, one row group
    df.to_parquet(path.with_name("x.parquet"), index=False)
    os.replace(path.with_name("x.parquet"), path)
    write_parquet_artifact(plain_v2_store, ids[2], GEN2_EVENTS, gen2_events_frame(2, start_s=5.0))
    kd.update_batch_report({KVE: [ids[2]]})
    written = kd._pub.layouts[KVE]
    assert written.encoded == len(written.groups) > 1
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    pd.testing.assert_frame_equal(pd.read_parquet(path), fresh.rebuild(KVE))


def test_a_burst_is_written_in_one_piece_and_the_next_edit_cuts_groups(tmp_path: Path) -> None:
    """An update of more records than BURST_RECORDS writes one row group (no layout
    kept); the edit after it writes the table whole in groups."""
    path = tmp_path / "t.parquet"
    st0 = _sorted(kymflow_events(40))
    first = _write(path, st0, None, None)
    many = set(st0.ids[: grouped_module.BURST_RECORDS + 1])
    st1 = _edit(st0, dict.fromkeys(many, 2))
    out = write_grouped(path, st1, touched=many, previous=first)
    assert isinstance(out, Fingerprint)
    assert pq.ParquetFile(path).num_row_groups == 1
    _assert_reads_as(path, st1)
    st2 = _edit(st1, {st1.ids[0]: 1})
    second = _write(path, st2, {st1.ids[0]}, None)
    assert second.encoded == len(second.groups) > 1
    _assert_reads_as(path, st2)


def test_after_a_restart_the_first_edit_copies_the_groups_on_disk(plain_v2_store: Path) -> None:
    """A new publisher (a restarted daemon) reading a table file written in groups
    copies them at its first edit, which encodes one group; the file then equals a fresh
    rebuild."""
    kd, ids = _indexed(plain_v2_store, 30)
    write_parquet_artifact(plain_v2_store, ids[3], GEN2_EVENTS, gen2_events_frame(2))
    kd.update_batch_report({KVE: [ids[3]]})  # written whole, in groups
    path = kd.store.table_path(KVE)
    groups = pq.ParquetFile(path).num_row_groups
    assert groups > 2
    restarted = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    write_parquet_artifact(plain_v2_store, ids[20], GEN2_EVENTS, gen2_events_frame(5, start_s=3.0))
    restarted.update_batch_report({KVE: [ids[20]]})
    assert restarted._pub.layouts[KVE].encoded == 1
    assert pq.ParquetFile(path).num_row_groups == groups
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    pd.testing.assert_frame_equal(pd.read_parquet(path), fresh.rebuild(KVE))


def test_groups_cut_inside_a_record_are_never_copied(plain_v2_store: Path) -> None:
    """A table file in our schema whose row groups split records (another writer's
    row_group_size) gets no layout: the first edit writes the table whole."""
    kd, ids = _indexed(plain_v2_store, 30)
    path = kd.store.table_path(KVE)
    pq.write_table(pq.read_table(path), path.with_name("x.parquet"), row_group_size=5)
    os.replace(path.with_name("x.parquet"), path)
    restarted = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    restarted.get_arrow(KVE)
    assert KVE not in restarted._pub.layouts
    write_parquet_artifact(plain_v2_store, ids[7], GEN2_EVENTS, gen2_events_frame(1, start_s=2.0))
    restarted.update_batch_report({KVE: [ids[7]]})
    written = restarted._pub.layouts[KVE]
    assert written.encoded == len(written.groups)
    fresh = KymDataset(plain_v2_store, indexers=make_indexers([KVE]))
    pd.testing.assert_frame_equal(pd.read_parquet(path), fresh.rebuild(KVE))
