"""``service install --config FILE`` checks the file and passes it to ``kymwatch run``."""

from __future__ import annotations

import argparse
import io
import plistlib
from pathlib import Path

import pytest

from kymwatch.service import add_service_parser, install, run_service_command


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A minimal kymflow (zarr v2) dataset folder."""
    path = tmp_path / "data" / "exp1.zarr"
    path.mkdir(parents=True)
    (path / ".zgroup").write_text('{"zarr_format": 2}', encoding="utf-8")
    return path


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """An executable stand-in for the installed kymwatch script."""
    path = tmp_path / "bin" / "kymwatch"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kymwatch")
    add_service_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = run_service_command(parser.parse_args(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _dropin(result_files: tuple[Path, ...]) -> str:
    [dropin] = [f for f in result_files if f.parent.name.endswith(".service.d")]
    return dropin.read_text(encoding="utf-8")


def test_systemd_unit_runs_with_the_config_file(
    store: Path, exe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --config is made absolute and reaches ``kymwatch run`` through the drop-in."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "kymwatch.toml").write_text('watch = "polling"\nmetrics_port = 9184\n')
    monkeypatch.chdir(tmp_path)
    result = install(
        store,
        manager="systemd",
        user=True,
        executable=exe,
        unit_dir=tmp_path / "units",
        config=Path("etc/kymwatch.toml"),
    )
    [exec_start] = [x for x in result.content.splitlines() if x.startswith("ExecStart=")]
    assert exec_start == f"ExecStart={exe} run %f $KYMWATCH_OPTIONS"
    options = f'Environment="KYMWATCH_OPTIONS=--config {tmp_path}/etc/kymwatch.toml"'
    assert options in _dropin(result.files).splitlines()


def test_a_config_path_with_white_space_is_refused_for_systemd(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """systemd splits $KYMWATCH_OPTIONS on white space, so such a path is refused up front."""
    conf = tmp_path / "my configs" / "kymwatch.toml"
    conf.parent.mkdir()
    conf.write_text("quiet_ms = 500\n")
    where = ["--executable", str(exe), "--unit-dir", str(tmp_path / "u"), "--config", str(conf)]
    code, out, err = _run_cli(["service", "install", str(store), "--user", "--systemd", *where])
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "white space" in err


def test_launchd_job_runs_with_the_config_file(store: Path, exe: Path, tmp_path: Path) -> None:
    """The plist's ProgramArguments end with --config FILE."""
    conf = tmp_path / "kymwatch.toml"
    conf.write_text("quiet_ms = 500\n")
    result = install(
        store,
        manager="launchd",
        user=True,
        executable=exe,
        unit_dir=tmp_path / "agents",
        log_dir=tmp_path / "logs",
        dry_run=True,
        config=conf,
    )
    job = plistlib.loads(result.content.encode())
    assert job["ProgramArguments"] == [str(exe), "run", str(store), "--config", str(conf)]


def test_without_config_the_drop_in_passes_no_options(
    store: Path, exe: Path, tmp_path: Path
) -> None:
    """No --config: the drop-in sets no KYMWATCH_OPTIONS, so the unit runs ``run STORE``."""
    result = install(store, manager="systemd", user=True, executable=exe, unit_dir=tmp_path / "u")
    assert "KYMWATCH_OPTIONS" not in _dropin(result.files)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quiet = 3\n", "unknown key 'quiet'"),
        ("metrics_port = -1\n", "metrics_port: must be zero or positive"),
        (None, "cannot read"),
    ],
)
def test_a_bad_config_is_refused_at_install(
    store: Path, exe: Path, tmp_path: Path, text: str | None, expected: str
) -> None:
    """A config file with a bad key or value, or none at all, fails install with one line."""
    conf = tmp_path / "kymwatch.toml"
    if text is not None:
        conf.write_text(text)
    where = ["--executable", str(exe), "--unit-dir", str(tmp_path / "u"), "--config", str(conf)]
    code, out, err = _run_cli(["service", "install", str(store), "--user", "--systemd", *where])
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and expected in err and str(conf) in err
