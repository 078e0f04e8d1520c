"""Daemon layer: watch a store, debounce changes, keep its tables right.

Every name is imported from its module on first use (see :mod:`kymwatch._lazy`):
``kymwatch status``, ``sync`` and ``logs`` import one or two modules of this package
and must not pay for the others (nor for the indexers, pandas and pyarrow).
"""

from typing import TYPE_CHECKING

from kymwatch._lazy import lazy_exports

# Imported now: once any module imports the submodule ``classify``, the package attribute
# of that name would be the submodule, not the function (a lazy name cannot win).
from kymwatch.daemon.classify import SyncRequest, classify

if TYPE_CHECKING:
    from kymwatch.daemon.changes import Batch, ChangeKind, FileChange, RecordChange, Rescan, Signal
    from kymwatch.daemon.config import DaemonConfig
    from kymwatch.daemon.debouncer import DUE_BY, Debouncer
    from kymwatch.daemon.fleet import Fleet, FleetConfig, FolderSource
    from kymwatch.daemon.instance import DaemonLock, daemon_pid, daemon_running
    from kymwatch.daemon.member import Member, MemberNotifier, StoreDaemon
    from kymwatch.daemon.mounts import (
        Mount,
        WatchDecision,
        decide_watch_mode,
        find_mount,
        native_watch_mode,
    )
    from kymwatch.daemon.observer import ObserverWatcher, observer_class
    from kymwatch.daemon.planner import (
        ChunkCosts,
        TableInfo,
        chunk_size,
        forget_artifacts,
        plan_reconcile,
        tables_to_rebuild,
    )
    from kymwatch.daemon.polling import PollingWatcher, PollSettings
    from kymwatch.daemon.pollscan import PollScanner
    from kymwatch.daemon.reconcile import diff_fingerprints, route
    from kymwatch.daemon.reporter import Reporter
    from kymwatch.daemon.runner import Daemon
    from kymwatch.daemon.schedule import Backoff, Schedule, Task
    from kymwatch.daemon.sdnotify import SystemdNotifier
    from kymwatch.daemon.sources import SourceFactory, make_source
    from kymwatch.daemon.state import IndexState
    from kymwatch.daemon.status import DaemonState, DaemonStatus, StatusView, read_status
    from kymwatch.daemon.sync import NoDaemonError, SyncFailedError, request_sync
    from kymwatch.daemon.watcher import EventSink, EventSource, FolderWatcher, InotifyWatcher
    from kymwatch.daemon.worker import BatchResult, Retry, Worker

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Batch": "changes",
        "ChangeKind": "changes",
        "FileChange": "changes",
        "RecordChange": "changes",
        "Rescan": "changes",
        "Signal": "changes",
        "DUE_BY": "debouncer",
        "Debouncer": "debouncer",
        "DaemonLock": "instance",
        "daemon_pid": "instance",
        "daemon_running": "instance",
        "Mount": "mounts",
        "WatchDecision": "mounts",
        "decide_watch_mode": "mounts",
        "find_mount": "mounts",
        "native_watch_mode": "mounts",
        "ChunkCosts": "planner",
        "TableInfo": "planner",
        "chunk_size": "planner",
        "forget_artifacts": "planner",
        "plan_reconcile": "planner",
        "tables_to_rebuild": "planner",
        "PollScanner": "pollscan",
        "diff_fingerprints": "reconcile",
        "route": "reconcile",
        "Backoff": "schedule",
        "Schedule": "schedule",
        "Task": "schedule",
        "DaemonState": "status",
        "DaemonStatus": "status",
        "StatusView": "status",
        "read_status": "status",
        "NoDaemonError": "sync",
        "SyncFailedError": "sync",
        "request_sync": "sync",
        "DaemonConfig": "config",
        "Fleet": "fleet",
        "FleetConfig": "fleet",
        "FolderSource": "fleet",
        "Member": "member",
        "MemberNotifier": "member",
        "StoreDaemon": "member",
        "FolderWatcher": "watcher",
        "Reporter": "reporter",
        "Daemon": "runner",
        "SystemdNotifier": "sdnotify",
        "SourceFactory": "sources",
        "make_source": "sources",
        "IndexState": "state",
        "EventSink": "watcher",
        "EventSource": "watcher",
        "InotifyWatcher": "watcher",
        "ObserverWatcher": "observer",
        "observer_class": "observer",
        "PollingWatcher": "polling",
        "PollSettings": "polling",
        "BatchResult": "worker",
        "Retry": "worker",
        "Worker": "worker",
    },
)

__all__ = [
    "DUE_BY",
    "Backoff",
    "Batch",
    "BatchResult",
    "ChangeKind",
    "ChunkCosts",
    "Daemon",
    "DaemonConfig",
    "DaemonLock",
    "DaemonState",
    "DaemonStatus",
    "Debouncer",
    "EventSink",
    "EventSource",
    "FileChange",
    "Fleet",
    "FleetConfig",
    "FolderSource",
    "FolderWatcher",
    "IndexState",
    "InotifyWatcher",
    "Member",
    "MemberNotifier",
    "Mount",
    "NoDaemonError",
    "ObserverWatcher",
    "PollScanner",
    "PollSettings",
    "PollingWatcher",
    "RecordChange",
    "Reporter",
    "Rescan",
    "Retry",
    "Schedule",
    "Signal",
    "SourceFactory",
    "StatusView",
    "StoreDaemon",
    "SyncFailedError",
    "SyncRequest",
    "SystemdNotifier",
    "TableInfo",
    "Task",
    "WatchDecision",
    "Worker",
    "chunk_size",
    "classify",
    "daemon_pid",
    "daemon_running",
    "decide_watch_mode",
    "diff_fingerprints",
    "find_mount",
    "forget_artifacts",
    "make_source",
    "native_watch_mode",
    "observer_class",
    "plan_reconcile",
    "read_status",
    "request_sync",
    "route",
    "tables_to_rebuild",
]
