"""The options of ``kymwatch run``: one table for the flags, the TOML file and ``config show``.

Each option has one entry in :data:`~kymwatch.options.OPTIONS`: its TOML key, its
flags, its default, what values it allows and its help. :func:`add_options`
registers the flags from it, :func:`load_file` checks a ``kymwatch.toml`` against
it and :func:`resolve` layers them: defaults, then the files (a store's parent
folder, then the store; or the one ``--config`` names), then the flags. Nothing
else knows the options, so the three cannot drift apart.

Only the standard library is imported here: ``kymwatch status`` and ``sync`` start
quickly (``tests/test_cli_startup.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kymwatch.errors import KymwatchError
from kymwatch.options import BY_KEY, OPTIONS, Flag, Option, plain

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


class ConfigError(KymwatchError, ValueError):
    """A configuration file or option value that cannot be used (exit 2)."""


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
            k: BY_KEY[k].unset if s.value is None else _toml_value(s.value)
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
    return f" (default {plain(value) if isinstance(value, float) else value})"


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
        option = BY_KEY.get(key)
        if option is None:
            known = ", ".join(BY_KEY)
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
