"""kymwatch: keeps the dataset tables of kymflow Zarr datasets up to date.

``kymwatch.sync(store, timeout=60)`` waits until the tables reflect every earlier
write (imported on first use: ``import kymwatch`` stays light).
"""

from typing import TYPE_CHECKING

from kymwatch._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kymwatch.client import SyncResult, sync

__all__ = ["SyncResult", "__version__", "sync"]

__getattr__, __dir__ = lazy_exports(__name__, {"sync": "client", "SyncResult": "client"})
