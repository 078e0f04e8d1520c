"""The ``kymwatch`` command line, run as a subprocess the way a user or a service runs it.

Bad input gets exactly one clear line on stderr and a non-zero exit (2 for usage
errors), never a traceback.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import KYMWATCH, DaemonProcess, assert_tables_match_rebuild, kymwatch, live_tables
from helpers_store import (
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)

pytestmark = pytest.mark.integration

EXIT_USAGE, EXIT_NOT_RUNNING = 2, 3


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A dataset with two records, written with plain file I/O."""
    root = make_v2_store(tmp_path / "store.zarr")
    for i, image_id in enumerate(("alpha", "beta")):
        add_record(root, image_id, n_events=2 + i)
    return root


@pytest.fixture
def daemon(store: Path) -> Iterator[DaemonProcess]:
    """``kymwatch run`` on the store, ready; stopped afterwards."""
    with DaemonProcess(store) as d:
        yield d


def add_record(store: Path, image_id: str, *, n_events: int = 2) -> None:
    """A record with a velocity-events parquet and a radon JSON report."""
    write_v2_record(store, image_id)
    write_parquet_artifact(store, image_id, "velocity_events", events_frame(n_events))
    write_json_artifact(store, image_id, "radon_report", legacy_radon_report(1.0))


def one_line(text: str) -> str:
    """The single line of ``text`` (fails if there is not exactly one)."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "Traceback" not in text
    return lines[0]


# -- usage errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["run", "{store}", "--no-such-option"],
        ["run", "{store}", "--quiet-ms", "-5"],
        ["run", "{store}", "--quiet-ms=-5"],
        ["run", "{store}", "--quiet-ms", "soon"],
        ["run", "{store}", "--polling", "--inotify"],
        ["run"],
        ["status"],
        ["no-such-command"],
    ],
    ids=[
        "unknown_option",
        "negative_quiet_ms",
        "negative_quiet_ms_equals",
        "non_numeric_quiet_ms",
        "polling_and_inotify",
        "missing_store",
        "status_missing_store",
        "unknown_command",
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(store: Path, args: list[str]) -> None:
    """Malformed command lines print exactly one line on stderr and exit 2."""
    proc = kymwatch(*(a.format(store=store) for a in args))
    assert proc.returncode == EXIT_USAGE, proc
    assert "error" in one_line(proc.stderr)
    assert not (store / "index" / "status.json").exists()


@pytest.mark.parametrize("command", ["run", "status", "sync", "rebuild", "logs"])
def test_folder_that_is_not_a_store_is_refused(tmp_path: Path, command: str) -> None:
    """A folder that is not a kymflow dataset gets one clear line and exit 2, untouched."""
    folder = tmp_path / "not_a_store"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    proc = kymwatch(command, folder)
    assert proc.returncode == EXIT_USAGE, proc
    line = one_line(proc.stderr)
    assert "not a kymflow" in line and str(folder) in line
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command", ["run", "status", "sync", "rebuild"])
def test_path_that_does_not_exist_is_refused(tmp_path: Path, command: str) -> None:
    """A store path that does not exist gets one clear line and exit 2, and is not created."""
    missing = tmp_path / "nowhere.zarr"
    proc = kymwatch(command, missing)
    assert proc.returncode == EXIT_USAGE, proc
    line = one_line(proc.stderr)
    assert "does not exist" in line and str(missing) in line
    assert not missing.exists()


def test_max_delay_below_quiet_window_is_refused(store: Path) -> None:
    """``--max-delay-ms`` smaller than ``--quiet-ms`` is a usage error on one line."""
    proc = kymwatch("run", store, "--quiet-ms", "500", "--max-delay-ms", "100", "--no-log-file")
    assert proc.returncode == EXIT_USAGE, proc
    assert "--max-delay-ms" in one_line(proc.stderr)


# -- one daemon per store -----------------------------------------------------------------------
def test_second_daemon_on_the_same_store_is_refused(daemon: DaemonProcess, store: Path) -> None:
    """A second ``kymwatch run`` exits non-zero with one line naming the running daemon's pid,
    and the first daemon keeps working."""
    assert daemon.proc is not None
    proc = kymwatch("run", store)
    assert proc.returncode != 0, proc
    line = one_line(proc.stderr)
    assert f"pid {daemon.proc.pid}" in line, line
    add_record(store, "gamma")
    daemon.sync()
    assert "gamma" in set(live_tables(store)["velocity_events"]["image_id"])


# -- status ------------------------------------------------------------------------------------
def test_status_without_daemon_says_so(store: Path) -> None:
    """``kymwatch status`` on a store no daemon watches says so and exits 3."""
    proc = kymwatch("status", store)
    assert proc.returncode == EXIT_NOT_RUNNING, proc
    assert "no daemon is running" in proc.stdout
    doc = json.loads(kymwatch("status", store, "--json").stdout)
    assert doc["running"] is False


def test_status_shows_a_running_daemon(daemon: DaemonProcess, store: Path) -> None:
    """``kymwatch status`` shows the running daemon's pid, state and watch mode, exit 0; the
    ``--json`` form parses and says the same."""
    assert daemon.proc is not None
    proc = kymwatch("status", store)
    assert proc.returncode == 0, proc
    assert f"pid {daemon.proc.pid}" in proc.stdout
    assert "state watching" in proc.stdout and "inotify" in proc.stdout
    js = kymwatch("status", store, "--json")
    assert js.returncode == 0, js
    doc = json.loads(js.stdout)
    assert doc["running"] is True and doc["healthy"] is True
    assert doc["status"]["pid"] == daemon.proc.pid
    assert doc["status"]["state"] == "watching"
    assert doc["status"]["watch_mode"] == "inotify"
    assert doc["status"]["watch_reason"] == "local"  # tmp_path is on a local file system here
    assert "inotify (local file system" in proc.stdout
    assert doc["status"]["counters"]["records_indexed"] == 2


def test_status_after_stop_reports_last_state(daemon: DaemonProcess, store: Path) -> None:
    """After the daemon stopped, status says no daemon is running (exit 3) and shows the
    last state it recorded."""
    assert daemon.stop() == 0
    proc = kymwatch("status", store)
    assert proc.returncode == EXIT_NOT_RUNNING, proc
    assert "no daemon is running" in proc.stdout and "'stopped'" in proc.stdout


def test_status_after_stop_lists_the_problems_it_stopped_with(
    daemon: DaemonProcess, store: Path
) -> None:
    """A record unreadable when the daemon stopped is still named by ``status`` (exit 3),
    so that nobody reads "no daemon" as "nothing wrong"."""
    write_v2_record(store, "broken")
    (store / "images" / "broken" / "analysis").mkdir()
    (store / "images" / "broken" / "analysis" / "velocity_events.parquet").write_bytes(b"PAR1")
    daemon.sync()
    assert daemon.stop() == 0
    proc = kymwatch("status", store)
    assert proc.returncode == EXIT_NOT_RUNNING, proc
    assert "problems when it stopped:" in proc.stdout
    assert "broken velocity_events: artifact_unreadable" in proc.stdout


@pytest.mark.parametrize("command", ["logs", "rebuild", "stale"])
def test_a_one_store_command_on_a_folder_of_stores_names_them(tmp_path: Path, command: str) -> None:
    """``logs``, ``rebuild`` and ``stale`` take one store: on a folder of stores they say
    so in one line naming the stores, exit 2, and write nothing."""
    for name in ("exp1.zarr", "exp2.zarr"):
        make_v2_store(tmp_path / "lab" / name)
    proc = kymwatch(command, tmp_path / "lab")
    assert proc.returncode == EXIT_USAGE, proc
    line = one_line(proc.stderr)
    assert "folder of 2 stores" in line and "exp1.zarr" in line and "exp2.zarr" in line
    assert not list((tmp_path / "lab").glob("*/tables"))


# -- sync --------------------------------------------------------------------------------------
def test_sync_without_daemon_fails_with_one_line(store: Path) -> None:
    """``kymwatch sync`` with no daemon exits non-zero with one line and leaves no request."""
    proc = kymwatch("sync", store, "--timeout", "5")
    assert proc.returncode != 0, proc
    assert "no kymwatch daemon" in one_line(proc.stderr)
    assert not list((store / "index" / "sync").glob("*"))


def test_sync_with_daemon_reports_up_to_date(daemon: DaemonProcess, store: Path) -> None:
    """``kymwatch sync`` returns 0 once the tables are up to date and says so."""
    add_record(store, "gamma")
    proc = kymwatch("sync", store)
    assert proc.returncode == 0, proc
    assert "up to date" in proc.stdout
    assert "gamma" in set(live_tables(store)["radon_report"]["image_id"])


# -- rebuild -----------------------------------------------------------------------------------
def test_rebuild_without_daemon(store: Path, tmp_path: Path) -> None:
    """``kymwatch rebuild`` builds every table from scratch, equal to the oracle."""
    proc = kymwatch("rebuild", store)
    assert proc.returncode == 0, proc
    assert "velocity_events: 5 rows from 2 records" in proc.stdout
    assert "radon_report: 2 rows from 2 records" in proc.stdout
    assert_tables_match_rebuild(store, tmp_path / "rebuild")


def test_rebuild_while_daemon_runs(daemon: DaemonProcess, store: Path, tmp_path: Path) -> None:
    """``kymwatch rebuild`` is safe while the daemon runs, and the daemon keeps the rebuilt
    tables right afterwards."""
    add_record(store, "gamma", n_events=4)
    proc = kymwatch("rebuild", store)
    assert proc.returncode == 0, proc
    assert_tables_match_rebuild(store, tmp_path / "rebuild")
    add_record(store, "delta", n_events=1)
    write_parquet_artifact(store, "alpha", "velocity_events", events_frame(6))
    daemon.sync()
    assert_tables_match_rebuild(store, tmp_path / "rebuild")


# -- logs --------------------------------------------------------------------------------------
def test_logs_print_readable_lines_and_filter_by_image_id(
    daemon: DaemonProcess, store: Path
) -> None:
    """``kymwatch logs`` prints readable (not JSON) lines; ``--image-id`` keeps only that
    record's events."""
    write_v2_record(store, "bare")  # logs artifact_missing for both indexers
    daemon.sync()
    assert daemon.stop() == 0

    everything = kymwatch("logs", store, "-n", "0")
    assert everything.returncode == 0, everything
    lines = everything.stdout.splitlines()
    assert lines and not any(line.lstrip().startswith("{") for line in lines)
    assert any("daemon_started" in line for line in lines)

    bare = kymwatch("logs", store, "-n", "0", "--image-id", "bare")
    assert bare.returncode == 0, bare
    bare_lines = bare.stdout.splitlines()
    assert any("artifact_missing" in line for line in bare_lines), bare.stdout
    assert all("image_id=bare" in line for line in bare_lines), bare.stdout
    assert len(bare_lines) < len(lines)

    raw = kymwatch("logs", store, "-n", "0", "--image-id", "bare", "--json")
    assert {json.loads(line)["image_id"] for line in raw.stdout.splitlines()} == {"bare"}


