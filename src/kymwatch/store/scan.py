"""Fingerprints of artifact files, and scanning a dataset for them.

A fingerprint is (size, mtime_ns, ctime_ns, inode): an atomic replace changes the
inode even when size and a coarse mtime do not; the ctime catches what the others
miss, since the kernel sets it on every change and nobody can set it back (an
mtime restored by ``cp -p``/``rsync -t``/tar, a ``chmod``, a freed inode number
reused by a copy). A file that changed in the same timestamp tick as the scan that
fingerprinted it could change again without a visible difference: git calls it
"racily clean" and re-reads it; so do we (:meth:`Fingerprint.racy`). Each
fingerprint remembers when its scan started, as a time of the store's own file
system (:func:`scan_stamp`), so clocks and timestamp granularity match.
Scans never follow symbolic links.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kymwatch.store.layout import (
    ANALYSIS_DIR,
    IMAGES_DIR,
    INDEX_DIR,
    is_temporary_name,
    is_valid_image_id,
    split_artifact_file,
)

__all__ = [
    "MAX_ARTIFACT_DEPTH",
    "RACY_MARGIN_NS",
    "UNKNOWN_CTIME",
    "Fingerprint",
    "Listing",
    "RecordFiles",
    "fs_stamp",
    "is_record_folder",
    "iter_record_folders",
    "scan_dataset",
    "scan_record",
    "scan_records_settled",
    "scan_stamp",
    "walk_artifacts",
]

RecordFiles = dict[str, "Fingerprint"]
"""Artifact file name (relative to ``analysis/``) → fingerprint."""

Listing = dict[str, frozenset[str]]
"""A record's folder (relative to ``analysis/``: ``""`` for it, ``velocity_events`` for
a sub-folder) → the names of its entries, as one ``scandir`` found them."""

UNKNOWN_CTIME = -1
"""``ctime_ns`` of a fingerprint saved by a kymwatch that did not record it (state format 1)."""

RACY_MARGIN_NS = 10_000_000
"""Margin below a scan's start within which a change time counts as racy (10 ms):
covers a coarse kernel clock tick when the stamp is the file system's own time."""

FALLBACK_MARGIN_NS = 2_000_000_000
"""Margin when the stamp had to come from the local clock (2 s: the coarsest common
timestamp granularity, FAT/SMB, plus a little clock skew)."""

_STAMP = ".scan-stamp"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of one version of a file.

    Attributes:
        size, mtime_ns, ctime_ns, inode: From ``lstat``.
        scanned_ns: Start of the scan that took it, minus the racy margin, as a file
            system time (0: unknown). Not part of equality.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    scanned_ns: int = field(default=0, compare=False)

    @classmethod
    def of(cls, st: os.stat_result, scanned_ns: int = 0) -> Fingerprint:
        """The fingerprint of a stat result."""
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, scanned_ns)

    @property
    def racy(self) -> bool:
        """True when the file changed so close to its scan that a later change in the
        same timestamp tick would leave this fingerprint unchanged: re-read it.

        The change time is what counts (the kernel sets it on every write); an mtime
        counts too unless it lies beyond the ctime (set by ``utime``, e.g. to the
        year 2300, which would otherwise make the file racy for ever).
        """
        return self.scanned_ns != 0 and self.changed_ns >= self.scanned_ns

    @property
    def changed_ns(self) -> int:
        """When the file last changed: its ctime, or its mtime if later but not beyond
        the ctime by more than the racy margin (an mtime set into the future by
        ``utime`` says nothing about when the file changed)."""
        if self.ctime_ns < self.mtime_ns <= self.ctime_ns + RACY_MARGIN_NS:
            return self.mtime_ns
        return self.ctime_ns

    def same_as(self, now: Fingerprint) -> bool:
        """True when ``now`` (a fresh scan) shows the version this fingerprint names.

        A fingerprint without ctime (saved by an older kymwatch) is trusted only if
        the file's ctime is older than the scan that took it: anything touched since
        is re-read rather than trusted.
        """
        if self.ctime_ns == UNKNOWN_CTIME:
            return (
                (self.size, self.mtime_ns, self.inode) == (now.size, now.mtime_ns, now.inode)
                and self.scanned_ns > 0
                and now.ctime_ns < self.scanned_ns
            )
        return self == now and not self.racy


def fs_stamp(root: Path) -> int | None:
    """The start of a scan as a time of the store's file system, minus the racy margin;
    None if it cannot be taken.

    Touches ``index/.scan-stamp`` and reads back its mtime, as git compares file
    times with its index file's: the same clock and the same granularity as the
    artifacts' (also on a network share whose server clock differs from ours).
    """
    path = os.path.join(root, INDEX_DIR, _STAMP)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.utime(fd)
            stamp = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
    except OSError:
        return None
    return stamp - RACY_MARGIN_NS


def scan_stamp(root: Path) -> int:
    """:func:`fs_stamp`, or the local clock minus 2 s if the stamp file cannot be written."""
    stamp = fs_stamp(root)
    return time.time_ns() - FALLBACK_MARGIN_NS if stamp is None else stamp


