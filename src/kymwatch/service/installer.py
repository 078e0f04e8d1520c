"""Install and uninstall the service of a dataset.

systemd: ``install`` writes the template unit ``kymwatch@.service`` (shared by every
dataset) and the dataset's drop-in ``kymwatch@<instance>.service.d/kymwatch.conf``,
the instance being the store's path escaped as ``systemd-escape --path`` does;
``uninstall`` removes the drop-in, and the template once no dataset uses it.
launchd (no templates): one property list per dataset. Files are written
atomically (mode 0644) where the service manager looks for them. It never talks
to the service manager itself: it returns the exact command to run next
(``systemctl ... enable --now`` / ``launchctl bootstrap``), so an administrator
sees and controls each step, and tests need no init system.

The default folders are listed in :mod:`kymwatch.service.locate`; launchd jobs
log to ``~/Library/Logs/kymwatch`` (agents) or ``/Library/Logs/kymwatch`` (daemons).

A system service runs as the owner of the dataset folder (``User=`` /
``UserName``) unless that owner is root or ``run_as`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kymwatch.service.errors import ServiceNotInstalledError
from kymwatch.service.locate import (
    Manager,
    check_executable,
    check_user,
    default_executable,
    default_unit_dir,
    detect_manager,
    store_owner,
    validate_store,
)
from kymwatch.service.naming import (
    SYSTEMD_TEMPLATE,
    canonical_store,
    launchd_label,
    service_slug,
    systemd_unit_name,
)
from kymwatch.service.render import (
    Executable,
    launchd_log_path,
    render_launchd_plist,
    render_systemd_dropin,
    render_systemd_template,
)
from kymwatch.settings import load_file
from kymwatch.store import atomic_write

__all__ = [
    "InstallResult",
    "install",
    "uninstall",
]

_FILE_MODE = 0o644


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What ``install`` or ``uninstall`` did, and what the administrator runs next.

    Attributes:
        action: ``"install"`` or ``"uninstall"``.
        manager: ``"systemd"`` or ``"launchd"``.
        user: A per-user service (``systemctl --user`` / LaunchAgent).
        store: The canonical dataset path.
        name: The systemd unit name or the launchd label.
        path: The service file written, to be written, or removed.
        content: The rendered file (empty for ``uninstall``).
        dry_run: Nothing was written or removed.
        changed: The file on disk was created, replaced or removed.
        next_command: The shell command to run next.
        notes: Further hints, one sentence each.
        files: Every file written, to be written, or removed (``path`` first; for
            systemd also the dataset's drop-in).
    """

    action: Literal["install", "uninstall"]
    manager: Manager
    user: bool
    store: Path
    name: str
    path: Path
    content: str
    dry_run: bool
    changed: bool
    next_command: str
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()


DROPIN = "kymwatch.conf"
"""The dataset's drop-in in ``kymwatch@<instance>.service.d/``."""


def _systemctl(user: bool) -> str:
    return "systemctl --user" if user else "systemctl"


def _launchd_domain(user: bool) -> str:
    return "gui/$(id -u)" if user else "system"


