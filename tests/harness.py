"""End-to-end harness: the real daemon as a subprocess, and the rebuild oracle.

Shared by the daemon end-to-end, reliability and benchmark code. Nothing here
asserts an upper time bound; every wait has a generous timeout only to turn a
hang into a clear failure.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kymwatch.index import DatasetIndexer, KymDataset, make_indexers, select_indexers

KYMWATCH = [sys.executable, "-m", "kymwatch"]
WAIT_S = 120.0


def kymwatch(
    *args: str | Path, timeout: float = WAIT_S, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run one ``kymwatch`` CLI command in a subprocess and capture its output."""
    proc = subprocess.run(
        [*KYMWATCH, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kymwatch {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


class DaemonProcess:
    """``kymwatch run STORE`` in a subprocess, with helpers to wait on it.

    Args:
        store: The dataset folder.
        args: Extra ``kymwatch run`` arguments.
        quiet_ms: Debounce quiet window (short by default, to keep tests quick).
        env: Extra environment variables.
        prefix: Command run in front of ``kymwatch run`` (e.g. ``setpriv`` to run the
            daemon as another user).
        command: The command to run instead of ``kymwatch run STORE ARGS`` (e.g. a
            script running ``Daemon`` with a custom configuration).
    """

    def __init__(
        self,
        store: Path,
        *args: str,
        quiet_ms: int = 100,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.store = Path(store)
        self.args = ["--quiet-ms", str(quiet_ms), "--log-level", "debug", *args]
        self.prefix, self.command = list(prefix), command
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = self.store.parent / f"daemon-{self.store.name}.out"

    @property
    def log_path(self) -> Path:
        """The daemon's JSON log file."""
        return self.store / "index" / "kymwatch.log"

    def start(self, *, wait_ready: bool = True) -> DaemonProcess:
        """Start the daemon; by default wait until its first reconcile is done."""
        out = self.output.open("ab")
        command = self.command or [*KYMWATCH, "run", str(self.store), *self.args]
        self.proc = subprocess.Popen(
            [*self.prefix, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        out.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = WAIT_S) -> None:
        """Block until the status file says this process is watching."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        status = self.store / "index" / "status.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.read_output()}")
            try:
                doc = json.loads(status.read_bytes())
                if doc.get("pid") == self.proc.pid and doc.get("state") == "watching":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.read_output()}")

    def sync(self, timeout: float = WAIT_S) -> None:
        """``kymwatch sync``: wait until every earlier write is in the tables."""
        kymwatch(
            "sync", self.store, "--timeout", str(timeout), "-q", timeout=timeout + 30, check=True
        )

    def stop(self, timeout: float = WAIT_S) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL (a crash): no cleanup runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=WAIT_S)

    def read_output(self) -> str:
        """What the daemon printed to stdout/stderr."""
        try:
            return self.output.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events (optionally only those named ``name``)."""
        out = []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def __enter__(self) -> DaemonProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def _indexers(store: Path, names: Sequence[str] | None) -> list[DatasetIndexer]:
    """The indexers a daemon on ``store`` runs: ``names`` (its ``--indexers``), else those
    its status file lists, else the ones it would choose now."""
    if names is None:
        try:
            names = json.loads((store / "index" / "status.json").read_bytes())["indexers"]
        except (OSError, ValueError, KeyError, TypeError):
            names = None
    return make_indexers(select_indexers(store, names))


def fresh_rebuild(
    store: Path, scratch: Path, indexers: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Every table as a from-scratch ``rebuild`` of a copy of ``store`` produces it
    (with the indexers a daemon on ``store`` runs, or ``indexers``)."""
    chosen = _indexers(store, indexers)
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(store, scratch, ignore=shutil.ignore_patterns("tables", "index"), symlinks=True)
    kd = KymDataset(scratch, indexers=chosen)
    tables = {ix.table_name: kd.rebuild(ix, log_outcomes=False) for ix in kd.indexers}
    shutil.rmtree(scratch)
    return tables


def live_tables(store: Path, indexers: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """The tables as a reader sees them on disk now."""
    kd = KymDataset(store, "r", indexers=_indexers(store, indexers))
    return {ix.table_name: kd.get_table(ix.table_name) for ix in kd.indexers}


def assert_tables_match_rebuild(
    store: Path,
    scratch: Path,
    *,
    keep_old_rows_for: Iterable[str] = (),
    indexers: Sequence[str] | None = None,
) -> None:
    """The oracle: each table equals a fresh rebuild.

    Records in ``keep_old_rows_for`` (whose current artifact is corrupt) are left
    out of the comparison: the daemon keeps their last good rows, a fresh rebuild
    has none. ``indexers``: the daemon's ``--indexers``, if it was given.
    """
    skip = set(keep_old_rows_for)
    fresh = fresh_rebuild(store, scratch, indexers)
    live = live_tables(store, indexers)
    for name, expected in fresh.items():
        got = live[name]
        if skip:
            got = got[~got["image_id"].isin(skip)].reset_index(drop=True)
            expected = expected[~expected["image_id"].isin(skip)].reset_index(drop=True)
        if not got.equals(expected):
            diff = _describe_difference(got, expected)
            raise AssertionError(f"table {name!r} differs from a fresh rebuild: {diff}")


def _describe_difference(got: pd.DataFrame, expected: pd.DataFrame) -> str:
    g, e = got["image_id"].value_counts(), expected["image_id"].value_counts()
    ids = sorted(set(g.index) | set(e.index))
    bad = [(i, int(g.get(i, 0)), int(e.get(i, 0))) for i in ids if g.get(i, 0) != e.get(i, 0)]
    if bad:
        return f"rows per image_id (live, rebuild) differ: {bad[:10]}"
    return f"same row counts, different values or dtypes:\n{got}\nvs\n{expected}"


def count_inotify_watches(pid: int) -> int:
    """Number of inotify watches held by process ``pid`` (Linux /proc)."""
    total = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        total += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return total


def wait_until(predicate: Any, timeout: float = WAIT_S, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


__all__: Sequence[str] = [
    "DaemonProcess",
    "assert_tables_match_rebuild",
    "count_inotify_watches",
    "fresh_rebuild",
    "kymwatch",
    "live_tables",
    "wait_until",
]


def unprivileged_prefix() -> list[str] | str:
    """The command prefix that runs kymwatch as the unprivileged user ``nobody``
    (empty when the tests already run unprivileged), or why that is impossible here:
    no such user, no ``setpriv``, or a checkout that user cannot read (a clone in a
    0700 folder), which a probe import finds out."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return "needs setpriv to drop privileges"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "no 'nobody' user to run kymwatch as"
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import kymwatch.cli"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"'nobody' cannot run this checkout's kymwatch ({last[:200]})"
    return prefix
