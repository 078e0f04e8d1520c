"""``kymwatch status`` answers "is anything wrong right now?": the current problems with
their reasons (missing, unreadable, invalid, stale), kept across a restart for unchanged
files, readable by a read-only account, in the JSON shape docs/status-schema.md pins."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness import KYMWATCH, DaemonProcess, kymwatch, unprivileged_prefix
from helpers_loop import add_kym_record, kym_events
from helpers_store import analysis_file, make_v2_store, write_json_artifact, write_parquet_artifact
from kymwatch.daemon.problems import PROBLEMS_FILE, load_problems, save_problems
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.sdnotify import Notifier
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.daemon.status import DaemonStatus
from kymwatch.index import OutcomeStatus, RecordOutcome
from kymwatch.staleview import stale_summary

SCHEMA_DOC = Path(__file__).parents[1] / "docs" / "status-schema.md"
STALE_DATA = Path(__file__).parent / "data" / "staleness"
UUID_ID = "5ab79a09-b1e7-405e-8f53-6e171f9ea6cd"


def status_schema() -> dict[str, Any]:
    """The JSON Schema block of docs/status-schema.md."""
    text = SCHEMA_DOC.read_text()
    block = re.search(r"## JSON Schema.*?```json\n(.*?)```", text, re.S)
    assert block, "docs/status-schema.md has no JSON Schema block"
    schema: dict[str, Any] = json.loads(block.group(1))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Fail unless ``doc`` follows the documented schema."""
    jsonschema.Draft202012Validator(status_schema()).validate(doc)


class _Quiet:
    """A notifier that tells no service manager anything."""

    def ready(self, status: str | None = None) -> bool:
        return False

    def status(self, text: str) -> bool:
        return False

    def watchdog(self) -> bool:
        return False

    def stopping(self) -> bool:
        return False

    def watchdog_interval(self) -> float | None:
        return None


def _reporter(root: Path, now: list[float]) -> Reporter:
    quiet: Notifier = _Quiet()
    return Reporter(root, DaemonStatus(store=str(root)), quiet, clock=lambda: now[0])


def _outcome(image_id: str, indexer: str, status: OutcomeStatus, **kw: Any) -> RecordOutcome:
    return RecordOutcome(image_id=image_id, indexer=indexer, status=status, **kw)


# -- pure parts -----------------------------------------------------------------------------
def test_problems_saved_and_restored_for_live_records_and_running_indexers(tmp_path: Path) -> None:
    """Saved problems come back for records that still exist and indexers that still run,
    with their first-seen time; a record deleted meanwhile or another indexer's entry does not."""
    root = make_v2_store(tmp_path / "s.zarr")
    add_kym_record(root, "e1")
    add_kym_record(root, UUID_ID)
    entry = {"image_id": "e1", "indexer": "velocity_events", "problem": "artifact_invalid"}
    problems = {
        ("e1", "velocity_events"): entry | {"since_utc": "2026-11-25T10:00:00+00:00"},
        ("e1", "kym_radon"): entry | {"indexer": "kym_radon", "since_utc": "x"},
        (UUID_ID, "velocity_events"): entry | {"image_id": UUID_ID, "since_utc": "y"},
    }
    assert save_problems(root, problems)
    shutil.rmtree(root / "images" / UUID_ID)
    back = load_problems(root, ["velocity_events", "radon_report"])
    assert list(back) == [("e1", "velocity_events")]
    assert back[("e1", "velocity_events")]["since_utc"] == "2026-11-25T10:00:00+00:00"


def test_corrupt_problems_file_is_ignored(tmp_path: Path) -> None:
    """A torn problems file restores nothing and raises nothing."""
    root = make_v2_store(tmp_path / "s.zarr")
    (root / "index").mkdir(exist_ok=True)
    (root / "index" / PROBLEMS_FILE).write_bytes(b'{"format": 1, "probl')
    assert load_problems(root, ["velocity_events"]) == {}


