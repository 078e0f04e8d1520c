"""Tests for ``kymwatch service``: naming, rendering, install/uninstall and the CLI glue."""

from __future__ import annotations

import argparse
import io
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kymwatch.errors import NotAStoreError, StoreNotFoundError
from kymwatch.service import (
    ExecutableNotFoundError,
    Manager,
    ServiceNotInstalledError,
    UnsupportedPathError,
    UnsupportedPlatformError,
    add_service_parser,
    default_executable,
    default_unit_dir,
    detect_manager,
    install,
    launchd_label,
    render_launchd_plist,
    render_systemd_dropin,
    render_systemd_template,
    run_service_command,
    service_slug,
    systemd_escape_path,
    systemd_unit_name,
    uninstall,
)
from kymwatch.service.installer import DROPIN

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_ESCAPE = shutil.which("systemd-escape")
REPO = Path(__file__).resolve().parents[1]


def _make_store(path: Path, marker: str = ".zgroup") -> Path:
    path.mkdir(parents=True)
    (path / marker).write_text('{"zarr_format": 2}', encoding="utf-8")
    return path


def _make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A minimal kymflow (zarr v2) dataset folder."""
    return _make_store(tmp_path / "data" / "exp1.zarr")


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """An executable stand-in for the installed kymwatch script."""
    return _make_executable(tmp_path / "bin" / "kymwatch")


def _directives(unit: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file into section → key → values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kymwatch")
    add_service_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = run_service_command(parser.parse_args(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# --- naming -------------------------------------------------------------------------


def test_slug_is_stable_readable_and_safe(store: Path) -> None:
    """The slug is the folder name in [a-z0-9-] plus 8 hex digits, the same every time."""
    slug = service_slug(store)
    assert re.fullmatch(r"exp1-zarr-[0-9a-f]{8}", slug)
    assert service_slug(store) == slug
    assert systemd_unit_name(store) == f"kymwatch@{systemd_escape_path(store)}.service"
    assert launchd_label(store) == f"org.kymflow.kymwatch.{slug}"


def test_same_folder_name_in_two_places_gets_two_names(tmp_path: Path) -> None:
    """Two stores with the same folder name get different names (the hash differs)."""
    a = _make_store(tmp_path / "a" / "exp.zarr")
    b = _make_store(tmp_path / "b" / "exp.zarr")
    assert service_slug(a) != service_slug(b)


def test_every_spelling_of_a_store_gets_one_name(store: Path, tmp_path: Path) -> None:
    """Relative, dotted and symlinked spellings of one store give the same name."""
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    dotted = store.parent / ".." / store.parent.name / store.name
    assert service_slug(link) == service_slug(dotted) == service_slug(store)


def test_slug_of_unusual_names(tmp_path: Path) -> None:
    """Accents are folded, punctuation becomes dashes, and a nameless path still gets a slug."""
    assert service_slug(tmp_path / "Données Été!.zarr").startswith("donnees-ete-zarr-")
    assert re.fullmatch(r"store-[0-9a-f]{8}", service_slug(tmp_path / "日本"))
    long_slug = service_slug(tmp_path / ("x" * 200))
    assert len(long_slug) <= 32 + 1 + 8


ODD_PATHS = ["/data/lab/Exp 1-a.zarr", "/tmp/.x/ü", "/a//b/", "/.hidden/x", "/100% $HOME.zarr"]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_instance_is_the_path_escaped_as_systemd_escape_does(path: str) -> None:
    """The instance of ``kymwatch@.service`` is ``systemd-escape --path STORE`` (checked
    against the real tool where it is installed) and unescapes to the path."""
    escaped = systemd_escape_path(path)
    assert "/" not in escaped and " " not in escaped
    if SYSTEMD_ESCAPE is None:
        pytest.skip("systemd-escape is not installed")
    tool = subprocess.run([SYSTEMD_ESCAPE, "--path", path], capture_output=True, text=True)
    assert escaped == tool.stdout.strip()
    back = subprocess.run(
        [SYSTEMD_ESCAPE, "--unescape", "--path", escaped], capture_output=True, text=True
    )
    assert back.stdout.strip() == os.path.normpath(path)


def test_a_path_too_long_for_a_unit_name_is_refused(tmp_path: Path) -> None:
    """A path whose escaped form exceeds systemd's 255-byte unit names raises."""
    with pytest.raises(UnsupportedPathError, match="too long"):
        systemd_unit_name(tmp_path / ("ü" * 100))


