"""The options of ``kymwatch run``: one table for the flags, the TOML file and ``config show``.

Each option has one entry in :data:`OPTIONS`: its TOML key, its flags, its default,
what values it allows and its help. :func:`add_options` registers the flags from it,
:func:`load_file` checks a ``kymwatch.toml`` against it and :func:`resolve` layers
them: defaults, then the files (a store's parent folder, then the store; or the one
``--config`` names), then the flags. Nothing else knows the options, so the three
cannot drift apart.

Only the standard library is imported here: ``kymwatch status`` and ``sync`` start
quickly (``tests/test_cli_startup.py``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kymwatch.errors import KymwatchError

__all__ = [
    "CONFIG_FILE",
    "OPTIONS",
    "ConfigError",
    "Flag",
    "Option",
    "Setting",
    "Settings",
    "add_options",
    "config_files",
    "load_file",
    "resolve",
]

CONFIG_FILE = "kymwatch.toml"
DEFAULT = "default"
_DAY = 86_400.0


class ConfigError(KymwatchError, ValueError):
    """A configuration file or option value that cannot be used (exit 2)."""


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
            raise ValueError(f"must be at most {_plain(maximum)}: {value!r}")
        return number

    return parse


def _plain(number: float) -> str:
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


_LEVELS = ("debug", "info", "warning", "error")
_MS_DAY = f"at most {_plain(_DAY * 1000)}"

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
        "how changes are seen: auto (inotify; polling on FUSE and network file systems)",
        (
            Flag(
                "--polling",
                "polling",
                help="poll instead of inotify (automatic on FUSE and network file systems)",
            ),
            Flag(
                "--inotify",
                "inotify",
                help="use inotify even on a FUSE or network file "
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
_BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Setting:
    """One effective option: its value and where it came from.

    Attributes:
        key: The option's key.
        value: The value in force.
        source: ``default``, the path of the file that set it, or the flag.
    """

    key: str
    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective options of one ``kymwatch run``.

    Attributes:
        items: Every option, in the table's order.
        files: The configuration files read, lowest precedence first.
    """

    items: Mapping[str, Setting]
    files: tuple[Path, ...]

    def __getitem__(self, key: str) -> Any:
        return self.items[key].value

    def to_json(self) -> dict[str, Any]:
        """The settings as ``kymwatch config show --json`` prints them."""
        return {
            "files": [str(f) for f in self.files],
            "settings": {
                k: {"value": list(s.value) if isinstance(s.value, tuple) else s.value,
                    "source": s.source}
                for k, s in self.items.items()
            },
        }  # fmt: skip

    def lines(self) -> list[str]:
        """The settings as ``kymwatch config show`` prints them, one per line."""
        shown = {
            k: _BY_KEY[k].unset if s.value is None else _toml_value(s.value)
            for k, s in self.items.items()
        }
        width, wide = max(map(len, shown)), max(map(len, shown.values()))
        return [f"  {k:<{width}}  {v:<{wide}}  {self.items[k].source}" for k, v in shown.items()]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- argparse ------------------------------------------------------------------------------
def _arg_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _help_default(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return f" (default {_plain(value) if isinstance(value, float) else value})"


def add_options(parser: argparse.ArgumentParser) -> None:
    """Register ``--config`` and every option's flags on ``parser``.

    A flag that is not given leaves no attribute (``argparse.SUPPRESS``), so
    :func:`resolve` can tell a flag from a default.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"read options from FILE instead of STORE/{CONFIG_FILE} and ../{CONFIG_FILE}",
    )
    for option in OPTIONS:
        where: Any = parser.add_mutually_exclusive_group() if len(option.flags) > 1 else parser
        for flag in option.flags:
            default = _help_default(option.default)
            text = (flag.help or option.help) + (default if flag.const is None else "")
            kw: dict[str, Any] = {"dest": option.key, "default": argparse.SUPPRESS, "help": text}
            if flag.const is None:
                kw |= {"type": _arg_type(option), "metavar": flag.metavar}
            else:
                kw |= {"action": "store_const", "const": flag.const}
            where.add_argument(flag.name, **kw)


# -- files ---------------------------------------------------------------------------------
def config_files(folder: Path, *, parent: bool = True) -> tuple[Path, ...]:
    """The configuration files that apply to ``folder``, lowest precedence first.

    For a store: ``../kymwatch.toml`` (the folder of stores it is in), then
    ``STORE/kymwatch.toml``. For a folder of stores, ``parent=False``: its own file.
    """
    candidates = [folder.parent / CONFIG_FILE] if parent else []
    candidates.append(folder / CONFIG_FILE)
    return tuple(p for p in candidates if p.is_file())


def load_file(path: Path) -> dict[str, Any]:
    """Read and check one configuration file.

    Returns:
        The values it sets, by key (paths made absolute from the file's folder).

    Raises:
        ConfigError: It cannot be read, is not TOML, has an unknown key or a bad value;
            the message names the file, the key and what is allowed.
    """
    import tomllib  # here: the quick commands, which build the same parser, never read TOML

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        option = _BY_KEY.get(key)
        if option is None:
            known = ", ".join(_BY_KEY)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
        try:
            value = option.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{path}: {key}: {e} (allowed: {option.allowed})") from None
        if option.path and isinstance(value, str):
            value = str((path.parent / Path(value).expanduser()).absolute())
        values[key] = value
    return values


def resolve(args: argparse.Namespace, folder: Path | None, *, parent: bool = True) -> Settings:
    """The effective settings: defaults, then the files, then the flags in ``args``.

    Args:
        args: Parsed by a parser given :func:`add_options`.
        folder: The store (or folder of stores) whose files apply; None: only
            ``--config``.
        parent: Also read the file of ``folder``'s parent (see :func:`config_files`).

    Raises:
        ConfigError: A file is bad, or the options contradict each other.
    """
    given = getattr(args, "config", None)
    if given:
        explicit = Path(given).expanduser().absolute()
        if not explicit.is_file():
            raise ConfigError(f"--config {given}: no such file")
        files: tuple[Path, ...] = (explicit,)
    else:
        files = config_files(folder, parent=parent) if folder is not None else ()
    items = {o.key: Setting(o.key, o.default, DEFAULT) for o in OPTIONS}
    for path in files:
        for key, value in load_file(path).items():
            items[key] = Setting(key, value, str(path))
    flags = vars(args)
    for option in OPTIONS:
        if option.key in flags:
            value = flags[option.key]
            items[option.key] = Setting(option.key, value, _flag_name(option, value))
    settings = Settings(items, files)
    _check_together(settings)
    return settings


def _flag_name(option: Option, value: Any) -> str:
    """The flag that set ``value`` (``--polling``, ``--no-log-file``, ``--quiet-ms``)."""
    for flag in option.flags:
        if flag.const is not None and flag.const == value and type(flag.const) is type(value):
            return flag.name
    return next(f.name for f in option.flags if f.const is None)


def _check_together(settings: Settings) -> None:
    quiet, delay = settings.items["quiet_ms"], settings.items["max_delay_ms"]
    if delay.value < quiet.value:
        raise ConfigError(
            f"--max-delay-ms must be at least --quiet-ms (max_delay_ms {delay.value:g} from "
            f"{delay.source}, quiet_ms {quiet.value:g} from {quiet.source})"
        )
