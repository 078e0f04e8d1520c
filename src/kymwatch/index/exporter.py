"""Exporting partitioned tables: the single file ``tables/<name>.parquet`` of each one,
written from the cached table, at once or on the exporter thread beside the daemon's loop.

:class:`Exporter` makes the export jobs from :class:`~kymwatch.index.publish.Publisher`'s
cache under the table lock, has :class:`~kymwatch.index.parted.PartedTables` encode each
one without the lock and replace the file under it, and keeps the publisher's cache in
step with the file written.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from concurrent.futures import Executor, Future

from kymwatch.index.parted import ExportJob
from kymwatch.index.publish import Publisher
from kymwatch.store import Fingerprint
from kymwatch.store.tables import LazyPool

__all__ = ["Exporter"]

_EXPORT_LOCK_WAIT_S = 1.0
"""Longest wait of the exporter thread for the table lock; the export then stays due."""
_exporter = LazyPool(1, "kymwatch-export")
"""The thread that writes exports beside the daemon's loop."""


class Exporter:
    """The exports of one store's partitioned tables.

    Args:
        pub: The store's publisher (its cache is what is exported).
        held: Names of the tables with results held, not written yet: not exported
            (their export would be stale at once).
    """

    def __init__(self, pub: Publisher, held: Container[str]) -> None:
        self._pub, self._held = pub, held
        # The single file of each partitioned table as the last export wrote it (it may
        # land on the exporter thread, before the daemon's state has noted it).
        self.exported: dict[str, Fingerprint] = {}

    def export(self, *, force: bool = False) -> list[str]:
        """Write the single file of each partitioned table whose export is due (all of
        them with ``force``), from the cached table; returns their names. An indexer's
        partitioned table not read yet is read first: an export older than its parts
        (a crash between the two) is due at once.
        """
        return self._write(self._jobs(force=force))

    def start(
        self, *, force: bool = False, executor: Executor | None = None
    ) -> Future[list[str]] | None:
        """Start :meth:`export` on the exporter thread (or ``executor``); None when no
        export is due. The jobs are made now, from the cached tables: edits published
        meanwhile do not wait for the encode, and an export they make stale stays due.
        """
        jobs = self._jobs(force=force)
        if not jobs:
            return None
        return (executor or _exporter()).submit(self._write, jobs, _EXPORT_LOCK_WAIT_S)

    def _jobs(self, *, force: bool) -> list[ExportJob]:
        pub = self._pub
        for ix in pub.indexers():  # parts on disk not read yet: is their export stale?
            if ix.table_name not in pub.tables and pub.parted.layout(ix.table_name):
                pub.read(ix.table_name)
        names = [n for n in pub.parted.due(force=force) if n not in self._held]
        if not names:
            return []
        pub.store.check_writable()
        with pub.store.table_lock():
            return [pub.parted.export_job(name, pub.read(name).table) for name in names]

    def _write(self, jobs: Sequence[ExportJob], lock_wait_s: float = -1) -> list[str]:
        """Encode each export without the table lock, replace each file under it (a job
        whose lock was not had within ``lock_wait_s`` is left due)."""
        store, written = self._pub.store, []
        for job in jobs:
            with self._pub.parted.staged_export(job) as commit:
                try:
                    lock = store.table_lock(timeout=lock_wait_s)
                    lock.__enter__()
                except TimeoutError:  # another process holds it (a rebuild): later
                    continue
                try:  # the cache's stamp follows before the loop can read the table
                    stamp = commit()
                    if stamp is not None:
                        self._pub.note_exported(job.name, stamp)
                        self.exported[job.name] = stamp
                        written.append(job.name)
                finally:
                    lock.__exit__(None, None, None)
        return written
