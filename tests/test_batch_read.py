"""A daemon batch's read (``extract_jobs``: each record read once for every indexer that
names it) and the cached generation-2 params hash give what reading each record with each
indexer alone gives, with corrupt, half-written and missing files among good ones."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers_store import (
    delete_record,
    write_json_artifact,
    write_mixed_generations,
)
from kymwatch.errors import ArtifactUnreadableError
from kymwatch.index import KymDataset, OutcomeStatus, make_indexers
from kymwatch.index.batch import extract_batch, extract_chunk, extract_jobs
from kymwatch.index.params import current_params, current_params_hash
from kymwatch.store import ZarrDataset, ZarrImageRecord

ALL = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")


def _store(root: Path, n: int) -> tuple[Path, list[str]]:
    """``n`` records alternating generation 1 and 2 (UUID ids, kymflow's layouts; most
    generation-2 records share their params), then damage among them: a corrupt events
    file, a half-written (truncated) radon results file, an unparseable params file, a
    record without artifacts and one whose record folder is gone."""
    ids = write_mixed_generations(root, n, without_artifacts=3)
    analysis = root / "images" / ids[2] / "analysis"
    (analysis / "velocity_events" / "events.parquet").write_bytes(b"PAR1 not really")
    results = root / "images" / ids[4] / "analysis" / "radon" / "results.parquet"
    results.write_bytes(results.read_bytes()[: results.stat().st_size // 2])
    params = root / "images" / ids[6] / "analysis" / "velocity_events" / "params.json"
    params.write_bytes(b'{"thr": ')
    delete_record(root, ids[8])
    return root, ids


def _rows(extracted: tuple[object, object]) -> list[dict[str, object]] | None:
    """A record's rows, without null values (an extra column another record of a chunk
    has is null in this one's rows; read alone, the record has no such column)."""
    _, span = extracted
    if span is None:
        return None
    rows = span.table().to_pylist()  # type: ignore[attr-defined]
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def test_jobs_read_together_equal_each_record_read_alone(tmp_path: Path) -> None:
    """Each indexer's outcomes and rows from one read of every record (each indexer with
    its own records, chunks smaller than the batch) equal those of reading each record
    with that indexer alone, damaged files and a removed record included."""
    store, ids = _store(tmp_path / "s.zarr", 14)
    ds = ZarrDataset(store)
    ixs = make_indexers(ALL)
    jobs = [(ixs[0], ids), (ixs[1], ids[5:]), (ixs[2], ids[::-1]), (ixs[3], ids[:9])]
    together = extract_jobs(ds, jobs, chunk=4)
    statuses = set()
    for (ix, job_ids), got in zip(jobs, together, strict=True):
        assert [o.image_id for o, _ in got] == list(job_ids)
        for image_id, pair in zip(job_ids, got, strict=True):
            [alone] = extract_batch(ix, ds, [image_id])
            assert pair[0] == alone[0], (ix.name, image_id)
            assert _rows(pair) == _rows(alone), (ix.name, image_id)
            statuses.add(pair[0].status)
    assert {
        OutcomeStatus.INDEXED,
        OutcomeStatus.MISSING,
        OutcomeStatus.UNREADABLE,
        OutcomeStatus.REMOVED,
    } <= statuses


def test_a_chunk_with_a_corrupt_file_loses_no_other_records_rows(tmp_path: Path) -> None:
    """A rebuild's chunk holding a corrupt and a half-written file gives those records
    their outcome and every other record the rows it has alone."""
    store, ids = _store(tmp_path / "s.zarr", 10)
    ds = ZarrDataset(store)
    ixs = make_indexers(ALL)
    for chunk in extract_chunk(ds, ixs, ids):
        ix = next(i for i in ixs if i.name == chunk.indexer)
        for image_id, pair in zip(ids, chunk.extracted, strict=True):
            [alone] = extract_batch(ix, ds, [image_id])
            assert pair[0] == alone[0] and _rows(pair) == _rows(alone), (ix.name, image_id)
    [kve] = [c for c in extract_chunk(ds, ixs, ids) if c.indexer == "kym_velocity_events"]
    assert kve.outcomes[2].status is OutcomeStatus.UNREADABLE
    assert kve.outcomes[6].status is OutcomeStatus.UNREADABLE  # its params cannot be parsed
    assert all(kve.outcomes[k].status is OutcomeStatus.INDEXED for k in (0, 1, 4, 5, 7, 9))
    assert kve.outcomes[8].status is OutcomeStatus.REMOVED
    [radon] = [c for c in extract_chunk(ds, ixs, ids) if c.indexer == "kym_radon"]
    assert radon.outcomes[4].status is OutcomeStatus.UNREADABLE  # half-written results
    assert radon.outcomes[0].status is OutcomeStatus.INDEXED