def test_logs_without_log_file_say_so(store: Path) -> None:
    """``kymwatch logs`` on a store the daemon never ran on exits non-zero with one line."""
    proc = kymwatch("logs", store)
    assert proc.returncode != 0, proc
    assert "no log file" in one_line(proc.stderr)


# -- demo --------------------------------------------------------------------------------------
def test_demo_runs_and_checks_itself() -> None:
    """``kymwatch demo`` exits 0, finds both tables equal to a fresh rebuild, shows
    ``kymwatch status`` on its live store and says how to keep it and what to try next."""
    proc = kymwatch("demo")
    assert proc.returncode == 0, proc
    assert proc.stdout.count("equal to a fresh rebuild: yes") == 2, proc.stdout
    assert "$ kymwatch status" in proc.stdout and "problems now:" in proc.stdout
    assert "To keep it: kymwatch demo --keep" in proc.stdout
    assert "kymwatch status STORE" in proc.stdout and "kymwatch init NEW.zarr" in proc.stdout


# -- inputs at the door (issue 10, parts 11 and 12) ---------------------------------------------
INSIDE = ["images", "images/alpha", "images/alpha/analysis", "tables", "index"]


@pytest.mark.parametrize("inside", INSIDE)
def test_run_on_a_folder_inside_the_dataset_names_the_root(store: Path, inside: str) -> None:
    """`kymwatch run STORE/images` (or a record, its analysis/, tables/, index/) is refused
    with one line naming the dataset root, exit 2, and writes nothing there."""
    target = store / inside
    target.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in target.iterdir())
    proc = kymwatch("run", target, "--no-log-file")
    assert proc.returncode == EXIT_USAGE, proc
    line = one_line(proc.stderr)
    assert f"did you mean {store}" in line and "inside" in line
    assert sorted(p.name for p in target.iterdir()) == before


