"""Where things are: the platform's service manager, its folders, the kymwatch program.

Default service-file folders:

=========  ==========  ======================================================
manager    scope       folder
=========  ==========  ======================================================
systemd    system      ``/etc/systemd/system``
systemd    ``--user``  ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/...``)
launchd    system      ``/Library/LaunchDaemons``
launchd    ``--user``  ``~/Library/LaunchAgents``
=========  ==========  ======================================================
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from kymwatch.errors import NotAStoreError, StoreNotFoundError
from kymwatch.service.errors import (
    ExecutableNotFoundError,
    UnknownUserError,
    UnsupportedPlatformError,
)
from kymwatch.service.naming import canonical_store
from kymwatch.service.render import Executable, command_argv
from kymwatch.store import check_not_inside_dataset, detect_zarr_format, scan_root

__all__ = [
    "Manager",
    "check_executable",
    "check_user",
    "default_executable",
    "default_unit_dir",
    "detect_manager",
    "store_owner",
    "validate_store",
]

Manager = Literal["systemd", "launchd"]
"""The supported service managers."""


def detect_manager(platform: str | None = None) -> Manager:
    """The service manager of this platform: launchd on macOS, systemd on Linux.

    Raises:
        UnsupportedPlatformError: Any other platform.
    """
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise UnsupportedPlatformError(
        f"no supported service manager on {platform!r} (kymwatch supports systemd and launchd)"
    )


def default_unit_dir(
    manager: Manager, *, user: bool, environ: Mapping[str, str] = os.environ
) -> Path:
    """The folder the service manager reads service files from (see module doc)."""
    if manager == "launchd":
        return Path.home() / "Library" / "LaunchAgents" if user else Path("/Library/LaunchDaemons")
    if not user:
        return Path("/etc/systemd/system")
    config = environ.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def default_executable() -> Executable:
    """The absolute command that starts this kymwatch installation.

    In order: ``sys.argv[0]`` when it is the ``kymwatch`` script being run; the
    ``kymwatch`` script next to the running interpreter (same environment);
    ``kymwatch`` on ``PATH``; else ``(<sys.executable>, "-m", "kymwatch")``.
    Symlinks are kept (a pipx link survives upgrades of its target).
    """
    if sys.argv and sys.argv[0]:
        argv0 = Path(sys.argv[0])
        if argv0.name == "kymwatch" and argv0.is_file():
            return Path(os.path.abspath(argv0))
    if sys.executable:
        sibling = Path(sys.executable).with_name("kymwatch")
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return Path(os.path.abspath(sibling))
    found = shutil.which("kymwatch")
    if found:
        return Path(os.path.abspath(found))
    if not sys.executable:
        raise ExecutableNotFoundError("cannot find the kymwatch program or the Python interpreter")
    return (os.path.abspath(sys.executable), "-m", "kymwatch")


def validate_store(store: str | os.PathLike[str]) -> Path:
    """The canonical path of an existing kymflow dataset, or of a folder of datasets
    (one that holds a store now, in it or one level below: ``kymwatch run ROOT``).

    Raises:
        StoreNotFoundError: The path does not exist.
        NotAStoreError: It is not a folder with ``.zgroup`` or ``zarr.json`` nor one
            holding such a dataset, or it lies inside a dataset (``STORE/images``, a
            record folder).
    """
    path = canonical_store(store)
    if not path.exists():
        raise StoreNotFoundError(f"dataset not found: {store}")
    check_not_inside_dataset(path)
    if path.is_dir() and detect_zarr_format(path) is None and scan_root(path).stores:
        return path
    if not path.is_dir() or detect_zarr_format(path) is None:
        raise NotAStoreError(
            f"not a kymflow dataset (no .zgroup or zarr.json) nor a folder of datasets: {store}"
        )
    return path


def check_executable(executable: Executable) -> None:
    """Raise unless the program of ``executable`` is an executable file.

    Raises:
        ExecutableNotFoundError: It is missing or not executable.
        UnsupportedPathError: It is not absolute.
    """
    program = Path(command_argv(executable)[0])
    if not program.is_file() or not os.access(program, os.X_OK):
        raise ExecutableNotFoundError(f"not an executable file: {program}")


def store_owner(path: Path) -> str | None:
    """The account name owning ``path`` (its uid if unnamed), or None when it is root."""
    uid = path.stat().st_uid
    if uid == 0:
        return None
    try:
        import pwd
    except ImportError:  # pragma: no cover - no pwd outside POSIX
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_user(name: str) -> None:
    """Raise UnknownUserError unless ``name`` is an account of this machine."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        raise UnknownUserError(
            f"--run-as {name}: no such user on this machine (create it first, or leave "
            "--run-as out to run as the owner of the dataset)"
        ) from None
