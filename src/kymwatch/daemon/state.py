"""What kymwatch last indexed: the fingerprint of every artifact file per record.

Persisted under ``index/`` so a restarted daemon indexes exactly what changed while
it was down. The state only ever names content that is already in the tables: it
is saved after the tables are published, never before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from kymwatch.daemon.reconcile import artifact_name_of
from kymwatch.store import INDEX_DIR, Fingerprint, RecordFiles, atomic_write, atomic_write_bytes

__all__ = ["IndexState"]

log = structlog.get_logger(__name__)

_FILES = "state-fingerprints.parquet"
_META = "state.json"
_FORMAT = 1
_NO_FILES = ""  # row marker for a record that has no artifact files
_JOURNAL = "state-journal.txt"


@dataclass
class IndexState:
    """Fingerprints per record (image_id → file → fingerprint) and indexer versions."""

    records: dict[str, RecordFiles] = field(default_factory=dict)
    schema_versions: dict[str, int] = field(default_factory=dict)
    dirty: bool = False
    suspects: set[str] = field(default_factory=set)
    """Records whose tables may be newer than the saved fingerprints (read from the
    journal of a daemon that stopped without saving): re-indexed at start."""

    @staticmethod
    def _paths(root: Path) -> tuple[Path, Path]:
        return root / INDEX_DIR / _FILES, root / INDEX_DIR / _META

    @classmethod
    def load(cls, root: Path) -> IndexState:
        """The saved state of the store at ``root`` (empty if none or unreadable)."""
        state = cls._load(root)
        try:
            lines = (root / INDEX_DIR / _JOURNAL).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        state.suspects = {line for line in lines if line}
        return state

    def note_publishing(self, root: Path, image_ids: Iterable[str]) -> None:
        """Journal records about to be published, before their tables are written.

        The fingerprints are saved only every few seconds; if the daemon dies in
        between, the next start re-indexes the journaled records, so no table row
        can outlive a crash unnoticed. The journal is cleared by each save.
        """
        try:
            with (root / INDEX_DIR / _JOURNAL).open("a", encoding="utf-8") as f:
                f.write("".join(f"{i}\n" for i in image_ids))
        except OSError as e:
            log.warning("state_save_failed", path=str(root / INDEX_DIR / _JOURNAL), error=str(e))

    @classmethod
    def _load(cls, root: Path) -> IndexState:
        files_path, meta_path = cls._paths(root)
        if not meta_path.exists():
            return cls()
        try:
            meta = json.loads(meta_path.read_bytes())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"state format {meta.get('format')!r}")
            cols = pq.read_table(files_path).to_pydict()
        except (OSError, ValueError, pa.ArrowException) as e:
            log.warning("state_reset", path=str(meta_path), error=str(e))
            return cls()
        records: dict[str, RecordFiles] = {}
        for image_id, name, size, mtime_ns, inode in zip(
            cols["image_id"],
            cols["file"],
            cols["size"],
            cols["mtime_ns"],
            cols["inode"],
            strict=True,
        ):
            files = records.setdefault(image_id, {})
            if name != _NO_FILES:
                files[name] = Fingerprint(size, mtime_ns, inode)
        return cls(records, {str(k): int(v) for k, v in meta["schema_versions"].items()})

    def save(self, root: Path) -> bool:
        """Write the state atomically (fingerprints first, then the metadata).

        Returns False, logging ``state_save_failed`` and staying dirty so a later
        save retries, when the files cannot be written (disk full, read-only):
        a daemon must outlive that, and an old state only costs extra re-indexing.
        """
        try:
            self._save(root)
        except OSError as e:
            log.warning("state_save_failed", path=str(root / INDEX_DIR), error=str(e))
            return False
        return True

    def _save(self, root: Path) -> None:
        files_path, meta_path = self._paths(root)
        cols: dict[str, list[object]] = {
            k: [] for k in ("image_id", "file", "size", "mtime_ns", "inode")
        }
        for image_id, files in self.records.items():
            entries = files.items() or [(_NO_FILES, Fingerprint(0, 0, 0))]
            for name, fp in entries:
                cols["image_id"].append(image_id)
                cols["file"].append(name)
                cols["size"].append(fp.size)
                cols["mtime_ns"].append(fp.mtime_ns)
                cols["inode"].append(fp.inode)
        schema = pa.schema(
            [("image_id", pa.string()), ("file", pa.string())]
            + [(c, pa.int64()) for c in ("size", "mtime_ns", "inode")]
        )
        table = pa.Table.from_pydict(cols, schema=schema)
        atomic_write(files_path, lambda tmp: pq.write_table(table, tmp))
        meta = {"format": _FORMAT, "schema_versions": self.schema_versions}
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
        (root / INDEX_DIR / _JOURNAL).unlink(missing_ok=True)
        self.dirty = False

    def update_record(
        self,
        image_id: str,
        fresh: RecordFiles | None,
        done: set[str],
        readers_of: Callable[[str], set[str]],
    ) -> None:
        """Record what was indexed for one record.

        Args:
            image_id: The record.
            fresh: Its files as scanned *before* they were read; None if it is gone.
            done: Indexers whose result for the record is now final.
            readers_of: Artifact name → names of the indexers reading it.
        """
        self.dirty = True
        if fresh is None:
            self.records.pop(image_id, None)
            return
        known = self.records.get(image_id, {})
        updated: RecordFiles = {}
        for f in known.keys() | fresh.keys():
            name = artifact_name_of(f)
            settled = name is None or readers_of(name) <= done
            source: Mapping[str, Fingerprint] = fresh if settled else known
            if f in source:
                updated[f] = source[f]
        self.records[image_id] = updated
