"""The ``kymwatch`` command line: parse into a config, configure logging, call the daemon."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from kymwatch import __version__
from kymwatch.errors import KymwatchError, NotAStoreError
from kymwatch.progressbar import bars_wanted
from kymwatch.rootcli import resolve_target, status_root, sync_root
from kymwatch.runcmd import LOG_FILE, cmd_run
from kymwatch.settings import add_options, resolve
from kymwatch.store.discover import scan_root
from kymwatch.store.layout import INDEX_DIR
from kymwatch.store.root import existing_store

if TYPE_CHECKING:
    from kymwatch.index.distributed import ClusterSpec

# Only what ``status``, ``sync`` and ``logs`` need is imported here: those start in
# well under 150 ms. Commands that index (run, rebuild, stale, demo) import pyarrow,
# watchdog, and where they need them pandas and zarr, in their own function (see
# tests/test_cli_startup.py; `run` never imports pandas: tests/test_daemon_lean.py).

__all__ = ["main"]

_MANIFEST_FILE = "manifest.json.gz"  # kymwatch.index.manifest_doc.MANIFEST_FILE (test-pinned)

_SERVICE_HELP = "run kymwatch as a systemd or launchd service"

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NOT_CURRENT = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _store(path: str, command: str) -> Path:
    """The store path, checked to be a kymflow dataset root (raises a KymwatchError that
    names the stores of a folder of stores, for a ``command`` that takes one store)."""
    try:
        return existing_store(path)
    except NotAStoreError:
        stores = scan_root(Path(path)).stores if os.path.isdir(path) else []
        if not stores:
            raise
        some = ", ".join(os.fspath(s) for s in stores[:3]) + (", ..." if len(stores) > 3 else "")
        raise NotAStoreError(
            f"{path} is a folder of {len(stores)} store{'s' if len(stores) != 1 else ''}; "
            f"kymwatch {command} takes one of them: {some}"
        ) from None


_DAY_S = 86_400.0
_STORE_HELP = "the kymflow dataset folder (the one holding images/)"


def _number(
    kind: Callable[[str], float], *, maximum: float, zero: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number, positive (or zero when ``zero``), at most
    ``maximum``. nan, inf and negative values are refused with one line."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
        if value < 0 or (value == 0 and not zero):
            need = "zero or positive" if zero else "positive"
            raise argparse.ArgumentTypeError(f"must be {need}: {text!r}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}: {text!r}")
        return value

    return parse


# -- commands ------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    root, many = resolve_target(args.store) if args.store else (None, False)
    opts = resolve(args, root, parent=not many)
    if args.json:
        print(json.dumps({"store": str(root) if root else None, **opts.to_json()}, indent=2))
        return EXIT_OK
    where = f" for {root}" if root else ""
    files = ", ".join(map(str, opts.files)) or "none"
    print(f"kymwatch run settings{where} (files read: {files})")
    print("\n".join(opts.lines()))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from kymwatch.statusview import show_status

    root, many = resolve_target(args.store)
    if many:
        return status_root(root, as_json=args.json)
    return show_status(root, as_json=args.json, shown_as=args.store)


def cmd_stale(args: argparse.Namespace) -> int:
    from kymwatch.staleview import show_stale

    return show_stale(_store(args.store, "stale"), as_json=args.json, show_all=args.all)


def cmd_logs(args: argparse.Namespace) -> int:
    from kymwatch.logview import LogFilter, show_log

    root = _store(args.store, "logs")
    path = Path(args.log_file) if args.log_file else root / INDEX_DIR / LOG_FILE
    filt = LogFilter(level=args.level, image_id=args.image_id, event=args.event)
    return show_log(path, filt, follow=args.follow, lines=args.lines, raw=args.json)


def cmd_sync(args: argparse.Namespace) -> int:
    from kymwatch.daemon.sync import NoDaemonError, SyncFailedError, request_sync
    from kymwatch.statusview import describe_problem

    root, many = resolve_target(args.store)
    if many:
        return sync_root(root, timeout=args.timeout, quiet=args.quiet, strict=args.strict)
    try:
        answer = request_sync(root, timeout=args.timeout)
    except NoDaemonError as e:
        print(f"kymwatch: error: {e}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except (TimeoutError, SyncFailedError) as e:
        print(f"kymwatch: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    not_current = answer.get("not_current") or []
    if not not_current:
        if not args.quiet:
            print(f"kymwatch: tables of {root} are up to date")
        return EXIT_OK
    n = len(not_current)
    print(
        f"kymwatch: tables of {root} reflect every earlier write except {n} "
        f"record{'s' if n != 1 else ''} that {'are' if n != 1 else 'is'} not current:",
        file=sys.stderr,
    )
    for p in not_current:
        print(f"  {describe_problem(p)}", file=sys.stderr)
    return EXIT_NOT_CURRENT if args.strict else EXIT_OK


def _indexer_names(value: str | None) -> tuple[str, ...] | None:
    """``--indexers a,b`` as names (None when not given)."""
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise _UsageError("--indexers needs at least one indexer name")
    return names


def _dask_spec(text: str) -> ClusterSpec:
    """An argparse type: ``local``, ``local:N`` (N > 0) or a scheduler address."""
    from kymwatch.index.distributed import ClusterSpec

    try:
        return ClusterSpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_rebuild(args: argparse.Namespace) -> int:
    from kymwatch.daemon.memory import (
        keep_numpy_out,
        trim,
        tune_gc_for_rebuild,
        tune_process_memory,
        use_system_allocator,
    )

    use_system_allocator()  # before pyarrow is imported: see kymwatch.daemon.memory
    requested = [n for v in args.indexer for n in _indexer_names(v) or ()] if args.indexer else None
    keep_numpy_out(requested, dask=args.dask is not None)  # before pyarrow is imported too
    from kymwatch.index import KymDataset, ManifestIndexer, make_indexers, select_indexers
    from kymwatch.index.distributed import ClusterError, cluster_extractor, require_dask
    from kymwatch.index.frames import skip_pyarrow_pandas_probe
    from kymwatch.index.manifest_doc import MANIFEST_FILE
    from kymwatch.logconfig import configure_logging

    root = _store(args.store, "rebuild")
    if args.dask is not None:
        require_dask()  # without it: one line saying how to install it (exit 2)
    tune_process_memory()  # freed table buffers go back to the system: see daemon.memory
    configure_logging(level=args.log_level, console="auto")
    kd = KymDataset(root, "a", indexers=make_indexers(select_indexers(root, requested)))
    skip_pyarrow_pandas_probe()  # after the plug-ins are imported: see kymwatch.index.frames
    tune_gc_for_rebuild()  # what the imports left frozen, fewer collections: see daemon.memory
    # One pass over the records for every table (table by table on a cluster); the table
    # lock is taken only to publish the tables (a daemon keeps indexing while the records
    # are read); records that change meanwhile are read again under it. A table is not
    # kept once written.
    with contextlib.ExitStack() as stack:
        try:
            if args.dask is not None:  # records read on a Dask cluster, tables published here
                kd.extractor = stack.enter_context(cluster_extractor(args.dask, root))
            step = None
            if bars_wanted(not args.no_progress):
                from kymwatch.progressbar import rebuild_bar

                step, bar = rebuild_bar("records read")
                stack.enter_context(bar)
            reports = kd.rebuild_reports(
                recheck=True, keep_tables=False, after_chunk=trim, progress=step
            )
        except ClusterError as e:  # no scheduler answers, or a chunk failed: no table
            print(f"kymwatch: error: {e}", file=sys.stderr)
            return EXIT_FAIL
    for report in reports:
        print(
            f"{report.table_name}: {report.table_rows} rows from {len(report.outcomes)}"
            f" records (merged and written in {report.duration_ms:.0f} ms)"
        )
    manifest = ManifestIndexer(root, create=args.manifest)
    if (requested is None or args.manifest) and manifest.active():
        done = manifest.rebuild()
        print(f"{INDEX_DIR}/{MANIFEST_FILE}: {done.records} records ({done.duration_ms:.0f} ms)")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from kymwatch.store.create import init_store

    root = init_store(args.store)
    if not args.quiet:
        print(f"kymwatch: created an empty kymflow dataset (zarr format 2) at {root}")
        print(f"  next: kymwatch run {args.store}  (artifacts go in images/<id>/analysis/)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from kymwatch.demo import run_demo

    return run_demo(store=Path(args.store) if args.store else None, keep=args.keep)


class _UsageError(KymwatchError, ValueError):
    """A combination of options that cannot work."""


# -- parser --------------------------------------------------------------------------------
_SERVICE = "service"


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word not starting with ``-`` (the top level
    has no option taking a value), None if there is none."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``kymwatch``.

    With ``command``, the options of the other commands that have many (``run``'s, which
    ``config show`` repeats, and ``service``'s) are left out: their parsers are there for
    the list of commands, empty. Building them all took ~10 ms of a quick command's start.
    """
    full = command is None
    p = _Parser(
        prog="kymwatch",
        description="Keep the dataset tables of a kymflow Zarr dataset up to date.",
    )
    p.add_argument("--version", action="version", version=f"kymwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="watch a store (or every store in a folder of stores) in the foreground "
        "and keep its tables right",
    )
    run.add_argument(
        "store", help="a kymflow store, or a folder holding stores (in it or one level below)"
    )
    if full or command == "run":
        add_options(run)
    run.set_defaults(func=cmd_run)

    cf = sub.add_parser("config", help="show the settings kymwatch run would use")
    cf_sub = cf.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = cf_sub.add_parser(
        "show",
        help="print the effective run settings and where each came from",
        description="Print the settings `kymwatch run STORE` would use with these flags, and "
        "where each came from: default, a kymwatch.toml file, or a flag.",
    )
    show.add_argument("store", nargs="?", help="the kymflow dataset folder (optional)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    if full or command == "config":
        add_options(show)
    show.set_defaults(func=cmd_config)

    st = sub.add_parser(
        "status", help="show the daemon's status (exit 0 healthy, 1 unhealthy, 3 not running)"
    )
    st.add_argument("store", help="a kymflow store, or a folder of stores (lists each store)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="pretty-print the daemon's JSON log")
    lg.add_argument("store", help=_STORE_HELP)
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument(
        "--level",
        choices=["debug", "info", "warning", "error"],
        default="debug",
        help="only events at least this important (default debug: all)",
    )
    lg.add_argument("--image-id", metavar="ID", help="only events about this record")
    lg.add_argument("--event", metavar="NAME", help="only this event name")
    lg.add_argument(
        "-n",
        "--lines",
        type=_number(int, maximum=10**9, zero=True),
        default=50,
        help="last N lines (0 = all)",
    )
    lg.add_argument("--json", action="store_true", help="print the raw JSON lines")
    lg.add_argument("--log-file", metavar="PATH", help="read this log file instead of the store's")
    lg.set_defaults(func=cmd_logs)

    sy = sub.add_parser("sync", help="wait until the tables reflect every earlier write")
    sy.add_argument("store", help="a kymflow store, or a folder of stores (syncs each store)")
    sy.add_argument(
        "--timeout",
        type=_number(float, maximum=7 * _DAY_S),
        default=60.0,
        metavar="S",
        help="give up (exit 1) when the daemon has not answered after S seconds (default 60)",
    )
    sy.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the tables are up to date"
    )
    sy.add_argument(
        "--strict",
        action="store_true",
        help="exit 4 when a record is not current (unreadable, invalid or pending artifact)",
    )
    sy.set_defaults(func=cmd_sync)

    sl = sub.add_parser(
        "stale", help="list records analysed with other params/versions than they have now"
    )
    sl.add_argument("store", help=_STORE_HELP)
    sl.add_argument("--json", action="store_true", help="machine-readable output")
    sl.add_argument(
        "--all", action="store_true", help="every record, fresh and never analysed ones too"
    )
    sl.set_defaults(func=cmd_stale)

    rb = sub.add_parser("rebuild", help="rebuild tables from scratch (safe while a daemon runs)")
    rb.add_argument("store", help=_STORE_HELP)
    rb.add_argument(
        "--manifest",
        action="store_true",
        help=f"also write {INDEX_DIR}/{_MANIFEST_FILE} if the store has none",
    )
    rb.add_argument(
        "--indexer",
        action="append",
        help="only this indexer (repeatable, or a,b; default: chosen from what the store holds)",
    )
    rb.add_argument(
        "--dask",
        metavar="ADDRESS|local[:N]",
        type=_dask_spec,
        help="read the records on a Dask cluster: a scheduler address (workers see the store"
        " at the same path) or a local cluster of N worker processes (pip install"
        " 'kymwatch[dask]')",
    )
    rb.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="least important events shown while rebuilding (default warning)",
    )
    rb.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    rb.set_defaults(func=cmd_rebuild)

    it = sub.add_parser(
        "init", help="create an empty kymflow dataset (zarr format 2), as kymflow makes one"
    )
    it.add_argument("store", help="the new store's folder (must not exist, or be empty)")
    it.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    it.set_defaults(func=cmd_init)

    dm = sub.add_parser("demo", help="live demo on a store made in a temporary folder")
    dm.add_argument(
        "--store", metavar="PATH", help="make the demo store here and keep it (must not exist)"
    )
    dm.add_argument("--keep", action="store_true", help="keep the demo store afterwards")
    dm.set_defaults(func=cmd_demo)

    if full or command == _SERVICE:
        from kymwatch.service.command import add_service_parser, run_service_command

        add_service_parser(sub, help=_SERVICE_HELP)
        sub.choices[_SERVICE].set_defaults(func=run_service_command)
    else:
        sub.add_parser(_SERVICE, help=_SERVICE_HELP)
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kymwatch`` console script."""
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(words)).parse_args(words)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`kymwatch logs STORE | head -1`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except (KymwatchError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"kymwatch: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"kymwatch: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    return code
