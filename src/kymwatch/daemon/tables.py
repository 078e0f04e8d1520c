"""Table checks: tables deleted, replaced behind the daemon's back, or of another schema.

:class:`TableKeeper` compares each indexer's table on disk with what the state
says was published and, where the planner says so, regrows it as ordinary
chunked work: the state forgets what it indexed for the table's artifacts, so the
next reconcile re-indexes them in every record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from kymwatch.daemon import planner
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.worker import Worker
from kymwatch.index import DatasetIndexer, KymDataset
from kymwatch.store import IMAGES_DIR, table_fingerprint

__all__ = ["TableKeeper"]

log = structlog.get_logger(__name__)


class TableKeeper:
    """Keeps the tables of ``kd`` consistent with the state that indexed them.

    Args:
        root: The store folder.
        kd: The dataset whose indexers' tables are checked.
        state: What the daemon indexed and published.
        worker: Told when an emptied table is published.
        reporter: Receives the errors of a failed regrowth.
        table_lock: Takes the store's table lock; yields False if it was not
            obtained (the daemon is stopping).
    """

    def __init__(
        self,
        root: Path,
        kd: KymDataset,
        state: IndexState,
        worker: Worker,
        reporter: Reporter,
        table_lock: Callable[[], contextlib.AbstractContextManager[bool]],
    ) -> None:
        self.root, self.kd, self.state = root, kd, state
        self.worker, self.reporter, self._table_lock = worker, reporter, table_lock

    def image_ids(self, indexers: Sequence[DatasetIndexer] | None = None) -> set[str]:
        """Every image_id present in the tables of ``indexers`` (default: all; tables
        are cached between changes)."""
        ids: set[str] = set()
        for ix in self.kd.indexers if indexers is None else indexers:
            try:
                ids.update(self.kd.table_image_ids(ix.table_name))
            except MemoryError:
                raise
            except Exception:  # noqa: S112 - unreadable: the worker rebuilds it, logging why
                continue
        return ids

    def regrow(self) -> bool:
        """Rebuild the tables the planner names (deleted or replaced behind our back,
        or written with another schema) as ordinary chunked work: the state forgets what
        it indexed for their artifacts, so the reconcile re-indexes them in every record.

        Returns:
            True if a table needs that (the caller makes sure a reconcile follows).
        """
        if not (self.root / IMAGES_DIR).is_dir():
            return False  # the store is gone or moved: write nothing until it is back
        tables: list[planner.TableInfo] = []
        for ix in self.kd.indexers:
            published = self.state.tables.get(ix.table_name)
            current = table_fingerprint(self.kd.store.table_path(ix.table_name))
            if published is None and current is not None and not self.state.migrated:
                self.state.note_table(self.root, ix.table_name, current)  # a new state adopts it
                published = current
            elif current != published and current == self.kd.exported_stamp(ix.table_name):
                # Our own export, replaced on the exporter thread and not collected yet.
                self.state.note_table(self.root, ix.table_name, current)
                published = current
            elif current is None and self.kd.parted.layout(ix.table_name) is not None:
                # A partitioned table whose single file is not written yet (its export
                # runs on the exporter thread) or was deleted: the parts are the table,
                # the export is made again from them.
                self.kd.parted.unexported.setdefault(ix.table_name, float("-inf"))
                continue
            tables.append(planner.TableInfo(ix.name, ix.schema_version, published, current))
        work = planner.tables_to_rebuild(
            tables,
            self.state.schema_versions,
            has_state=bool(self.state.records),
            migrated=self.state.migrated,
        )
        on_disk = {t.indexer: t.current for t in tables}
        names: set[str] = set()
        for name, reason in work:
            ix = self.kd.indexer(name)
            path = self.kd.store.table_path(ix.table_name)
            if reason == "table_missing":  # an empty table now, filled chunk by chunk
                if not self._empty_table(ix):
                    return False
            elif reason in ("table_changed_externally", "state_migrated"):
                # Kept as it is (never fewer rows meanwhile) and re-derived record by
                # record: the records it names are re-read whole, the others through
                # their forgotten fingerprints.
                if reason == "table_changed_externally":
                    log.warning(reason, table=ix.table_name, path=str(path))
                self.state.suspects |= self.image_ids([ix])
                self.state.note_table(self.root, ix.table_name, on_disk[name])
            names |= ix.artifact_names
            self.state.schema_versions[ix.name] = ix.schema_version
            log.warning(
                "table_rebuilt",
                table=ix.table_name,
                indexer=ix.name,
                reason=reason,
                records=len(self.state.records),
            )
        if names:
            self.state.replace_records(planner.forget_artifacts(self.state.records, names))
        return bool(work)

    def _empty_table(self, ix: DatasetIndexer) -> bool:
        """Publish an empty table for ``ix``; False if the lock or the write failed."""
        try:
            with self._table_lock() as locked:
                if not locked:
                    return False
                self.kd.rebuild_report(ix, [], log_outcomes=False)
        except Exception as e:  # e.g. disk full: the next table check tries again
            log.exception("table_rebuild_failed", table=ix.table_name, error=str(e))
            self.reporter.error("table_rebuild_failed", table=ix.table_name, error=str(e))
            return False
        self.worker.note_published(ix.table_name)
        return True
