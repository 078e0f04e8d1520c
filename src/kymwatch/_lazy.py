"""Lazy package exports: a name is imported from its module on first use (PEP 562).

The quick commands (``kymwatch status``, ``sync``, ``logs``) must start without
pandas, pyarrow, zarr or numpy; a package ``__init__`` that imported every module
eagerly would pull them in with any of its light modules. A package lists its
heavy names with their module here; the type checker sees ordinary imports under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "lazy_logger"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` that import ``where[name]``
    (a submodule name) when ``name`` is first asked for, and keep the value."""

    def get(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def names() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return get, names


class _LazyLogger:
    """``structlog.get_logger(name)``, with structlog imported at the first log call."""

    __slots__ = ("_log", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._log: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._log is None:
            import structlog

            self._log = structlog.get_logger(self._name)
        return getattr(self._log, method)


def lazy_logger(name: str) -> Any:
    """The module logger of the quick commands' modules: importing structlog (and the
    asyncio it pulls in) costs tens of milliseconds that ``kymwatch status`` does not
    need, since those modules log only on the daemon's side."""
    return _LazyLogger(name)
