"""The table of ``kymwatch run``'s options: keys, flags, defaults, allowed values, help.

:data:`OPTIONS` is the one place an option is defined; :mod:`kymwatch.settings`
builds the flags, checks ``kymwatch.toml`` files and prints ``config show`` from it.
Standard library only (the quick commands build the same parser).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BY_KEY", "OPTIONS", "Flag", "Option", "Parse", "plain"]

_DAY = 86_400.0

Parse = Callable[[Any], Any]
"""Turns a flag's text or a TOML value into the option's value (ValueError: refused)."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag of an option.

    Attributes:
        name: The flag, e.g. ``--quiet-ms``.
        const: The value the flag sets when it takes no argument (None: it takes one).
        metavar: The argument's placeholder in ``--help``.
        help: The flag's own help (default: the option's).
    """

    name: str
    const: Any = None
    metavar: str | None = None
    help: str | None = None


@dataclass(frozen=True, slots=True)
class Option:
    """One ``kymwatch run`` option.

    Attributes:
        key: The TOML key (and the settings key).
        default: The value when neither a file nor a flag sets it.
        parse: Checks and converts a value (ValueError with the reason when refused).
        allowed: What values are allowed, for error messages.
        help: One line for ``--help`` and the docs.
        flags: Its command-line flags (several flags of one option exclude each other).
        path: The value is a path: relative paths in a file are taken from its folder.
        unset: What a None value means, for ``config show``.
    """

    key: str
    default: Any
    parse: Parse
    allowed: str
    help: str
    flags: tuple[Flag, ...]
    path: bool = False
    unset: str = "(not set)"


def _number(*, maximum: float, zero: bool = False, integer: bool = False) -> Parse:
    """A finite number, positive (or zero when ``zero``), at most ``maximum``."""

    def parse(value: Any) -> float | int:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        try:
            number = (int if integer else float)(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"not a number: {value!r}") from None
        if integer and isinstance(value, float):
            raise ValueError(f"not a whole number: {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number: {value!r}")
        if number < 0 or (number == 0 and not zero):
            raise ValueError(f"must be {'zero or positive' if zero else 'positive'}: {value!r}")
        if number > maximum:
            raise ValueError(f"must be at most {plain(maximum)}: {value!r}")
        return number

    return parse


def plain(number: float) -> str:
    """``86400000`` rather than ``8.64e+07``."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"not true or false: {value!r}")
    return value


def _choice(*choices: str) -> Parse:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"not one of {', '.join(choices)}: {value!r}")
        return str(value)

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a non-empty string: {value!r}")
    return value


def _path_or_off(value: Any) -> str | bool:
    return False if value is False else _text(value)


def _names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(n, str) for n in items):
        raise ValueError(f"not a list of indexer names: {value!r}")
    names = tuple(n.strip() for n in items if n.strip())
    if not names:
        raise ValueError("needs at least one indexer name")
    return names


def _cluster(value: Any) -> str:
    """``local``, ``local:N`` (N > 0) or a Dask scheduler address (parsed for real by
    ``kymwatch.index.distributed.ClusterSpec`` when the daemon starts)."""
    text = _text(value).strip()
    workers = text.removeprefix("local:")
    if workers != text and (not workers.isdigit() or int(workers) < 1):
        raise ValueError(f"local:N needs a positive number of workers, not {workers!r}")
    return text


_LEVELS = ("debug", "info", "warning", "error")
_MS_DAY = f"at most {plain(_DAY * 1000)}"

