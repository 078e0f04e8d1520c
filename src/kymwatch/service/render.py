"""Render the service files: a systemd template unit or a launchd property list.

The definitions themselves live in the repository's top-level ``service/`` folder,
shipped in the wheel as ``kymwatch/service/definitions/`` (package data):
``systemd/system/kymwatch@.service`` and ``systemd/user/kymwatch@.service``
(only ``${kymwatch}``, the program, is filled in; the dataset is the unit's
instance, ``%f``) and ``launchd/org.kymflow.kymwatch.plist`` (a base
property list that is loaded with :mod:`plistlib`, completed and dumped again,
never edited as text). A dataset's own settings go into a drop-in
(:func:`render_systemd_dropin`).

The program to run is either a :class:`~pathlib.Path` to the ``kymwatch``
script or a tuple of arguments that starts it (e.g. ``(python, "-m",
"kymwatch")``); it must be absolute, since systemd rejects a relative
``ExecStart``.
"""

from __future__ import annotations

import os
import plistlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

from kymwatch.service.errors import UnsupportedPathError
from kymwatch.service.naming import canonical_store, launchd_label, service_slug

__all__ = [
    "Executable",
    "command_argv",
    "definition",
    "launchd_log_path",
    "render_launchd_plist",
    "render_systemd_dropin",
    "render_systemd_template",
]

Executable = Path | tuple[str, ...]
"""The ``kymwatch`` script, or an argument prefix that runs kymwatch."""

_SYSTEM_TEMPLATE = "systemd/system/kymwatch@.service"
_USER_TEMPLATE = "systemd/user/kymwatch@.service"
_PLIST_TEMPLATE = "launchd/org.kymflow.kymwatch.plist"
_PROGRAM = "${kymwatch}"
"""The one placeholder of the units: the absolute program (and its arguments)."""

# Words systemd takes literally without quotes (no whitespace, quotes, backslashes, ;).
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%$+=:,./~-]+$")
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f"\\]')
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?")


def definition(name: str) -> bytes:
    """A service definition file, by its path under ``service/`` (``launchd/...``).

    Read from the package data of an installed kymwatch, else (a source checkout or
    an editable install) from the repository's top-level ``service/`` folder.
    """
    packaged = resources.files("kymwatch.service").joinpath("definitions", *name.split("/"))
    if packaged.is_file():
        return packaged.read_bytes()
    return (Path(__file__).resolve().parents[3] / "service" / name).read_bytes()


def command_argv(executable: Executable) -> tuple[str, ...]:
    """The argument prefix that starts kymwatch, checked to be absolute.

    Args:
        executable: A path to the ``kymwatch`` script or an argument tuple.

    Returns:
        The arguments before ``run STORE``.

    Raises:
        UnsupportedPathError: Empty, or the program path is not absolute.
    """
    argv = (str(executable),) if isinstance(executable, Path) else tuple(executable)
    if not argv or not os.path.isabs(argv[0]):
        raise UnsupportedPathError(f"the service program must be an absolute path, got {argv!r}")
    return argv


def _check(text: str, what: str) -> str:
    if _FORBIDDEN.search(text):
        raise UnsupportedPathError(
            f"{what} {text!r} contains a quote, backslash or control character, "
            "which a service file cannot hold safely"
        )
    return text


def _specifiers(text: str) -> str:
    """Escape systemd's ``%`` specifiers."""
    return text.replace("%", "%%")


def _word(text: str, *, expand_env: bool) -> str:
    """One systemd command-line or path-list word, quoted when it needs to be."""
    escaped = _specifiers(text)
    if expand_env:
        escaped = escaped.replace("$", "$$")
    return escaped if _PLAIN_WORD.match(text) else f'"{escaped}"'


def _config_args(config: Path | None) -> list[str]:
    """``--config FILE`` (absolute) for the service's command line, if a file is given."""
    if config is None:
        return []
    return ["--config", _check(str(config.absolute()), "configuration file path")]


def render_systemd_template(executable: Executable, *, user: bool) -> str:
    """The template unit ``kymwatch@.service`` that runs ``kymwatch run %f``.

    Args:
        executable: The absolute ``kymwatch`` script or argument prefix.
        user: The user-manager variant (``systemctl --user``): no file-system
            sandboxing, ``WantedBy=default.target``.

    Returns:
        The unit file text.

    Raises:
        UnsupportedPathError: The program cannot be expressed in a unit.
    """
    argv = [_check(arg, "program argument") for arg in command_argv(executable)]
    program = " ".join(_word(arg, expand_env=True) for arg in argv)
    text = definition(_USER_TEMPLATE if user else _SYSTEM_TEMPLATE).decode("utf-8")
    if text.count(_PROGRAM) != 1:  # a broken definition file: never write half a unit
        raise RuntimeError(f"the systemd template has no single {_PROGRAM} to fill in")
    return text.replace(_PROGRAM, program)