def test_many_problems_share_their_equal_values(tmp_path: Path) -> None:
    """Problems found in one batch, and problems restored from the file, hold one
    looked-for list per indexer and one string per distinct value (a mixed store has a
    missing artifact per record of the other generation), and still equal what was found."""
    root = make_v2_store(tmp_path / "s.zarr")
    ids = ["e1", UUID_ID]
    for image_id in ids:
        add_kym_record(root, image_id)
    rep = _reporter(root, [100.0])
    keys = ("velocity_events.parquet",)
    missing = [_outcome(i, "velocity_events", OutcomeStatus.MISSING, keys=keys) for i in ids]
    rep._track(missing, retrying=False)
    first, second = (rep.status.problems[(i, "velocity_events")] for i in ids)
    assert first["looked_for"] == ["velocity_events.parquet"]
    assert first["looked_for"] is second["looked_for"]
    assert first["since_utc"] is second["since_utc"]
    assert save_problems(root, rep.status.problems)
    back = load_problems(root, ["velocity_events"])
    assert back == rep.status.problems
    one, two = (back[(i, "velocity_events")] for i in ids)
    assert one["looked_for"] is two["looked_for"]
    assert one["since_utc"] is two["since_utc"] and one["problem"] is two["problem"]


def test_reporter_saves_problems_when_they_change_at_most_every_30_s(tmp_path: Path) -> None:
    """A new problem is saved at the next publish, a later change only 30 s after the last
    save (fake clock), and at stop; a fixed problem leaves the saved file."""
    root = make_v2_store(tmp_path / "s.zarr")
    add_kym_record(root, "e1")
    now = [100.0]
    rep = _reporter(root, now)
    bad = _outcome("e1", "velocity_events", OutcomeStatus.UNREADABLE, path="p", error="torn")
    rep._track([bad], retrying=False)
    rep.publish()
    assert list(load_problems(root, ["velocity_events"])) == [("e1", "velocity_events")]
    rep._track([_outcome("e1", "velocity_events", OutcomeStatus.INDEXED)], retrying=False)
    now[0] += 10
    rep.publish()
    assert load_problems(root, ["velocity_events"])  # not yet: saved 10 s ago
    now[0] += 25
    rep.publish()
    assert load_problems(root, ["velocity_events"]) == {}
    rep._track([bad], retrying=False)
    rep.stopped(pending=0)
    assert list(load_problems(root, ["velocity_events"])) == [("e1", "velocity_events")]


def test_stale_analyses_are_current_problems_with_kymflow_reason(tmp_path: Path) -> None:
    """The stale counter's records become `stale` problems with kymflow's reason, counted
    with the others; one that is judged fresh again leaves the list."""
    root = tmp_path / "dataset.zarr"
    shutil.copytree(STALE_DATA / "ve_mixed" / "dataset.zarr", root)
    rep = _reporter(root, [0.0])
    counter = StaleCounter(root, lambda counts: rep.stale_changed(counter.stale_records()))
    counter.mark_all()
    counts = counter.run_pass()
    assert counts == stale_summary(root) and counts and sum(counts.values()) > 0
    doc = rep.status.to_json()
    assert doc["problem_counts"]["stale"] == sum(counts.values())
    stale = [p for p in doc["problems"] if p["problem"] == "stale"]
    assert stale and all(p["reason"].startswith("STALE_") for p in stale)
    gone = stale[0]["image_id"]
    shutil.rmtree(root / "images" / gone)
    counter.mark([gone])
    counter.run_pass()
    left = [p["image_id"] for p in rep.status.to_json()["problems"] if p["problem"] == "stale"]
    assert gone not in left and len(left) == len(stale) - 1


def test_status_file_document_follows_the_documented_schema(tmp_path: Path) -> None:
    """Every kind of problem the daemon lists validates against docs/status-schema.md."""
    root = make_v2_store(tmp_path / "s.zarr")
    rep = _reporter(root, [0.0])
    rep._track(
        [
            _outcome("e1", "velocity_events", OutcomeStatus.MISSING, keys=("velocity_events",)),
            _outcome("e2", "radon_report", OutcomeStatus.INVALID, path="/x.json", error="42"),
        ],
        retrying=False,
    )
    rep.stale_changed({"kym_radon": {UUID_ID: "STALE_PARAMS_CHANGED"}})
    doc = {
        "schema_version": 1,
        "store": str(root),
        "running": True,
        "healthy": True,
        "stale": False,
        "heartbeat_age_s": 0.1,
        "stale_records": {"kym_radon": 1},
        "status": rep.status.to_json(),
    }
    validate(doc)
    assert doc["status"]["problem_counts"] == {
        "artifact_invalid": 1,
        "artifact_missing": 1,
        "stale": 1,
    }
    doc["status"]["problems"][0]["problem"] = "broken"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


