"""The status file ``index/status.json``: what the daemon is doing, for ``kymwatch status``.

The daemon rewrites it (atomically) on every state change, at most a few times a
second, and at least every heartbeat interval, so its ``heartbeat_utc`` doubles as
a liveness signal where no service manager watchdog exists (launchd).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kymwatch._lazy import lazy_logger
from kymwatch.store import INDEX_DIR, atomic_write_bytes, store_is_whole, utc_now_iso

if TYPE_CHECKING:
    from kymwatch.daemon.mounts import WatchDecision

__all__ = [
    "STATUS_FILE",
    "STATUS_SCHEMA_VERSION",
    "DaemonState",
    "DaemonStatus",
    "StatusView",
    "read_status",
]

log = lazy_logger(__name__)

STATUS_FILE = "status.json"
HEARTBEAT_S = 5.0
STALE_AFTER_HEARTBEATS = 3


STATUS_SCHEMA_VERSION = 1
"""Version of the status file's and ``kymwatch status --json``'s schema
(docs/status-schema.md): raised when a field is removed or changes meaning."""

MAX_LISTED_PROBLEMS = 50
"""At most this many current problems are listed in the status file (all are counted)."""


class DaemonState(enum.StrEnum):
    """What the daemon is doing (``state`` in the status file)."""

    STARTING = "starting"
    RECONCILING = "reconciling"
    WATCHING = "watching"
    INDEXING = "indexing"
    STORE_UNAVAILABLE = "store_unavailable"
    STOPPING = "stopping"
    STOPPED = "stopped"


UNHEALTHY_STATES = frozenset({DaemonState.STORE_UNAVAILABLE.value})
"""States in which a running daemon cannot keep the tables right."""


@dataclass
class DaemonStatus:
    """The live status the daemon maintains and publishes.

    ``counters`` are lifetime totals since the daemon started (every batch, every
    final outcome); ``problems`` are the records that are not right *now*, one
    entry per record and indexer, whatever the number of attempts; ``stale`` the
    generation-2 records whose analysis is stale now (replaced whole by the stale
    counter's thread). Both are listed together in the status file.
    """

    store: str
    pid: int = field(default_factory=os.getpid)
    lock_fd: int | None = None  # the descriptor of the daemon lock (kymwatch.daemon.instance)
    state: DaemonState = DaemonState.STARTING
    watch_mode: str = ""
    watch_reason: str = ""
    fs_type: str = ""
    mount_point: str = ""
    watches: int = 0
    started_utc: str = field(default_factory=utc_now_iso)
    last_update_utc: str | None = None
    queue_depth: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    last_errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10))
    problems: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    heartbeat_s: float = HEARTBEAT_S
    indexers: list[str] = field(default_factory=list)
    indexers_reason: str = ""
    stale_records: dict[str, int] | None = None
    progress: dict[str, Any] | None = None
    stale: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _write_failing: bool = field(default=False, repr=False)

    def set_watch(self, decision: WatchDecision) -> None:
        """Show how the store is watched and why (``watch_mode`` and ``watch_reason``)."""
        self.watch_mode, self.watch_reason = decision.mode, decision.reason
        self.fs_type, self.mount_point = decision.fs_type, decision.mount_point

    def error(self, event: str, **fields: Any) -> None:
        """Remember a recent problem (shown by ``kymwatch status``)."""
        self.last_errors.append({"time_utc": utc_now_iso(), "event": event, **fields})

    def current_problems(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every current problem: the indexing ones and the stale analyses."""
        return self.problems | self.stale

    def problem_counts(self) -> dict[str, int]:
        """Current problems per kind (``artifact_unreadable``: 1 for one bad file)."""
        now = self.current_problems()
        return dict(sorted(Counter(p["problem"] for p in now.values()).items()))

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to the status file (``docs/status-schema.md``)."""
        now = self.current_problems()
        listed = [now[k] for k in sorted(now)[:MAX_LISTED_PROBLEMS]]
        return {
            "schema_version": STATUS_SCHEMA_VERSION,
            "store": self.store,
            "pid": self.pid,
            "lock_fd": self.lock_fd,
            "state": self.state.value,
            "watch_mode": self.watch_mode,
            "watch_reason": self.watch_reason,
            "fs_type": self.fs_type,
            "mount_point": self.mount_point,
            "watches": self.watches,
            "started_utc": self.started_utc,
            "heartbeat_utc": utc_now_iso(),
            "heartbeat_s": self.heartbeat_s,
            "last_update_utc": self.last_update_utc,
            "queue_depth": self.queue_depth,
            "indexers": list(self.indexers),
            "indexers_reason": self.indexers_reason,
            "counters": dict(sorted(self.counters.items())),
            "problem_counts": self.problem_counts(),
            "problems": listed,
            "last_errors": list(self.last_errors),
            "stale_records": self.stale_records,
            "progress": self.progress,
        }

    def write(self, root: Path) -> None:
        """Publish the status atomically (no fsync: it is rewritten every few seconds).

        Nothing is written while the store is not whole (moved, or being deleted):
        a file created meanwhile would recreate it under the old path or make its
        ``rm -rf`` fail.
        """
        if not store_is_whole(root):
            return
        data = json.dumps(self.to_json(), indent=1).encode()
        path = root / INDEX_DIR / STATUS_FILE
        try:
            atomic_write_bytes(path, data, fsync=False, within=root)
        except OSError as e:
            # Best effort (disk full, read-only remount): the daemon must not die of it.
            if not self._write_failing:
                log.warning("status_write_failed", path=str(path), error=str(e))
            self._write_failing = True
            return
        self._write_failing = False


@dataclass(frozen=True, slots=True)
class StatusView:
    """A status file as read back, with its health judged.

    Attributes:
        data: The status document (empty if there is none).
        running: Whether a daemon holds the store's daemon lock.
        age_s: Seconds since the last heartbeat (None without a status file).
    """

    data: dict[str, Any]
    running: bool
    age_s: float | None

    @property
    def stale(self) -> bool:
        """True if a running daemon missed several heartbeats (hung or overloaded)."""
        limit = float(self.data.get("heartbeat_s", HEARTBEAT_S)) * STALE_AFTER_HEARTBEATS
        return self.running and (self.age_s is None or self.age_s > limit)

    @property
    def healthy(self) -> bool:
        """Running, heartbeat fresh, and not in a state where it cannot do its job."""
        return self.running and not self.stale and self.data.get("state") not in UNHEALTHY_STATES


def read_status(root: Path, running: bool) -> StatusView:
    """Read the status file of the store at ``root``."""
    path = root / INDEX_DIR / STATUS_FILE
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return StatusView({}, running, None)
    try:
        beat = dt.datetime.fromisoformat(data["heartbeat_utc"])
        age: float | None = (dt.datetime.now(dt.UTC) - beat).total_seconds()
    except (KeyError, TypeError, ValueError):
        age = None
    return StatusView(data, running, age)