def _write_file(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    atomic_write(path, write)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rendered files of one manager and the commands around it."""

    name: str
    files: tuple[tuple[Path, bytes], ...]
    next_command: str
    notes: tuple[str, ...]
    replaced_note: str
    log_file: Path | None = None


def _plan_systemd(
    store: Path,
    executable: Executable,
    folder: Path,
    *,
    user: bool,
    run_as: str | None,
    config: Path | None,
) -> _Plan:
    name = systemd_unit_name(store)
    ctl = _systemctl(user)
    journal = "journalctl --user" if user else "journalctl"
    quoted = shlex.quote(name)
    notes = [
        f"Check it with: {ctl} status {quoted}; logs: {journal} -u {quoted}",
        "The instance is the dataset's path, escaped: "
        f"systemd-escape --path {shlex.quote(str(store))}",
    ]
    if user:
        notes.append(
            "A user service stops when you log out and starts only at login unless "
            "lingering is enabled: loginctl enable-linger $USER"
        )
    legacy = folder / f"kymwatch-{service_slug(store)}.service"
    if legacy.is_file():
        notes.append(
            f"An older kymwatch unit of this dataset exists; stop and remove it: "
            f"{ctl} disable --now {legacy.name} && rm {shlex.quote(str(legacy))}"
        )
    template = render_systemd_template(executable, user=user).encode("utf-8")
    dropin = render_systemd_dropin(store, user=user, run_as=run_as, config=config).encode("utf-8")
    return _Plan(
        name=name,
        files=((folder / SYSTEMD_TEMPLATE, template), (folder / f"{name}.d" / DROPIN, dropin)),
        next_command=f"{ctl} daemon-reload && {ctl} enable --now {quoted}",
        notes=tuple(notes),
        replaced_note="It replaced an older unit or drop-in; if the service runs, restart it: "
        f"{ctl} daemon-reload && {ctl} restart {quoted}",
    )


def _plan_launchd(
    store: Path,
    executable: Executable,
    folder: Path,
    *,
    user: bool,
    run_as: str | None,
    log_file: Path,
    config: Path | None,
) -> _Plan:
    name = launchd_label(store)
    target = folder / f"{name}.plist"
    domain = _launchd_domain(user)
    data = render_launchd_plist(
        store, executable, label=name, user=user, log_path=log_file, run_as=run_as, config=config
    )
    return _Plan(
        name=name,
        files=((target, data),),
        next_command=f"launchctl bootstrap {domain} {shlex.quote(str(target))}",
        notes=(
            f"Check it with: launchctl print {domain}/{name}; stdout and stderr go to {log_file}",
        ),
        replaced_note="It replaced an older job; if it is loaded, unload it before the "
        f"bootstrap: launchctl bootout {domain}/{name}",
        log_file=log_file,
    )


def install(
    store: str | os.PathLike[str],
    *,
    manager: Manager | None = None,
    user: bool = False,
    dry_run: bool = False,
    executable: Executable | None = None,
    unit_dir: Path | None = None,
    log_dir: Path | None = None,
    run_as: str | None = None,
    config: Path | None = None,
) -> InstallResult:
    """Write the service file of a dataset (or only render it, with ``dry_run``).

    Args:
        store: The dataset folder; it must exist and be a kymflow dataset.
        manager: ``"systemd"`` or ``"launchd"``; None picks the platform's.
        user: A per-user service instead of a system-wide one.
        dry_run: Render and report, but write nothing.
        executable: The kymwatch program (default: :func:`default_executable`).
        unit_dir: Write here instead of :func:`default_unit_dir`.
        log_dir: launchd only: the stdout/stderr folder (see
            :func:`~kymwatch.service.render.launchd_log_path`).
        run_as: The account of a system service (default: the dataset's owner,
            root if it is owned by root). Ignored for user services.
        config: A configuration file the service passes to ``kymwatch run`` with
            ``--config`` (checked here; made absolute).

    Returns:
        What was (or would be) written where, and the command to run next.

    Raises:
        StoreNotFoundError: The dataset does not exist.
        NotAStoreError: The path is not a kymflow dataset.
        ExecutableNotFoundError: The program does not exist.
        UnsupportedPlatformError: No manager given and none detected.
        UnsupportedPathError: A path cannot be written into a service file.
        UnknownUserError: ``run_as`` is no account of this machine.
        OSError: The file cannot be written (e.g. no permission on a system folder).
    """
    path = validate_store(store)
    if run_as is not None:
        check_user(run_as)
    manager = detect_manager() if manager is None else manager
    executable = default_executable() if executable is None else executable
    check_executable(executable)
    if config is not None:
        config = config.absolute()
        load_file(config)  # a bad file fails here, not at every service start
    folder = default_unit_dir(manager, user=user) if unit_dir is None else unit_dir
    account = None if user else (run_as if run_as is not None else store_owner(path))
    if account == "root":
        account = None
    if manager == "systemd":
        plan = _plan_systemd(path, executable, folder, user=user, run_as=account, config=config)
    else:
        log_file = launchd_log_path(path, user=user, log_dir=log_dir)
        plan = _plan_launchd(
            path, executable, folder, user=user, run_as=account, log_file=log_file, config=config
        )
    notes = list(plan.notes)
    changed_files = []
    for target, data in plan.files:
        previous = target.read_bytes() if target.is_file() else None
        if previous != data:
            changed_files.append((target, data))
            if previous is not None and plan.replaced_note not in notes:
                notes.append(plan.replaced_note)
    if not dry_run:
        for target, data in changed_files:
            _write_file(target, data)
        if plan.log_file is not None:
            plan.log_file.parent.mkdir(parents=True, exist_ok=True)
    main_file, main_data = plan.files[0]
    return InstallResult(
        action="install",
        manager=manager,
        user=user,
        store=path,
        name=plan.name,
        path=main_file,
        content=main_data.decode("utf-8"),
        dry_run=dry_run,
        changed=bool(changed_files) and not dry_run,
        next_command=plan.next_command,
        notes=tuple(notes),
        files=tuple(f for f, _ in plan.files),
    )


def uninstall(
    store: str | os.PathLike[str],
    *,
    manager: Manager | None = None,
    user: bool = False,
    dry_run: bool = False,
    unit_dir: Path | None = None,
) -> InstallResult:
    """Remove the service file of a dataset (the dataset itself need not exist any more).

    Args:
        store: The dataset folder the service was installed for.
        manager: ``"systemd"`` or ``"launchd"``; None picks the platform's.
        user: The per-user service rather than the system-wide one.
        dry_run: Report what would be removed, but remove nothing.
        unit_dir: Look here instead of :func:`default_unit_dir`.

    Returns:
        What was (or would be) removed, and the command that stops and
        unregisters the service.

    Raises:
        ServiceNotInstalledError: There is no such service file.
        UnsupportedPlatformError: No manager given and none detected.
        OSError: The file cannot be removed.
    """
    path = canonical_store(store)
    manager = detect_manager() if manager is None else manager
    folder = default_unit_dir(manager, user=user) if unit_dir is None else unit_dir
    notes: list[str] = []
    if manager == "systemd":
        name = systemd_unit_name(path)
        target = folder / f"{name}.d" / DROPIN
        ctl = _systemctl(user)
        next_command = f"{ctl} disable --now {shlex.quote(name)} && {ctl} daemon-reload"
    else:
        name = launchd_label(path)
        target = folder / f"{name}.plist"
        next_command = f"launchctl bootout {_launchd_domain(user)}/{name}"
    if not target.is_file():
        scope = "user" if user else "system"
        raise ServiceNotInstalledError(
            f"no {scope} {manager} service installed for {store} (looked for {target})"
        )
    files = [target]
    if manager == "systemd":
        others = [d for d in folder.glob(f"kymwatch@*.service.d/{DROPIN}") if d != target]
        template = folder / SYSTEMD_TEMPLATE
        if others:
            n = len(others)
            notes.append(
                f"{SYSTEMD_TEMPLATE} stays: {n} other dataset{'s' if n != 1 else ''} use it"
            )
        elif template.is_file():
            files.append(template)
    if not dry_run:
        for f in files:
            f.unlink()
        if manager == "systemd":
            with contextlib.suppress(OSError):  # kept if someone put a drop-in of theirs there
                target.parent.rmdir()
    return InstallResult(
        action="uninstall",
        manager=manager,
        user=user,
        store=path,
        name=name,
        path=target,
        content="",
        dry_run=dry_run,
        changed=not dry_run,
        next_command=next_command,
        notes=tuple(notes),
        files=tuple(files),
    )