# -- the real daemon ------------------------------------------------------------------------
@pytest.mark.integration
def test_problems_now_survive_a_restart_and_a_fix_made_while_down_clears_them(
    tmp_path: Path,
) -> None:
    """An invalid radon report and a torn events file are problems now; after a restart
    with the files unchanged they still are (same first-seen time); fixing one while the
    daemon is down removes it at the next start."""
    store = make_v2_store(tmp_path / "s.zarr")
    add_kym_record(store, "20261125_cell1")
    add_kym_record(store, UUID_ID)
    with DaemonProcess(store) as daemon:
        daemon.sync()
        write_json_artifact(store, "20261125_cell1", "radon_report", 42)
        analysis_file(store, UUID_ID, "velocity_events", "parquet").write_bytes(b"PAR1 torn")
        daemon.sync()
        first = json.loads(kymwatch("status", store, "--json").stdout)
    kinds = first["status"]["problem_counts"]
    assert kinds.get("artifact_invalid") == 1 and kinds.get("artifact_unreadable") == 1, kinds
    stopped = kymwatch("status", store, "--json")
    assert stopped.returncode == 3
    validate(json.loads(stopped.stdout))  # no daemon: the same schema, state "stopped"
    validate(first)
    with DaemonProcess(store) as daemon:
        daemon.sync()
        again = json.loads(kymwatch("status", store, "--json").stdout)
        assert again["status"]["problem_counts"] == kinds
        assert again["status"]["problems"] == first["status"]["problems"]
        assert daemon.events("problems_restored")
        validate(again)
    write_parquet_artifact(store, UUID_ID, "velocity_events", kym_events(2))
    with DaemonProcess(store) as daemon:
        daemon.sync()
        fixed = json.loads(kymwatch("status", store, "--json").stdout)
    assert fixed["status"]["problem_counts"] == {"artifact_invalid": 1}
    assert [p["image_id"] for p in fixed["status"]["problems"]] == ["20261125_cell1"]


UNPRIVILEGED = unprivileged_prefix()


@pytest.fixture
def public_store() -> Iterator[Path]:
    """A store in a folder every account can read (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="kymwatch-public-"))
    folder.chmod(0o755)
    try:
        yield make_v2_store(folder / "s.zarr")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a command as the unprivileged account."""
    assert not isinstance(UNPRIVILEGED, str)
    return subprocess.run([*UNPRIVILEGED, *command], capture_output=True, text=True, timeout=120)


def _read_only(root: Path) -> None:
    """Make every file and folder of the store readable, nothing writable by others."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            mode = p.lstat().st_mode
            if stat.S_ISDIR(mode):
                p.chmod(0o755)
            elif stat.S_ISREG(mode):
                p.chmod(0o644)
    root.chmod(0o755)


@pytest.mark.integration
@pytest.mark.skipif(isinstance(UNPRIVILEGED, str), reason=str(UNPRIVILEGED))
def test_read_only_account_sees_the_problems_now_without_the_lock(public_store: Path) -> None:
    """An account that can read but not write the store (nor its lock, nor index/) gets
    the current problems from `status --json`, valid against the schema, and the text."""
    store = public_store
    add_kym_record(store, "20261125_cell1")
    with DaemonProcess(store) as daemon:
        daemon.sync()
        write_json_artifact(store, "20261125_cell1", "radon_report", [1, 2])
        daemon.sync()
        _read_only(store)
        for target in (store, store / "index", store / "index" / "status.json"):
            probe = _as_nobody("sh", "-c", f'test -w "{target}" && echo writable')
            assert "writable" not in probe.stdout, target
        as_json = _as_nobody(*KYMWATCH, "status", str(store), "--json")
        text = _as_nobody(*KYMWATCH, "status", str(store))
    nobody = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    made = [p for p in store.rglob("*") if p.lstat().st_uid == nobody and os.geteuid() == 0]
    assert made == []  # status wrote nothing: no lock file, no status, no temporary
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    doc = json.loads(as_json.stdout)
    validate(doc)
    assert doc["running"] and doc["healthy"]
    assert doc["status"]["problem_counts"] == {"artifact_invalid": 1}
    assert doc["status"]["problems"][0]["path"].endswith("radon_report.json")
    assert "problems now: artifact_invalid 1" in text.stdout, text.stdout + text.stderr
    assert "Permission denied" not in text.stderr + as_json.stderr
