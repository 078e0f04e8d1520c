"""The daemon's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kymwatch.daemon.worker import DEFAULT_RETRY_DELAYS

__all__ = ["DaemonConfig"]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How a daemon watches one store.

    Attributes:
        store: The dataset folder.
        quiet_s: A record is indexed after this long without a new change.
        max_delay_s: ... and at the latest this long after its first pending change.
        polling: Poll instead of using inotify (network shares); also chosen
            automatically when inotify cannot see the store's writes.
        poll_interval_s: Seconds between scans when polling.
        reconcile_interval_s: Seconds between periodic full reconcile scans.
        rescan_backoff_s: (first, maximum) delay between rescans in a storm.
        state_save_interval_s: Minimum seconds between state saves while busy.
        batch_records: Largest number of records indexed in one table write during
            a reconcile (keeps progress and watchdog pings flowing on huge stores).
        retry_delays_s: Backoff before each retry of an unreadable artifact.
        manifest: Create kymflow's ``index/manifest.json.gz`` if the store has
            none (a manifest the store has is always kept up to date).
        indexers: Names of the indexers to run (``--indexers``); None chooses them
            from what the store holds (see ``kymwatch.index.select_indexers``).
    """

    store: Path
    quiet_s: float = 0.3
    max_delay_s: float = 5.0
    polling: bool = False
    poll_interval_s: float = 2.0
    reconcile_interval_s: float = 600.0
    rescan_backoff_s: tuple[float, float] = (1.0, 60.0)
    state_save_interval_s: float = 2.0
    batch_records: int = 5000
    retry_delays_s: tuple[float, ...] = field(default=DEFAULT_RETRY_DELAYS)
    manifest: bool = False
    indexers: tuple[str, ...] | None = None
