"""The compact in-memory map of every record's fingerprints (`RecordFingerprints`)."""

from __future__ import annotations

import uuid

from kymwatch.daemon.fingerprints import RecordFingerprints
from kymwatch.store import Fingerprint, RecordFiles

GEN1 = ("radon_report.json", "velocity_events.parquet", "metadata.json")
GEN2 = (
    "metadata.json",
    "radon/params.json",
    "radon/results.parquet",
    "velocity_events/events.parquet",
    "velocity_events/params.json",
)


def _files(i: int, names: tuple[str, ...]) -> RecordFiles:
    base = 1_764_000_000_000_000_000 + i * 1_000_003
    return {
        name: Fingerprint(100 + k, base + k, base + k + 7, 9_000_000 + i * 10 + k, base + 99)
        for k, name in enumerate(names)
    }


def _store(n: int) -> dict[str, RecordFiles]:
    return {str(uuid.UUID(int=i + 1)): _files(i, GEN1 if i % 2 else GEN2) for i in range(n)}


def test_records_read_back_equal_what_was_stored() -> None:
    """Every record of both generations (and one without files) reads back equal, with
    the scan time that is not part of a fingerprint's equality."""
    records = _store(40) | {"empty": {}}
    held = RecordFingerprints(records)
    assert held == records and len(held) == 41
    assert dict(held.items()) == records
    for image_id, files in records.items():
        got = held[image_id]
        assert [fp.scanned_ns for fp in got.values()] == [fp.scanned_ns for fp in files.values()]
    assert held["empty"] == {} and "nope" not in held and held.get("nope") is None


def test_a_record_read_is_a_copy() -> None:
    """Changing the files a read gave leaves the held record as it was; storing them changes it."""
    held = RecordFingerprints(_store(2))
    image_id = next(iter(held))
    files = held[image_id]
    before = dict(files)
    files["radon/results.parquet"] = Fingerprint(1, 2, 3, 4)
    assert held[image_id] == before
    held[image_id] = files
    assert held[image_id] == files


def test_records_with_the_same_files_share_their_names() -> None:
    """Records with the same artifact files share one tuple of names (not one per record)."""
    held = RecordFingerprints(_store(6))
    first, third = (held._data[k] for k in list(held)[0:3:2])
    assert isinstance(first, tuple) and isinstance(third, tuple)
    assert first[0] is third[0]


def test_values_beyond_int64_are_kept_exactly() -> None:
    """An mtime set past 2262 (beyond int64) and a negative one (before 1970) read back exactly."""
    odd = {
        "radon_report.json": Fingerprint(5, 2**64 + 3, 2**63, 12),
        "velocity_events.parquet": Fingerprint(6, -1_000_000_000, 7, 13),
    }
    held = RecordFingerprints({"r": odd})
    assert held["r"] == odd
    assert held["r"]["radon_report.json"].mtime_ns == 2**64 + 3


def test_load_groups_rows_by_record() -> None:
    """Rows of the state database, grouped by record, load as records; a row without a
    fingerprint is a record without files."""
    records = _store(3)
    rows = [(i, name, fp) for i, files in records.items() for name, fp in files.items()]
    held = RecordFingerprints()
    held.load([*rows, ("zz-empty", "", None)])
    assert held == records | {"zz-empty": {}}


def test_mapping_operations() -> None:
    """pop, deletion and key-set operations behave as on a dict."""
    records = _store(4)
    held = RecordFingerprints(records)
    gone = next(iter(records))
    assert held.pop(gone) == records[gone] and gone not in held
    del held[next(iter(held))]
    assert len(held) == 2
    assert held.keys() | {"x"} == set(list(records)[2:]) | {"x"}


def test_a_packed_comparison_finds_exactly_the_changes_fingerprints_find() -> None:
    """Comparing a packed scan with packed state lists the same changes as comparing their
    fingerprints: unchanged, racily clean, resized, replaced (new inode), added and
    removed files, a state saved without ctimes, and files listed in another order."""
    from kymwatch.daemon.reconcile import diff_fingerprints
    from kymwatch.store import UNKNOWN_CTIME

    known = _store(12)
    disk = {i: {n: Fingerprint(fp.size, fp.mtime_ns, fp.ctime_ns, fp.inode) for n, fp in f.items()}
            for i, f in known.items()}  # fmt: skip
    ids = list(known)
    first = next(iter(known[ids[1]]))
    fp = known[ids[1]][first]  # racily clean: changed after its scan began
    known[ids[1]][first] = Fingerprint(fp.size, fp.mtime_ns, fp.ctime_ns, fp.inode, fp.ctime_ns)
    name, fp = next(iter(disk[ids[2]].items()))
    disk[ids[2]][name] = Fingerprint(fp.size + 1, fp.mtime_ns, fp.ctime_ns, fp.inode)
    disk[ids[3]][name] = Fingerprint(fp.size, fp.mtime_ns, fp.ctime_ns, fp.inode + 1)
    disk[ids[4]]["radon/extra.json"] = Fingerprint(1, 2, 3, 4)
    del disk[ids[5]][next(iter(disk[ids[5]]))]
    legacy = {n: Fingerprint(f.size, f.mtime_ns, UNKNOWN_CTIME, f.inode, f.ctime_ns + 1)
              for n, f in known[ids[6]].items()}  # fmt: skip
    known[ids[6]] = legacy
    disk[ids[7]] = dict(reversed(disk[ids[7]].items()))
    del disk[ids[8]]
    disk["new-record"] = {"radon_report.json": Fingerprint(1, 2, 3, 4)}
    expected = diff_fingerprints(disk, known)
    assert diff_fingerprints(RecordFingerprints(disk), RecordFingerprints(known)) == expected
    assert {c.image_id for c in expected} == {*ids[1:6], ids[8], "new-record"}
