"""Quick commands start light: ``status``, ``sync`` and ``logs`` import no pandas,
pyarrow, zarr, numpy or watchdog; the daemon publishes the stale counts they show."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import WAIT_S, DaemonProcess, kymwatch
from kymwatch.daemon.stalecount import StaleCounter
from kymwatch.index.staleness import dataset_staleness
from kymwatch.staleview import stale_summary

DATA = Path(__file__).parent / "data" / "staleness"
HEAVY = ("pandas", "pyarrow", "zarr", "numpy", "watchdog", "prometheus_client", "tqdm")

# Runs one CLI command in a fresh interpreter, then prints which heavy modules it loaded.
_PROBE = """
import json, sys
from kymwatch.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\\nPROBE " + json.dumps([m for m in {heavy!r} if m in sys.modules]))
sys.exit(code)
"""


def _probe(*argv: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Run ``kymwatch ARGV`` through the probe; the heavy modules it imported, and the run."""
    code = _PROBE.format(heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=WAIT_S
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    assert line, proc.stdout + proc.stderr
    loaded: list[str] = json.loads(line[-1].removeprefix("PROBE "))
    return loaded, proc


def _copy_case(case: str, tmp_path: Path) -> Path:
    dest = tmp_path / case / "dataset.zarr"
    shutil.copytree(DATA / case / "dataset.zarr", dest)
    return dest


def _a_stale_record(root: Path) -> str:
    """An analysed record that is stale for some indexer."""
    return next(s.image_id for s in dataset_staleness(root) if s.is_stale and s.analysed)


def _published_stale(root: Path, want: Any, timeout: float = WAIT_S) -> dict[str, Any]:
    """The status document once its ``stale_records`` equals ``want`` (fails on timeout)."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            doc = json.loads((root / "index" / "status.json").read_bytes())
        except (OSError, ValueError):
            doc = {}
        if doc.get("stale_records") == want:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"stale_records never became {want}: {doc.get('stale_records')}")


@pytest.mark.integration
def test_quick_commands_import_no_heavy_library(tmp_path: Path) -> None:
    """`status`, `status --json`, `sync` (idle daemon) and `logs` run without importing
    pandas, pyarrow, zarr, numpy or watchdog, on a kymflow generation-2 store."""
    root = _copy_case("radon_roi_edit", tmp_path)
    daemon = DaemonProcess(root).start()
    try:
        daemon.sync()
        for argv in (["status"], ["status", "--json"], ["sync"], ["logs", "-n", "5"]):
            loaded, proc = _probe(*argv, str(root))
            assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
            assert loaded == [], (argv, loaded)
    finally:
        assert daemon.stop() == 0


@pytest.mark.integration
def test_indexing_commands_still_load_what_they_need(tmp_path: Path) -> None:
    """The probe sees heavy imports where a command needs them (`stale` reads tables
    and artifacts with pyarrow, but no longer pandas): it can tell the light commands
    from the others."""
    root = _copy_case("radon_roi_edit", tmp_path)
    loaded, proc = _probe("stale", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "pyarrow" in loaded
    assert "pandas" not in loaded


@pytest.mark.integration
def test_daemon_publishes_the_stale_counts_status_shows(tmp_path: Path) -> None:
    """The running daemon's status file carries the stale counts a fresh computation
    gives on the store it keeps indexed, `status` prints them, and after a stale
    record is deleted the published counts follow."""
    root = _copy_case("ve_mixed", tmp_path)
    daemon = DaemonProcess(root).start()
    try:
        daemon.sync()
        want = stale_summary(root)
        assert want and sum(want.values()) > 0
        _published_stale(root, want)
        doc = json.loads(kymwatch("status", root, "--json", check=True).stdout)
        assert doc["running"] and doc["stale_records"] == want
        assert f"{sum(want.values())} stale" in kymwatch("status", root, check=True).stdout
        shutil.rmtree(root / "images" / _a_stale_record(root))
        daemon.sync()
        after = stale_summary(root)
        assert after != want
        _published_stale(root, after)
    finally:
        assert daemon.stop() == 0


def test_stale_counter_recounts_only_marked_records(tmp_path: Path) -> None:
    """A pass after `mark` judges only the marked records and keeps the others' verdicts;
    `mark_all` judges every record; each changed result is published once."""
    root = _copy_case("ve_mixed", tmp_path)
    published: list[dict[str, int]] = []
    counter = StaleCounter(root, published.append)
    counter.mark_all()
    full = counter.run_pass()
    assert full == stale_summary(root) and published == [full]
    assert counter.run_pass() == full and len(published) == 1  # nothing marked: no work
    gone = _a_stale_record(root)
    shutil.rmtree(root / "images" / gone)
    counter.mark([gone])
    assert counter.run_pass() == stale_summary(root) != full


def test_stale_counter_failure_keeps_counts_and_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_logs: list[dict[str, Any]]
) -> None:
    """A pass that fails logs `stale_count_failed`, keeps the published counts and
    judges the marked records at the next pass."""
    import kymwatch.index.staleness as staleness

    root = _copy_case("ve_mixed", tmp_path)
    published: list[dict[str, int]] = []
    counter = StaleCounter(root, published.append)
    counter.mark_all()
    first = counter.run_pass()
    real = staleness.dataset_staleness

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk gone")

    monkeypatch.setattr(staleness, "dataset_staleness", broken)
    gone = _a_stale_record(root)
    shutil.rmtree(root / "images" / gone)
    counter.mark([gone])
    assert counter.run_pass() == first and len(published) == 1
    failed = [e for e in captured_logs if e["event"] == "stale_count_failed"]
    assert len(failed) == 1 and "disk gone" in failed[0]["error"]
    monkeypatch.setattr(staleness, "dataset_staleness", real)
    assert counter.run_pass() == stale_summary(root) != first  # the failed one's record


def test_cli_names_the_manifest_file_the_index_writes() -> None:
    """The help text's manifest name (kept in the CLI to avoid importing the index) is
    the file the manifest indexer writes."""
    from kymwatch import cli
    from kymwatch.index.manifest_doc import MANIFEST_FILE

    assert cli._MANIFEST_FILE == MANIFEST_FILE


def test_stale_counter_steps_aside_while_the_loop_has_work(tmp_path: Path) -> None:
    """Before each slice of records the counter asks whether the loop is busy and waits
    while it is; the counts it then publishes are those of a fresh computation."""
    root = _copy_case("ve_mixed", tmp_path)
    answers = [True, True, True]  # busy for three looks, then idle
    looks: list[int] = []

    def busy() -> bool:
        looks.append(1)
        return bool(answers) and answers.pop()

    records = sum(p.is_dir() for p in (root / "images").iterdir())
    counter = StaleCounter(root, lambda counts: None, busy=busy, slice_records=1)
    counter.mark_all()
    assert counter.run_pass() == stale_summary(root)
    assert len(looks) == 3 + records  # three waits, then one look per one-record slice


def test_stale_counter_busy_loop_does_not_starve_the_counts(tmp_path: Path) -> None:
    """A loop that is never idle (continuous acquisition) delays a slice by at most
    ``max_defer_s``: the pass still completes."""
    root = _copy_case("ve_mixed", tmp_path)
    counter = StaleCounter(root, lambda counts: None, busy=lambda: True, max_defer_s=0.0)
    counter.mark_all()
    assert counter.run_pass() == stale_summary(root)
