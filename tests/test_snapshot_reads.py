"""A snapshot record's reads (the rebuild's and the daemon's batches): files in the
folders of ``analysis/`` found by opening them (one system call finds and opens; the
bytes kept for the read), ``analysis/`` listed once per record; the same files found,
the same rows and the same refusals as a record that looks each name up
(:func:`~kymwatch.store.artifactio.read_if_present` underneath)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_store import write_mixed_generations
from kymwatch.errors import ArtifactNotFoundError, ArtifactUnreadableError
from kymwatch.index import KymDataset, OutcomeStatus, make_indexers
from kymwatch.index.batch import extract_batch, extract_chunk
from kymwatch.index.indexers import raw_reader
from kymwatch.store import ArtifactFormat, ZarrDataset, ZarrImageRecord
from kymwatch.store.artifactio import read_if_present

ALL = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")
_P, _J = ArtifactFormat.PARQUET, ArtifactFormat.JSON
LOOKUPS = [
    ("velocity_events/events", (_P, ArtifactFormat.CSV_GZ)),
    ("velocity_events/params", (_J, ArtifactFormat.JSON_GZ)),
    ("radon/results", (_P,)),
    ("radon/params", (_J,)),
    ("metadata", (_J,)),
]
KINDS = ["absent", "directory", "fifo", "symlink-loop", "dangling-symlink", "folder-is-file"]


def _store(tmp_path: Path, n: int = 4) -> tuple[ZarrDataset, list[str]]:
    """A kymflow-shaped store of both generations (UUID ids, string event ids)."""
    root = tmp_path / "s.zarr"
    ids = write_mixed_generations(root, n, without_artifacts=n + 1)
    return ZarrDataset(root), ids


def _make(kind: str, path: Path, tmp_path: Path) -> None:
    """Put something that is not a readable artifact file at ``path`` (a file before)."""
    if kind == "folder-is-file":
        folder = path.parent
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        folder.write_text("a file where a folder is expected")
        return
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # a reader that blocks on it would hang the test
    elif kind == "symlink-loop":
        path.symlink_to(path.name)
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")


def _outcome(rec: ZarrImageRecord, name: str, formats: tuple[ArtifactFormat, ...]) -> object:
    """What a look-up and read of ``name`` give: the file found and its bytes, or why not."""
    found = rec.find_artifact_file(name, formats)
    if found is None:
        return None
    try:
        return found, rec.read_artifact_bytes(name, found)
    except ArtifactUnreadableError as e:
        return found, e.path, e.reason


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_finds_and_refuses_what_a_plain_record_does(tmp_path: Path, kind: str) -> None:
    """Each generation-2 file in a folder of analysis/ replaced by nothing, a folder, a
    FIFO, a symlink (a loop, dangling) or its folder by a file: a snapshot record finds,
    reads and refuses every artifact as a plain record does (the FIFO never blocks)."""
    ds, ids = _store(tmp_path)
    gen2 = ids[0]
    analysis = Path(ds.images_dir) / gen2 / "analysis"
    _make(kind, analysis / "velocity_events" / "events.parquet", tmp_path)
    if kind != "folder-is-file":
        _make(kind, analysis / "radon" / "params.json", tmp_path)
    for image_id in ids:
        for name, formats in LOOKUPS:
            plain = _outcome(ZarrImageRecord(ds, image_id), name, formats)
            snap = _outcome(ZarrImageRecord(ds, image_id, snapshot=True), name, formats)
            assert snap == plain, (image_id, name)


@pytest.mark.parametrize("kind", ["absent", "directory", "fifo", "symlink-loop"])
def test_find_first_finds_what_the_look_ups_one_by_one_find(tmp_path: Path, kind: str) -> None:
    """Every built-in indexer's whole look-up in one call (``find_first``) gives the
    first file its names give one by one, for snapshot and plain records of both
    generations, with the generation-2 files replaced by something unreadable."""
    ds, ids = _store(tmp_path)
    analysis = Path(ds.images_dir) / ids[0] / "analysis"
    _make(kind, analysis / "velocity_events" / "events.parquet", tmp_path)
    _make(kind, analysis / "radon" / "results.parquet", tmp_path)
    lookups = [ix.lookups for ix in make_indexers(list(ALL))]  # type: ignore[attr-defined]
    found_any = 0
    for image_id in ids:
        for snapshot in (False, True):
            for each in lookups:
                rec = ZarrImageRecord(ds, image_id, snapshot=snapshot)
                one_by_one = next(
                    (
                        (name, *found)
                        for name, formats in each
                        if (found := rec.find_artifact_file(name, formats)) is not None
                    ),
                    None,
                )
                rec = ZarrImageRecord(ds, image_id, snapshot=snapshot)
                got = rec.find_first(each)
                assert got == one_by_one, (image_id, snapshot, each)
                found_any += got is not None
    assert found_any > 0


def test_snapshot_of_a_linked_folder_refuses_its_files(tmp_path: Path) -> None:
    """A folder of analysis/ that is a symbolic link: its files are found as a plain
    record finds them and refused, never read through the link."""
    ds, ids = _store(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "events.parquet").write_bytes(b"PAR1 outside the store")
    folder = Path(ds.images_dir) / ids[0] / "analysis" / "velocity_events"
    os.rename(folder, tmp_path / "moved")
    folder.symlink_to(outside)
    snap = ZarrImageRecord(ds, ids[0], snapshot=True)
    got = _outcome(snap, "velocity_events/events", (_P,))
    assert got == _outcome(ZarrImageRecord(ds, ids[0]), "velocity_events/events", (_P,))
    assert isinstance(got, tuple) and "symbolic link" in str(got[-1])
    [ix] = make_indexers(["kym_velocity_events"])
    [(outcome, rows)] = extract_batch(ix, ds, [ids[0]])
    assert outcome.status is OutcomeStatus.UNREADABLE and rows is None


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of the file-system calls a read makes, by kind and file name."""
    counts: Counter[str] = Counter()
    real_open, real_listdir, real_lstat = os.open, os.listdir, os.lstat

    def counted_open(path: str, *args: object, **kwargs: object) -> int:
        counts["open " + os.fspath(path)] += 1
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    def counted_listdir(path: str) -> list[str]:
        counts["listdir " + os.path.basename(os.path.normpath(path))] += 1
        return real_listdir(path)

    def counted_lstat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        counts["lstat"] += 1
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counted_open)
    monkeypatch.setattr(os, "listdir", counted_listdir)
    monkeypatch.setattr(os, "lstat", counted_lstat)
    yield counts


