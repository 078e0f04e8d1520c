"""``kymwatch logs``: read, filter and pretty-print the daemon's JSON-lines log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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


_BLOCK = 64 * 1024
_Line = tuple[str, dict[str, Any]]


def _last_matching(f: BinaryIO, filt: LogFilter, n: int) -> tuple[list[_Line], int]:
    """The last ``n`` lines of ``f`` (0: all) that parse and pass ``filt``, in file order
    (each with its event), and the file's end offset (where following starts).

    Read backwards in blocks from the end, so the tail of a large log (10 MiB before it
    rotates) costs the blocks that hold it, not a parse of every line.
    """
    end = f.seek(0, os.SEEK_END)
    found: list[_Line] = []
    pos, rest = end, b""  # rest: the start of the earliest line seen, maybe incomplete
    while pos > 0 and (n == 0 or len(found) < n):
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step) + rest
        first, *whole = chunk.split(b"\n")
        rest = first
        _keep(reversed(whole), filt, n, found)
    if pos == 0 and (n == 0 or len(found) < n):
        _keep((rest,), filt, n, found)
    found.reverse()
    return found, end


def _keep(lines: Iterable[bytes], filt: LogFilter, n: int, found: list[_Line]) -> None:
    """Append to ``found`` each of ``lines`` (latest first) that parses and passes ``filt``,
    up to ``n`` in all (0: no limit)."""
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        ev = _parse(line)
        if ev is not None and filt.accepts(ev):
            found.append((line, ev))
            if n and len(found) >= n:
                return


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

    def write(line: str, ev: dict[str, Any]) -> None:
        out.write((line if raw else format_event(ev)) + "\n")

    def emit(line: str) -> None:
        ev = _parse(line)
        if ev is not None and filt.accepts(ev):
            write(line, ev)

    with path.open("rb") as f:
        tail, end = _last_matching(f, filt, lines)
    for line, ev in tail:
        write(line, ev)
    out.flush()
    if follow:
        try:
            for line in _follow(path, end):
                emit(line)
                out.flush()
        except KeyboardInterrupt:
            return 0
    return 0
