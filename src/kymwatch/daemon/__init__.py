"""Daemon layer: watch a store, debounce changes, keep its tables right."""

from kymwatch.daemon.changes import Batch, ChangeKind, FileChange, RecordChange, Rescan
from kymwatch.daemon.classify import SyncRequest, classify
from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.debouncer import Debouncer
from kymwatch.daemon.instance import daemon_running
from kymwatch.daemon.reconcile import diff_fingerprints, route, table_check, whole_records
from kymwatch.daemon.runner import Daemon, SourceFactory
from kymwatch.daemon.sdnotify import SystemdNotifier
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonStatus, StatusView, read_status
from kymwatch.daemon.sync import NoDaemonError, SyncFailedError, request_sync
from kymwatch.daemon.watcher import EventSink, EventSource, InotifyWatcher, PollingWatcher
from kymwatch.daemon.worker import BatchResult, Worker

__all__ = [
    "Batch",
    "BatchResult",
    "ChangeKind",
    "Daemon",
    "DaemonConfig",
    "DaemonStatus",
    "Debouncer",
    "EventSink",
    "EventSource",
    "FileChange",
    "IndexState",
    "InotifyWatcher",
    "NoDaemonError",
    "PollingWatcher",
    "RecordChange",
    "Rescan",
    "SourceFactory",
    "StatusView",
    "SyncFailedError",
    "SyncRequest",
    "SystemdNotifier",
    "Worker",
    "classify",
    "daemon_running",
    "diff_fingerprints",
    "read_status",
    "request_sync",
    "route",
    "table_check",
    "whole_records",
]
