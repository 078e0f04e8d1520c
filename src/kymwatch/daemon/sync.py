"""``kymwatch sync``: a barrier that returns once the tables reflect every earlier write.

Like Watchman's cookies: the client drops a request file into ``index/sync/``; the
daemon sees it after every event that preceded it, indexes everything pending, then
answers with a ``.done`` file.

Which work answers a request is :func:`choose_sync_path`'s decision:

- ``events``: the event source delivers its events in order through one queue (one
  inotify instance) and no sign of loss came since the last scan, so the request's own
  event arriving proves that every earlier change was reported before it. Flushing
  the debouncer and indexing what it held is enough: no scan.
- ``full``: otherwise (polling, a source that cannot promise order, an overflow or a
  watcher failure not yet followed by a rescan, a table replaced behind the daemon's
  back, a journal of a crashed run, the store unavailable): a full reconcile scan.

Either way, when what was indexed revealed a new table to grow (the store's first
record of another kymflow generation), a reconcile grows it before the answer
(logged with reason ``new_tables``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from kymwatch._lazy import lazy_logger
from kymwatch.daemon.classify import SYNC_DIR, SYNC_REQUEST_SUFFIX
from kymwatch.daemon.instance import daemon_running
from kymwatch.errors import KymwatchError, SyncTimeoutError
from kymwatch.store import atomic_write_bytes, utc_now_iso

__all__ = [
    "NoDaemonError",
    "SyncFailedError",
    "SyncPath",
    "answer_sync",
    "choose_sync_path",
    "request_sync",
]


log = lazy_logger(__name__)

_FIRST_POLL_S = 0.002
"""Seconds between looks for the answer during the first :data:`_FIRST_POLLS_S`."""
_FIRST_POLLS_S = 0.25


class NoDaemonError(KymwatchError, ConnectionError):
    """No daemon is running on the store, so nobody can answer a sync."""


class SyncFailedError(KymwatchError, RuntimeError):
    """The daemon answered, but could not bring the tables up to date (see its log)."""


SyncPath = Literal["events", "full"]
"""How a sync is answered: from the events already received, or by a full scan."""


def choose_sync_path(
    *,
    ordered_source: bool,
    loss_pending: str | None,
    tables_changed: bool,
    journaled: bool,
    store_available: bool,
) -> tuple[SyncPath, str]:
    """Whether the events received so far prove every earlier write was seen, and why.

    Args:
        ordered_source: The event source reports every change in the order it
            happened, through one queue, and the sync request as one of them
            (inotify; not polling, which finds changes by comparing stats).
        loss_pending: The reason of a loss of events (overflow, watcher error, a watch
            that could not be added, a dead watcher, a failed batch, the store moved)
            not yet followed by its rescan; None if there is none.
        tables_changed: A table is missing or was replaced behind the daemon's back
            (its rows must be re-derived from every record).
        journaled: Records a crashed run may have published without saving their
            fingerprints wait to be re-read.
        store_available: ``images/`` is there.

    Returns:
        ``("events", "events_in_order")``, or ``("full", reason)`` with reason
        ``store_unavailable``, ``source_unordered``, the loss's reason (such as
        ``inotify_overflow``), ``tables_changed`` or ``journal``.
    """
    if not store_available:
        return "full", "store_unavailable"
    if not ordered_source:
        return "full", "source_unordered"
    if loss_pending is not None:
        return "full", loss_pending
    if tables_changed:
        return "full", "tables_changed"
    if journaled:
        return "full", "journal"
    return "events", "events_in_order"


def request_sync(root: Path, timeout: float = 60.0, poll: float = 0.02) -> dict[str, Any]:
    """Block until the daemon on ``root`` has indexed every write made before this call.

    Returns:
        The daemon's answer (token, time, pid).

    Raises:
        NoDaemonError: no daemon runs on the store (or it died while we waited).
        SyncFailedError: the daemon could not index everything (store unavailable,
            a failed table write); its log and ``kymwatch status`` say why.
        SyncTimeoutError: no answer within ``timeout`` seconds.
    """
    if not daemon_running(root):
        raise NoDaemonError(f"no kymwatch daemon is running on {root}")
    folder = root / SYNC_DIR
    token = f"{time.time_ns()}-{os.urandom(4).hex()}"
    request = folder / f"{token}{SYNC_REQUEST_SUFFIX}"
    done = folder / f"{token}.done"
    atomic_write_bytes(request, b"{}", fsync=False)
    start = time.monotonic()
    deadline = start + timeout
    next_alive_check = start + 1.0
    try:
        while True:
            try:
                answer: dict[str, Any] = json.loads(done.read_bytes())
                if answer.get("ok", True) is False:
                    raise SyncFailedError(
                        f"the daemon on {root} could not bring the tables up to date "
                        f"({answer.get('error')}); see kymwatch status / kymwatch logs"
                    )
                return answer
            except FileNotFoundError:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise SyncTimeoutError(f"the daemon on {root} did not answer within {timeout:g} s")
            if now >= next_alive_check:
                next_alive_check = now + 1.0
                if not daemon_running(root):
                    raise NoDaemonError(f"the kymwatch daemon on {root} stopped before answering")
            # An answer from the events comes within milliseconds: look often at first.
            time.sleep(min(poll, _FIRST_POLL_S) if now - start < _FIRST_POLLS_S else poll)
    finally:
        request.unlink(missing_ok=True)
        done.unlink(missing_ok=True)


def answer_sync(
    root: Path,
    token: str,
    *,
    ok: bool,
    error: str | None = None,
    not_current: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """The daemon's side: answer request ``token``; False if the answer cannot be written.

    Args:
        root: The store folder.
        token: The request's token.
        ok: Whether every change was indexed (False: store unavailable, failed write).
        error: The event name of the failure, when not ok.
        not_current: Records whose rows do not reflect their artifacts (unreadable,
            invalid, still pending), each with ``image_id``, ``indexer``, ``problem``.

    A failure (disk full, store gone) is logged; the client then times out.
    """
    folder = root / SYNC_DIR
    answer = {
        "token": token,
        "time_utc": utc_now_iso(),
        "pid": os.getpid(),
        "ok": ok,
        "error": error,
        "not_current": list(not_current),
    }
    done = folder / f"{token}.done"
    try:
        atomic_write_bytes(done, json.dumps(answer).encode(), fsync=False, within=root)
    except OSError as e:
        log.warning("sync_answer_failed", path=str(done), error=str(e))
        return False
    (folder / f"{token}{SYNC_REQUEST_SUFFIX}").unlink(missing_ok=True)
    return True