def test_batch_tables_equal_updates_indexer_by_indexer(tmp_path: Path) -> None:
    """``update_batch_report`` with each indexer's own records writes the tables and
    outcomes that updating each table on its own writes."""
    one, ids = _store(tmp_path / "one.zarr", 12)
    other = Path(shutil.copytree(one, tmp_path / "other.zarr", symlinks=True))
    work = {ALL[0]: ids, ALL[1]: ids[1::2], ALL[2]: ids[4:], ALL[3]: ids[:7]}
    kd_one = KymDataset(one, indexers=make_indexers(ALL))
    apart = [kd_one.update_images_report(name, work[name], log_outcomes=False) for name in ALL]
    kd = KymDataset(other, indexers=make_indexers(ALL))
    together, unreadable = kd.update_batch_report(work, log_outcomes=False)
    assert unreadable == {}
    for a, b in zip(apart, together, strict=True):
        assert a.table_name == b.table_name and a.table_rows == b.table_rows

        def norm(r: object, root: Path) -> list[tuple[object, ...]]:
            return [
                (o.image_id, o.status, o.rows, o.keys, o.path and os.path.relpath(o.path, root))
                for o in r.outcomes  # type: ignore[attr-defined]
            ]

        assert norm(a, one) == norm(b, other), a.table_name
        assert kd_one.get_arrow(a.table_name).equals(kd.get_arrow(b.table_name)), a.table_name


def test_cached_params_hash_equals_the_hash_of_the_params_read(tmp_path: Path) -> None:
    """The cached hash equals ``current_params``' for records sharing params, a params
    file holding no object before one that does, legacy ``.json.gz``, a large params
    file and no params;
    a file that cannot be parsed raises each time (nothing of it is cached)."""
    store, ids = _store(tmp_path / "s.zarr", 10)
    gen2 = [i for k, i in enumerate(ids) if k % 2 == 0 and k not in (6, 8)]
    write_json_artifact(store, gen2[1], "velocity_events/params", [1, 2])
    write_json_artifact(store, gen2[1], "velocity_events_params", {"thr": 1}, gz=True)
    os.remove(store / "images" / gen2[2] / "analysis" / "radon" / "params.json")
    big = {"thr": 2, "note": "x" * 20_000}  # larger than what the cache keeps
    write_json_artifact(store, gen2[2], "velocity_events/params", big)
    ds = ZarrDataset(store)
    for _ in range(2):  # the second round hits the cache
        for image_id in [*gen2, ids[1], ids[3]]:
            rec = ZarrImageRecord(ds, image_id)
            for indexer in ("kym_velocity_events", "kym_radon"):
                want = current_params(indexer, rec)[1]
                assert current_params_hash(indexer, rec) == want, (image_id, indexer)
    bad = ZarrImageRecord(ds, ids[6])
    meta = store / "images" / gen2[0] / "analysis" / "metadata.json"
    good = meta.read_bytes()
    meta.write_bytes(good[:-3])
    for _ in range(2):
        with pytest.raises(ArtifactUnreadableError):
            current_params_hash("kym_velocity_events", bad)
        with pytest.raises(ArtifactUnreadableError) as e:
            current_params_hash("kym_radon", ZarrImageRecord(ds, gen2[0]))
        assert e.value.path == str(meta)


def test_reads_primed_with_the_scans_listings_equal_reads_that_list_and_list_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of records primed with the fingerprint scan's folder listings (the daemon's
    batch) give the outcomes and rows of reads that list the folders themselves, damaged
    and removed records included, without listing any folder again."""
    from kymwatch.store import Listing, scan_records_settled

    store, ids = _store(tmp_path / "s.zarr", 14)
    ds = ZarrDataset(store)
    ixs = make_indexers(ALL)
    jobs = [(ixs[0], ids), (ixs[1], ids[5:]), (ixs[2], ids[::-1]), (ixs[3], ids[:9])]
    plain = extract_jobs(ds, jobs, chunk=4)
    present = {i: store / "images" / i for i in ids if (store / "images" / i).is_dir()}
    listed: dict[str, Listing] = {}
    scan_records_settled(store, present, listings=listed)
    assert listed[ids[1]][""] == frozenset(os.listdir(present[ids[1]] / "analysis"))
    calls: list[str] = []
    real = os.listdir

    def counting(path: str) -> list[str]:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(os, "listdir", counting)
    primed = extract_jobs(ds, jobs, chunk=4, listed=listed)
    for got, want in zip(primed, plain, strict=True):
        assert [o for o, _ in got] == [o for o, _ in want]
        assert [_rows(p) for p in got] == [_rows(p) for p in want]
    assert [p for p in calls if ids[8] not in p] == []  # only the removed record is listed
