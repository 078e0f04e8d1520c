"""One daemon per store, and probes that never disturb it (issue 10, part 7).

The daemon locks the store folder itself, so deleting ``index/`` cannot let a
second daemon in, and asking whether a daemon runs is read-only: it never takes
the lock (a probe at a daemon's start cannot make the start fail) and works from
an account that cannot write the store.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    KYMWATCH,
    DaemonProcess,
    assert_tables_match_rebuild,
    kymwatch,
    unprivileged_prefix,
    wait_until,
)
from helpers_loop import add_kym_record as add_record
from helpers_store import make_v2_store
from kymwatch.daemon import DaemonLock, daemon_pid, daemon_running
from kymwatch.errors import DaemonRunningError


def test_lock_on_the_store_folder_survives_deleting_index(tmp_path: Path) -> None:
    """With index/ deleted, the lock is still held: a second lock is refused, probes see it."""
    store = make_v2_store(tmp_path / "s.zarr")
    first = DaemonLock(store)
    first.acquire()
    try:
        shutil.rmtree(store / "index", ignore_errors=True)
        assert daemon_running(store) and daemon_pid(store) == os.getpid()
        with pytest.raises(DaemonRunningError, match="already watching"):
            DaemonLock(store).acquire()
    finally:
        first.release()
    assert not daemon_running(store)


def test_probing_writes_nothing(tmp_path: Path) -> None:
    """Asking whether a daemon runs creates no folder and no lock file."""
    store = make_v2_store(tmp_path / "s.zarr")
    before = sorted(p.name for p in store.iterdir())
    assert not daemon_running(store)
    assert sorted(p.name for p in store.iterdir()) == before


def test_probes_in_a_tight_loop_never_make_a_start_fail(tmp_path: Path) -> None:
    """200 lock/unlock cycles while another thread probes without pause: every start wins."""
    store = make_v2_store(tmp_path / "s.zarr")
    stop = threading.Event()
    probes = 0

    def probe() -> None:
        nonlocal probes
        while not stop.is_set():
            daemon_running(store)
            probes += 1

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        for _ in range(200):
            lock = DaemonLock(store)
            lock.acquire()  # raises DaemonRunningError if a probe held the lock
            lock.release()
    finally:
        stop.set()
        thread.join()
    assert probes > 0


@pytest.fixture
def public_store() -> Iterator[Path]:
    """A store in a folder every account can read (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="kymwatch-public-"))
    folder.chmod(0o755)
    try:
        yield make_v2_store(folder / "s.zarr")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


UNPRIVILEGED = unprivileged_prefix()


