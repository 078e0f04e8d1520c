"""Waiting from Python: ``kymwatch.sync(store)`` before reading tables.

The same barrier as ``kymwatch sync STORE`` (see :mod:`kymwatch.daemon.sync`): it
returns once the daemon watching ``store`` has indexed every write made before the
call. Importing it is cheap (no pandas, pyarrow, zarr or watchdog), so a notebook
can call it before every read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from kymwatch.daemon.sync import request_sync
from kymwatch.store.root import existing_store

__all__ = ["SyncResult", "sync"]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync found.

    Attributes:
        store: The store's absolute path.
        not_current: The records whose table rows do not reflect their artifacts,
            each a dict with ``image_id``, ``indexer``, ``problem``
            (``artifact_unreadable``, ``artifact_invalid`` or ``pending``) and, for
            the first two, ``path`` and ``error``: their rows are the last good ones.
    """

    store: str
    not_current: tuple[dict[str, Any], ...] = ()

    @property
    def current(self) -> bool:
        """True when every record's rows reflect its artifacts."""
        return not self.not_current


def sync(store: str | os.PathLike[str], timeout: float = 60.0) -> SyncResult:
    """Block until the tables of ``store`` reflect every write made before this call.

    Args:
        store: The dataset's root folder (str or Path).
        timeout: Seconds to wait for the daemon's answer (positive, finite).

    Returns:
        A :class:`SyncResult`; ``result.current`` is False when some records could not
        be indexed (listed in ``result.not_current`` with the reason).

    Raises:
        ValueError: ``timeout`` is not a positive finite number.
        kymwatch.errors.StoreNotFoundError: ``store`` does not exist.
        kymwatch.errors.NotAStoreError: ``store`` is not a kymflow dataset's root.
        kymwatch.daemon.NoDaemonError: no daemon runs on the store (or it stopped).
        kymwatch.daemon.SyncFailedError: the daemon could not index everything.
        kymwatch.errors.SyncTimeoutError: no answer within ``timeout`` (a TimeoutError).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    root = existing_store(store)
    answer = request_sync(root, timeout=float(timeout))
    not_current = tuple(dict(p) for p in answer.get("not_current") or ())
    return SyncResult(str(root), not_current)
