"""The commands on a folder of stores: ``kymwatch run|status|sync ROOT``.

:func:`resolve_target` tells a store from a folder of stores; ``kymwatch.cli``
calls the functions here for the latter. ``status`` and ``sync`` import only the
standard library and the status/sync modules (they start fast).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kymwatch.daemon.instance import daemon_pid
from kymwatch.daemon.status import read_status
from kymwatch.errors import KymwatchError, NotAStoreError
from kymwatch.store import INDEX_DIR, check_not_inside_dataset, detect_zarr_format, scan_root
from kymwatch.store.discover import existing_root
from kymwatch.store.root import existing_store

if TYPE_CHECKING:
    from kymwatch.daemon.config import DaemonConfig
    from kymwatch.daemon.metrics import Metrics

__all__ = ["resolve_target", "run_root", "status_root", "sync_root"]

EXIT_OK, EXIT_FAIL, EXIT_NOT_RUNNING, EXIT_NOT_CURRENT = 0, 1, 3, 4


def resolve_target(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """``(absolute path, is_root)``: a store, or a folder holding stores (or one a
    root daemon watches, even while it holds none).

    Raises:
        StoreNotFoundError: the path does not exist.
        NotAStoreError: neither a store nor a folder holding one, or inside a store.
    """
    check_not_inside_dataset(path)
    p = Path(path).absolute()
    if p.is_dir() and detect_zarr_format(p) is None:
        try:
            return existing_root(p), True
        except NotAStoreError:
            if daemon_pid(p) is None:
                raise
            return p, True  # a root daemon runs here, its stores all gone for now
    return existing_store(p), False


# -- run ----------------------------------------------------------------------------------
def run_root(
    root: Path,
    config_for: Callable[[Path], DaemonConfig],
    logging: dict[str, Any],
    *,
    store_logs: bool,
    log_name: str,
    rescan_interval_s: float,
    metrics: Metrics | None = None,
) -> int:
    """Run one daemon per store of ``root`` in this process until stopped.

    Args:
        root: The folder of stores.
        config_for: A store's daemon configuration (read when its daemon starts).
        logging: Arguments of :func:`kymwatch.logconfig.configure_logging` (the
            process's console and optional all-stores log file).
        store_logs: Give each store its JSON log file ``STORE/index/<log_name>``.
        log_name: The log file's name.
        rescan_interval_s: Seconds between full scans of ``root``.
        metrics: The process's metrics; each store's daemon feeds them under its
            ``store`` label.
    """
    from kymwatch.daemon.fleet import Fleet, FleetConfig
    from kymwatch.daemon.runner import Daemon
    from kymwatch.daemon.sdnotify import Notifier
    from kymwatch.index import available_indexers
    from kymwatch.index.frames import skip_pyarrow_pandas_probe
    from kymwatch.logconfig import add_store_log_file, configure_logging, reopen_log_files

    available_indexers()  # imports the plug-ins before the probe (see kymwatch.index.frames)
    skip_pyarrow_pandas_probe()
    configure_logging(**logging, stream=sys.stdout)

    def make_daemon(store: Path, notifier: Notifier) -> Daemon:
        store_metrics = metrics.for_store(store) if metrics is not None else None
        return Daemon(config_for(store), notifier=notifier, metrics=store_metrics)

    def attach_log(store: Path) -> Any:
        return add_store_log_file(store, store / INDEX_DIR / log_name)

    fleet = Fleet(
        FleetConfig(root=root.resolve(), rescan_interval_s=rescan_interval_s),
        make_daemon,
        on_hangup=reopen_log_files,
        attach_log=attach_log if store_logs else None,
    )
    fleet.run()
    return EXIT_OK


# -- status -------------------------------------------------------------------------------
def _store_doc(root: Path, store: Path, root_pid: int | None) -> dict[str, Any]:
    pid = daemon_pid(store)
    view = read_status(store, pid is not None)
    d = view.data
    return {
        "store": str(store),
        "name": str(store.relative_to(root)),
        "running": view.running,
        "healthy": view.healthy,
        "stale": view.stale,
        "pid": pid,
        "by_root_daemon": pid is not None and pid == root_pid,
        "state": d.get("state") if view.running else None,
        "last_state": d.get("state"),
        "heartbeat_age_s": view.age_s,
        "queue_depth": d.get("queue_depth"),
        "records_indexed": d.get("counters", {}).get("records_indexed"),
        "problem_counts": d.get("problem_counts", {}),
        "last_update_utc": d.get("last_update_utc"),
    }


def status_root(root: Path, *, as_json: bool) -> int:
    """``kymwatch status ROOT``: the root daemon and each store's state.

    Exit 0 when the root daemon runs and every store is watched and healthy, 1 when
    some store is not, 3 when no root daemon runs.
    """
    root_pid = daemon_pid(root)
    scan = scan_root(root)
    stores = [_store_doc(root, s, root_pid) for s in scan.stores]
    all_ok = all(s["healthy"] for s in stores)
    code = EXIT_NOT_RUNNING if root_pid is None else EXIT_OK if all_ok else EXIT_FAIL
    if as_json:
        doc = {
            "root": str(root),
            "running": root_pid is not None,
            "pid": root_pid,
            "healthy": code == EXIT_OK,
            "stores": stores,
            "incomplete": [str(p) for p in scan.incomplete],
            "unreadable": [{"path": str(p), "error": e} for p, e in scan.unreadable],
        }
        print(json.dumps(doc, indent=2))
        return code
    if root_pid is None:
        print(f"kymwatch: no root daemon is running on {root}")
    else:
        print(f"kymwatch root daemon on {root}: pid {root_pid}, {len(stores)} stores")
    width = max([len(s["name"]) for s in stores] + [5])
    print(f"  {'STORE':<{width}}  {'STATE':<17}  {'DAEMON':<20}  QUEUE  PROBLEMS  LAST UPDATE")
    for s in stores:
        print(f"  {s['name']:<{width}}  {_state(s):<17}  {_daemon(s):<20}  " + _numbers(s))
    for p in scan.incomplete:
        print(f"  {p.relative_to(root)}: not a complete store yet (no images/): not watched")
    for p, error in scan.unreadable:
        print(f"  {p}: unreadable ({error}): not watched")
    return code


def _state(s: dict[str, Any]) -> str:
    if not s["running"]:
        return "not watched"
    if s["stale"]:
        return "STALE"
    return str(s["state"]) if s["healthy"] else f"UNHEALTHY ({s['state']})"


def _daemon(s: dict[str, Any]) -> str:
    if s["pid"] is None:
        last = s["last_state"]
        return f"none (last {last})" if last else "none"
    return f"root (pid {s['pid']})" if s["by_root_daemon"] else f"own (pid {s['pid']})"


def _numbers(s: dict[str, Any]) -> str:
    queue = "-" if s["queue_depth"] is None or not s["running"] else str(s["queue_depth"])
    problems = sum(s["problem_counts"].values()) if s["problem_counts"] else 0
    return f"{queue:>5}  {problems:>8}  {s['last_update_utc'] or 'never'}"


# -- sync ---------------------------------------------------------------------------------
def sync_root(root: Path, *, timeout: float, quiet: bool, strict: bool) -> int:
    """``kymwatch sync ROOT``: a sync barrier on every store at once.

    Exit: the worst of the stores' (3 when one has no daemon, 1 when one failed or
    timed out, 4 with ``strict`` when a record is not current), 0 when all are current.
    """
    from kymwatch.daemon.sync import NoDaemonError, SyncFailedError, request_sync

    stores = scan_root(root).stores

    def one(store: Path) -> tuple[int, str]:
        try:
            answer = request_sync(store, timeout=timeout)
        except NoDaemonError as e:
            return EXIT_NOT_RUNNING, f"error: {e}"
        except (TimeoutError, SyncFailedError, KymwatchError, OSError) as e:
            return EXIT_FAIL, f"error: {e}"
        n = len(answer.get("not_current") or [])
        if n:
            return (EXIT_NOT_CURRENT if strict else EXIT_OK), f"{n} record(s) not current"
        return EXIT_OK, "up to date"

    from concurrent.futures import ThreadPoolExecutor  # not for status/sync/logs of one store

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(stores)))) as pool:
        results = list(pool.map(one, stores))
    codes = [c for c, _ in results]
    for store, (code, text) in zip(stores, results, strict=True):
        if code != EXIT_OK or text != "up to date":
            print(f"kymwatch: {store}: {text}", file=sys.stderr)
        elif not quiet:
            print(f"kymwatch: tables of {store} are up to date")
    for rank in (EXIT_NOT_RUNNING, EXIT_FAIL, EXIT_NOT_CURRENT):
        if rank in codes:
            return rank
    return EXIT_OK
