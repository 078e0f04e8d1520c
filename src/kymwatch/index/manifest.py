"""kymflow's dataset manifest ``index/manifest.json.gz``, kept up to date per record.

kymflow (``kymflow_zarr/manifest.py``) rebuilds the manifest by opening every
record group and listing every key of the store, pixel chunks included: minutes
at 2,000 records. :class:`ManifestIndexer` writes the same document
(:mod:`~kymwatch.index.manifest_doc`), but re-reads only the records that changed
(:mod:`~kymwatch.index.manifest_entry`). A record whose group or array metadata
cannot be read keeps its previous entry.

Only a store that has a manifest gets one kept, unless ``create`` is asked for.
kymflow also bumps the root ``updated_utc`` when it saves a manifest; kymwatch
writes only below ``index/`` and does not.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from kymwatch.index.manifest_doc import (
    Document,
    TextCache,
    build_manifest,
    document,
    dump_manifest,
    kymflow_now,
    load_manifest,
    manifest_path,
    record_ids,
    uses_analysis_keys,
)
from kymwatch.index.manifest_entry import (
    Entry,
    ManifestSourceError,
    entry_signature,
    read_entry,
)
from kymwatch.store import Fingerprint, atomic_write_bytes

__all__ = ["ManifestIndexer", "ManifestUpdate"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestUpdate:
    """What one manifest update did.

    Attributes:
        written: The file was (re)written.
        changed: Records whose entry was added, changed or removed.
        kept: Records whose metadata could not be read: their old entry was kept.
        records: Entries in the manifest afterwards.
        duration_ms: Time taken.
    """

    written: bool
    changed: tuple[str, ...]
    kept: tuple[str, ...]
    records: int
    duration_ms: float


class ManifestIndexer:
    """Keeps ``index/manifest.json.gz`` equal to a full kymflow rebuild, per record.

    The document is cached and re-read only when the file changed on disk (kymflow
    rewrote it); each update re-reads the named records only and writes the file
    atomically, and only when an entry changed.

    Args:
        root: The store folder.
        create: Write a manifest even if the store has none (default: keep one
            only where the store already has it).
    """

    name = "manifest"

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.path = manifest_path(self.root)
        self.create = create
        self._doc: Document | None = None
        self._entries: dict[str, Entry] = {}
        self._file: tuple[Fingerprint, int] | None = None
        self._sigs: dict[str, tuple[object, ...]] = {}
        self._texts: TextCache = {}

    def active(self) -> bool:
        """True if the manifest is kept: the store has one, or ``create`` was asked."""
        return self.create or self.path.is_file()

    def update(self, image_ids: Iterable[str]) -> ManifestUpdate | None:
        """Re-read the entries of ``image_ids`` and publish them (None if not active)."""
        if not self.active():
            return None
        start = time.perf_counter()
        doc = self._current()
        with_keys = uses_analysis_keys(doc)
        entries = dict(self._entries)
        changed, kept = [], []
        for image_id in sorted(set(image_ids)):
            # Taken before reading: a change during the read is seen by the next check.
            # Kept for an unreadable record too, so a reconcile does not report it again
            # until one of its files changes (an event re-reads it at once).
            self._sigs[image_id] = entry_signature(self.root, image_id)
            try:
                entry = read_entry(self.root, image_id, with_analysis_keys=with_keys)
            except ManifestSourceError as e:
                kept.append(image_id)
                log.warning(
                    "manifest_record_unreadable", image_id=image_id, path=str(e.path), error=e.error
                )
                continue
            if entry is None:
                if entries.pop(image_id, None) is not None:
                    changed.append(image_id)
            elif entries.get(image_id) != entry:
                entries[image_id] = entry
                changed.append(image_id)
        return self._publish(doc, entries, changed, kept, start)

    def reconcile(self) -> ManifestUpdate | None:
        """Check every record against the disk (stat only for records whose sources
        did not change) and publish the difference; None if not active."""
        if not self.active():
            return None
        self._current()
        on_disk = set(record_ids(self.root))
        suspects = {i for i in on_disk if self._sigs.get(i) != entry_signature(self.root, i)}
        gone = set(self._entries) - on_disk
        for i in set(self._sigs) - on_disk:
            del self._sigs[i]
        return self.update(suspects | gone)

    def rebuild(self) -> ManifestUpdate:
        """Build the whole manifest from disk and write it."""
        start = time.perf_counter()
        try:
            previous = load_manifest(self.root)
        except ManifestSourceError:
            previous = None
        doc = build_manifest(self.root, previous)
        self._sigs = {i: entry_signature(self.root, i) for i in record_ids(self.root)}
        self._write(doc)
        ids = tuple(e["image_id"] for e in doc["images"])
        return ManifestUpdate(True, ids, (), len(ids), _ms(start))

    # -- internals ------------------------------------------------------------------------
    def _stat(self) -> tuple[Fingerprint, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return Fingerprint.of(st), st.st_ctime_ns

    def _current(self) -> Document | None:
        """The manifest on disk (cached while the file is unchanged)."""
        fp = self._stat()
        if fp is not None and fp == self._file:
            return self._doc
        try:
            doc = load_manifest(self.root)
        except ManifestSourceError as e:
            log.warning("manifest_unreadable", path=str(e.path), error=e.error)
            doc = None
        if doc is None:  # none, or unreadable: start from a full build
            doc = build_manifest(self.root, None)
            self._sigs = {i: entry_signature(self.root, i) for i in record_ids(self.root)}
            self._file = None
        else:
            self._file = fp
            self._sigs = {}
        self._doc = doc
        self._entries = {str(e.get("image_id")): e for e in doc.get("images", [])}
        return doc

    def _publish(
        self,
        doc: Document | None,
        entries: dict[str, Entry],
        changed: list[str],
        kept: list[str],
        start: float,
    ) -> ManifestUpdate:
        fresh = document(self.root, doc, entries, kymflow_now())
        same_top = doc is not None and all(
            doc.get(k) == fresh[k] for k in ("schema_version", "format")
        )
        written = bool(changed) or not same_top or self._file is None
        if written:
            self._write(fresh)
            self._entries = entries
        return ManifestUpdate(written, tuple(changed), tuple(kept), len(entries), _ms(start))

    def _write(self, doc: Document) -> None:
        atomic_write_bytes(self.path, dump_manifest(doc, self._texts), within=self.root)
        self._doc = doc
        self._entries = {str(e["image_id"]): e for e in doc["images"]}
        for gone in self._texts.keys() - self._entries.keys():
            del self._texts[gone]
        self._file = self._stat()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
