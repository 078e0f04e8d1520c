"""Logging setup. Only the CLI calls :func:`configure_logging`.

Every event is a structlog event dict with a stable name. The daemon's log file
gets one JSON object per line; the terminal gets readable lines (or JSON lines
when stdout/stderr is not a terminal, e.g. under systemd's journal).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from kymwatch.logfile import LogFileHandler

__all__ = [
    "ConsoleFormat",
    "add_store_log_file",
    "configure_logging",
    "reopen_log_files",
    "service_console_format",
]

ConsoleFormat = Literal["auto", "pretty", "json", "none"]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def service_console_format() -> ConsoleFormat | None:
    """The console format under a service manager, None when run by hand.

    systemd: JSON lines on stdout for the journal. launchd: none, since the daemon's
    own rotated log file already has every line (launchd does not rotate its files).
    """
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        return "json"
    if os.environ.get("XPC_SERVICE_NAME", "0") not in ("0", ""):
        return "none"
    return None


def _formatter(*, pretty: bool, colors: bool = False) -> logging.Formatter:
    last: list[Any] = (
        [structlog.dev.ConsoleRenderer(colors=colors)]
        if pretty
        else [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
    )


def configure_logging(
    *,
    level: str = "info",
    log_file: Path | None = None,
    console: ConsoleFormat = "auto",
    stream: TextIO | None = None,
) -> None:
    """Route structlog (and stdlib logging) to the console and, optionally, a JSON file.

    Args:
        level: Minimum level (debug, info, warning, error).
        log_file: JSON-lines log file (size-rotated, reopened after logrotate).
        console: ``auto`` = readable on a terminal, JSON lines otherwise.
        stream: Console stream (default stderr).
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            # A call below the level ends here, before the time stamp and the rest: the
            # daemon makes a debug call per file event and per record indexed.
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(numeric)
    out = stream or sys.stderr
    if console != "none":
        pretty = console == "pretty" or (console == "auto" and out.isatty())
        handler = logging.StreamHandler(out)
        handler.setFormatter(_formatter(pretty=pretty, colors=out.isatty()))
        root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = LogFileHandler(log_file, reopen_if=_while_store_whole(log_file))
        file_handler.setFormatter(_formatter(pretty=False))
        root.addHandler(file_handler)
    # watchdog logs its own warnings (e.g. inotify overflow) through stdlib logging.
    logging.getLogger("watchdog").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("filelock").setLevel(logging.WARNING)


def _while_store_whole(log_file: Path) -> Callable[[], bool] | None:
    """For a log file inside a store: reopen it (after a logrotate) only while the store
    is whole, never in a store being deleted."""
    from kymwatch.store.root import enclosing_dataset, store_is_whole

    store = enclosing_dataset(log_file)
    return None if store is None else lambda: store_is_whole(store)


def reopen_log_files() -> None:
    """Reopen every log file of the root logger (the daemon's SIGHUP handling)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogFileHandler):
            handler.reopen()


class _StoreFilter(logging.Filter):
    """Passes the structlog events whose ``store`` is one store's path."""

    def __init__(self, store: str) -> None:
        super().__init__()
        self._store = store

    def filter(self, record: logging.LogRecord) -> bool:
        return isinstance(record.msg, dict) and record.msg.get("store") == self._store


def add_store_log_file(store: Path, log_file: Path) -> Callable[[], None]:
    """Give one store of a folder of stores its own JSON log file (``kymwatch run ROOT``).

    The file gets the events that carry ``store=<store>`` (every line the store's
    daemon thread logs binds it); the console keeps every line. Returns what removes
    and closes the handler. A file that cannot be opened (a read-only store) is
    logged (``store_log_unavailable``) and skipped.
    """
    try:
        log_file.parent.mkdir(exist_ok=True)  # never its parents: the store may be gone
        handler = LogFileHandler(log_file, delay=True, reopen_if=_while_store_whole(log_file))
    except OSError as e:
        structlog.get_logger(__name__).warning(
            "store_log_unavailable", store=str(store), path=str(log_file), error=str(e)
        )
        return lambda: None
    handler.setFormatter(_formatter(pretty=False))
    handler.addFilter(_StoreFilter(str(store)))
    root = logging.getLogger()
    root.addHandler(handler)

    def detach() -> None:
        root.removeHandler(handler)
        handler.close()

    return detach
