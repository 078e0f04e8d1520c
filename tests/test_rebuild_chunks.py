"""The rebuild's chunked read: ``extract_chunk`` (every indexer of a chunk, each record
listed once), ``KymDataset.rebuild_reports`` (one pass for every table) and the merge of
chunks whose records alternate between raw schemas; all equal the per-table rebuild."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conformance import cases, copy_store
from helpers_store import (
    events_frame,
    write_mixed_generations,
    write_parquet_artifact,
)
from kymwatch.index import (
    KymDataset,
    OutcomeStatus,
    RecordOutcome,
    UpdateReport,
    make_indexers,
)
from kymwatch.index.arrow_schema import RowSpan
from kymwatch.index.batch import (
    ChunkResult,
    HeldResults,
    extract_batch,
    extract_chunk,
)
from kymwatch.index.gather import gather_spans
from kymwatch.store import ArtifactFormat, ZarrDataset, ZarrImageRecord

ALL = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")


def _mixed_store(root: Path, n: int) -> tuple[Path, list[str]]:
    """``n`` records alternating generation 1 and 2 (UUID ids, string and UUID event
    ids, kymflow's layouts), with one unreadable events file and one record without
    artifacts."""
    ids = write_mixed_generations(root, n, without_artifacts=n - 1)
    bad = root / "images" / ids[2] / "analysis" / "velocity_events" / "events.parquet"
    bad.write_bytes(b"PAR1 not really")
    return root, ids


def _same(a: UpdateReport, b: UpdateReport, a_root: Path, b_root: Path) -> bool:
    """Equal outcomes and row counts (artifact paths compared inside each store)."""

    def norm(r: UpdateReport, root: Path) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for o in r.outcomes:
            path = o.path and os.path.relpath(o.path, root)
            out.append((o.image_id, o.status, o.rows, o.keys, path, o.error))
        return out

    return a.table_rows == b.table_rows and norm(a, a_root) == norm(b, b_root)


def _tables(store: Path) -> dict[str, pa.Table]:
    return {t: pq.read_table(store / "tables" / f"{t}.parquet") for t in ALL}


def test_rebuild_reports_equal_per_table_rebuilds_on_mixed_data(tmp_path: Path) -> None:
    """One pass for every table writes the tables and outcomes a rebuild per table does,
    on records of both generations in chunks smaller than the store."""
    one, _ = _mixed_store(tmp_path / "one.zarr", 23)
    other = Path(shutil.copytree(one, tmp_path / "other.zarr", symlinks=True))
    kd_one = KymDataset(one, indexers=make_indexers(ALL))
    per_table = [kd_one.rebuild_report(t, log_outcomes=False) for t in ALL]
    kd = KymDataset(other, indexers=make_indexers(ALL))
    import kymwatch.index.kymdataset as kymdataset

    saved, kymdataset._CHUNK = kymdataset._CHUNK, 5  # type: ignore[attr-defined]
    try:
        together = kd.rebuild_reports(log_outcomes=False, keep_tables=False)
    finally:
        kymdataset._CHUNK = saved  # type: ignore[attr-defined]
    assert [r.table_name for r in together] == list(ALL)
    for a, b in zip(per_table, together, strict=True):
        assert _same(a, b, one, other), a.table_name
    mine, theirs = _tables(one), _tables(other)
    for t in ALL:
        assert mine[t].equals(theirs[t]), t
    bad = next(o for o in together[2].outcomes if o.status is OutcomeStatus.UNREADABLE)
    assert bad.path is not None and bad.path.endswith("events.parquet")
    assert kd.get_arrow("kym_velocity_events").equals(theirs["kym_velocity_events"])


@pytest.mark.parametrize("gen", ["gen1", "gen2"])
def test_rebuild_reports_equal_per_table_rebuilds_on_the_kit(tmp_path: Path, gen: str) -> None:
    """On every case of kymflow's kit, the one-pass rebuild of all four tables equals the
    rebuild of each table on its own (tables on disk and outcomes)."""
    for case in cases(gen):
        one = copy_store(case, tmp_path / case.name / "one.zarr")
        other = copy_store(case, tmp_path / case.name / "other.zarr")
        kd_one = KymDataset(one, indexers=make_indexers(ALL))
        per_table = [kd_one.rebuild_report(t, log_outcomes=False) for t in ALL]
        together = KymDataset(other, indexers=make_indexers(ALL)).rebuild_reports(
            log_outcomes=False
        )
        for a, b in zip(per_table, together, strict=True):
            assert _same(a, b, one, other), (case.name, a.table_name)
        mine, theirs = _tables(one), _tables(other)
        for t in ALL:
            assert mine[t].equals(theirs[t]), (case.name, t)


def test_chunk_table_keeps_the_order_asked_across_raw_schemas(tmp_path: Path) -> None:
    """A chunk whose records alternate between two raw schemas gives one table, rows in
    the order of the ids, each record's rows together, typed like the merged table."""
    store, ids = _mixed_store(tmp_path / "s.zarr", 9)
    ix = make_indexers(["kym_velocity_events"])
    [chunk] = extract_chunk(ZarrDataset(store), ix, ids)
    table = chunk.table()
    assert table is not None
    expected = [o.image_id for o, s in chunk.extracted if s is not None for _ in range(s.count)]
    assert table.column("image_id").to_pylist() == expected
    assert {"t0_s", "detector", "t_start_s"} <= set(table.column_names)
    assert [o.status for o in chunk.outcomes] == [
        o.status for o, _ in extract_batch(ix[0], ZarrDataset(store), ids)
    ]


def test_gather_spans_takes_part_used_batches_as_slices() -> None:
    """Spans of a batch used whole and of one used in part, interleaved, come out in
    the order given, with the extra column's types unified across both batches."""
    a = pa.table({"image_id": ["a", "b", "c", "z"], "x": [1, 2, 3, 4]})
    b = pa.table({"image_id": ["d", "e", "f"], "x": ["u", "v", "w"]})
    spans = [RowSpan(a, 1, 1), RowSpan(b, 0, 2), RowSpan(a, 0, 1), RowSpan(b, 2, 1)]
    out = gather_spans(spans)
    assert out.column("image_id").to_pylist() == ["b", "d", "e", "a", "f"]
    assert out.column("x").to_pylist() == ["2", "u", "v", "1", "w"]


def test_snapshot_record_finds_what_a_plain_record_finds(tmp_path: Path) -> None:
    """A snapshot record (each folder listed once) finds, misses and refuses the same
    artifact files as one that looks each name up: a folder linked elsewhere is
    refused, a file where a folder is expected means missing."""
    store, ids = _mixed_store(tmp_path / "s.zarr", 4)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "results.parquet").write_bytes(b"x")
    analysis = store / "images" / ids[0] / "analysis"
    os.rename(analysis / "radon", tmp_path / "radon-moved")
    (analysis / "radon").symlink_to(outside)
    (store / "images" / ids[1] / "analysis" / "radon").write_text("a file")
    ds = ZarrDataset(store)
    lookups = [
        ("radon/results", (ArtifactFormat.PARQUET, ArtifactFormat.CSV_GZ)),
        ("velocity_events/events", (ArtifactFormat.PARQUET,)),
        ("velocity_events", (ArtifactFormat.PARQUET,)),
        ("metadata", (ArtifactFormat.JSON, ArtifactFormat.JSON_GZ)),
        ("radon_report", (ArtifactFormat.PARQUET, ArtifactFormat.JSON)),
    ]
    for image_id in ids:
        plain = ZarrImageRecord(ds, image_id)
        snap = ZarrImageRecord(ds, image_id, snapshot=True)
        for name, formats in lookups:
            assert snap.find_artifact_file(name, formats) == plain.find_artifact_file(
                name, formats
            ), (image_id, name)
    ix = make_indexers(["kym_radon"])[0]
    [(outcome, rows)] = extract_batch(ix, ds, [ids[0]])
    assert outcome.status is OutcomeStatus.UNREADABLE and rows is None
    assert "symbolic link" in (outcome.error or "")


