"""``kymwatch run ROOT``: one process, one daemon per store of a folder of stores.

Run as a real subprocess, as a lab runs it: stores in ROOT and one level below, a
store created while it runs, a store removed, a store held by another daemon, a
broken store. The oracle for every store: its tables equal a fresh rebuild.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import (
    KYMWATCH,
    DaemonProcess,
    assert_tables_match_rebuild,
    kymwatch,
    live_tables,
    unprivileged_prefix,
    wait_until,
)
from helpers_store import (
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    make_v2_store,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from test_notify_daemon import Receiver

pytestmark = pytest.mark.integration

EXIT_USAGE, EXIT_NOT_RUNNING = 2, 3


def add_gen1_record(store: Path, image_id: str, n_events: int = 2) -> None:
    """A generation-1 record: velocity events with string ids "e0", "e1", ... and a
    legacy radon JSON report."""
    write_v2_record(store, image_id)
    write_parquet_artifact(store, image_id, "velocity_events", events_frame(n_events))
    write_json_artifact(store, image_id, "radon_report", legacy_radon_report(1.5))


def add_gen2_record(store: Path, image_id: str, n_events: int = 3) -> None:
    """A generation-2 record: ``velocity_events/events`` with UUID event ids."""
    write_v2_record(store, image_id)
    write_parquet_artifact(store, image_id, "velocity_events/events", gen2_events_frame(n_events))


def make_store(path: Path, *, gen2: bool = False) -> Path:
    """A store with two kymflow-shaped records."""
    make_v2_store(path)
    for i in range(2):
        image_id = str(uuid.uuid4()) if gen2 else f"rec{i}"
        (add_gen2_record if gen2 else add_gen1_record)(path, image_id)
    return path


class RootProcess(DaemonProcess):
    """``kymwatch run ROOT`` in a subprocess."""

    def wait_watching(self, stores: list[Path]) -> None:
        """Block until each store's status says this process watches it."""
        assert self.proc is not None
        proc = self.proc

        def all_watching() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}:\n{self.read_output()}")
            return all(_watched_by(s, proc.pid) for s in stores)

        wait_until(all_watching, what=f"{stores} watched by the root daemon")

    def lines(self, event: str) -> list[dict[str, Any]]:
        """The process's console lines (JSON: not a terminal) named ``event``."""
        out = []
        for line in self.output.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == event:
                out.append(doc)
        return out


def _watched_by(store: Path, pid: int) -> bool:
    try:
        doc = json.loads((store / "index" / "status.json").read_bytes())
    except (OSError, ValueError):
        return False
    return bool(doc.get("pid") == pid and doc.get("state") == "watching")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder of three stores: two in it (generations 1 and 2), one a level below."""
    lab = tmp_path / "lab"
    make_store(lab / "exp41.zarr")
    make_store(lab / "exp42.zarr", gen2=True)
    make_store(lab / "2026-11" / "exp40.zarr")
    (lab / "notes").mkdir()
    (lab / "notes" / "readme.txt").write_text("not a store")
    return lab


@pytest.fixture
def fleet(root: Path) -> Iterator[RootProcess]:
    """``kymwatch run ROOT`` on the three stores, each watched; stopped afterwards."""
    with RootProcess(root).start(wait_ready=False) as d:
        d.wait_watching(stores_in(root))
        yield d


def stores_in(root: Path) -> list[Path]:
    """The three stores of the ``root`` fixture."""
    return [root / "exp41.zarr", root / "exp42.zarr", root / "2026-11" / "exp40.zarr"]


def sync_root(root: Path) -> subprocess.CompletedProcess[str]:
    """``kymwatch sync ROOT``, checked to succeed."""
    return kymwatch("sync", root, "--timeout", "120", check=True)


def test_every_store_and_one_created_later_are_indexed(
    fleet: RootProcess, root: Path, tmp_path: Path
) -> None:
    """Three stores and one created while running (first as a bare folder, then its
    marker, then images/) are all indexed: each table equals a fresh rebuild, and each
    store's own log file has its own lines only."""
    late = root / "2026-11" / "exp43.zarr"
    late.mkdir()
    (late / ".zgroup").write_text('{"zarr_format": 2}')
    wait_until(lambda: fleet.lines("store_incomplete"), what="store_incomplete")
    make_store(late)
    for store in stores_in(root):
        add_gen1_record(store, "late_record", n_events=4)
    fleet.wait_watching([late])
    sync_root(root)
    for store in [*stores_in(root), late]:
        assert_tables_match_rebuild(store, tmp_path / "scratch")
        assert len(live_tables(store)["velocity_events"]) > 0
        log_lines = (store / "index" / "kymwatch.log").read_text().splitlines()
        logged = {json.loads(line).get("store") for line in log_lines}
        assert logged == {str(store)}
    started = {d["store"] for d in fleet.lines("store_started")}
    assert started == {str(s) for s in [*stores_in(root), late]}
    assert not (root / "notes" / "index").exists()  # a plain folder is never written to


