"""Measuring tools shared by the benchmark sections.

Statistics, the machine description, background-load accounting (this 2-core
machine is shared, so every section records how much CPU *other* processes used
while it ran), and :class:`Daemon`, a ``kymwatch run`` subprocess with resource
probes (sampled RSS via psutil, the kernel's peak RSS, CPU time, context switches
of every thread, inotify watches, log events of this run only).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
# The launcher (bench/run.py) pins kymwatch and the test harness to a snapshot.
PINNED_ROOT = Path(os.environ.get("KYMWATCH_BENCH_ROOT", REPO))
sys.path.insert(0, str(PINNED_ROOT / "tests"))

from harness import DaemonProcess, count_inotify_watches  # noqa: E402

WAIT_S = 600.0


def quiet_logging() -> None:
    """Keep kymwatch's in-process logging (floor, per-event, rebuild) off the console."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -- statistics ------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return float(np.median(xs)) if len(xs) else float("nan")


def percentiles(xs: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., ...}`` with numpy's default (linear) interpolation."""
    if not len(xs):
        return {f"p{p:g}": float("nan") for p in ps}
    return {f"p{p:g}": float(np.percentile(xs, p)) for p in ps}


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares ``y = a + b·x`` with R², and the log-log slope ``k`` of ``y ∝ x^k``."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2:
        return {}
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    k = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if np.all(y > 0) else float("nan")
    return {"intercept_s": float(a), "slope_s_per_record": float(b), "r2": r2, "loglog_k": k}


# -- the machine -----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fs_type(path: Path) -> str:
    """The file system type holding ``path``, and ``discard`` when it is mounted with it
    (each freed file is then discarded at the next journal commit, which slows writers
    that replace files: ``bench/ANALYSIS.md``, "Burst, session 9")."""
    target, best, kind = os.path.realpath(path), "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            f = line.split()
            inside = len(f) >= 4 and (target == f[1] or target.startswith(f[1].rstrip("/") + "/"))
            if inside and len(f[1]) > len(best):
                discard = "discard" in f[3].split(",")
                best, kind = f[1], f[2] + (" (mounted with discard)" if discard else "")
    except OSError:
        pass
    return kind


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(work_dir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    pkgs = [
        "kymwatch", "pandas", "pyarrow", "numpy", "watchdog", "zarr", "structlog", "filelock",
        "psutil", "matplotlib",
    ]  # fmt: skip
    versions = {}
    for p in pkgs:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    mem = psutil.virtual_memory().total
    import kymwatch

    measured = os.environ.get("KYMWATCH_BENCH_SRC") or (
        _git("rev-parse", "--short=12", "HEAD") + "+worktree"
    )
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "work_fs": _fs_type(work_dir),
        "git_commit": measured,
        "kymwatch_imported_from": str(Path(kymwatch.__file__).parent),
    }


# -- background load ------------------------------------------------------------------------
def _system_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(v) for v in f]
    tick = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + vals[4]  # idle + iowait
    return (sum(vals[:8]) - idle) / tick, sum(vals[:8]) / tick


def _own_cpu() -> float:
    """CPU seconds used by this process, its live children and its reaped children."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


@dataclass
class LoadMeter:
    """CPU used by other processes (not this benchmark or its children) over a span."""

    start_wall: float = field(default_factory=time.monotonic)
    start_busy: float = field(default_factory=lambda: _system_busy()[0])
    start_own: float = field(default_factory=_own_cpu)

    def other_cores(self) -> float:
        """Average number of cores other processes kept busy since this meter started."""
        wall = time.monotonic() - self.start_wall
        busy = _system_busy()[0] - self.start_busy
        own = _own_cpu() - self.start_own
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def wait_for_quiet(max_wait: float, threshold: float = 0.15, log: Any = print) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores for 3 s."""
    start = time.monotonic()
    calm = 0
    last = 0.0
    while True:
        m = LoadMeter()
        time.sleep(1.0)
        last = m.other_cores()
        calm = calm + 1 if last < threshold else 0
        waited = time.monotonic() - start
        if calm >= 3 or waited >= max_wait:
            break
        if calm == 0 and int(waited) % 15 == 0:
            log(f"  waiting for a quiet machine: other processes use {last:.2f} cores")
    return {"waited_s": round(time.monotonic() - start, 1), "other_cores": round(last, 3)}


# -- the daemon ------------------------------------------------------------------------------
def task_ctx_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over every thread of ``pid``."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
        except OSError:
            continue
    return vol, invol


def task_schedstat(pid: int) -> tuple[float, float]:
    """(on-CPU, waiting-for-a-CPU) seconds summed over every thread of ``pid``.

    From ``/proc/<pid>/task/*/schedstat``: the second figure is time the threads
    were runnable but other processes had the CPUs (contention on a shared machine).
    """
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = (task / "schedstat").read_text().split()
        except OSError:
            continue
        run += int(f[0])
        wait += int(f[1])
    return run / 1e9, wait / 1e9


