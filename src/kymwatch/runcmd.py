"""``kymwatch run``: settings into a daemon (one store) or a daemon per store (a folder
of stores), with its logging, metrics and progress bar. Heavy imports stay inside the
functions: ``kymwatch.cli`` imports this module for every command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kymwatch.daemon.instance import daemon_running
from kymwatch.progressbar import bars_wanted
from kymwatch.rootcli import resolve_target
from kymwatch.settings import Settings, resolve
from kymwatch.store.layout import INDEX_DIR

if TYPE_CHECKING:
    from kymwatch.daemon.config import DaemonConfig
    from kymwatch.daemon.metrics import Metrics

__all__ = ["LOG_FILE", "cmd_run"]

LOG_FILE = "kymwatch.log"
"""The daemon's log file in ``index/`` (``--log-file`` moves it)."""

EXIT_OK = 0  # as kymwatch.cli.EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from kymwatch.daemon.memory import (
        keep_numpy_out,
        tune_gc,
        tune_process_memory,
        use_system_allocator,
    )

    use_system_allocator()  # before pyarrow is imported: see kymwatch.daemon.memory
    root, many = resolve_target(args.store)
    opts = resolve(args, root, parent=not many)
    # Before pyarrow is imported too; ROOT's settings: a store's file that asks for Dask
    # needs KYMWATCH_NUMPY=1 (any indexer named there is a plug-in only if one is installed).
    keep_numpy_out(opts["indexers"], dask=opts["dask"] is not None)
    from kymwatch.daemon import Daemon
    from kymwatch.index.frames import skip_pyarrow_pandas_probe
    from kymwatch.logconfig import (
        ConsoleFormat,
        configure_logging,
        reopen_log_files,
        service_console_format,
    )

    if opts["dask"] is not None:
        from kymwatch.index.distributed import require_dask

        require_dask()  # without it: one line saying how to install it
    tune_process_memory()  # before the daemon allocates: see kymwatch.daemon.memory
    tune_gc()  # thresholds; each daemon freezes its start-up: see kymwatch.daemon.memory
    console: ConsoleFormat = service_console_format() or "auto"
    if many:
        return _run_root(args, root, opts, console)
    # With a daemon on the store, run() refuses with its pid: no port is bound and its
    # textfile is not overwritten.
    metrics = None if daemon_running(root) else _metrics(opts)
    progress = None
    if bars_wanted(opts["progress"]):
        from kymwatch.progressbar import TerminalBar

        progress = TerminalBar()
    daemon = Daemon(  # checks the store first
        _daemon_config(opts, root),
        on_hangup=reopen_log_files,
        metrics=metrics.for_store(root) if metrics else None,
        progress=progress,
    )
    skip_pyarrow_pandas_probe()  # after the plug-ins are imported: see kymwatch.index.frames
    configure_logging(
        level=opts["log_level"],
        log_file=_log_file(opts["log_file"], root),
        console=console,
        stream=sys.stdout,
    )
    try:
        if metrics is not None and opts["metrics_port"] is not None:
            metrics.serve(opts["metrics_port"], opts["metrics_address"])
        daemon.run()
    finally:
        if metrics is not None:
            metrics.close()
    return EXIT_OK


def _run_root(args: argparse.Namespace, root: Path, opts: Settings, console: str) -> int:
    """``kymwatch run ROOT``: one daemon per store. Process-wide settings (logging,
    metrics, rescans) come from ROOT's file and the flags; each store's daemon settings
    from its own files (see :func:`kymwatch.settings.config_files`) and the flags."""
    from kymwatch.rootcli import run_root

    def config_for(store: Path) -> DaemonConfig:
        return _daemon_config(resolve(args, store), store)

    log_file = opts["log_file"]  # the stores get their own log files; this one every line
    metrics = _metrics(opts)
    try:
        if metrics is not None and opts["metrics_port"] is not None:
            metrics.serve(opts["metrics_port"], opts["metrics_address"])
        return run_root(
            root,
            config_for,
            {
                "level": opts["log_level"],
                "log_file": Path(log_file) if isinstance(log_file, str) else None,
                "console": console,
            },
            store_logs=log_file is not False,
            log_name=LOG_FILE,
            rescan_interval_s=opts["rescan_interval"],
            metrics=metrics,
        )
    finally:
        if metrics is not None:
            metrics.close()


def _daemon_config(opts: Settings, store: Path) -> DaemonConfig:
    from kymwatch.daemon import DaemonConfig
    from kymwatch.index.distributed import ClusterSpec

    return DaemonConfig(
        store=store,
        quiet_s=opts["quiet_ms"] / 1000,
        settle_s=opts["settle_ms"] / 1000,
        max_delay_s=opts["max_delay_ms"] / 1000,
        polling=opts["watch"] == "polling",
        inotify=opts["watch"] == "inotify",
        poll_interval_s=opts["poll_interval"],
        reconcile_interval_s=opts["reconcile_interval"],
        manifest=opts["manifest"],
        indexers=opts["indexers"],
        dask=None if opts["dask"] is None else ClusterSpec.parse(opts["dask"]),
        dask_threshold=opts["dask_threshold"],
        partition_rows=opts["partition_rows"],
    )


def _metrics(opts: Settings) -> Metrics | None:
    """The process's Prometheus metrics, if an endpoint or a textfile is asked for
    (``prometheus_client`` is imported only then)."""
    if opts["metrics_port"] is None and opts["metrics_textfile"] is None:
        return None
    from kymwatch.daemon.metrics import Metrics

    metrics = Metrics()
    if opts["metrics_textfile"] is not None:
        metrics.textfile(Path(opts["metrics_textfile"]))
    return metrics


def _log_file(value: str | bool | None, root: Path) -> Path | None:
    """The daemon's log file: the option's path, the store's default, or None (off)."""
    if value is False:
        return None
    return Path(value) if isinstance(value, str) else root / INDEX_DIR / LOG_FILE