# --- systemd rendering --------------------------------------------------------------


def test_system_unit_has_the_required_directives(store: Path, exe: Path) -> None:
    """The system unit is Type=notify with watchdog, restart policy and hardening."""
    unit = _directives(render_systemd_template(exe, user=False))
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == [f"{exe} run %f $KYMWATCH_OPTIONS"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["10s"]
    assert service["WatchdogSec"] == ["30s"]
    assert service["TimeoutStopSec"] == ["30s"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == ["%f"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["PrivateTmp"] == ["yes"]
    assert service["StandardOutput"] == ["journal"]
    assert "User" not in service
    assert unit["Unit"]["RequiresMountsFor"] == ["%f"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_system_unit_runs_as_the_given_account(store: Path) -> None:
    """run_as becomes User= in the dataset's drop-in of a system unit, not of a user unit."""
    dropin = _directives(render_systemd_dropin(store, user=False, run_as="lab"))
    assert dropin["Service"]["User"] == ["lab"]
    assert (
        "User" not in _directives(render_systemd_dropin(store, user=True, run_as="lab"))["Service"]
    )
    assert str(store) in render_systemd_dropin(store, user=False)
    with pytest.raises(UnsupportedPathError):
        render_systemd_dropin(store, user=False, run_as="bad user")


def test_user_unit_is_notify_without_namespace_sandboxing(store: Path, exe: Path) -> None:
    """The user unit keeps notify/watchdog/restart but no sandboxing needing user namespaces."""
    unit = _directives(render_systemd_template(exe, user=True))
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] == ["30s"]
    assert service["ExecStart"] == [f"{exe} run %f $KYMWATCH_OPTIONS"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert "ProtectSystem" not in service
    assert "PrivateTmp" not in service
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_module_form_of_the_program(store: Path) -> None:
    """An argument tuple such as (python, -m, kymwatch) is placed before ``run STORE``."""
    unit = render_systemd_template(("/usr/bin/python3", "-m", "kymwatch"), user=False)
    assert _directives(unit)["Service"]["ExecStart"] == [
        "/usr/bin/python3 -m kymwatch run %f $KYMWATCH_OPTIONS"
    ]


def test_paths_with_spaces_and_specials_are_quoted_and_escaped(tmp_path: Path) -> None:
    """A program path with spaces is quoted, ``%`` and ``$`` doubled; the dataset's path,
    whatever it holds, reaches the unit only as its escaped instance."""
    store = _make_store(tmp_path / "my data" / "100% $HOME.zarr")
    exe = _make_executable(tmp_path / "bin dir %i $X" / "kymwatch")
    service = _directives(render_systemd_template(exe, user=False))["Service"]
    quoted = f'"{exe}"'.replace("%", "%%").replace("$", "$$")
    assert service["ExecStart"] == [f"{quoted} run %f $KYMWATCH_OPTIONS"]
    name = systemd_unit_name(store)
    assert "\\x20" in name and "\\x25" in name and "\\x24" in name


def test_relative_program_is_rejected(store: Path) -> None:
    """A relative program path raises: systemd refuses a relative ExecStart."""
    with pytest.raises(UnsupportedPathError, match="absolute"):
        render_systemd_template(("kymwatch",), user=False)


def test_paths_with_quotes_or_control_characters_are_rejected(tmp_path: Path, exe: Path) -> None:
    """Quotes, backslashes and control characters cannot be written safely, so they raise."""
    for name in ['say "hi"', "back\\slash", "new\nline"]:
        with pytest.raises(UnsupportedPathError):
            render_systemd_template(tmp_path / name / "kymwatch", user=False)
    with pytest.raises(UnsupportedPathError):
        render_launchd_plist(tmp_path / "new\nline.zarr", exe)


def _verify(unit_file: Path, *, user: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = dict(os.environ)
    command = [SYSTEMD_ANALYZE]
    if user:
        runtime = tmp_path / "xdg-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        command.append("--user")
    command += ["verify", str(unit_file)]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


@pytest.mark.integration
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("odd_paths", [False, True], ids=["plain", "spaces-and-percent"])
def test_rendered_unit_passes_systemd_analyze_verify(
    tmp_path: Path, user: bool, odd_paths: bool
) -> None:
    """``systemd-analyze [--user] verify`` accepts the store's instance of the template
    unit with its drop-in, finding its executable."""
    if odd_paths:
        store = _make_store(tmp_path / "lab data" / "run 100%.zarr")
        exe = _make_executable(tmp_path / "my venv %i" / "bin" / "kymwatch")
    else:
        store = _make_store(tmp_path / "data" / "exp1.zarr")
        exe = _make_executable(tmp_path / "venv" / "bin" / "kymwatch")
    unit_dir = tmp_path / "units"
    result = install(store, manager="systemd", user=user, executable=exe, unit_dir=unit_dir)
    assert result.path == unit_dir / "kymwatch@.service"
    proc = _verify(unit_dir / result.name, user=user, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    about_ours = [line for line in proc.stderr.splitlines() if result.name in line]
    assert about_ours == []


@pytest.mark.integration
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_verify_catches_a_missing_executable(store: Path, tmp_path: Path) -> None:
    """The verify check is meaningful: a unit whose program is missing fails it."""
    (tmp_path / "kymwatch@.service").write_text(
        render_systemd_template(tmp_path / "missing" / "kymwatch", user=False), encoding="utf-8"
    )
    proc = _verify(tmp_path / systemd_unit_name(store), user=False, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "missing/kymwatch" in proc.stderr


# --- launchd rendering --------------------------------------------------------------


def test_plist_has_the_required_keys(store: Path, exe: Path, tmp_path: Path) -> None:
    """The plist parses and restarts on failure only, runs in the store and logs to a file."""
    log = tmp_path / "logs" / "k.log"
    job = plistlib.loads(render_launchd_plist(store, exe, log_path=log))
    assert job["Label"] == launchd_label(store)
    assert job["ProgramArguments"] == [str(exe), "run", str(store)]
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["StandardOutPath"] == str(log)
    assert job["StandardErrorPath"] == str(log)
    assert job["WorkingDirectory"] == str(store)
    assert job["ProcessType"] == "Background"
    assert "UserName" not in job


def test_plist_label_and_system_account(store: Path, exe: Path) -> None:
    """A custom label is used; a system daemon gets UserName and logs under /Library/Logs."""
    job = plistlib.loads(
        render_launchd_plist(store, exe, label="org.example.k", user=False, run_as="lab")
    )
    assert job["Label"] == "org.example.k"
    assert job["UserName"] == "lab"
    assert job["StandardOutPath"].startswith("/Library/Logs/kymwatch/")


def test_plist_default_log_is_in_the_users_library(store: Path, exe: Path) -> None:
    """A LaunchAgent logs to ~/Library/Logs/kymwatch/<slug>.log by default."""
    job = plistlib.loads(render_launchd_plist(store, exe))
    expected = Path.home() / "Library" / "Logs" / "kymwatch" / f"{service_slug(store)}.log"
    assert job["StandardOutPath"] == str(expected)


# --- install / uninstall ------------------------------------------------------------


def test_install_user_systemd_writes_unit_and_next_command(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """install writes the template unit and the dataset's drop-in (mode 0644) and returns
    the systemctl --user command for the store's instance."""
    unit_dir = tmp_path / "units"
    result = install(store, manager="systemd", user=True, executable=exe, unit_dir=unit_dir)
    name = systemd_unit_name(store)
    assert result.path == unit_dir / "kymwatch@.service"
    assert result.files == (result.path, unit_dir / f"{name}.d" / DROPIN)
    assert result.path.read_text(encoding="utf-8") == result.content
    assert result.content == render_systemd_template(exe, user=True)
    assert result.files[1].read_text() == render_systemd_dropin(store, user=True)
    for f in result.files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o022 == 0
    assert result.changed and not result.dry_run
    assert result.next_command == (
        f"systemctl --user daemon-reload && systemctl --user enable --now {shlex.quote(name)}"
    )
    assert any("enable-linger" in note for note in result.notes)


def test_install_system_systemd_next_command(store: Path, exe: Path, tmp_path: Path) -> None:
    """A system install's next command is plain systemctl daemon-reload + enable --now."""
    result = install(store, manager="systemd", executable=exe, unit_dir=tmp_path / "u")
    name = systemd_unit_name(store)
    assert result.next_command == (
        f"systemctl daemon-reload && systemctl enable --now {shlex.quote(name)}"
    )
    assert (tmp_path / "u" / f"{name}.d" / DROPIN).is_file()


def test_install_launchd_writes_plist_and_log_folder(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """A launchd install writes <label>.plist, creates the log folder, returns bootstrap."""
    unit_dir, log_dir = tmp_path / "LaunchAgents", tmp_path / "Logs"
    result = install(
        store, manager="launchd", user=True, executable=exe, unit_dir=unit_dir, log_dir=log_dir
    )
    label = launchd_label(store)
    assert result.path == unit_dir / f"{label}.plist"
    job = plistlib.loads(result.path.read_bytes())
    assert job["Label"] == label
    assert log_dir.is_dir()
    assert result.next_command == f"launchctl bootstrap gui/$(id -u) {result.path}"


def test_dry_run_writes_nothing(store: Path, exe: Path, tmp_path: Path) -> None:
    """install(dry_run=True) renders and reports but creates no file or folder."""
    unit_dir, log_dir = tmp_path / "units", tmp_path / "logs"
    managers: tuple[Manager, ...] = ("systemd", "launchd")
    for manager in managers:
        result = install(
            store,
            manager=manager,
            user=True,
            dry_run=True,
            executable=exe,
            unit_dir=unit_dir,
            log_dir=log_dir,
        )
        assert result.dry_run and not result.changed
        assert result.content
    assert not unit_dir.exists()
    assert not log_dir.exists()


def test_reinstall_reports_unchanged_or_replaced(store: Path, exe: Path, tmp_path: Path) -> None:
    """Re-installing an identical unit changes nothing; a new program replaces it (restart hint)."""
    unit_dir = tmp_path / "units"
    install(store, manager="systemd", executable=exe, unit_dir=unit_dir)
    again = install(store, manager="systemd", executable=exe, unit_dir=unit_dir)
    assert not again.changed
    other = _make_executable(tmp_path / "other" / "kymwatch")
    replaced = install(store, manager="systemd", executable=other, unit_dir=unit_dir)
    assert replaced.changed
    assert any("restart" in note for note in replaced.notes)
    assert str(other) in replaced.path.read_text(encoding="utf-8")


def test_uninstall_removes_the_unit(store: Path, exe: Path, tmp_path: Path) -> None:
    """uninstall deletes the dataset's drop-in and the template no other dataset uses, and
    returns disable --now + daemon-reload."""
    unit_dir = tmp_path / "units"
    installed = install(store, manager="systemd", user=True, executable=exe, unit_dir=unit_dir)
    result = uninstall(store, manager="systemd", user=True, unit_dir=unit_dir)
    assert result.path == installed.files[1]
    assert result.files == (installed.files[1], installed.path)
    assert list(unit_dir.iterdir()) == []
    assert result.next_command == (
        f"systemctl --user disable --now {shlex.quote(installed.name)} && "
        "systemctl --user daemon-reload"
    )
    with pytest.raises(ServiceNotInstalledError):
        uninstall(store, manager="systemd", user=True, unit_dir=unit_dir)


def test_uninstall_dry_run_keeps_the_file(store: Path, exe: Path, tmp_path: Path) -> None:
    """uninstall(dry_run=True) reports the file but leaves it in place."""
    unit_dir = tmp_path / "units"
    installed = install(
        store, manager="launchd", executable=exe, unit_dir=unit_dir, log_dir=tmp_path / "logs"
    )
    result = uninstall(store, manager="launchd", unit_dir=unit_dir, dry_run=True)
    assert installed.path.is_file()
    assert not result.changed
    assert result.next_command == f"launchctl bootout system/{installed.name}"


def test_uninstall_keeps_the_template_while_another_dataset_uses_it(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """Two datasets share kymwatch@.service: removing one keeps it (with a note), removing
    the other removes it."""
    unit_dir = tmp_path / "units"
    other = _make_store(tmp_path / "data" / "exp2.zarr")
    first = install(store, manager="systemd", executable=exe, unit_dir=unit_dir)
    second = install(other, manager="systemd", executable=exe, unit_dir=unit_dir)
    assert not second.changed or second.files[1] != first.files[1]
    gone = uninstall(store, manager="systemd", unit_dir=unit_dir)
    assert first.path.is_file() and not first.files[1].exists()
    assert any("1 other dataset" in note for note in gone.notes)
    uninstall(other, manager="systemd", unit_dir=unit_dir)
    assert list(unit_dir.iterdir()) == []


def test_uninstall_after_the_store_is_gone(store: Path, exe: Path, tmp_path: Path) -> None:
    """A service can be removed after its dataset was deleted."""
    unit_dir = tmp_path / "units"
    installed = install(store, manager="systemd", executable=exe, unit_dir=unit_dir)
    shutil.rmtree(store)
    uninstall(store, manager="systemd", unit_dir=unit_dir)
    assert not installed.path.exists() and not installed.files[1].exists()


def test_install_rejects_bad_stores_and_programs(tmp_path: Path, exe: Path) -> None:
    """A missing store, a non-dataset folder and a missing program raise typed errors."""
    units = tmp_path / "units"
    with pytest.raises(StoreNotFoundError):
        install(tmp_path / "nope", manager="systemd", executable=exe, unit_dir=units)
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAStoreError):
        install(tmp_path / "plain", manager="systemd", executable=exe, unit_dir=units)
    store = _make_store(tmp_path / "v3.zarr", marker="zarr.json")
    with pytest.raises(ExecutableNotFoundError):
        install(store, manager="systemd", executable=tmp_path / "no-such", unit_dir=units)
    assert not units.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the store another owner")
def test_system_service_runs_as_the_store_owner(store: Path, exe: Path, tmp_path: Path) -> None:
    """By default a system service gets User= of the store's owner (in its drop-in)."""
    os.chown(store, 65534, 65534)
    result = install(store, manager="systemd", executable=exe, unit_dir=tmp_path / "u")
    users = _directives(result.files[1].read_text())["Service"]["User"]
    assert len(users) == 1 and users[0] != "root"


def test_default_locations(tmp_path: Path) -> None:
    """Default folders follow each manager's conventions, including XDG_CONFIG_HOME."""
    assert default_unit_dir("systemd", user=False) == Path("/etc/systemd/system")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert default_unit_dir("systemd", user=True, environ=env) == tmp_path / "systemd" / "user"
    assert default_unit_dir("systemd", user=True, environ={}) == (
        Path.home() / ".config" / "systemd" / "user"
    )
    assert default_unit_dir("launchd", user=False) == Path("/Library/LaunchDaemons")
    assert default_unit_dir("launchd", user=True) == Path.home() / "Library" / "LaunchAgents"


def test_manager_detection() -> None:
    """macOS means launchd, Linux systemd, anything else is unsupported."""
    assert detect_manager("darwin") == "launchd"
    assert detect_manager("linux") == "systemd"
    with pytest.raises(UnsupportedPlatformError):
        detect_manager("win32")


def test_default_executable_is_absolute_and_exists() -> None:
    """The default program is an absolute, existing path (script or python -m kymwatch)."""
    found = default_executable()
    program = Path(found if isinstance(found, Path) else found[0])
    assert program.is_absolute()
    assert program.is_file()


# --- CLI glue -----------------------------------------------------------------------


def test_cli_install_prints_path_and_next_command(store: Path, exe: Path, tmp_path: Path) -> None:
    """``service install`` writes the file and prints where and what to run next."""
    unit_dir = tmp_path / "units"
    argv = ["service", "install", str(store), "--user", "--systemd"]
    code, out, err = _run_cli([*argv, "--unit-dir", str(unit_dir), "--executable", str(exe)])
    name = systemd_unit_name(store)
    assert code == 0, err
    assert f"Wrote {unit_dir / 'kymwatch@.service'}" in out
    assert f"Wrote {unit_dir / (name + '.d') / DROPIN}" in out
    enable = f"systemctl --user enable --now {shlex.quote(name)}"
    assert f"Next: systemctl --user daemon-reload && {enable}" in out
    assert err == ""


def _make_root(path: Path) -> Path:
    """A folder of stores: one in it, one a level below (marker and images/ each)."""
    for store in (path / "exp1.zarr", path / "2026-11" / "exp2.zarr"):
        _make_store(store)
        (store / "images").mkdir()
    return path


def test_install_root_renders_one_unit_for_every_store(tmp_path: Path, exe: Path) -> None:
    """``service install ROOT`` makes one template instance for ROOT (``%f`` is ROOT: it
    runs ``kymwatch run ROOT`` and may write the whole folder); the plist does the same."""
    root = _make_root(tmp_path / "lab data")
    units = tmp_path / "units"
    result = install(root, manager="systemd", executable=exe, unit_dir=units, run_as="nobody")
    assert result.store == root and result.name == systemd_unit_name(root)
    unit = _directives(result.path.read_text())
    assert unit["Service"]["ExecStart"] == [f"{exe} run %f $KYMWATCH_OPTIONS"]
    assert unit["Service"]["ReadWritePaths"] == ["%f"]
    assert unit["Unit"]["RequiresMountsFor"] == ["%f"]
    assert result.name == f"kymwatch@{systemd_escape_path(root)}.service"
    plist = plistlib.loads(render_launchd_plist(root, exe))
    assert plist["ProgramArguments"] == [str(exe), "run", str(root)]


def test_cli_install_root_dry_run(tmp_path: Path, exe: Path) -> None:
    """The CLI takes a folder of stores; a folder holding none is one line, exit 2."""
    root = _make_root(tmp_path / "lab")
    argv = ["service", "install", str(root), "--systemd", "--dry-run", "--executable", str(exe)]
    code, out, err = _run_cli([*argv, "--unit-dir", str(tmp_path / "u")])
    assert code == 0, err
    assert f"ExecStart={exe} run %f $KYMWATCH_OPTIONS" in out
    assert f"kymwatch@{systemd_escape_path(root)}.service" in err
    empty = tmp_path / "empty"
    (empty / "deep" / "er").mkdir(parents=True)
    _make_store(empty / "deep" / "er" / "exp.zarr")
    code, out, err = _run_cli([*argv[:2], str(empty), *argv[3:]])
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "nor a folder of datasets" in err


def test_cli_dry_run_prints_only_the_file_on_stdout(store: Path, exe: Path, tmp_path: Path) -> None:
    """``--dry-run`` prints the rendered unit on stdout, the plan on stderr, and writes nothing."""
    unit_dir = tmp_path / "units"
    argv = ["service", "install", str(store), "--systemd", "--dry-run"]
    code, out, err = _run_cli([*argv, "--unit-dir", str(unit_dir), "--executable", str(exe)])
    assert code == 0
    assert out == render_systemd_template(exe, user=False)
    assert "would write" in err and "systemctl enable --now" in err
    assert not unit_dir.exists()


def test_cli_uninstall(store: Path, exe: Path, tmp_path: Path) -> None:
    """``service uninstall`` removes the file and prints the disable command."""
    unit_dir = tmp_path / "units"
    install(
        store,
        manager="launchd",
        user=True,
        executable=exe,
        unit_dir=unit_dir,
        log_dir=tmp_path / "logs",
    )
    argv = ["service", "uninstall", str(store), "--user", "--launchd", "--unit-dir", str(unit_dir)]
    code, out, _ = _run_cli(argv)
    assert code == 0
    assert f"Next: launchctl bootout gui/$(id -u)/{launchd_label(store)}" in out
    assert list(unit_dir.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not-a-store", "no-program", "not-installed"])
def test_cli_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, exe: Path) -> None:
    """Bad input prints exactly one line on stderr, nothing on stdout, and exits 2."""
    target = tmp_path / "target"
    command, program = "install", exe
    if case == "not-a-store":
        target.mkdir()
    elif case == "no-program":
        _make_store(target)
        program = tmp_path / "no-such-kymwatch"
    elif case == "not-installed":
        command = "uninstall"
    argv = ["service", command, str(target), "--systemd", "--unit-dir", str(tmp_path / "u")]
    if command == "install":
        argv += ["--executable", str(program)]
    code, out, err = _run_cli(argv)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("kymwatch: error: ")


def test_cli_unwritable_folder_is_one_line_and_exit_1(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """A service folder that cannot be created gives one line on stderr and exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    argv = ["service", "install", str(store), "--systemd", "--executable", str(exe)]
    code, out, err = _run_cli([*argv, "--unit-dir", str(blocker / "units")])
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("kymwatch: error: cannot write")


def test_cli_manager_flags_are_exclusive() -> None:
    """--systemd and --launchd together are a usage error (argparse exit 2)."""
    parser = argparse.ArgumentParser(prog="kymwatch")
    add_service_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["service", "install", "x", "--systemd", "--launchd"])
    assert exc.value.code == 2


def test_the_install_function_is_not_shadowed_by_its_module() -> None:
    """``kymwatch.service.install`` stays the function once the module behind it is loaded."""
    import importlib

    import kymwatch.service as service

    importlib.import_module("kymwatch.service.installer")
    assert callable(service.install) and callable(service.uninstall)
