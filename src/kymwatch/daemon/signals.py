"""Signals of the daemon's process: SIGTERM/SIGINT stop it, SIGHUP reopens its log.

Handlers are installed only on the main thread (an in-process daemon on another
thread is stopped with :meth:`Daemon.stop`) and the previous ones are restored.
A second SIGTERM/SIGINT ends the process at once, as a kill would: the daemon is
built to survive that (the next start re-indexes what was not recorded).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import structlog

__all__ = ["handle_signals"]

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def handle_signals(
    stopping: threading.Event, stop: Callable[[], None], hangup: Callable[[], None]
) -> Iterator[None]:
    """Route SIGTERM/SIGINT to ``stop`` and SIGHUP to ``hangup`` while in the block.

    Args:
        stopping: Set once a stop was requested (a second signal then exits at once).
        stop: Asks the loop to stop (must be signal-safe).
        hangup: Asks the loop to reopen its log files (must be signal-safe).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():  # a second Ctrl-C: leave now, as kill -9 would
            os.write(2, f"kymwatch: {name} again, exiting at once\n".encode())
            os._exit(128 + signum)
        log.info("stop_requested", signal=name)
        stop()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        hangup()

    handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_hangup}
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
