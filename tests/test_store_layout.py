"""The dataset layout: path classification, names, atomic writes and scans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kymwatch.errors import InvalidNameError, KymwatchError
from kymwatch.store import (
    ArtifactFormat,
    ArtifactRef,
    PathKind,
    StorePath,
    artifact_file_name,
    artifact_from_path,
    atomic_write,
    atomic_write_bytes,
    is_temporary_name,
    parse_store_path,
    remove_stale_temporaries,
    scan_dataset,
    scan_record,
    validate_image_id,
    validate_table_name,
)
from kymwatch.store.layout import split_artifact_file, validate_artifact_name

ROOT = Path("/data/store.zarr")
A = ArtifactFormat

# (path relative to ROOT, expected classification)
PATH_CASES: list[tuple[str, StorePath]] = [
    # artifacts, one per format, plus nested names and dotted names
    (
        "images/r1/analysis/radon_report.json",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "radon_report", A.JSON)),
    ),
    (
        "images/r1/analysis/radon_report.json.gz",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "radon_report", A.JSON_GZ)),
    ),
    (
        "images/r1/analysis/velocity_events.parquet",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "velocity_events", A.PARQUET)),
    ),
    (
        "images/r1/analysis/velocity_events/events.csv.gz",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "velocity_events/events", A.CSV_GZ)),
    ),
    (
        "images/r1/analysis/velocity_events/events.parquet",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "velocity_events/events", A.PARQUET)),
    ),
    (
        "images/r1/analysis/a/b/c.json",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "a/b/c", A.JSON)),
    ),
    (
        "images/r1/analysis/report.v2.json",
        StorePath(PathKind.ARTIFACT, "r1", ArtifactRef("r1", "report.v2", A.JSON)),
    ),
    # kymwatch's own folders
    ("tables/velocity_events.parquet", StorePath(PathKind.OWN)),
    ("tables", StorePath(PathKind.OWN)),
    ("index/state.json", StorePath(PathKind.OWN)),
    ("index/tables.lock", StorePath(PathKind.OWN)),
    # temporary and partial files, wherever they are
    ("images/r1/analysis/radon_report.3f2a.partial", StorePath(PathKind.TEMPORARY)),
    ("images/r1/analysis/radon_report.json.3f2a.partial", StorePath(PathKind.TEMPORARY)),
    ("images/r1/analysis/.x.parquet.abc.tmp", StorePath(PathKind.TEMPORARY)),
    ("images/r1/analysis/velocity_events/.events.parquet.9.tmp", StorePath(PathKind.TEMPORARY)),
    ("images/r1/analysis/radon_report.json~", StorePath(PathKind.TEMPORARY)),
    ("images/r1/analysis/.radon_report.json.swp", StorePath(PathKind.TEMPORARY)),
    ("images/r1/.zattrs.ab12.partial", StorePath(PathKind.TEMPORARY)),
    ("tables/.velocity_events.parquet.0123456789ab.tmp", StorePath(PathKind.TEMPORARY)),
    # record structure
    ("images", StorePath(PathKind.IMAGES_DIR)),
    ("images/r1", StorePath(PathKind.RECORD, "r1")),
    ("images/r1/.zattrs", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/.zgroup", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/zarr.json", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/analysis", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/analysis/velocity_events", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/analysis/notes.txt", StorePath(PathKind.RECORD_META, "r1")),
    ("images/r1/data", StorePath(PathKind.OTHER_RECORD_FILE, "r1")),
    ("images/r1/data/0.0", StorePath(PathKind.OTHER_RECORD_FILE, "r1")),
    ("images/r1/data/.zarray", StorePath(PathKind.OTHER_RECORD_FILE, "r1")),
    ("images/r1/data/c/0/0", StorePath(PathKind.OTHER_RECORD_FILE, "r1")),
    ("images/r1/analysis_arrays/kym/data/0.0", StorePath(PathKind.OTHER_RECORD_FILE, "r1")),
    # outside the dataset, root-level files, and names that are not records
    (".zgroup", StorePath(PathKind.OUTSIDE)),
    ("zarr.json", StorePath(PathKind.OUTSIDE)),
    ("README.txt", StorePath(PathKind.OUTSIDE)),
    ("images/.hidden_record", StorePath(PathKind.TEMPORARY)),
    ("images/bad id/analysis/x.json", StorePath(PathKind.OUTSIDE)),
    ("images/../outside.json", StorePath(PathKind.OUTSIDE)),
    (".", StorePath(PathKind.OUTSIDE)),
]


@pytest.mark.parametrize(("rel", "expected"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_parse_store_path_relative_and_absolute(rel: str, expected: StorePath) -> None:
    """A path inside the store classifies the same whether given relative or absolute."""
    assert parse_store_path(ROOT, rel) == expected
    assert parse_store_path(ROOT, ROOT / rel) == expected
    assert parse_store_path(ROOT, str(ROOT / rel)) == expected


@pytest.mark.parametrize(("rel", "expected"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_artifact_from_path_is_the_parsed_artifact(rel: str, expected: StorePath) -> None:
    """artifact_from_path gives the artifact for artifact files and None for everything else."""
    assert artifact_from_path(ROOT, ROOT / rel) == expected.artifact


@pytest.mark.parametrize(
    "path",
    [
        Path("/elsewhere/images/r1/analysis/x.json"),
        Path("/data/store.zarr.bak/images/r1/analysis/x.json"),
        Path("/data"),
        ROOT,
    ],
)
def test_paths_outside_the_root_are_outside(path: Path) -> None:
    """Absolute paths not strictly below the root (or the root itself) are OUTSIDE."""
    assert parse_store_path(ROOT, path) == StorePath(PathKind.OUTSIDE)
    assert artifact_from_path(ROOT, path) is None


def test_artifact_ref_file_name_round_trips() -> None:
    """ArtifactRef.file_name is the analysis-relative file that parses back to the same ref."""
    for fmt in ArtifactFormat:
        ref = ArtifactRef("r1", "velocity_events/events", fmt)
        assert ref.file_name == f"velocity_events/events.{fmt.value}"
        path = ROOT / "images" / "r1" / "analysis" / ref.file_name
        assert artifact_from_path(ROOT, path) == ref


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("x.json.gz", ("x", A.JSON_GZ)),
        ("x.json", ("x", A.JSON)),
        ("x.csv.gz", ("x", A.CSV_GZ)),
        ("a/b.parquet", ("a/b", A.PARQUET)),
        ("x.gz", None),
        ("x.csv", None),
        (".json", None),
        ("../x.json", None),
        ("a//b.json", None),
    ],
)
def test_split_artifact_file(rel: str, expected: tuple[str, ArtifactFormat] | None) -> None:
    """An analysis-relative file splits into name and format by its longest known suffix."""
    assert split_artifact_file(rel) == expected


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        ("radon_report.3f2a.partial", True),
        ("radon_report.json.3f2a.partial", True),
        ("x.partial.json", True),
        (".x.parquet.abc.tmp", True),
        ("x.tmp", True),
        ("x.json~", True),
        (".x.json.swp", True),
        (".zattrs", True),
        ("radon_report.json", False),
        ("events.parquet", False),
        ("partial_report.json", False),
    ],
)
def test_is_temporary_name(name: str, temporary: bool) -> None:
    """Partial, temporary, backup and hidden file names are temporary; artifacts are not."""
    assert is_temporary_name(name) is temporary


@pytest.mark.parametrize("name", ["r1", "20260101_cell-3.tif", "A" * 200, "0"])
def test_valid_image_ids_pass(name: str) -> None:
    """Ordinary file-name-like ids are accepted unchanged."""
    assert validate_image_id(name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "a/../b", "a/b", ".hidden", "..", "-x", "a b", "A" * 201, "é"]
)
def test_invalid_image_ids_raise(name: str) -> None:
    """Ids that could escape images/, hide, or are not plain names raise InvalidNameError."""
    with pytest.raises(InvalidNameError):
        validate_image_id(name)


@pytest.mark.parametrize("name", ["radon_report", "velocity_events/events", "a/b/c", "x.v2"])
def test_valid_artifact_names_pass(name: str) -> None:
    """Artifact names may contain "/" between plain name parts."""
    assert validate_artifact_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/../b", ".hidden", "a/.b", "a/", "/a", "a//b"])
def test_invalid_artifact_names_raise(name: str) -> None:
    """Traversal, hidden parts and empty parts in an artifact name raise InvalidNameError."""
    with pytest.raises(InvalidNameError) as info:
        artifact_file_name(name, ArtifactFormat.JSON)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, KymwatchError)


@pytest.mark.parametrize("name", ["Radon", "a-b", "../t", "_t", "", "t.parquet"])
def test_invalid_table_names_raise(name: str) -> None:
    """Table names are lower-case letters, digits and "_", starting with a letter or digit."""
    with pytest.raises(InvalidNameError):
        validate_table_name(name)


# -- atomic writes ------------------------------------------------------------------------
def test_atomic_write_bytes_leaves_only_the_final_file(tmp_path: Path) -> None:
    """An atomic write creates missing folders and leaves no temporary file behind."""
    target = tmp_path / "a" / "b" / "x.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two", fsync=False)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_write_replaces_the_inode(tmp_path: Path) -> None:
    """An atomic write puts a new file in place (new inode) instead of rewriting the old one."""
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"same")
    before = os.stat(target).st_ino
    atomic_write_bytes(target, b"same")
    assert os.stat(target).st_ino != before


def test_failed_atomic_write_keeps_old_file_and_no_temporary(tmp_path: Path) -> None:
    """If the writer fails half-way, the old content stays and the temporary is removed."""
    target = tmp_path / "x.json"
    target.write_bytes(b"old")

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_remove_stale_temporaries_removes_only_dot_tmp_files(tmp_path: Path) -> None:
    """Only ``.<name>.tmp`` files go; artifacts, zarr metadata, partials and folders stay."""
    stale = [".x.parquet.abc.tmp", ".velocity_events.parquet.0123456789ab.tmp"]
    keep = ["x.parquet", "x.tmp", ".zattrs", "radon_report.3f2a.partial", ".x.tmp.bak"]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".folder.tmp").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".folder.tmp"])


def test_remove_stale_temporaries_on_missing_folder(tmp_path: Path) -> None:
    """A folder that does not exist has nothing to clean."""
    assert remove_stale_temporaries(tmp_path / "nope") == []


# -- scans --------------------------------------------------------------------------------
def test_scan_finds_artifacts_and_skips_temporaries(tmp_path: Path) -> None:
    """scan_dataset lists each record's artifact files, ignoring partials and other files."""
    analysis = tmp_path / "images" / "r1" / "analysis"
    (analysis / "velocity_events").mkdir(parents=True)
    for rel in [
        "radon_report.json",
        "velocity_events/events.csv.gz",
        "radon_report.3f2a.partial",
        ".x.parquet.abc.tmp",
        "notes.txt",
    ]:
        (analysis / rel).write_bytes(b"{}")
    (tmp_path / "images" / "r2").mkdir()
    (tmp_path / "images" / ".hidden").mkdir()

    scanned = scan_dataset(tmp_path)
    assert sorted(scanned) == ["r1", "r2"]
    assert sorted(scanned["r1"]) == ["radon_report.json", "velocity_events/events.csv.gz"]
    assert scanned["r2"] == {}
    fp = scanned["r1"]["radon_report.json"]
    assert (fp.size, fp.inode) == (2, os.stat(analysis / "radon_report.json").st_ino)


