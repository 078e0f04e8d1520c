"""The partitioned side of a dataset's tables: reading parts, planning and publishing
part writes, and the coalesced export (see :mod:`kymwatch.store.parts`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from kymwatch.index.frames import with_pandas_metadata
from kymwatch.index.partition import PartitionPolicy, PartPlan
from kymwatch.store import Fingerprint, ZarrDataset, table_fingerprint
from kymwatch.store.atomic import staged_write
from kymwatch.store.encoding import write_options
from kymwatch.store.parts import (
    EXPORT_VERSION_KEY,
    PartLayout,
    drop_parts,
    export_version,
    parts_folder,
    read_layout,
    read_parts,
    remove_unlisted_parts,
    write_layout,
)

__all__ = ["ExportJob", "PartedTables"]

log = structlog.get_logger(__name__)

_LAYOUT_FILE = "_parts.json"


@dataclass(frozen=True, slots=True)
class ExportJob:
    """The single file of a partitioned table, to be written.

    Attributes:
        name: The table.
        table: Its rows, stamped with ``version`` in the Parquet metadata.
        version: The parts version the rows reflect (None: the table has no parts).
        seen: The export file when the job was made (None: there was none).
        made: Clock time the job was made at.
    """

    name: str
    table: pa.Table
    version: int | None
    seen: Fingerprint | None
    made: float


class PartedTables:
    """Reads and writes the parts of a dataset's partitioned tables, and their exports.

    Args:
        store: The dataset.
        policy: When tables are kept as parts and how often they are exported.
        clock: Monotonic clock (injected for tests).
    """

    def __init__(
        self,
        store: ZarrDataset,
        policy: PartitionPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.policy, self.clock = store, policy, clock
        self.unexported: dict[str, float] = {}  # table → clock time of its first part write
        self.exported_at: dict[str, float] = {}

    def folder(self, name: str) -> Path:
        """``tables/<name>/``."""
        return parts_folder(self.store.path, name)

    def layout(self, name: str) -> PartLayout | None:
        """The layout of table ``name`` on disk (None: a single file)."""
        return read_layout(self.folder(name))

    def stamp(self, name: str) -> Fingerprint | None:
        """The fingerprint of ``_parts.json`` (changes with every part write)."""
        return table_fingerprint(self.folder(name) / _LAYOUT_FILE)

    def read(self, name: str) -> pa.Table | None:
        """The parts of ``name`` concatenated; None when the single file is the table
        (no parts, or an export another program wrote, which drops the parts).

        Parts newer than the export (a crash before it was made) mark it due. A
        read-only dataset deletes nothing: it reads the single file instead.
        """
        folder, export = self.folder(name), self.store.table_path(name)
        layout = read_layout(folder)
        if layout is None:
            return None
        version = export_version(export)
        reason = None
        if version is None and export.exists():
            reason = "export_written_elsewhere"
        else:
            if not self.store.read_only:
                remove_unlisted_parts(folder, layout)
            try:
                table = read_parts(folder, layout)
            except (OSError, pa.ArrowException) as e:
                if not export.exists():
                    raise
                reason = f"part_unreadable: {e}"
        if reason is not None:
            if self.store.read_only:  # a reader changes nothing: the single file it is
                return None
            log.warning("table_parts_dropped", table=name, path=str(folder), reason=reason)
            drop_parts(folder)
            self.unexported.pop(name, None)
            return None
        if version != layout.version:
            self.unexported.setdefault(name, float("-inf"))
        return table

    def files(self, name: str, plan: PartPlan) -> list[tuple[Path, pa.Table]]:
        """The part files of ``plan`` with their content, ready to write."""
        folder = self.folder(name)
        return [(folder / f, with_pandas_metadata(t)) for f, t in plan.writes]

    def begin(self, name: str, plan: PartPlan) -> None:
        """Before the part writes of an edit: the new version, durably (a crash after
        it leaves the export visibly stale). A repartition publishes its layout after
        its files instead (:meth:`commit`)."""
        if not plan.repartitioned:
            write_layout(self.folder(name), plan.layout, within=self.store.path)

    def commit(self, name: str, plan: PartPlan) -> None:
        """After every part of ``plan`` is written: publish a new layout, remove the old
        layout's files, and note that the export is due."""
        folder = self.folder(name)
        if plan.repartitioned:
            write_layout(folder, plan.layout, within=self.store.path)
            remove_unlisted_parts(folder, plan.layout)
            log.info(
                "table_partitioned",
                table=name,
                parts=len(plan.layout.files),
                layout=plan.layout.layout,
            )
        self.unexported.setdefault(name, self.clock())

    def due(self, *, force: bool = False) -> list[str]:
        """The tables whose export is due: every unexported one with ``force``, else
        those whose first unexported write is ``export_interval_s`` old."""
        now, interval = self.clock(), self.policy.export_interval_s
        return sorted(n for n, t in self.unexported.items() if force or now - t >= interval)

    def next_due(self) -> float | None:
        """Clock time at which the next export falls due by age (None: nothing to export)."""
        if not self.unexported:
            return None
        return min(self.unexported.values()) + self.policy.export_interval_s

    def export_job(self, name: str, table: pa.Table) -> ExportJob:
        """The export of ``name`` from ``table`` (the cached table, under the table
        lock): stamped with the parts version it reflects, and the export file as it is."""
        layout = self.layout(name)
        version = None if layout is None else layout.version
        meta = dict(with_pandas_metadata(table).schema.metadata or {})
        if version is not None:
            meta[EXPORT_VERSION_KEY] = str(version).encode()
        seen = table_fingerprint(self.store.table_path(name))
        table = table.replace_schema_metadata(meta)
        return ExportJob(name, table, version, seen, self.clock())

    @contextlib.contextmanager
    def staged_export(self, job: ExportJob) -> Iterator[Callable[[], Fingerprint | None]]:
        """Encode ``job``'s file now (outside the table lock: ~150 ms at 500k rows); the
        block gets ``commit``, to call under the table lock, which replaces
        ``tables/<name>.parquet`` unless another writer replaced it since the job was made
        (then it returns None and writes nothing). The export stays due if a part was
        written since the job was made."""
        start = time.perf_counter()
        path = self.store.table_path(job.name)
        options = write_options(job.table)

        def encode(tmp: Path) -> None:
            pq.write_table(job.table, tmp, **options)

        with staged_write(path, encode, within=self.store.path) as replace:

            def commit() -> Fingerprint | None:
                if table_fingerprint(path) != job.seen:
                    log.info("table_export_dropped", table=job.name, path=str(path))
                    return None
                replace()
                layout = self.layout(job.name)
                if layout is None or layout.version == job.version:
                    self.unexported.pop(job.name, None)
                elif job.name in self.unexported:  # parts written since the job was made
                    self.unexported[job.name] = max(self.unexported[job.name], job.made)
                self.exported_at[job.name] = self.clock()
                log.debug(
                    "table_exported",
                    table=job.name,
                    rows=job.table.num_rows,
                    version=job.version,
                    duration_ms=round((time.perf_counter() - start) * 1000, 2),
                )
                return table_fingerprint(path)

            yield commit
