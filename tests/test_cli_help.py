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


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "s.zarr", "--quiet-ms", "250", "--settle-ms", "10", "--polling"],
        ["config", "show", "s.zarr", "--json", "--quiet-ms", "400"],
        ["status", "s.zarr", "--json"],
        ["logs", "s.zarr", "-n", "5", "--level", "info"],
        ["sync", "s.zarr", "--timeout", "3", "--strict"],
        ["stale", "s.zarr", "--all"],
        ["rebuild", "s.zarr", "--indexer", "velocity_events"],
        ["init", "s.zarr", "-q"],
        ["demo", "--keep"],
        ["service", "install", "s.zarr", "--systemd", "--dry-run"],
    ],
)
def test_a_commands_own_parser_parses_as_the_full_one(argv: list[str]) -> None:
    """The parser built for the command named on the line (the others' many options
    left out, for a quick start) gives the same namespace as the parser of every command."""
    full = vars(build_parser().parse_args(argv))
    own = vars(build_parser(argv[0]).parse_args(argv))
    assert own == full


def test_a_quick_commands_parser_leaves_out_run_and_service_options() -> None:
    """`kymwatch status` does not build `run`'s options or import the service package's
    parser: the list of commands is whole all the same."""
    parser = build_parser("status")
    commands = {name for name, _ in _parsers(parser)}
    assert {"kymwatch run", "kymwatch service", "kymwatch status"} <= commands
    quick_run = dict(_parsers(parser))["kymwatch run"]
    own_run = dict(_parsers(build_parser("run")))["kymwatch run"]
    assert "--quiet-ms" not in quick_run._option_string_actions
    assert "--quiet-ms" in own_run._option_string_actions