def test_scan_fingerprint_changes_on_atomic_replace(tmp_path: Path) -> None:
    """Replacing an artifact with identical bytes still changes its fingerprint (new inode)."""
    rec = tmp_path / "images" / "r1"
    target = rec / "analysis" / "radon_report.json"
    atomic_write_bytes(target, b"{}")
    first = scan_record(rec)
    atomic_write_bytes(target, b"{}")
    assert scan_record(rec) != first
    assert scan_dataset(tmp_path / "missing") == {}


@pytest.mark.parametrize(("rel", "expected"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_parse_store_path_reads_oddly_written_paths_as_pathlib_does(
    rel: str, expected: StorePath
) -> None:
    """An event path with doubled slashes, ``.`` components or a trailing slash (parsed by
    pathlib, not split by hand) classifies as its plain spelling does."""
    doubled = rel.replace("/", "//")
    odd = [f"{ROOT}//{rel}", f"{ROOT}/./{rel}", f"{ROOT}/{rel}/", f"{ROOT}/{doubled}"]
    for path in odd:
        assert parse_store_path(ROOT, path) == expected, path


def test_parse_store_path_never_takes_a_relative_root_for_a_prefix() -> None:
    """With a relative root, a relative path that starts with the root's name is still
    read relative to the store (pathlib's reading): ``store/images/r1`` is no record."""
    root = Path("store.zarr")
    assert parse_store_path(root, "store.zarr/images/r1") == StorePath(PathKind.OUTSIDE)
    assert parse_store_path(root, "images/r1") == StorePath(PathKind.RECORD, "r1")
    assert parse_store_path(Path("/"), "/images/r1") == StorePath(PathKind.RECORD, "r1")
