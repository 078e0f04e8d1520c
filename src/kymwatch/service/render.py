"""Render the service files: a systemd unit or a launchd property list.

The templates are package data under ``kymwatch/service/templates/``:
``kymwatch-system.service`` and ``kymwatch-user.service`` (``string.Template``
with ``${...}`` fields) and ``org.kymflow.kymwatch.plist`` (a base property
list that is loaded with :mod:`plistlib`, completed and dumped again, never
edited as text).

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
from string import Template
from typing import Any

from kymwatch.service.errors import UnsupportedPathError
from kymwatch.service.naming import canonical_store, launchd_label, service_slug
from kymwatch.service.naming import systemd_unit_name as _unit_name

__all__ = [
    "Executable",
    "command_argv",
    "launchd_log_path",
    "render_launchd_plist",
    "render_systemd_unit",
]

Executable = Path | tuple[str, ...]
"""The ``kymwatch`` script, or an argument prefix that runs kymwatch."""

_TEMPLATES = "templates"
_SYSTEM_TEMPLATE = "kymwatch-system.service"
_USER_TEMPLATE = "kymwatch-user.service"
_PLIST_TEMPLATE = "org.kymflow.kymwatch.plist"

# Words systemd takes literally without quotes (no whitespace, quotes, backslashes, ;).
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%$+=:,./~-]+$")
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f"\\]')


def _template_text(name: str) -> str:
    return resources.files("kymwatch.service").joinpath(_TEMPLATES, name).read_text("utf-8")


def _template_bytes(name: str) -> bytes:
    return resources.files("kymwatch.service").joinpath(_TEMPLATES, name).read_bytes()


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


def render_systemd_unit(
    store: Path,
    executable: Executable,
    *,
    user: bool,
    run_as: str | None = None,
    config: Path | None = None,
) -> str:
    """The systemd service unit that runs ``kymwatch run STORE [--config FILE]``.

    Args:
        store: The dataset folder (made absolute; it need not exist here).
        executable: The absolute ``kymwatch`` script or argument prefix.
        user: Render the user-manager variant (``systemctl --user``): no
            ``User=``, no file-system sandboxing, ``WantedBy=default.target``.
        run_as: ``User=`` of a system unit (None: root). Ignored when ``user``.
        config: A configuration file the service passes with ``--config``.

    Returns:
        The unit file text.

    Raises:
        UnsupportedPathError: A path or the user name cannot be expressed in a unit.
    """
    store_path = canonical_store(store)
    store_text = _check(str(store_path), "dataset path")
    argv = [_check(arg, "program argument") for arg in command_argv(executable)]
    run = [*argv, "run", store_text, *_config_args(config)]
    exec_start = " ".join(_word(arg, expand_env=True) for arg in run)
    run_as_lines = ""
    if not user and run_as is not None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?", run_as):
            raise UnsupportedPathError(f"invalid user name for User=: {run_as!r}")
        run_as_lines = f"User={run_as}\n"
    template = Template(_template_text(_USER_TEMPLATE if user else _SYSTEM_TEMPLATE))
    return template.substitute(
        store_comment=store_text,
        store_text=_specifiers(store_text),
        store_arg=_word(store_text, expand_env=False),
        exec_start=exec_start,
        run_as_lines=run_as_lines,
        unit_name=_unit_name(store_path),
    )


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
    job: dict[str, Any] = plistlib.loads(_template_bytes(_PLIST_TEMPLATE))
    job["Label"] = label if label is not None else launchd_label(store_path)
    job["ProgramArguments"] = [*argv, "run", store_text, *_config_args(config)]
    job["WorkingDirectory"] = store_text
    job["StandardOutPath"] = log_text
    job["StandardErrorPath"] = log_text
    if not user and run_as is not None:
        job["UserName"] = _check(run_as, "user name")
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True)