def test_removed_store_is_let_go_and_others_continue(
    fleet: RootProcess, root: Path, tmp_path: Path
) -> None:
    """A store deleted while running is let go (its daemon stopped, logged), is not
    recreated, and the other stores keep being indexed."""
    gone = root / "exp41.zarr"
    shutil.rmtree(gone, ignore_errors=True)
    wait_until(lambda: fleet.lines("store_stopped"), what="store_stopped")
    assert [d["store"] for d in fleet.lines("store_let_go")] == [str(gone)]
    shutil.rmtree(gone, ignore_errors=True)  # whatever the daemon wrote while it stopped
    others = stores_in(root)[1:]
    for store in others:
        add_gen2_record(store, str(uuid.uuid4()))
    sync_root(root)
    for store in others:
        assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert not gone.exists()
    assert fleet.proc is not None and fleet.proc.poll() is None


def test_run_store_is_refused_while_the_root_daemon_holds_it(
    fleet: RootProcess, root: Path
) -> None:
    """``kymwatch run STORE`` on a store of a running root daemon exits 2 with one line
    naming that process, and so does a second ``kymwatch run ROOT``."""
    assert fleet.proc is not None
    for target in (root / "exp42.zarr", root):
        proc = kymwatch("run", target, "--no-log-file")
        assert proc.returncode == EXIT_USAGE, proc
        assert f"pid {fleet.proc.pid}" in proc.stderr and "already watching" in proc.stderr


def test_store_held_by_its_own_daemon_is_skipped_then_taken_over(
    root: Path, tmp_path: Path
) -> None:
    """A store another daemon holds is skipped with a log line while the others are
    watched; once that daemon stops, the root daemon takes the store over."""
    held = root / "exp42.zarr"
    with DaemonProcess(held) as own, RootProcess(root).start(wait_ready=False) as fleet:
        others = [s for s in stores_in(root) if s != held]
        fleet.wait_watching(others)
        wait_until(lambda: fleet.lines("store_busy"), what="store_busy")
        assert fleet.lines("store_busy")[0]["store"] == str(held)
        assert _watched_by(held, own.proc.pid if own.proc else -1)
        own.stop()
        fleet.wait_watching([held])
        add_gen2_record(held, str(uuid.uuid4()))
        sync_root(root)
        assert_tables_match_rebuild(held, tmp_path / "scratch")


def test_broken_store_is_skipped_with_a_log_line(root: Path, tmp_path: Path) -> None:
    """A store the daemon refuses (its tables/ is a symbolic link) is logged and
    retried later; the other stores are indexed all the same."""
    broken = make_store(root / "broken.zarr")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (broken / "tables").symlink_to(elsewhere)
    with RootProcess(root).start(wait_ready=False) as fleet:
        fleet.wait_watching(stores_in(root))
        wait_until(lambda: fleet.lines("store_retry_scheduled"), what="store_retry_scheduled")
        failed = fleet.lines("store_failed")
        assert failed and failed[0]["store"] == str(broken)
        assert "symbolic link" in failed[0]["error"]
        sync_root_result = kymwatch("sync", root, "--timeout", "120")
        assert sync_root_result.returncode == EXIT_NOT_RUNNING  # broken.zarr has no daemon
        for store in stores_in(root):
            assert_tables_match_rebuild(store, tmp_path / "scratch")
    assert list(elsewhere.iterdir()) == []


def test_status_root_lists_every_store(fleet: RootProcess, root: Path) -> None:
    """``kymwatch status ROOT`` lists each store with its state and daemon, as text and
    as JSON, exit 0 while all are healthy; 3 once the root daemon stopped."""
    assert fleet.proc is not None
    proc = kymwatch("status", root, "--json", check=True)
    doc = json.loads(proc.stdout)
    assert doc["running"] and doc["pid"] == fleet.proc.pid and doc["healthy"]
    by_name = {s["name"]: s for s in doc["stores"]}
    assert set(by_name) == {"exp41.zarr", "exp42.zarr", os.path.join("2026-11", "exp40.zarr")}
    for s in by_name.values():
        assert s["state"] == "watching" and s["by_root_daemon"] and s["healthy"]
        assert s["records_indexed"] == 2
    text = kymwatch("status", root, check=True).stdout
    assert f"pid {fleet.proc.pid}, 3 stores" in text
    for name in by_name:
        assert name in text
    fleet.stop()
    after = kymwatch("status", root)
    assert after.returncode == EXIT_NOT_RUNNING
    assert "no root daemon is running" in after.stdout


def test_folder_without_stores_is_refused(tmp_path: Path) -> None:
    """``run``, ``status`` and ``sync`` on a folder that holds no store (stores deeper
    than one level below do not count) exit 2 with one line."""
    deep = tmp_path / "lab" / "a" / "b"
    make_store(deep / "exp.zarr")
    for command in ("run", "status", "sync"):
        proc = subprocess.run(
            [*KYMWATCH, command, str(tmp_path / "lab")], capture_output=True, text=True
        )
        assert proc.returncode == EXIT_USAGE, proc
        assert "nor a folder holding one" in proc.stderr
        assert len(proc.stderr.splitlines()) == 1