def test_a_pass_opens_each_file_once_and_lists_analysis_once(
    tmp_path: Path, calls: Counter[str]
) -> None:
    """One pass of every indexer over a mixed store: each artifact file opened once
    (a generation-1 events file two indexers read too), ``analysis/`` listed once per
    record, its folders never listed; the rows those of plain reads."""
    ds, ids = _store(tmp_path, 6)
    ixs = make_indexers(list(ALL))
    calls.clear()
    snap = {r.indexer: r for r in extract_chunk(ds, ixs, ids)}
    listed = {k: v for k, v in calls.items() if k.startswith("listdir")}
    assert listed == {"listdir analysis": len(ids)}, calls
    opened = {k: v for k, v in calls.items() if k.startswith("open")}
    assert set(opened.values()) == {1}, opened
    files = {f"open {f}" for f in Path(ds.images_dir).glob("*/analysis/**/*.*") if f.is_file()}
    assert set(opened) == files
    # At most five lstat per record (the record folder's link check, made by the
    # look-ups that ask whether a record with a missing artifact still exists;
    # analysis/'s; the folders read's): none per name and format looked up.
    assert calls["lstat"] <= len(ids) * 5, calls
    for ix in ixs:
        reader = raw_reader(ix)
        assert reader is not None
        for image_id, outcome in zip(ids, snap[ix.name].outcomes, strict=True):
            try:
                raw = reader(ZarrImageRecord(ds, image_id))
            except ArtifactNotFoundError:
                assert outcome.status is OutcomeStatus.MISSING
                continue
            assert (outcome.status, outcome.rows) == (OutcomeStatus.INDEXED, raw.num_rows)


