"""``kymwatch status STORE``: the daemon's status file, for people (and ``--json``).

Quick to start: it imports neither pandas, pyarrow, zarr nor watchdog unless no daemon
runs and the stale counts must be computed here (tests/test_cli_startup.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kymwatch.daemon.instance import daemon_running
from kymwatch.daemon.progress import describe as describe_progress
from kymwatch.daemon.status import STATUS_SCHEMA_VERSION, StatusView, read_status

__all__ = ["describe_problem", "show_status"]

EXIT_OK, EXIT_FAIL, EXIT_NOT_RUNNING = 0, 1, 3

_WATCH_REASONS = {
    "local": "local file system",
    "fuse": "FUSE mount: writes made elsewhere raise no inotify event",
    "network": "network file system: writes made elsewhere raise no inotify event",
    "polling_requested": "--polling",
    "inotify_requested": "--inotify",
    "inotify_unavailable": "inotify unavailable",
}


def _watch_why(d: dict[str, Any]) -> str:
    """Why the daemon watches as it does, for ``kymwatch status``."""
    reason = str(d.get("watch_reason") or "")
    why = _WATCH_REASONS.get(reason, reason or "reason unknown")
    fs = d.get("fs_type")
    where = f"{fs} on {d.get('mount_point')}" if fs else ""
    return f"{why}; {where}" if where else why


def _stale_records(root: Path, view: StatusView) -> dict[str, int] | None:
    """The stale counts: a running daemon's published ones (null until its first count);
    without a daemon, computed here (slow on a big store: it reads every record)."""
    if view.running:
        counts = view.data.get("stale_records")
        return dict(counts) if isinstance(counts, dict) else None
    from kymwatch.staleview import stale_summary

    return stale_summary(root)


def _stale_line(counts: dict[str, int] | None) -> str | None:
    """The line ``kymwatch status`` prints about stale analyses (None: nothing to say)."""
    if not counts:
        return None
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    hint = ": kymwatch stale STORE lists them" if total else ""
    return f"  analyses: {total} stale record(s) ({detail}){hint}"


def describe_problem(p: dict[str, object]) -> str:
    """One line about a record that is not right now."""
    what = f"{p.get('image_id')} {p.get('indexer') or ''}".rstrip()
    problem = str(p.get("problem"))
    if problem == "pending":
        return f"{what}: not indexed yet (changed again, or its indexing was interrupted)"
    if problem == "stale":
        return f"{what}: stale analysis ({p.get('reason')}): kymwatch stale STORE explains"
    if problem == "artifact_missing":
        looked = p.get("looked_for")
        files = ", ".join(map(str, looked)) if isinstance(looked, list) else "?"
        return f"{what}: artifact_missing (looked for {files})"
    notes = []
    if p.get("retrying"):
        notes.append("will be read again")
    if p.get("recently_modified"):
        notes.append("modified seconds ago: probably still being written")
    extra = f" [{'; '.join(notes)}]" if notes else ""
    return f"{what}: {problem}: {p.get('error')} ({p.get('path')}){extra}"


def _print_problems(d: dict[str, Any], shown_as: str, heading: str) -> None:
    """The problem counts of a status document and its first ten problems."""
    problems = d.get("problems", [])
    counts = d.get("problem_counts", {})
    if not counts:
        print(f"  {heading}: none")
        return
    print(f"  {heading}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for p in problems[:10]:
        print(f"    {describe_problem(p)}")
    if sum(counts.values()) > min(len(problems), 10):
        print(f"    ... (kymwatch status {shown_as} --json lists up to {len(problems)})")


def show_status(root: Path, *, as_json: bool, shown_as: str) -> int:
    """Print ``kymwatch status STORE`` (human or ``--json``); return its exit code:
    0 healthy, 1 unhealthy or stale, 3 no daemon. ``shown_as``: STORE as typed."""
    view = read_status(root, daemon_running(root))
    code = EXIT_OK if view.healthy else EXIT_NOT_RUNNING if not view.running else EXIT_FAIL
    stale_records = _stale_records(root, view)
    if as_json:
        doc: dict[str, object] = {
            "schema_version": STATUS_SCHEMA_VERSION,
            "store": str(root),
            "running": view.running,
            "healthy": view.healthy,
            "stale": view.stale,
            "heartbeat_age_s": view.age_s,
            "status": view.data,
            "stale_records": stale_records,
        }
        print(json.dumps(doc, indent=2))
        return code
    d = view.data
    line = _stale_line(stale_records)
    if not view.running:
        last = f" (last state {d.get('state')!r}, pid {d.get('pid')})" if d else ""
        print(f"kymwatch: no daemon is running on {root}{last}")
        if d.get("problem_counts"):  # what was wrong when it stopped, still worth knowing
            _print_problems(d, shown_as, "problems when it stopped")
        if line:
            print(line)
        return code
    age = f"{view.age_s:.1f} s ago" if view.age_s is not None else "never"
    health = "STALE: no heartbeat for too long" if view.stale else "healthy"
    if view.running and not view.stale and not view.healthy:
        health = f"UNHEALTHY ({d.get('state')})"
    counters = d.get("counters", {})
    print(f"kymwatch daemon on {root}")
    print(f"  pid {d.get('pid')}, state {d.get('state')}, {health}, heartbeat {age}")
    print(f"  watching with {d.get('watch_mode')} ({_watch_why(d)}, {d.get('watches')} watches)")
    if d.get("indexers"):
        why = f" ({d['indexers_reason']})" if d.get("indexers_reason") else ""
        print(f"  indexers {', '.join(d['indexers'])}{why}")
    print(f"  queue depth {d.get('queue_depth')}, last table update {d.get('last_update_utc')}")
    if isinstance(d.get("progress"), dict):
        print(f"  {describe_progress(d['progress'])}")
    print(
        "  records indexed {records_indexed}, rows written {rows_written}, batches {batches}, "
        "reconciles {reconciles}".format(
            **{
                k: counters.get(k, 0)
                for k in ("records_indexed", "rows_written", "batches", "reconciles")
            }
        )
    )
    _print_problems(d, shown_as, "problems now")
    lifetime = {k: v for k, v in counters.items() if k.startswith("artifact_")}
    if lifetime:
        print("  since start: " + ", ".join(f"{k} {v}" for k, v in sorted(lifetime.items())))
    if line:
        print(line)
    for err in d.get("last_errors", [])[-5:]:
        extra = " ".join(f"{k}={v}" for k, v in err.items() if k not in ("time_utc", "event"))
        print(f"  ! {err.get('time_utc')} {err.get('event')} {extra}")
    return code