def render_systemd_dropin(
    store: Path, *, user: bool, run_as: str | None = None, config: Path | None = None
) -> str:
    """The drop-in ``kymwatch@<instance>.service.d/kymwatch.conf`` of one dataset.

    It names the dataset (for whoever reads it), for a system service the account
    the daemon runs as (``User=``; None: root), and the configuration file given
    to ``kymwatch run`` (``KYMWATCH_OPTIONS``, which the template's command line
    expands into words).

    Raises:
        UnsupportedPathError: The user name is not a valid account name.
    """
    lines = [
        '# Written by "kymwatch service install" for the kymflow dataset',
        f"#   {' '.join(str(canonical_store(store)).split())}",
        "# Re-run it to regenerate this file; put your own changes in another drop-in.",
        "",
        "[Service]",
    ]
    if not user and run_as is not None:
        if not _USER_NAME.fullmatch(run_as):
            raise UnsupportedPathError(f"invalid user name for User=: {run_as!r}")
        lines.append(f"User={run_as}")
    if config is not None:
        options = " ".join(_config_args(config))
        if len(options.split()) != 2:  # systemd splits $KYMWATCH_OPTIONS on white space
            raise UnsupportedPathError(
                f"configuration file path {str(config)!r} contains white space, "
                "which a systemd drop-in cannot pass as one argument"
            )
        lines.append(f'Environment="KYMWATCH_OPTIONS={_specifiers(options)}"')
    return "\n".join(lines) + "\n"


def launchd_log_path(store: Path, *, user: bool, log_dir: Path | None = None) -> Path:
    """Where a launchd job of ``store`` sends stdout and stderr.

    Args:
        store: The dataset folder.
        user: A per-user agent (``~/Library/Logs/kymwatch``) rather than a
            system daemon (``/Library/Logs/kymwatch``).
        log_dir: Use this folder instead.

    Returns:
        ``<log folder>/<slug>.log``.
    """
    if log_dir is None:
        base = Path.home() / "Library" if user else Path("/Library")
        log_dir = base / "Logs" / "kymwatch"
    return log_dir / f"{service_slug(store)}.log"


def render_launchd_plist(
    store: Path,
    executable: Executable,
    *,
    label: str | None = None,
    user: bool = True,
    log_path: Path | None = None,
    run_as: str | None = None,
    config: Path | None = None,
) -> bytes:
    """The launchd property list that keeps ``kymwatch run STORE`` running.

    It starts at load (``RunAtLoad``), restarts after a failure only
    (``KeepAlive`` = ``{SuccessfulExit: false}``), runs in the store folder as a
    ``Background`` process and appends stdout and stderr to one log file.

    Args:
        store: The dataset folder (made absolute).
        executable: The absolute ``kymwatch`` script or argument prefix.
        label: The job label (default: :func:`~kymwatch.service.naming.launchd_label`).
        user: A LaunchAgent (the default) rather than a LaunchDaemon; chooses
            the default log folder.
        log_path: The stdout/stderr file (default: :func:`launchd_log_path`).
        run_as: ``UserName`` of a system daemon (None: root). Ignored when ``user``.
        config: A configuration file the job passes with ``--config``.

    Returns:
        The XML property list.

    Raises:
        UnsupportedPathError: A path contains control characters.
    """
    store_path = canonical_store(store)
    store_text = _check(str(store_path), "dataset path")
    argv = [_check(arg, "program argument") for arg in command_argv(executable)]
    log_file = log_path if log_path is not None else launchd_log_path(store_path, user=user)
    log_text = _check(str(log_file), "log path")
    job: dict[str, Any] = plistlib.loads(definition(_PLIST_TEMPLATE))
    job["Label"] = label if label is not None else launchd_label(store_path)
    job["ProgramArguments"] = [*argv, "run", store_text, *_config_args(config)]
    job["WorkingDirectory"] = store_text
    job["StandardOutPath"] = log_text
    job["StandardErrorPath"] = log_text
    if not user and run_as is not None:
        job["UserName"] = _check(run_as, "user name")
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True)