def test_read_if_present_tells_nothing_there_from_unreadable(tmp_path: Path) -> None:
    """Nothing at the path (or a file where a folder should be) gives None; a regular
    file its bytes; a folder, FIFO or symbolic link raises, naming the reason."""
    (tmp_path / "f.json").write_bytes(b"{}")
    (tmp_path / "d.json").mkdir()
    os.mkfifo(tmp_path / "p.json")
    (tmp_path / "l.json").symlink_to(tmp_path / "f.json")
    assert read_if_present("r1", "x", tmp_path / "nothing.json") is None
    assert read_if_present("r1", "x", tmp_path / "f.json" / "under.json") is None
    assert read_if_present("r1", "x", tmp_path / "f.json") == b"{}"
    for name, reason in (
        ("d.json", "not a regular file"),
        ("p.json", "not a regular file"),
        ("l.json", "symbolic links are not followed"),
    ):
        with pytest.raises(ArtifactUnreadableError, match=reason):
            read_if_present("r1", "x", tmp_path / name)


@pytest.mark.parametrize("recheck", [False, True])
def test_a_rebuild_lists_each_records_analysis_once(
    tmp_path: Path, calls: Counter[str], recheck: bool
) -> None:
    """A rebuild of every table (one pass over the records) lists each record's
    analysis/ once, and gives the outcomes and rows of one table rebuilt at a time; with
    a recheck, a record that gained an artifact after its chunk was read is read again."""
    ds, ids = _store(tmp_path, 6)
    kd = KymDataset(ds.path, "a", indexers=make_indexers(list(ALL)))
    gained = Path(ds.images_dir) / ids[1] / "analysis" / "radon" / "results.parquet"
    done = [0]

    def after_chunk() -> None:
        """After the first chunk: a generation-1 record gains kym_radon's file."""
        done[0] += 1
        if done[0] == 1 and recheck:
            gained.parent.mkdir()
            shutil.copy(
                Path(ds.images_dir) / ids[0] / "analysis" / "radon" / "results.parquet", gained
            )

    calls.clear()
    reports = {
        r.table_name: r for r in kd.rebuild_reports(recheck=recheck, after_chunk=after_chunk)
    }
    if not recheck:
        assert calls["listdir analysis"] == len(ids), calls
    fresh = KymDataset(ds.path, "a", indexers=make_indexers(list(ALL)))
    for name in ALL:
        one = fresh.rebuild_report(name)
        assert [(o.image_id, o.status, o.rows) for o in reports[name].outcomes] == [
            (o.image_id, o.status, o.rows) for o in one.outcomes
        ], name
        assert reports[name].table_rows == one.table_rows
    radon = {o.image_id: o.status for o in reports["kym_radon"].outcomes}
    assert radon[ids[1]] is (OutcomeStatus.INDEXED if recheck else OutcomeStatus.MISSING)


def test_a_rebuild_reads_each_record_through_one_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild of every table reads each record once for all of them: each artifact
    file opened once, and a record's link checks made once (generation 1: the record
    folder, analysis/, and the look-up asking whether a record missing kym_radon's
    artifact still exists; generation 2: analysis/, its two folders read, and the two
    look-ups missing generation-1 artifacts), not once per group of tables."""
    ds, ids = _store(tmp_path, 6)
    gen2 = [i for i in ids if (Path(ds.images_dir) / i / "analysis" / "radon").is_dir()]
    assert 0 < len(gen2) < len(ids)
    kd = KymDataset(ds.path, "a", indexers=make_indexers(list(ALL)))
    counts: Counter[str] = Counter()
    real_lstat, real_open = os.lstat, os.open

    def counted_lstat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if f"{os.sep}images{os.sep}" in os.fspath(path):
            counts["lstat"] += 1
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    def counted_open(path: str, *args: object, **kwargs: object) -> int:
        if f"{os.sep}analysis{os.sep}" in os.fspath(path):
            counts["open " + os.fspath(path)] += 1
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", counted_lstat)
    monkeypatch.setattr(os, "open", counted_open)
    kd.rebuild_reports(log_outcomes=False)
    opened = {k: v for k, v in counts.items() if k.startswith("open ")}
    assert opened and set(opened.values()) == {1}, opened
    assert counts["lstat"] == 3 * (len(ids) - len(gen2)) + 5 * len(gen2), counts