@pytest.mark.parametrize(
    "args",
    [
        ["rebuild", "{store}/images"],
        ["rebuild", "{store}/images/beta"],
        ["service", "install", "{store}/images", "--user", "--dry-run"],
        ["service", "install", "{store}/images/alpha", "--user", "--dry-run"],
        ["status", "{store}/images"],
        ["sync", "{store}/images/alpha"],
    ],
    ids=["rebuild_images", "rebuild_record", "service_images", "service_record", "status", "sync"],
)
def test_other_commands_refuse_a_folder_inside_the_dataset(store: Path, args: list[str]) -> None:
    """rebuild, service install, status and sync refuse a non-root folder the same way."""
    proc = kymwatch(*(a.format(store=store) for a in args))
    assert proc.returncode == EXIT_USAGE, proc
    assert f"did you mean {store}" in one_line(proc.stderr)
    assert not (store / "images" / "tables").exists()
    assert not (store / "images" / "index").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "{store}", "--quiet-ms", "nan"],
        ["run", "{store}", "--quiet-ms", "inf"],
        ["run", "{store}", "--quiet-ms", "1e400"],
        ["run", "{store}", "--max-delay-ms", "nan"],
        ["run", "{store}", "--max-delay-ms", "-inf"],
        ["run", "{store}", "--settle-ms", "nan"],
        ["run", "{store}", "--settle-ms", "-1"],
        ["run", "{store}", "--poll-interval", "nan"],
        ["run", "{store}", "--poll-interval", "0"],
        ["run", "{store}", "--reconcile-interval", "nan"],
        ["run", "{store}", "--reconcile-interval", "inf"],
        ["run", "{store}", "--reconcile-interval", "-600"],
        ["run", "{store}", "--reconcile-interval", "0"],
        ["sync", "{store}", "--timeout", "nan"],
        ["sync", "{store}", "--timeout", "0"],
        ["logs", "{store}", "-n", "-5"],
        ["logs", "{store}", "-n", "nan"],
    ],
    ids=lambda a: "_".join(a[2:]).lstrip("-"),
)
def test_numbers_that_mean_nothing_are_refused(store: Path, args: list[str]) -> None:
    """nan, inf, negative and meaningless zero values get one line and exit 2."""
    proc = kymwatch(*(a.format(store=store) for a in args))
    assert proc.returncode == EXIT_USAGE, proc
    assert "error" in one_line(proc.stderr)
    assert not (store / "index" / "status.json").exists()


def test_logs_into_a_closed_pipe_exit_0_quietly(store: Path) -> None:
    """`kymwatch logs STORE | head -1`: the reader leaves after one line; kymwatch exits 0 with
    nothing on stderr (no 'Broken pipe', no traceback)."""
    (store / "index").mkdir(exist_ok=True)
    line = json.dumps({"event": "record_indexed", "level": "debug", "image_id": "alpha"})
    (store / "index" / "kymwatch.log").write_text((line + "\n") * 20000)
    proc = subprocess.Popen(
        [*KYMWATCH, "logs", str(store), "-n", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert b"record_indexed" in proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()
