"""The option table: defaults, ``kymwatch.toml`` files and flags layer in that order,
and a bad file is refused with one line naming the file, the key and what is allowed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import DaemonProcess, kymwatch
from helpers_store import events_frame, make_v2_store, write_parquet_artifact, write_v2_record
from kymwatch.settings import (
    CONFIG_FILE,
    OPTIONS,
    ConfigError,
    add_options,
    config_files,
    load_file,
    resolve,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A folder of stores holding one kymflow store (``exp42.zarr``)."""
    make_v2_store(tmp_path / "lab" / "exp42.zarr")
    return tmp_path / "lab"


def test_defaults_when_nothing_is_set(lab: Path) -> None:
    """Without files or flags every option has its table default, marked as such."""
    s = resolve(_parse(), lab / "exp42.zarr")
    assert s.files == ()
    assert {k: v.value for k, v in s.items.items()} == {o.key: o.default for o in OPTIONS}
    assert {v.source for v in s.items.values()} == {"default"}


def test_store_file_overrides_root_file_and_flag_overrides_both(lab: Path) -> None:
    """ROOT/kymwatch.toml, then STORE/kymwatch.toml, then the flag: each names its source."""
    store = lab / "exp42.zarr"
    (lab / CONFIG_FILE).write_text('quiet_ms = 800\nsettle_ms = 50\nwatch = "polling"\n')
    (store / CONFIG_FILE).write_text("quiet_ms = 400\nmax_delay_ms = 9000\n")
    s = resolve(_parse("--max-delay-ms", "7000", "--inotify"), store)
    assert s.files == (lab / CONFIG_FILE, store / CONFIG_FILE)
    assert (s["quiet_ms"], s.items["quiet_ms"].source) == (400, str(store / CONFIG_FILE))
    assert (s["settle_ms"], s.items["settle_ms"].source) == (50, str(lab / CONFIG_FILE))
    assert (s["max_delay_ms"], s.items["max_delay_ms"].source) == (7000, "--max-delay-ms")
    assert (s["watch"], s.items["watch"].source) == ("inotify", "--inotify")
    assert s.items["reconcile_interval"].source == "default"


def test_explicit_config_replaces_the_lookup(lab: Path, tmp_path: Path) -> None:
    """``--config FILE`` is the only file read: the store's own file is ignored."""
    store = lab / "exp42.zarr"
    (store / CONFIG_FILE).write_text("quiet_ms = 400\n")
    other = tmp_path / "site.toml"
    other.write_text('log_level = "debug"\nindexers = ["kym_radon", "kym_velocity_events"]\n')
    s = resolve(_parse("--config", str(other)), store)
    assert s.files == (other,)
    assert s["quiet_ms"] == 300.0 and s["log_level"] == "debug"
    assert s["indexers"] == ("kym_radon", "kym_velocity_events")


def test_lookup_for_a_folder_of_stores_reads_only_its_own_file(lab: Path) -> None:
    """A ROOT's lookup (``parent=False``) does not climb above it."""
    (lab / CONFIG_FILE).write_text("quiet_ms = 800\n")
    (lab.parent / CONFIG_FILE).write_text("quiet_ms = 900\n")
    assert config_files(lab, parent=False) == (lab / CONFIG_FILE,)
    assert config_files(lab / "exp42.zarr") == (lab / CONFIG_FILE,)


def test_relative_paths_in_a_file_are_taken_from_its_folder(lab: Path) -> None:
    """``log_file = "logs/x.log"`` means the folder of the file, not the working folder."""
    (lab / CONFIG_FILE).write_text('log_file = "logs/x.log"\nmetrics_textfile = "k.prom"\n')
    values = load_file(lab / CONFIG_FILE)
    assert values == {"log_file": str(lab / "logs/x.log"), "metrics_textfile": str(lab / "k.prom")}


