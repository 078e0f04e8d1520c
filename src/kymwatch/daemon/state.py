"""What kymwatch last indexed and published, kept in ``index/kymwatch-state.sqlite``.

Per record, the fingerprint of every artifact file it was indexed from; per table,
the fingerprint of the file the daemon last published; the indexer versions; and
the crash journal. A restarted daemon indexes exactly what changed while it was
down, and notices a table someone else replaced.

The state only ever names content that is already in the tables: it is saved after
the tables are published, never before. Between saves (throttled), the records of
each batch are journaled (a durable commit) *before* its tables are published; the
next start re-indexes the journaled records whole, so no row can outlive a crash
unnoticed. A save writes only the records that changed, and clears the journal, in
one transaction.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when it returns
(power loss included). ``locking_mode=EXCLUSIVE`` keeps the WAL index in memory, so
it also works on network file systems; only the daemon (which holds the daemon
lock) opens it. Nothing here raises: a state that cannot be read is reset (a full
re-index), one that cannot be written is logged and retried at the next save.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from kymwatch.daemon.fingerprints import RecordFingerprints
from kymwatch.daemon.reconcile import artifact_name_of
from kymwatch.daemon.state_legacy import LEGACY_FILES, load_legacy
from kymwatch.store import INDEX_DIR, Fingerprint, RecordFiles, store_is_whole

__all__ = ["STATE_FILE", "IndexState"]

log = structlog.get_logger(__name__)

STATE_FILE = "kymwatch-state.sqlite"
"""The state database under ``index/`` (named apart from kymflow's ``index/`` files)."""

_FORMAT = 2
_FileRow = tuple[str, str, Fingerprint | None]  # (image_id, file, fingerprint; None: no files)
_NO_FILES = b""  # row marker for a record that has no artifact files
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    image_id TEXT NOT NULL, file BLOB NOT NULL, fp TEXT NOT NULL,
    PRIMARY KEY (image_id, file)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS published (name TEXT PRIMARY KEY, fp TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (image_id TEXT PRIMARY KEY);
"""


def encode_fp(fp: Fingerprint) -> str:
    """A fingerprint as text: any integer fits (an mtime in 2300 overflows int64)."""
    return f"{fp.size} {fp.mtime_ns} {fp.ctime_ns} {fp.inode} {fp.scanned_ns}"


def decode_fp(text: str) -> Fingerprint:
    """The inverse of :func:`encode_fp` (raises ValueError on anything else)."""
    size, mtime, ctime, inode, scanned = (int(v) for v in text.split(" "))
    return Fingerprint(size, mtime, ctime, inode, scanned)


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


@dataclass
class IndexState:
    """Fingerprints per record (image_id → file → fingerprint), of published tables,
    and indexer versions.

    Attributes:
        records: image_id → artifact file → fingerprint when last indexed (held packed,
            :class:`~kymwatch.daemon.fingerprints.RecordFingerprints`; any mapping given
            is copied into one).
        schema_versions: indexer name → schema version its table was built with.
        tables: table name → fingerprint of the file the daemon last published.
        suspects: Records journaled by a daemon that stopped without saving: the
            tables may hold rows of theirs the fingerprints do not account for, so
            they are re-indexed whole at start.
    """

    records: MutableMapping[str, RecordFiles] = field(default_factory=RecordFingerprints)
    schema_versions: dict[str, int] = field(default_factory=dict)
    tables: dict[str, Fingerprint] = field(default_factory=dict)
    suspects: set[str] = field(default_factory=set)
    dirty: bool = False
    _changed: set[str] = field(default_factory=set, repr=False)
    _full: bool = field(default=True, repr=False)  # next save rewrites every record
    _db: sqlite3.Connection | None = field(default=None, repr=False)
    _pin: int | None = field(default=None, repr=False)  # fd of the db file our saves went to
    _loaded: tuple[int, int] | None = field(default=None, repr=False)  # (dev, ino) loaded
    _legacy: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.records, RecordFingerprints):
            self.records = RecordFingerprints(self.records)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> IndexState:
        """The saved state of the store at ``root`` (empty if none or unreadable).

        A state of format 1 (``state.json`` + ``state-fingerprints.parquet``) is
        migrated: its fingerprints lack the ctime, so a file is trusted only if its
        ctime is older than that state; the old files go at the first save.
        """
        path = root / INDEX_DIR / STATE_FILE
        try:
            if path.exists():
                return cls._load_db(path)
            legacy = load_legacy(root)
        except Exception as e:  # any damage: start over, a full reconcile re-derives it
            log.warning("state_reset", path=str(path), error=f"{type(e).__name__}: {e}")
            _remove_db(path)
            return cls()
        if legacy is None:
            return cls()
        records, versions, suspects = legacy
        log.info("state_migrated", path=str(path), records=len(records), from_format=1)
        return cls(records, versions, suspects=suspects, _legacy=True)

    @classmethod
    def _load_db(cls, path: Path) -> IndexState:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != str(_FORMAT):
                raise ValueError(f"state format {meta.get('format')!r}")
            versions = {str(k): int(v) for k, v in json.loads(meta["schema_versions"]).items()}
            records = RecordFingerprints()
            rows = db.execute("SELECT image_id, file, fp FROM files ORDER BY image_id")
            records.load(_decoded(rows))
            tables = {str(n): decode_fp(fp) for n, fp in db.execute("SELECT * FROM published")}
            suspects = {str(i) for (i,) in db.execute("SELECT image_id FROM journal")}
        finally:
            db.close()
        st = os.stat(path)
        loaded = (st.st_dev, st.st_ino)
        return cls(records, versions, tables, suspects, _full=False, _loaded=loaded)

    @property
    def migrated(self) -> bool:
        """True until the first save of a state read from an older kymwatch's files."""
        return self._legacy

    def adopt(self, other: IndexState) -> None:
        """Take over everything ``other`` holds (a freshly loaded state), in place."""
        self.close()
        self.records, self.schema_versions = other.records, other.schema_versions
        self.tables, self.suspects = other.tables, other.suspects
        self.dirty, self._changed, self._full = other.dirty, other._changed, other._full
        self._legacy, self._loaded = other._legacy, other._loaded

    # -- the database ---------------------------------------------------------------------
    def _pinned(self, st: os.stat_result) -> bool:
        """True if ``st`` is the file our saves went to. Once written, that file is kept
        open (the pin), so its inode number cannot be reused by a new file meanwhile;
        before, it is the file the state was loaded from."""
        if self._pin is None:
            return (st.st_dev, st.st_ino) == self._loaded
        pin = os.fstat(self._pin)
        return (st.st_dev, st.st_ino) == (pin.st_dev, pin.st_ino)

    def _connect(self, root: Path) -> sqlite3.Connection:
        """The open database; reopened (and then rewritten in full) if its file was
        deleted or replaced behind our back (``index/`` deleted, a store restored)."""
        path = root / INDEX_DIR / STATE_FILE
        if self._db is not None:
            with contextlib.suppress(OSError):
                if self._pinned(os.stat(path)):
                    return self._db
            self._disconnect()
        if not store_is_whole(root):  # moved, or being deleted: create nothing in it
            raise FileNotFoundError(f"{root} is no whole store (moved or being deleted)")
        path.parent.mkdir(exist_ok=True)
        # created with our mode; SQLite gives its WAL file the same one
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o640)
        if not self._pinned(os.fstat(fd)):  # not the file of our saves (or none yet):
            self._full = True  # write everything there
        self._unpin()
        self._pin = fd
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def close(self) -> None:
        """Close the database (the daemon does it at shutdown, after the last save)."""
        self._disconnect()
        self._unpin()

    def _disconnect(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _unpin(self) -> None:
        if self._pin is not None:
            with contextlib.suppress(OSError):
                os.close(self._pin)
            self._pin = None

    def note_publishing(self, root: Path, image_ids: Iterable[str]) -> None:
        """Journal records about to be published, durably, before their tables are written.

        The fingerprints are saved only every few seconds; if the daemon dies in
        between, the next start re-indexes the journaled records whole. A journal
        that cannot be written is logged (``state_save_failed``); indexing goes on.
        """
        ids = [(i,) for i in image_ids]
        try:
            db = self._connect(root)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO journal VALUES (?)", ids)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except Exception as e:
            self._failed(root, e)

    # -- saving ---------------------------------------------------------------------------
    def save(self, root: Path) -> bool:
        """Write what changed since the last save, and clear the journal, in one commit.

        Returns False, logging ``state_save_failed`` and staying dirty so a later
        save retries, when the state cannot be written (disk full, read-only, a
        value the database refuses): a daemon must outlive that, and an old state
        only costs extra re-indexing.
        """
        try:
            self._save(root)
        except Exception as e:
            self._failed(root, e)
            return False
        return True

    def _failed(self, root: Path, e: Exception) -> None:
        log.warning(
            "state_save_failed",
            path=str(root / INDEX_DIR / STATE_FILE),
            error=f"{type(e).__name__}: {e}",
        )
        self._disconnect()  # reopen next time: the connection may be what broke

    def _save(self, root: Path) -> None:
        db = self._connect(root)
        ids = list(self.records) if self._full else sorted(self._changed)
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._full:
                db.execute("DELETE FROM files")
            else:
                db.executemany("DELETE FROM files WHERE image_id = ?", [(i,) for i in ids])
            rows: list[tuple[str, bytes, str]] = []
            for image_id in ids:
                files = self.records.get(image_id)
                if files is None:
                    continue
                if not files:
                    rows.append((image_id, _NO_FILES, ""))
                rows.extend((image_id, _raw(name), encode_fp(fp)) for name, fp in files.items())
            db.executemany("INSERT INTO files VALUES (?, ?, ?)", rows)
            db.execute("DELETE FROM published")
            db.executemany(
                "INSERT INTO published VALUES (?, ?)",
                [(n, encode_fp(fp)) for n, fp in self.tables.items()],
            )
            meta = {"format": str(_FORMAT), "schema_versions": json.dumps(self.schema_versions)}
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            db.execute("DELETE FROM journal")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.dirty, self._full = False, False
        self._changed = set()
        if self._legacy:
            for name in LEGACY_FILES:
                (root / INDEX_DIR / name).unlink(missing_ok=True)
            self._legacy = False

    # -- updates --------------------------------------------------------------------------
    def note_table(self, root: Path, name: str, fp: Fingerprint | None) -> None:
        """Remember at once the fingerprint of a table file the daemon just published:
        after a killed process, its own last write is not mistaken for a table changed
        behind its back (which costs a rebuild).

        Committed with ``synchronous=NORMAL`` (no fsync, ~0.05 ms instead of ~4 ms):
        it survives a killed process; a power cut may lose it, and then the table is
        rebuilt once at the next start, which is right, only slower.
        """
        if fp is None:
            self.tables.pop(name, None)
        else:
            self.tables[name] = fp
        try:
            db = self._connect(root)
            db.execute("PRAGMA synchronous=NORMAL")
            try:
                if fp is None:
                    db.execute("DELETE FROM published WHERE name = ?", (name,))
                else:
                    row = (name, encode_fp(fp))
                    db.execute("INSERT OR REPLACE INTO published VALUES (?, ?)", row)
            finally:
                db.execute("PRAGMA synchronous=FULL")
        except Exception as e:
            self.dirty = True  # the next save writes it
            self._failed(root, e)

    def replace_records(self, records: Mapping[str, RecordFiles]) -> None:
        """Replace every record's fingerprints; the next save rewrites them all."""
        self.records = RecordFingerprints(records)
        self.dirty, self._full = True, True

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
        self._changed.add(image_id)
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


def _decoded(rows: Iterable[tuple[str, bytes, str]]) -> Iterator[_FileRow]:
    """Rows of the ``files`` table as (image_id, file, fingerprint); None: no files."""
    for image_id, raw, fp in rows:
        if raw == _NO_FILES:
            yield str(image_id), "", None
        else:
            yield str(image_id), _name(bytes(raw)), decode_fp(fp)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
