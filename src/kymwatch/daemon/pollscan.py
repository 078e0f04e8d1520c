"""What changed in a store since the last poll: folder stats first, listings only where needed.

Creating, renaming or deleting a file changes its folder's mtime (and ctime). So a
poll stats ``images/`` and every record's ``analysis/`` folder and its sub-folders,
and lists (and fingerprints the artifacts of) only the records whose folders
changed. A file rewritten in place changes no folder, so each poll also verifies a
slice of the records, every record once every ``full_every`` polls: a stat of each
artifact file its last listing found (its folders being unchanged, no file was added,
renamed or deleted) and of its metadata files; only a record where one differs is
listed again. Records changed recently are "hot" (see
:mod:`~kymwatch.daemon.pollhot`): their artifact files are statted at every poll, so
a writer that keeps rewriting a record in place is followed within one interval. A
folder or file changed in the same timestamp tick as the
poll that saw it is "racily clean" (see :class:`kymwatch.store.scan.Fingerprint`):
its record is listed again at the next poll, until it is not.

Pure logic over a :class:`PollFS` (the real one is :class:`OsPollFS`), so tests
feed fake stat data and never sleep.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kymwatch.daemon.changes import ChangeKind, FileChange, Rescan
from kymwatch.daemon.pollhot import Files, HotSet
from kymwatch.store import ANALYSIS_DIR, IMAGES_DIR, is_temporary_name, is_valid_image_id
from kymwatch.store.layout import split_artifact_file
from kymwatch.store.scan import MAX_ARTIFACT_DEPTH, Fingerprint, scan_stamp

__all__ = ["OsPollFS", "PollFS", "PollResult", "PollScanner", "Stat"]

Stat = tuple[int, int, int, int]
"""(size, mtime_ns, ctime_ns, inode) of a file or folder."""

STORE_GONE = "store_moved_or_deleted"

_RECORD_META = (".zattrs", ".zgroup", "zarr.json", "data/.zarray", "data/zarr.json")


class PollFS(Protocol):
    """The file-system calls a poll makes (never following symbolic links)."""

    def stat_dir(self, path: str) -> Stat | None:
        """The stat of folder ``path``; None if it is missing or not a folder."""

    def stat_file(self, path: str) -> Stat | None:
        """The stat of file ``path``; None if it is gone."""

    def list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        """``(name, is_folder)`` of the entries of ``path``; None if it cannot be listed."""

    def unchanged(self, folders: Sequence[tuple[str, Stat | None]]) -> int:
        """How many of ``folders`` (path, stat when last listed) were statted, as a
        negative number if one of them changed (the stats stop there)."""

    def stamp(self) -> int:
        """Now, as a time of the store's file system, minus the racy margin."""