def test_log_file_false_and_no_log_file_flag_both_switch_the_file_off(lab: Path) -> None:
    """``log_file = false`` in a file, or ``--no-log-file``, turn the log file off."""
    (lab / CONFIG_FILE).write_text("log_file = false\nprogress = false\n")
    s = resolve(_parse(), lab / "exp42.zarr")
    assert s["log_file"] is False and s["progress"] is False
    flagged = resolve(_parse("--no-log-file"), None)
    assert (flagged["log_file"], flagged.items["log_file"].source) == (False, "--no-log-file")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quiet = 5\n", "unknown key 'quiet' (known keys: quiet_ms,"),
        ("quiet_ms = -5\n", "quiet_ms: must be positive: -5 (allowed: milliseconds > 0"),
        ('quiet_ms = "soon"\n', "quiet_ms: not a number: 'soon'"),
        ("quiet_ms = nan\n", "quiet_ms: must be a finite number"),
        ("polling = true\n", "unknown key 'polling'"),
        ('watch = "fsevents"\n', "watch: not one of auto, polling, inotify"),
        ("manifest = 1\n", "manifest: not true or false: 1"),
        ("metrics_port = 70000\n", "metrics_port: must be at most 65535"),
        ("metrics_port = 91.5\n", "metrics_port: not a whole number"),
        ("indexers = []\n", "indexers: needs at least one indexer name"),
        ("quiet_ms = = 3\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_key_and_what_is_allowed(
    lab: Path, text: str, expected: str
) -> None:
    """Unknown keys, values of the wrong type or range, and broken TOML are refused."""
    (lab / CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError) as err:
        resolve(_parse(), lab / "exp42.zarr")
    assert str(err.value).startswith(f"{lab / CONFIG_FILE}: ")
    assert expected in str(err.value)


def test_max_delay_below_quiet_window_names_both_sources(lab: Path) -> None:
    """The cross-check applies after layering, and says where each value came from."""
    (lab / CONFIG_FILE).write_text("quiet_ms = 8000\n")
    with pytest.raises(ConfigError, match=r"--max-delay-ms must be at least --quiet-ms"):
        resolve(_parse(), lab / "exp42.zarr")
    ok = resolve(_parse("--max-delay-ms", "9000"), lab / "exp42.zarr")
    assert ok["max_delay_ms"] == 9000


def test_every_option_has_a_flag_that_round_trips() -> None:
    """Each option's flags set exactly that option (the table is the only source)."""
    for option in OPTIONS:
        for flag in option.flags:
            argv = [flag.name] if flag.const is not None else [flag.name, "1"]
            if option.key in ("watch", "log_level"):
                argv = [flag.name] if flag.const is not None else [flag.name, "debug"]
            if option.key in ("indexers", "log_file", "metrics_address", "metrics_textfile"):
                argv = [flag.name] if flag.const is not None else [flag.name, "x"]
            ns = vars(_parse(*argv))
            assert set(ns) == {"config", option.key}, (flag.name, ns)


# -- the command line ------------------------------------------------------------------------
@pytest.mark.integration
def test_config_show_prints_values_and_sources(lab: Path) -> None:
    """``kymwatch config show STORE --json`` shows the layered values and their sources."""
    store = lab / "exp42.zarr"
    (store / CONFIG_FILE).write_text("settle_ms = 5\n")
    proc = kymwatch("config", "show", store, "--json", "--quiet-ms", "250", check=True)
    doc = json.loads(proc.stdout)
    assert doc["files"] == [str(store / CONFIG_FILE)]
    assert doc["settings"]["settle_ms"] == {"value": 5, "source": str(store / CONFIG_FILE)}
    assert doc["settings"]["quiet_ms"] == {"value": 250, "source": "--quiet-ms"}
    assert doc["settings"]["max_delay_ms"] == {"value": 5000, "source": "default"}
    human = kymwatch("config", "show", store, check=True).stdout
    assert ["settle_ms", "5", str(store / CONFIG_FILE)] in [x.split() for x in human.splitlines()]


@pytest.mark.integration
@pytest.mark.parametrize("command", ["run", "config show"])
def test_a_bad_file_is_one_line_and_exit_2(lab: Path, command: str) -> None:
    """``run`` and ``config show`` refuse a bad file with one line on stderr, exit 2."""
    store = lab / "exp42.zarr"
    (store / CONFIG_FILE).write_text("quiet_ms = 0\n")
    proc = kymwatch(*command.split(), store)
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{store / CONFIG_FILE}: quiet_ms: must be positive" in lines[0]


@pytest.mark.integration
def test_daemon_runs_with_file_values_and_flags_over_them(lab: Path) -> None:
    """A daemon takes its windows from the store's file, a flag beating the file."""
    store = lab / "exp42.zarr"
    (lab / CONFIG_FILE).write_text("settle_ms = 7\nmax_delay_ms = 4000\n")
    (store / CONFIG_FILE).write_text("reconcile_interval = 1234\n")
    write_v2_record(store, "3f2a9c1e-0b7d-4c55-9a61-2f7d8e1b4c90")
    write_parquet_artifact(
        store, "3f2a9c1e-0b7d-4c55-9a61-2f7d8e1b4c90", "velocity_events", events_frame(2)
    )
    with DaemonProcess(store, "--max-delay-ms", "3000") as d:
        [started] = d.events("daemon_started")
        d.sync()
    assert (started["quiet_ms"], started["settle_ms"], started["max_delay_ms"]) == (100, 7, 3000)
    assert (store / "tables" / "velocity_events.parquet").is_file()


def test_cli_module_stays_light() -> None:
    """The settings module imports only the standard library and kymwatch.errors."""
    code = (
        "import sys, kymwatch.settings; "
        "print(sorted(m for m in ('pandas','pyarrow','zarr','structlog','prometheus_client') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
