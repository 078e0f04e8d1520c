"""Terminal progress bars (tqdm) for ``kymwatch run``'s first index and ``kymwatch rebuild``.

Shown only when stderr is a terminal, not under a service manager, and not turned
off (``--no-progress``, ``progress = false``). The daemon feeds a bar through
:class:`~kymwatch.daemon.progress.ProgressSink`; ``rebuild`` through the per-chunk
callback of :meth:`KymDataset.rebuild_report`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from kymwatch.daemon.progress import Progress

__all__ = ["TerminalBar", "bars_wanted", "rebuild_bar"]


def bars_wanted(enabled: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw bars: enabled, ``stream`` (stderr) a terminal, no service manager."""
    stream = sys.stderr if stream is None else stream
    if not enabled or os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm(desc: str, total: int, stream: TextIO | None) -> Any:
    from tqdm import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit="rec",
        file=sys.stderr if stream is None else stream,
        dynamic_ncols=True,
        leave=True,
    )


class TerminalBar:
    """A :class:`~kymwatch.daemon.progress.ProgressSink` drawing a tqdm bar per piece of
    work (a new bar when ``what`` changes).

    While a bar is shown, console log lines go through ``tqdm.write`` (tqdm's
    ``logging_redirect_tqdm``), so they print above the bar instead of through it.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._bar: Any = None
        self._what: str | None = None
        self._redirect = contextlib.ExitStack()

    def update(self, progress: Progress) -> None:
        """Move the bar to ``progress.done`` of ``progress.total``."""
        if self._bar is None or self._what != progress.what:
            self.close()
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect.enter_context(logging_redirect_tqdm())
            self._bar = _tqdm(progress.what, progress.total, self._stream)
            self._what = progress.what
        self._bar.total = progress.total
        self._bar.update(progress.done - self._bar.n)

    def close(self) -> None:
        """Finish the bar (the line stays on the terminal)."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._what = None, None
        self._redirect.close()


def rebuild_bar(desc: str, stream: TextIO | None = None) -> tuple[Callable[[int, int], None], Any]:
    """A per-chunk callback ``(done, total)`` for ``rebuild_report`` and the bar it moves
    (close it when the table is done)."""
    bar = _tqdm(desc, 0, stream)

    def step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return step, bar
