"""``kymwatch logs`` reads the tail of the log from its end: the same lines a full forward
read would print, across block boundaries, torn lines and filters."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kymwatch import logview
from kymwatch.logview import LogFilter, format_event, show_log

IDS = [str(uuid.UUID(int=i)) for i in range(1, 6)]


def event(i: int) -> dict[str, Any]:
    """A daemon log line as structlog writes it (kymflow-shaped record ids)."""
    return {
        "image_id": IDS[i % len(IDS)],
        "indexer": "velocity_events",
        "rows": i,
        "note": "é" * (i % 7),  # multi-byte characters, so blocks split inside them
        "event": "record_indexed" if i % 3 else "artifact_missing",
        "level": "info" if i % 4 else "warning",
        "logger": "kymwatch.index.kymdataset",
        "timestamp": f"2026-11-26T12:00:{i % 60:02d}.000000Z",
    }


def forward(text: str, filt: LogFilter, n: int) -> list[str]:
    """What a plain forward read keeps: the last ``n`` (0: all) lines that parse and pass."""
    kept = []
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and filt.accepts(ev):
            kept.append(format_event(ev))
    return kept[-n:] if n else kept


def shown(path: Path, filt: LogFilter, n: int) -> list[str]:
    """The lines ``show_log`` prints."""
    out = io.StringIO()
    assert show_log(path, filt, lines=n, out=out) == 0
    return out.getvalue().splitlines()


@pytest.fixture
def big_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """3,000 lines with torn and non-JSON lines among them, read in 1 KiB blocks (many
    block boundaries), the last line unterminated (a write in progress)."""
    monkeypatch.setattr(logview, "_BLOCK", 1024)
    lines = [json.dumps(event(i), ensure_ascii=False) for i in range(3000)]
    lines[1500] = lines[1500][:40]  # torn
    lines[2998] = "not json at all"
    lines.insert(10, "[1, 2, 3]")  # JSON, but not an event
    text = "\n".join(lines)  # no final newline
    path = tmp_path / "kymwatch.log"
    path.write_text(text, encoding="utf-8")
    return path, text


@pytest.mark.parametrize("n", [0, 1, 7, 50, 2999, 10_000])
@pytest.mark.parametrize(
    "filt",
    [LogFilter(), LogFilter(level="warning"), LogFilter(image_id=IDS[2]), LogFilter(event="x")],
)
def test_tail_from_the_end_equals_a_forward_read(
    big_log: tuple[Path, str], n: int, filt: LogFilter
) -> None:
    """For any count and filter, the lines printed equal those of a forward read of the
    whole file."""
    path, text = big_log
    assert shown(path, filt, n) == forward(text, filt, n)


def test_tail_reads_only_the_blocks_it_needs(
    big_log: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last 5 lines of a 3,000-line log parse a few dozen lines, not all of them."""
    path, _ = big_log
    parsed: list[str] = []
    real = logview._parse

    def counting(line: str) -> dict[str, Any] | None:
        parsed.append(line)
        return real(line)

    monkeypatch.setattr(logview, "_parse", counting)
    assert len(shown(path, LogFilter(), 5)) == 5
    assert 5 <= len(parsed) < 100


def test_crlf_and_empty_logs(tmp_path: Path) -> None:
    """Lines ending in CRLF print like LF ones; an empty log prints nothing."""
    path = tmp_path / "kymwatch.log"
    path.write_bytes(b"")
    assert shown(path, LogFilter(), 5) == []
    path.write_bytes(b"".join(json.dumps(event(i)).encode() + b"\r\n" for i in range(4)))
    assert shown(path, LogFilter(), 2) == [format_event(event(2)), format_event(event(3))]