def test_held_results_give_back_each_chunks_pairs(tmp_path: Path) -> None:
    """Chunks held compactly give back every record's outcome and the same rows, for a
    chunk in one table and for one whose rows lie in two tables (kept as pairs)."""
    store, ids = _mixed_store(tmp_path / "s.zarr", 12)
    ix = make_indexers(["kym_velocity_events"])
    chunks = [extract_chunk(ZarrDataset(store), ix, ids[k : k + 5])[0] for k in (0, 5, 10)]
    a = pa.table({"image_id": ["x"], "v": [1]})
    b = pa.table({"image_id": ["y"], "v": ["text"]})
    two = ChunkResult(
        "kym_velocity_events",
        "kym_velocity_events",
        (
            (RecordOutcome("x", "kym_velocity_events", OutcomeStatus.INDEXED, 1), RowSpan(a, 0, 1)),
            (RecordOutcome("y", "kym_velocity_events", OutcomeStatus.INDEXED, 1), RowSpan(b, 0, 1)),
        ),
    )
    held = HeldResults()
    for chunk in [*chunks, two]:
        held.add(chunk)
    expected = [pair for chunk in [*chunks, two] for pair in chunk.extracted]
    got = list(held)
    assert len(held) == len(got) == len(expected)
    for (o1, s1), (o2, s2) in zip(expected, got, strict=True):
        assert o1 == o2
        assert (s1 is None) == (s2 is None)
        if s1 is not None and s2 is not None:
            assert s1.table().equals(s2.table())
    assert held[-1][1] is two.extracted[1][1]


def test_recheck_reads_again_a_record_changed_while_the_pass_read(tmp_path: Path) -> None:
    """With recheck, a record whose artifact changes after its chunk was read (here
    from the after-chunk hook) is read again under the table lock: the table has the
    new rows, as a rebuild started after the change would."""
    store, ids = _mixed_store(tmp_path / "s.zarr", 6)
    changed = ids[1]  # generation 1: velocity_events.parquet
    calls: list[int] = []

    def rewrite() -> None:
        if not calls:
            write_parquet_artifact(store, changed, "velocity_events", events_frame(7))
        calls.append(1)

    kd = KymDataset(store, indexers=make_indexers(ALL))
    reports = kd.rebuild_reports(log_outcomes=False, recheck=True, after_chunk=rewrite)
    table = kd.get_arrow("velocity_events")
    assert table.column("image_id").to_pylist().count(changed) == 7
    fresh = tmp_path / "fresh.zarr"
    shutil.copytree(store, fresh, symlinks=True, ignore=shutil.ignore_patterns("tables"))
    KymDataset(fresh, indexers=make_indexers(ALL)).rebuild_reports(log_outcomes=False)
    for t in ALL:
        assert _tables(store)[t].equals(_tables(fresh)[t]), t
    assert [r.table_name for r in reports] == list(ALL)
