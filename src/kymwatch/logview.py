"""``kymwatch logs``: read, filter and pretty-print the daemon's JSON-lines log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["LogFilter", "format_event", "show_log"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_FIRST = ("timestamp", "level", "event", "logger")


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which events to show."""

    level: str = "debug"
    image_id: str | None = None
    event: str | None = None

    def accepts(self, ev: dict[str, Any]) -> bool:
        """True if the event passes every criterion."""
        if _LEVELS.get(str(ev.get("level", "info")), 20) < _LEVELS[self.level]:
            return False
        if self.image_id is not None and ev.get("image_id") != self.image_id:
            return False
        return self.event is None or ev.get("event") == self.event


def format_event(ev: dict[str, Any]) -> str:
    """One readable line: time, level, event name, then key=value pairs."""
    ts = str(ev.get("timestamp", ""))[:23].replace("T", " ")
    level = str(ev.get("level", "")).upper()
    rest = " ".join(
        f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
        for k, v in ev.items()
        if k not in _FIRST
    )
    return f"{ts} {level:<7} {ev.get('event', '?'):<22} {rest}".rstrip()


def _parse(line: str) -> dict[str, Any] | None:
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def _follow(path: Path, start: int) -> Iterator[str]:
    """Yield lines appended to ``path`` from byte ``start``, across rotations."""
    f = path.open("r", encoding="utf-8", errors="replace")
    f.seek(start)
    ino = os.fstat(f.fileno()).st_ino
    buf = ""
    try:
        while True:
            chunk = f.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split("\n")
                yield from lines
                continue
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != ino:  # rotated: continue with the new file
                    f.close()
                    f = path.open("r", encoding="utf-8", errors="replace")
                    ino = os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                continue
    finally:
        f.close()


def show_log(
    path: Path,
    filt: LogFilter,
    *,
    follow: bool = False,
    lines: int = 50,
    raw: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print the last ``lines`` matching events of ``path`` (0 = all), then follow."""
    out = out or sys.stdout
    if not path.exists():
        print(f"kymwatch: no log file at {path} (has the daemon run yet?)", file=sys.stderr)
        return 1

    def emit(line: str) -> None:
        ev = _parse(line)
        if ev is not None and filt.accepts(ev):
            out.write((line if raw else format_event(ev)) + "\n")

    with path.open("r", encoding="utf-8", errors="replace") as f:
        tail: deque[str] = deque(maxlen=lines or None)
        for line in iter(f.readline, ""):
            ev = _parse(line)
            if ev is not None and filt.accepts(ev):
                tail.append(line.rstrip("\n"))
        end = f.tell()
    for line in tail:
        emit(line)
    out.flush()
    if follow:
        try:
            for line in _follow(path, end):
                emit(line)
                out.flush()
        except KeyboardInterrupt:
            return 0
    return 0