OPTIONS: tuple[Option, ...] = (
    Option(
        "quiet_ms",
        300.0,
        _number(maximum=_DAY * 1000),
        f"milliseconds > 0, {_MS_DAY}",
        "index a record after this long without changes",
        (Flag("--quiet-ms", metavar="MS"),),
    ),
    Option(
        "settle_ms",
        20.0,
        _number(maximum=_DAY * 1000, zero=True),
        f"milliseconds >= 0, {_MS_DAY}",
        "... or this long, when its writer said it is done: renamed into place or "
        "closed after writing (inotify only)",
        (Flag("--settle-ms", metavar="MS"),),
    ),
    Option(
        "max_delay_ms",
        5000.0,
        _number(maximum=_DAY * 1000),
        f"milliseconds >= quiet_ms, {_MS_DAY}",
        "... but at the latest this long after its first change",
        (Flag("--max-delay-ms", metavar="MS"),),
    ),
    Option(
        "watch",
        "auto",
        _choice("auto", "polling", "inotify"),
        '"auto", "polling" or "inotify"',
        "how changes are seen: auto (inotify, FSEvents on macOS; polling on FUSE "
        "and network file systems)",
        (
            Flag(
                "--polling",
                "polling",
                help="poll instead of inotify/FSEvents "
                "(automatic on FUSE and network file systems)",
            ),
            Flag(
                "--inotify",
                "inotify",
                help="use inotify (FSEvents on macOS) even on a FUSE or network file "
                "system (only if every write to the store goes through this machine's mount)",
            ),
        ),
    ),
    Option(
        "poll_interval",
        2.0,
        _number(maximum=_DAY),
        "seconds > 0, at most 86400",
        "shortest time between polls; it grows with the store's size",
        (Flag("--poll-interval", metavar="S"),),
    ),
    Option(
        "reconcile_interval",
        600.0,
        _number(maximum=30 * _DAY),
        "seconds > 0, at most 2592000 (30 days)",
        "seconds between full reconcile scans",
        (Flag("--reconcile-interval", metavar="S"),),
    ),
    Option(
        "rescan_interval",
        30.0,
        _number(maximum=_DAY),
        "seconds > 0, at most 86400 (1 day)",
        "with a folder of stores: seconds between scans for stores that appeared or went "
        "(changes seen by inotify are picked up at once)",
        (Flag("--rescan-interval", metavar="S"),),
    ),
    Option(
        "manifest",
        False,
        _boolean,
        "true or false",
        "create kymflow's index/manifest.json.gz if the store has none "
        "(one the store has is always kept up to date)",
        (Flag("--manifest", True),),
    ),
    Option(
        "indexers",
        None,
        _names,
        'a list of indexer names, e.g. ["kym_radon"], or "a,b"',
        "run these indexers (default: chosen from what the store holds; see docs/indexers.md)",
        (Flag("--indexers", metavar="A,B"),),
        unset="(chosen from what the store holds)",
    ),
    Option(
        "log_file",
        None,
        _path_or_off,
        "a path, or false for the console only",
        "JSON log file (default STORE/index/kymwatch.log)",
        (
            Flag("--log-file", metavar="PATH"),
            Flag("--no-log-file", False, help="log to the console only"),
        ),
        path=True,
        unset="(STORE/index/kymwatch.log)",
    ),
    Option(
        "log_level",
        "info",
        _choice(*_LEVELS),
        ", ".join(f'"{v}"' for v in _LEVELS),
        "the lowest level logged: debug (every file event), info, warning or error",
        (Flag("--log-level", metavar="LEVEL"),),
    ),
    Option(
        "progress",
        True,
        _boolean,
        "true or false",
        "a progress bar for long work when stderr is a terminal",
        (Flag("--no-progress", False, help="no progress bar, even on a terminal"),),
    ),
    Option(
        "partition_rows",
        0,
        _number(maximum=2**62, zero=True, integer=True),
        "a whole number >= 0 (0: never)",
        "keep a table of at least this many rows as parts, tables/<name>/part-*.parquet "
        "(one edit rewrites one part; tables/<name>.parquet, the file kymflow reads, is "
        "exported after the parts, so it is published later than without parts; 0: never)",
        (Flag("--partition-rows", metavar="N"),),
    ),
    Option(
        "dask",
        None,
        _cluster,
        'a scheduler address, "local" or "local:N"',
        "read the records of a first index or a big reconcile on a Dask cluster "
        "(see docs/scale-out.md; pip install 'kymwatch[dask]')",
        (Flag("--dask", metavar="ADDRESS|local[:N]"),),
        unset="(off)",
    ),
    Option(
        "dask_threshold",
        10_000,
        _number(maximum=10**9, integer=True),
        "a whole number > 0",
        "fewest changed records read on the cluster",
        (Flag("--dask-threshold", metavar="N"),),
    ),
    Option(
        "metrics_port",
        None,
        _number(maximum=65535, zero=True, integer=True),
        "a port number 0-65535 (0: any free port, logged as metrics_serving)",
        "serve Prometheus metrics over HTTP on this port (default: off)",
        (Flag("--metrics-port", metavar="N"),),
        unset="(off)",
    ),
    Option(
        "metrics_address",
        "127.0.0.1",
        _text,
        "an address to bind, e.g. 127.0.0.1 or 0.0.0.0",
        "the address the metrics endpoint binds",
        (Flag("--metrics-address", metavar="ADDR"),),
    ),
    Option(
        "metrics_textfile",
        None,
        _text,
        "a path ending in .prom",
        "write the metrics to this file for node-exporter's textfile collector",
        (Flag("--metrics-textfile", metavar="PATH"),),
        path=True,
        unset="(off)",
    ),
)
BY_KEY = {o.key: o for o in OPTIONS}
"""The options by key."""
