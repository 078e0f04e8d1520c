"""Every command and option explains itself: help text everywhere, `service uninstall`
in its own words, and `service install --run-as` checks the account exists."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import kymwatch
from helpers_store import make_v2_store
from kymwatch.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, name: str = "kymwatch"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every sub-command's parser, with their command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_argument_of_every_command_has_help() -> None:
    """No positional or option of any command (service actions included) lacks a help
    text: `store`, `sync --timeout`, `-q` and `--log-level` had none."""
    missing = []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    commands = {name for name, _ in _parsers(build_parser())}
    assert {"kymwatch run", "kymwatch sync", "kymwatch service uninstall"} <= commands


def test_service_uninstall_help_speaks_of_removing_only() -> None:
    """`service uninstall --help` has no install-only words or options."""
    text = kymwatch("service", "uninstall", "--help", check=True).stdout
    for word in ("write", "--run-as", "--executable", "enable"):
        assert word not in text.lower(), word
    assert "remove the systemd unit" in text and "installed for" in text


@pytest.mark.parametrize("dry_run", [True, False])
def test_run_as_an_unknown_user_is_refused_with_one_line(tmp_path: Path, dry_run: bool) -> None:
    """`service install --run-as nosuchuser` prints one line and exits 2, writing nothing."""
    store = make_v2_store(tmp_path / "s.zarr")
    units = tmp_path / "units"
    args = ["service", "install", store, "--systemd", "--unit-dir", units]
    proc = kymwatch(*args, "--run-as", "kymwatch-no-such-user", *(["--dry-run"] * dry_run))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no such user" in proc.stderr
    assert not units.exists()
    ok = kymwatch(*args, "--run-as", "root", "--dry-run")
    assert ok.returncode == 0, ok.stderr