class OsPollFS:
    """:class:`PollFS` on the real file system of the store at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stat_dir(self, path: str) -> Stat | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def stat_file(self, path: str) -> Stat | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        out = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    try:
                        out.append((e.name, e.is_dir(follow_symlinks=False)))
                    except OSError:
                        continue
        except OSError:
            return None
        return out

    def unchanged(self, folders: Sequence[tuple[str, Stat | None]]) -> int:
        # The hot loop of an idle poll (one lstat per folder): kept lean.
        n = 0
        for path, sig in folders:
            n += 1
            try:
                st = os.lstat(path)
            except OSError:
                if sig is not None:
                    return -n
                continue
            if (
                sig is None
                or st.st_ctime_ns != sig[2]
                or st.st_mtime_ns != sig[1]
                or st.st_ino != sig[3]
                or not stat.S_ISDIR(st.st_mode)
            ):
                return -n
        return n

    def stamp(self) -> int:
        return scan_stamp(self.root)


@dataclass(slots=True)
class _Record:
    """What the last listing of one record saw."""

    folders: tuple[tuple[str, Stat | None], ...]  # absolute paths; analysis/ itself first
    names: tuple[str, ...]  # its artifact files, relative to analysis/, sorted
    files: int  # hash of the artifact fingerprints
    meta: int  # hash of the stats of the record's group and array metadata files
    racy: bool
    slot: int  # verified at the polls whose number is this modulo full_every


@dataclass(frozen=True, slots=True)
class PollResult:
    """One poll's findings and cost.

    Attributes:
        changes: What to report: record folders added/deleted, ``analysis/``
            folders whose artifacts changed, or a :class:`Rescan` when ``images/``
            vanished, appeared or was replaced.
        folders: Folders statted.
        listed: Records listed because a folder changed (or was racy).
        verified: Records listed to catch in-place rewrites.
        records: Records known after the poll.
        hot: Records in the hot set (changed recently) whose files were statted.
        hot_files: Files of hot records statted.
    """

    changes: tuple[FileChange | Rescan, ...]
    folders: int
    listed: int
    verified: int
    records: int
    hot: int = 0
    hot_files: int = 0


class PollScanner:
    """Finds what changed in a store between polls.

    Args:
        root: The store folder.
        fs: The file-system calls (default: the real ones).
        full_every: Every record's artifacts are fingerprinted once every this many
            polls (a share of them at each poll), for writers that rewrite in place.
        hot_s: Seconds a record whose change a poll saw stays hot (its artifact
            files statted at every poll).
        hot_max: Most records kept hot (the least recently changed leave first).
        clock: Monotonic seconds (for the hot set's expiry; tests inject one).
    """

    def __init__(
        self,
        root: Path,
        fs: PollFS | None = None,
        full_every: int = 30,
        *,
        hot_s: float = 300.0,
        hot_max: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if full_every < 1:
            raise ValueError(f"full_every must be at least 1, not {full_every!r}")
        self.root, self.fs, self.full_every = root, fs or OsPollFS(root), full_every
        self.hot = HotSet(hot_s, hot_max)
        self.clock = clock
        self._images_dir = os.path.join(root, IMAGES_DIR)
        self._images: Stat | None = None
        self._images_racy = False
        self._records: dict[str, _Record] = {}
        self._polls = 0
        self._slots = 0

    @property
    def record_count(self) -> int:
        """Records known from the last poll."""
        return len(self._records)

    def baseline(self) -> None:
        """Take the first picture of the store, reporting nothing."""
        stamp = self.fs.stamp()
        self._records.clear()
        self.hot.clear()
        self._images = self.fs.stat_dir(self._images_dir)
        self._images_racy = self._racy(self._images, stamp)
        if self._images is not None:
            for image_id in self._list_records() or ():
                self._records[image_id] = self._walk(image_id, stamp, self._next_slot())[0]

    def poll(self) -> PollResult:
        """Compare the store with the last picture; report and remember the difference."""
        stamp, clock = self.fs.stamp(), self.clock()
        self._polls += 1
        images = self.fs.stat_dir(self._images_dir)
        if images is None or self._images is None or images[3] != self._images[3]:
            return self._images_changed(images is None)
        out: list[FileChange | Rescan] = []
        if (images != self._images or self._images_racy) and self._diff_records(stamp, clock, out):
            self._images, self._images_racy = images, self._racy(images, stamp)
        hot, hot_files = self.hot.changed(self.fs.stat_file, clock)
        folders, listed, verified = 1, 0, 0
        phase = self._polls % self.full_every
        for image_id, rec in self._records.items():
            changed = rec.racy or image_id in hot
            if not changed:
                n = self.fs.unchanged(rec.folders)
                folders += abs(n)
                changed = n < 0
            if not changed and rec.slot != phase:
                continue
            listed += changed
            verified += not changed
            if not changed and self._still(image_id, rec, stamp):
                continue  # its folders and its files' stats are as listed: nothing to list
            now, files = self._walk(image_id, stamp, rec.slot)
            self._records[image_id] = now
            if now.files != rec.files:
                kind = ChangeKind.MODIFIED if now.folders[0][1] else ChangeKind.DELETED
                out.append(FileChange(self._analysis(image_id, ""), kind, is_dir=True))
            if now.meta != rec.meta:
                path = os.path.join(self._images_dir, image_id, ".zattrs")
                out.append(FileChange(path, ChangeKind.MODIFIED))
            if now.files != rec.files or now.meta != rec.meta:
                self.hot.mark(image_id, files, clock)
            else:
                self.hot.refresh(image_id, files)
        return PollResult(
            tuple(out),
            folders,
            listed,
            verified,
            len(self._records),
            hot=len(self.hot),
            hot_files=hot_files,
        )

    # -- helpers --------------------------------------------------------------------------
    def _images_changed(self, gone: bool) -> PollResult:
        """``images/`` vanished, appeared or was replaced: records absent now are not
        deleted ones (a store moved away), so ask for a rescan and start afresh."""
        was = self._images is not None
        self.baseline()
        changes: tuple[FileChange | Rescan, ...] = ()
        if was or not gone:
            changes = (Rescan(STORE_GONE),)
        return PollResult(changes, 1, 0, 0, len(self._records))

    def _diff_records(self, stamp: int, clock: float, out: list[FileChange | Rescan]) -> bool:
        """Report records added to or gone from ``images/``; False (nothing reported,
        tried again at the next poll) if it cannot be listed: a share that fails for a
        moment must not look like every record deleted."""
        listed = self._list_records()
        if listed is None:
            return False
        for image_id in sorted(self._records.keys() - listed):
            del self._records[image_id]
            self.hot.discard(image_id)
            out.append(self._record_change(image_id, ChangeKind.DELETED))
        for image_id in sorted(listed - self._records.keys()):
            self._records[image_id], files = self._walk(image_id, stamp, self._next_slot())
            self.hot.mark(image_id, files, clock)  # a new record is usually being written
            out.append(self._record_change(image_id, ChangeKind.ADDED))
        return True

    def _record_change(self, image_id: str, kind: ChangeKind) -> FileChange:
        return FileChange(os.path.join(self._images_dir, image_id), kind, is_dir=True)

    def _list_records(self) -> set[str] | None:
        entries = self.fs.list_dir(self._images_dir)
        if entries is None:
            return None
        return {name for name, is_dir in entries if is_dir and is_valid_image_id(name)}

    def _next_slot(self) -> int:
        self._slots += 1
        return self._slots % self.full_every

    def _analysis(self, image_id: str, rel: str) -> str:
        base = os.path.join(self._images_dir, image_id, ANALYSIS_DIR)
        return os.path.join(base, rel) if rel else base

    @staticmethod
    def _racy(sig: Stat | None, stamp: int) -> bool:
        return sig is not None and Fingerprint(*sig, scanned_ns=stamp).racy

    def _walk(self, image_id: str, stamp: int, slot: int) -> tuple[_Record, Files]:
        """List one record's ``analysis/`` tree: its folders' stats (each taken before
        the folder is listed, so a change during the listing shows at the next poll)
        and a hash of its artifact fingerprints; and its artifact files (absolute path,
        stat), for the hot set."""
        folders: list[tuple[str, Stat | None]] = []
        files: list[tuple[str, Stat]] = []
        racy = False
        todo = [("", 0)]
        while todo:
            rel, depth = todo.pop()
            path = self._analysis(image_id, rel)
            sig = self.fs.stat_dir(path)
            folders.append((rel, sig))
            racy = racy or self._racy(sig, stamp)
            entries = self.fs.list_dir(path) if sig is not None else None
            for name, is_dir in sorted(entries or ()):
                if is_temporary_name(name):
                    continue
                sub = f"{rel}/{name}" if rel else name
                if is_dir:
                    if depth < MAX_ARTIFACT_DEPTH:
                        todo.append((sub, depth + 1))
                elif split_artifact_file(sub) is not None:
                    fst = self.fs.stat_file(os.path.join(path, name))
                    if fst is not None:
                        files.append((sub, fst))
                        racy = racy or self._racy(fst, stamp)
        folders.sort()
        files.sort()
        located = tuple((self._analysis(image_id, rel), sig) for rel, sig in folders)
        meta, meta_racy = self._meta(image_id, stamp)
        names = tuple(sys.intern(sub) for sub, _ in files)  # the same few names in every record
        record = _Record(located, names, hash(tuple(files)), meta, racy or meta_racy, slot)
        base = self._analysis(image_id, "")
        return record, tuple((os.path.join(base, sub), st) for sub, st in files)

    def _still(self, image_id: str, rec: _Record, stamp: int) -> bool:
        """Whether a record whose folders a poll just found unchanged is still as listed.

        Its folders unchanged, its files are the ones listed (creating, renaming or
        deleting one changes its folder): a stat of each of them and of the record's
        metadata tells whether one was rewritten in place, without listing a folder.
        False (list it again) if one differs, is gone, or is racily clean.
        """
        base = self._analysis(image_id, "")
        files = []
        for sub in rec.names:
            fst = self.fs.stat_file(os.path.join(base, sub))
            if fst is None or self._racy(fst, stamp):
                return False
            files.append((sub, fst))
        if hash(tuple(files)) != rec.files:
            return False
        meta, racy = self._meta(image_id, stamp)
        return meta == rec.meta and not racy

    def _meta(self, image_id: str, stamp: int) -> tuple[int, bool]:
        """A hash of the stats of the record's group and array metadata (``.zattrs``,
        ``.zgroup``, ``zarr.json``, ``data/.zarray``, ``data/zarr.json``), and whether one
        is racy. Only kymflow's manifest reads them, so they are checked when the
        record is listed (at the latest every ``full_every`` polls), not at every poll."""
        record = os.path.join(self._images_dir, image_id)
        stats = [self.fs.stat_file(os.path.join(record, n)) for n in _RECORD_META]
        return hash(tuple(stats)), any(self._racy(st, stamp) for st in stats)