def test_process_notifies_ready_after_every_store_and_pings_the_watchdog(
    root: Path, tmp_path: Path
) -> None:
    """Under systemd the process sends READY=1 once every store's first reconcile is
    done (a broken store does not hold it back), WATCHDOG=1 while the stores' loops
    run, reopens its logs on SIGHUP, and sends STOPPING=1 then exits 0 on SIGTERM."""
    broken = make_store(root / "broken.zarr")
    (broken / "tables").symlink_to(tmp_path)
    sock_dir = Path(tempfile.mkdtemp(prefix="kwr-"))
    receiver = Receiver(str(sock_dir / "notify"), str(sock_dir / "notify"))
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "1000000"}
    try:
        fleet = RootProcess(root, env=env).start(wait_ready=False)
        try:
            wait_until(lambda: "READY=1" in receiver.lines(), what="READY=1")
            for store in stores_in(root):  # each one's first reconcile is done
                doc = json.loads((store / "index" / "status.json").read_bytes())
                assert doc["counters"]["records_indexed"] == 2, store
            wait_until(lambda: receiver.lines().count("WATCHDOG=1") >= 3, what="WATCHDOG=1")
            wait_until(
                lambda: "STATUS=3 stores; 3 watching; 1 failed" in receiver.lines(),
                what="STATUS= summary",
            )
            assert fleet.proc is not None
            fleet.proc.send_signal(signal.SIGHUP)  # logrotate: reopen every log file
            wait_until(lambda: fleet.lines("log_reopened"), what="log_reopened")
            assert fleet.proc.poll() is None
        finally:
            assert fleet.stop() == 0
        assert "STOPPING=1" in receiver.lines()
    finally:
        receiver.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_unreadable_folder_and_not_a_dataset_are_skipped_with_a_log_line() -> None:
    """Run unprivileged: a store folder the daemon cannot read is logged
    (``root_folder_unreadable``) and a folder with a marker whose ``images`` is a file
    (``store_incomplete``) too; neither is started, and the other stores are indexed."""
    prefix = unprivileged_prefix()
    if isinstance(prefix, str):
        pytest.skip(prefix)
    base = Path(tempfile.mkdtemp(prefix="kymwatch-root-"))
    try:
        base.chmod(0o755)
        lab = base / "lab"
        good = [make_store(lab / "exp1.zarr"), make_store(lab / "2026-11" / "exp2.zarr", gen2=True)]
        locked = make_store(lab / "locked.zarr")
        bad = lab / "bad.zarr"
        bad.mkdir()
        (bad / ".zgroup").write_text('{"zarr_format": 2}')
        (bad / "images").write_text("not a folder")
        if prefix:
            user = pwd.getpwnam("nobody")
            for dirpath, dirnames, filenames in os.walk(base):
                for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                    os.chown(name, user.pw_uid, user.pw_gid, follow_symlinks=False)
            os.chown(locked, 0, 0)
        locked.chmod(0)
        with RootProcess(lab, prefix=prefix).start(wait_ready=False) as fleet:
            fleet.wait_watching(good)
            wait_until(lambda: fleet.lines("store_incomplete"), what="store_incomplete")
            wait_until(lambda: fleet.lines("root_folder_unreadable"), what="unreadable logged")
            assert [d["path"] for d in fleet.lines("root_folder_unreadable")] == [str(locked)]
            assert [d["path"] for d in fleet.lines("store_incomplete")] == [str(bad)]
            assert {d["store"] for d in fleet.lines("store_started")} == {str(s) for s in good}
            # As root, sync ROOT sees locked.zarr too: no daemon runs on it (exit 3).
            expected = EXIT_NOT_RUNNING if prefix else 0
            assert kymwatch("sync", lab, "--timeout", "120").returncode == expected
            for store in good:
                kymwatch("sync", store, "--timeout", "120", check=True)
                assert_tables_match_rebuild(store, base / "scratch")
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        locked_path = base / "lab" / "locked.zarr"
        if locked_path.exists():
            locked_path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_root_emptied_then_refilled_keeps_running(fleet: RootProcess, root: Path) -> None:
    """Once every store is moved away the root daemon keeps running (``status ROOT``
    still answers) and starts the next store created in it."""
    trash = root / ".trash"  # hidden: never scanned
    trash.mkdir()
    for i, store in enumerate(stores_in(root)):
        store.rename(trash / f"{i}-{store.name}")
    wait_until(lambda: len(fleet.lines("store_stopped")) == 3, what="three stores let go")
    doc = json.loads(kymwatch("status", root, "--json", check=True).stdout)
    assert doc["running"] and doc["stores"] == []
    new = make_store(root / "exp44.zarr")
    fleet.wait_watching([new])
    kymwatch("sync", root, "--timeout", "120", check=True)
    assert len(live_tables(new)["velocity_events"]) == 4