def scan_records_settled(
    root: Path,
    records: Mapping[str, Path],
    *,
    stamp: Callable[[Path], int | None] = fs_stamp,
    wait: Callable[[float], None] = time.sleep,
    max_waits: int = 200,
    listings: dict[str, Listing] | None = None,
) -> dict[str, RecordFiles]:
    """Fingerprints of the given records, taken so that none is racily clean if possible.

    A file changed in the scan's own timestamp tick would be re-read by the next
    reconcile (and a problem in it reported twice). So, as Mercurial does for its
    dirstate, wait (a millisecond at a time, usually one clock tick in all) until the
    file system's clock has moved past such files, and scan their records again:
    then a later write is bound to change the ctime. The wait is bounded
    (``max_waits`` milliseconds in all: a file that keeps changing, or a clock set
    back, leaves the file racy, and it is re-read later). Without a file-system
    stamp (``index/`` not writable) nothing is waited for.

    Args:
        root: The dataset folder (its ``index/`` holds the stamp file).
        records: image_id → record folder.
        stamp: Takes a stamp (injected in tests).
        wait: Sleeps (injected in tests).
        max_waits: Waits of 1 ms allowed in all.
        listings: If given, receives per record the names in each folder its last scan
            listed (:data:`Listing`): what a snapshot reader of the same records would
            list again (``ZarrImageRecord(..., listed=...)``).
    """
    first = stamp(root)
    start = scan_stamp(root) if first is None else first
    out = {i: scan_record(path, start, _listing(listings, i)) for i, path in records.items()}
    if first is None:
        return out
    waits = 0
    for _ in range(10):  # rescans at most
        racy = [i for i, files in out.items() if any(fp.racy for fp in files.values())]
        if not racy:
            break
        newest = max(fp.changed_ns for i in racy for fp in out[i].values() if fp.racy)
        now = stamp(root)
        while now is not None and now <= newest and waits < max_waits:
            wait(0.001)
            waits += 1
            now = stamp(root)
        if now is None or now <= newest:
            break  # re-read by the next reconcile instead
        out.update({i: scan_record(records[i], now, _listing(listings, i)) for i in racy})
    return out


def _listing(listings: dict[str, Listing] | None, image_id: str) -> Listing | None:
    """A fresh listing for ``image_id`` in ``listings`` (None if none are kept)."""
    if listings is None:
        return None
    out: Listing = {}
    listings[image_id] = out
    return out


MAX_ARTIFACT_DEPTH = 32
"""Folders below ``analysis/`` that artifact names may nest (``a/b`` is depth 1): deeper
files are no artifacts for any reader (a guard against runaway nesting)."""


def walk_artifacts(
    analysis: str | Path, listing: Listing | None = None
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every artifact file under an ``analysis/`` folder: (name relative to it, entry).

    The one walker of artifact files (the scans' fingerprints and
    ``ZarrImageRecord.list_analysis_keys`` both use it): temporary names are skipped,
    symbolic links are not followed, folders that vanish or cannot be read are skipped.

    Args:
        analysis: The ``analysis/`` folder.
        listing: If given, receives the names of every folder listed (see
            :data:`Listing`), so a reader of the same files need not list them again.
    """
    stack: list[tuple[str, str, int]] = [(os.fspath(analysis), "", 0)]
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):  # gone: nothing in it
            if listing is not None:
                listing[prefix[:-1]] = frozenset()
            continue
        except OSError:  # unreadable: the indexers report what they find
            continue
        if listing is not None:
            listing[prefix[:-1]] = frozenset(entry.name for entry in entries)
        for entry in entries:
            name = entry.name
            if is_temporary_name(name):
                continue
            rel = f"{prefix}{name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_ARTIFACT_DEPTH:
                        stack.append((entry.path, f"{rel}/", depth + 1))
                elif split_artifact_file(rel) is not None:
                    yield rel, entry
            except OSError:  # removed while scanning
                continue


def iter_record_folders(root: Path, skipped: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """Every record folder under ``images/``: (image_id, path), in no particular order.

    The one record lister: names that cannot be image ids, symbolic links and files are
    no records (if ``skipped`` is given it receives their paths, hidden names aside).
    """
    try:
        entries = list(os.scandir(os.path.join(root, IMAGES_DIR)))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            is_record = is_valid_image_id(entry.name) and entry.is_dir(follow_symlinks=False)
        except OSError:
            is_record = False
        if is_record:
            yield entry.name, entry.path
        elif skipped is not None and not entry.name.startswith("."):
            skipped.append(entry.path)


def is_record_folder(root: Path, image_id: str) -> bool:
    """Whether :func:`iter_record_folders` would list ``image_id``: a valid id naming a
    folder (not a symbolic link) under ``images/``; one look-up, no listing."""
    if not is_valid_image_id(image_id):
        return False
    try:
        return stat.S_ISDIR(os.lstat(os.path.join(root, IMAGES_DIR, image_id)).st_mode)
    except OSError:
        return False


def scan_record(record_path: Path, stamp: int = 0, listing: Listing | None = None) -> RecordFiles:
    """Fingerprints of every artifact file of one record (empty if it has none).

    Args:
        record_path: The record folder.
        stamp: The scan's :func:`scan_stamp` (0: unknown, never racy).
        listing: If given, receives the names in each folder listed (:data:`Listing`).
    """
    out: RecordFiles = {}
    for rel, entry in walk_artifacts(os.path.join(record_path, ANALYSIS_DIR), listing):
        try:
            out[rel] = Fingerprint.of(entry.stat(follow_symlinks=False), stamp)
        except OSError:  # removed while scanning, or not stat-able (a folder without x)
            continue
    return out


def scan_dataset(
    root: Path, skipped: list[str] | None = None, stamp: int = 0
) -> dict[str, RecordFiles]:
    """Fingerprints of every artifact of every record: image_id → files.

    Args:
        root: The dataset folder.
        skipped: If given, receives the paths of entries under ``images/`` that are
            not records (names that cannot be image ids, symbolic links, files).
        stamp: The scan's :func:`scan_stamp` (0: unknown).
    """
    return {
        image_id: scan_record(Path(path), stamp)
        for image_id, path in iter_record_folders(root, skipped)
    }