def vm_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory field in KiB (``VmHWM``: peak RSS; ``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Samples a process's RSS with psutil every ``interval`` seconds, on a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; the largest RSS seen, in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


class Daemon:
    """``kymwatch run STORE`` (via the test harness) with probes.

    Args:
        store: The dataset folder.
        quiet_ms: Debounce quiet window.
        extra: More ``kymwatch run`` arguments (e.g. ``--polling``).
    """

    def __init__(self, store: Path, quiet_ms: int = 300, extra: Sequence[str] = ()) -> None:
        self.store = store
        self.proc = DaemonProcess(store, "--log-level", "info", *extra, quiet_ms=quiet_ms)
        self.log_offset = 0
        self.sampler: RssSampler | None = None
        self.spawn_to_ready_s = float("nan")

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def start(self, timeout: float = WAIT_S) -> Daemon:
        """Spawn the daemon and wait until it reports ``watching`` (first reconcile done)."""
        try:
            self.log_offset = self.proc.log_path.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        status = self.store / "index" / "status.json"
        t0 = time.perf_counter()
        self.proc.start(wait_ready=False)
        self.sampler = RssSampler(self.pid)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            assert self.proc.proc is not None
            if self.proc.proc.poll() is not None:
                raise RuntimeError(f"daemon exited early:\n{self.proc.read_output()}")
            try:
                doc = json.loads(status.read_bytes())
                if doc.get("pid") == self.pid and doc.get("state") == "watching":
                    self.spawn_to_ready_s = time.perf_counter() - t0
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.proc.read_output()}")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """JSON log events written since this daemon was started."""
        out = []
        try:
            with open(self.proc.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except FileNotFoundError:
            return out
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def schedstat(self) -> tuple[float, float]:
        """(on-CPU, waiting-for-a-CPU) seconds of all the daemon's threads so far."""
        return task_schedstat(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far (all threads)."""
        t = psutil.Process(self.pid).cpu_times()
        return t.user + t.system

    def wait_idle(self, idle_cpu_s: float = 0.02, most_s: float = 120.0) -> float:
        """Wait until the daemon is idle: less than ``idle_cpu_s`` of CPU in a second
        (its start-up stale-analysis pass, or the last burst's, done); returns the
        seconds waited (at most ``most_s``)."""
        start = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - start < most_s:
            time.sleep(1.0)
            now = self.cpu_seconds()
            if now - last < idle_cpu_s:
                break
            last = now
        return time.monotonic() - start

    def peak_rss_mib(self) -> dict[str, float]:
        """Peak RSS: the kernel's high-water mark and the largest psutil sample."""
        sampled = self.sampler.peak if self.sampler else 0
        return {
            "vm_hwm_mib": round(vm_kib(self.pid, "VmHWM") / 1024, 1),
            "sampled_peak_mib": round(sampled / 2**20, 1),
            "rss_now_mib": round(vm_kib(self.pid, "VmRSS") / 1024, 1),
        }

    def inotify_watches(self) -> int:
        """inotify watches the daemon holds (from /proc/<pid>/fdinfo)."""
        return count_inotify_watches(self.pid)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.sampler is not None:
            self.sampler.stop()
        return self.proc.stop()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        assert self.proc.proc is not None
        if self.proc.proc.poll() is None:
            self.stop()


def sync(store: Path, timeout: float = WAIT_S) -> float:
    """The ``kymwatch sync`` barrier, called in-process; returns its duration in seconds."""
    from kymwatch.daemon import request_sync

    t0 = time.perf_counter()
    request_sync(store, timeout=timeout, poll=0.005)
    return time.perf_counter() - t0


# -- page cache --------------------------------------------------------------------------------
def drop_caches(store: Path) -> str:
    """Make the next start read ``store`` from disk; returns how it was done.

    ``sync; echo 3 > /proc/sys/vm/drop_caches`` where allowed (the whole page, dentry
    and inode caches); otherwise ``posix_fadvise(DONTNEED)`` on every file of the
    store after an ``fsync`` (evicts the store's file data; directory entries, inodes
    and the Python libraries stay cached, so this is a milder cold start).
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError as e:
        reason = f"drop_caches not allowed here ({type(e).__name__}: {e.strerror})"
    n = 0
    for dirpath, _, files in os.walk(store):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return f"{reason}; evicted the data of {n} store files with posix_fadvise(DONTNEED)"


# -- the run context -------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every section gets: options, a scratch folder and numbers shared between sections.

    Attributes:
        opts: The parsed command-line options of ``bench/run.py``.
        work: Scratch folder for store copies (under ``bench/out``).
        shared: Numbers one section measures and another reuses in the same run.
    """

    opts: Any
    work: Path
    shared: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def log(self, msg: str) -> None:
        """Progress on stderr, with the time since the run started."""
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)
