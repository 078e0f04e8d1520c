"""The ``kymwatch service`` command line: ``install`` and ``uninstall``.

The CLI adds the parser with :func:`add_service_parser` and, for the
``service`` command, calls :func:`run_service_command` with the parsed
arguments; it returns the process exit status.

Output: the file written (or removed) and the next command on stdout. With
``--dry-run``, ``install`` prints the rendered file alone on stdout (so it can
be redirected) and the target path and next command on stderr. Errors are one
line on stderr: exit status 2 for bad input (missing dataset, not a dataset,
unknown program, unsupported platform, nothing installed), 1 when the file
system refuses (e.g. no permission on ``/etc/systemd/system``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from kymwatch.errors import KymwatchError

if TYPE_CHECKING:  # imported when a service command runs: kymwatch's other commands
    from kymwatch.service.installer import InstallResult  # only build the parser
    from kymwatch.service.locate import Manager

__all__ = ["add_service_parser", "run_service_command"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)

EXIT_OK = 0
EXIT_OS_ERROR = 1
EXIT_BAD_INPUT = 2


def _add_common(parser: argparse.ArgumentParser, *, install: bool) -> None:
    """The options both actions share, in the words of the one they belong to."""
    write = "write" if install else "remove"
    parser.add_argument(
        "store",
        type=Path,
        metavar="STORE",
        help="the kymflow dataset folder, or a folder of datasets (one service for all)"
        if install
        else "the dataset folder (or folder of datasets) the service was installed for "
        "(it may be gone already)",
    )
    parser.add_argument(
        "--user",
        action="store_true",
        help=f"{write} a per-user service (systemctl --user / a LaunchAgent) instead of a "
        "system one",
    )
    managers = parser.add_mutually_exclusive_group()
    managers.add_argument(
        "--systemd",
        dest="service_manager",
        action="store_const",
        const="systemd",
        help=f"{write} the systemd unit (default on Linux)",
    )
    managers.add_argument(
        "--launchd",
        dest="service_manager",
        action="store_const",
        const="launchd",
        help=f"{write} the launchd property list (default on macOS)",
    )
    parser.add_argument(
        "--unit-dir",
        type=Path,
        metavar="DIR",
        help=f"{write} the service file in this folder instead of the manager's default",
    )


def add_service_parser(
    subparsers: argparse._SubParsersAction[_P],
    help: str = "run kymwatch as a systemd or launchd service",
) -> _P:
    """Add ``service install`` and ``service uninstall`` to a CLI.

    The parsed namespace has ``service_command`` (``"install"`` or
    ``"uninstall"``), ``store``, ``user``, ``service_manager``, ``unit_dir``,
    ``dry_run`` and, for install, ``executable`` and ``run_as``.

    Args:
        subparsers: The object returned by the main parser's ``add_subparsers()``
            (any ``ArgumentParser`` subclass as ``parser_class``).
        help: The line that lists ``service`` among the CLI's commands.

    Returns:
        The ``service`` parser (of the subparsers' parser class).
    """
    service = subparsers.add_parser(
        "service",
        help=help,
        description="Write or remove the service file that runs 'kymwatch run STORE' under "
        "systemd (Linux) or launchd (macOS). It prints the command that starts or stops it.",
    )
    actions = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    install_parser = actions.add_parser(
        "install",
        help="write the service file of a dataset",
        description="Write the service file of STORE and print the command that enables it.",
    )
    _add_common(install_parser, install=True)
    install_parser.add_argument(
        "--dry-run", action="store_true", help="print the service file, write nothing"
    )
    install_parser.add_argument(
        "--executable",
        type=Path,
        metavar="PATH",
        help="the kymwatch program the service runs (default: this installation's)",
    )
    install_parser.add_argument(
        "--run-as",
        metavar="USER",
        help="account of a system service (default: the owner of STORE)",
    )
    install_parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the service runs kymwatch with --config FILE (checked now)",
    )
    uninstall_parser = actions.add_parser(
        "uninstall",
        help="remove the service file of a dataset",
        description="Remove the service file of STORE and print the command that stops it.",
    )
    _add_common(uninstall_parser, install=False)
    uninstall_parser.add_argument(
        "--dry-run", action="store_true", help="say what would be removed, remove nothing"
    )
    return service


def _report(result: InstallResult, out: TextIO, err: TextIO) -> None:
    files = result.files or (result.path,)
    if result.action == "install" and result.dry_run:
        out.write(result.content)
        for path in files:
            err.write(f"Dry run: would write {path}\n")
        err.write(f"Then run: {result.next_command}\n")
        for note in result.notes:
            err.write(f"Note: {note}\n")
        return
    if result.action == "install":
        verb = "Wrote" if result.changed else "Unchanged"
    else:
        verb = "Would remove" if result.dry_run else "Removed"
    for path in files:
        out.write(f"{verb} {path}\n")
    out.write(f"Next: {result.next_command}\n")
    for note in result.notes:
        out.write(f"Note: {note}\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_service_command(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``service install`` or ``service uninstall`` and print the outcome.

    Args:
        args: The namespace parsed by a parser built with :func:`add_service_parser`.
        stdout: Where results go (default ``sys.stdout``).
        stderr: Where errors and dry-run details go (default ``sys.stderr``).

    Returns:
        0 on success, 2 for bad input, 1 when the file system refuses.
    """
    from kymwatch.service.installer import install, uninstall

    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    manager: Manager | None = args.service_manager
    try:
        if args.service_command == "install":
            result = install(
                args.store,
                manager=manager,
                user=args.user,
                dry_run=args.dry_run,
                executable=args.executable.absolute() if args.executable else None,
                unit_dir=args.unit_dir,
                run_as=args.run_as,
                config=args.config,
            )
        else:
            result = uninstall(
                args.store,
                manager=manager,
                user=args.user,
                dry_run=args.dry_run,
                unit_dir=args.unit_dir,
            )
    except KymwatchError as e:
        err.write(f"kymwatch: error: {_one_line(str(e))}\n")
        return EXIT_BAD_INPUT
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        hint = " (run as root, or use --user)" if isinstance(e, PermissionError) else ""
        err.write(f"kymwatch: error: cannot write{where}: {e.strerror or e}{hint}\n")
        return EXIT_OS_ERROR
    _report(result, out, err)
    return EXIT_OK