def as_nobody(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a kymwatch command as the unprivileged user ``nobody``."""
    assert not isinstance(UNPRIVILEGED, str)
    return subprocess.run(
        [*UNPRIVILEGED, *KYMWATCH, *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
@pytest.mark.skipif(isinstance(UNPRIVILEGED, str), reason=str(UNPRIVILEGED))
def test_read_only_account_can_run_status_and_sync_probe(public_store: Path) -> None:
    """An account that cannot write the store gets answers from status and sync, never
    'Permission denied': no daemon (exit 3), then a running daemon (exit 0, healthy)."""
    store = public_store
    add_record(store, "20261125_cell1")
    for args in (("status", store), ("sync", store, "--timeout", "5")):
        proc = as_nobody(*args)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "Permission denied" not in proc.stdout + proc.stderr
        assert re.search("no (kymwatch )?daemon is running", proc.stdout + proc.stderr)
    with DaemonProcess(store) as daemon:
        daemon.sync()
        (store / "index").chmod(0o755)
        proc = as_nobody("status", store)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "healthy" in proc.stdout and "Permission denied" not in proc.stderr


@pytest.mark.integration
def test_deleting_index_while_running_keeps_the_store_locked(tmp_path: Path) -> None:
    """rm -rf index/ while the daemon runs: a second daemon is refused, status and sync still
    find the daemon, and indexing goes on."""
    store = make_v2_store(tmp_path / "store.zarr")
    add_record(store, "e1")
    with DaemonProcess(store) as daemon:
        daemon.sync()
        shutil.rmtree(store / "index")
        second = kymwatch("run", store, "--no-log-file")
        assert second.returncode != 0
        assert "already watching" in second.stderr and "Traceback" not in second.stderr
        assert second.stderr.count("\n") == 1
        status = kymwatch("status", store)
        assert status.returncode != 3, status.stdout + status.stderr
        add_record(store, UUID_RECORD)
        daemon.sync()
        wait_until(lambda: kymwatch("status", store).returncode == 0, what="status healthy again")
        assert daemon.proc is not None and daemon.proc.poll() is None
    assert_tables_match_rebuild(store, tmp_path / "scratch")


UUID_RECORD = "9b2f3c4d-1e2f-4a5b-8c9d-0e1f2a3b4c5d"


def test_where_a_folder_cannot_be_locked_a_lock_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system that refuses flock on a directory (NFS emulation), the lock falls
    back to index/daemon.lock: a second daemon is still refused and probes see the holder."""
    import fcntl as real_fcntl
    import stat

    from kymwatch.daemon import instance

    real_flock = real_fcntl.flock

    def flock(fd: int, op: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        real_flock(fd, op)

    monkeypatch.setattr(instance.fcntl, "flock", flock)
    store = make_v2_store(tmp_path / "s.zarr")
    first = DaemonLock(store)
    first.acquire()
    try:
        assert (store / "index" / "daemon.lock").exists()
        assert daemon_pid(store) == os.getpid()
        with pytest.raises(DaemonRunningError):
            DaemonLock(store).acquire()
    finally:
        first.release()
    assert not daemon_running(store)


def test_without_proc_locks_a_live_status_pid_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /proc/locks does not exist (macOS), the probe trusts the status file's pid only
    while that process lives and the file does not say stopped."""
    from kymwatch.daemon import instance

    monkeypatch.setattr(instance, "_PROC_LOCKS", str(tmp_path / "no-such-file"))
    store = make_v2_store(tmp_path / "s.zarr")
    status = store / "index" / "status.json"
    status.parent.mkdir()
    status.write_text(json.dumps({"pid": os.getpid(), "state": "watching"}))
    assert daemon_pid(store) == os.getpid()
    status.write_text(json.dumps({"pid": os.getpid(), "state": "stopped"}))
    assert daemon_pid(store) is None
    status.write_text(json.dumps({"pid": 2**22 + 12345, "state": "watching"}))
    assert daemon_pid(store) is None


def _status(store: Path, **doc: object) -> None:
    path = store / "index" / "status.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"state": "watching", **doc}))


@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="Linux /proc only")
def test_the_status_files_lock_descriptor_answers_without_the_lock_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the lock table empty (a stand-in for /proc/locks), the probe still finds the
    holder through the descriptor the status file names, and only while that descriptor
    holds this store's lock: another store's lock or a released one proves nothing."""
    from kymwatch.daemon import instance

    empty = tmp_path / "locks"
    empty.write_text("")
    monkeypatch.setattr(instance, "_PROC_LOCKS", str(empty))
    store = make_v2_store(tmp_path / "s.zarr")
    other = make_v2_store(tmp_path / "other.zarr")
    lock, other_lock = DaemonLock(store), DaemonLock(other)
    lock.acquire()
    other_lock.acquire()
    try:
        assert lock.fd is not None and other_lock.fd is not None
        _status(store, pid=os.getpid(), lock_fd=lock.fd)
        assert daemon_pid(store) == os.getpid()
        _status(store, pid=os.getpid(), lock_fd=other_lock.fd)
        assert daemon_pid(store) is None
        _status(store, pid=os.getpid(), lock_fd=lock.fd, state="stopped")
        assert daemon_pid(store) is None
        _status(store, pid=os.getpid())  # a file of a kymwatch without lock_fd
        assert daemon_pid(store) is None
        fd = lock.fd
        _status(store, pid=os.getpid(), lock_fd=fd)
    finally:
        lock.release()
        other_lock.release()
    assert daemon_pid(store) is None  # the descriptor is closed (or reused without the lock)


def test_a_running_daemons_status_names_its_lock_descriptor(tmp_path: Path) -> None:
    """`kymwatch run` writes the descriptor of its lock into the status file, and that
    descriptor is the one /proc/locks lists for the store folder."""
    store = make_v2_store(tmp_path / "s.zarr")
    with DaemonProcess(store) as d:
        assert d.proc is not None
        pid = d.proc.pid
        doc = json.loads((store / "index" / "status.json").read_text())
        assert doc["pid"] == pid and isinstance(doc["lock_fd"], int)
        st = os.stat(store)
        if os.path.exists("/proc/locks"):
            from kymwatch.daemon.instance import _holds

            assert _holds(pid, doc["lock_fd"], (st.st_dev, st.st_ino))
        assert daemon_pid(store) == pid
