"""The daemon's fingerprints of every record, held compactly in memory.

:class:`~kymwatch.daemon.state.IndexState` keeps, for every record, the fingerprint of
each artifact file it was indexed from: five integers per file, 50,000 files in a 10k
store. As dicts of :class:`~kymwatch.store.Fingerprint` objects that took ~18 MiB of a
10k daemon (each integer its own object, each file name its own string); here a
record is the tuple of its file names (one tuple, of interned names, shared by every
record that has the same files) and the integers packed as int64 in one ``bytes``:
~4 MiB. Reading a record builds its files afresh, so a caller may change what it got
without changing the state; storing one packs it.

The reconcile compares a packed scan with the packed state record by record
(:meth:`RecordFingerprints.unchanged`) without building fingerprints: files in name
order, the identities
(size, mtime, ctime, inode) of all files come first in the bytes, the scan times
after them, and whether every file may be trusted by its identity alone (not racily
clean, ctime known: see :meth:`~kymwatch.store.Fingerprint.same_as`) is decided once,
when the record is stored.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, KeysView, Mapping, MutableMapping

from kymwatch.store import UNKNOWN_CTIME, Fingerprint, RecordFiles

__all__ = ["RecordFingerprints"]

_FIELDS = 5  # size, mtime_ns, ctime_ns, inode; scanned_ns
_SHARED_NAMES_MAX = 4096  # distinct sets of file names kept for sharing


class RecordFingerprints(MutableMapping[str, RecordFiles]):
    """image_id → artifact file → fingerprint, packed per record.

    A record with an integer beyond int64 (an mtime set past the year 2262) is kept as
    the dict it was given.

    Args:
        records: The records to hold (copied).
    """

    __slots__ = ("_data", "_names")

    def __init__(self, records: Mapping[str, RecordFiles] | None = None) -> None:
        # (names, identities then scan times as int64, every file trusted by identity)
        self._data: dict[str, tuple[tuple[str, ...], bytes, bool] | RecordFiles] = {}
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}
        if records:
            for image_id, files in records.items():
                self[image_id] = files

    def _shared(self, names: tuple[str, ...]) -> tuple[str, ...]:
        shared = self._names.get(names)
        if shared is None:
            if len(self._names) >= _SHARED_NAMES_MAX:  # an odd store: no sharing lost for good
                self._names.clear()
            shared = tuple(sys.intern(n) for n in names)
            self._names[shared] = shared
        return shared

    def __setitem__(self, image_id: str, files: RecordFiles) -> None:
        ordered = sorted(files.items())  # one order for a scan and the state: comparable
        names = self._shared(tuple(name for name, _ in ordered))
        fps = [fp for _, fp in ordered]
        values = [v for fp in fps for v in (fp.size, fp.mtime_ns, fp.ctime_ns, fp.inode)]
        values += [fp.scanned_ns for fp in fps]
        try:
            packed = struct.pack(f"<{len(values)}q", *values)
        except struct.error:  # beyond int64: kept as it is
            self._data[image_id] = dict(files)
            return
        trusted = all(not fp.racy and fp.ctime_ns != UNKNOWN_CTIME for fp in fps)
        self._data[image_id] = (names, packed, trusted)

    def __getitem__(self, image_id: str) -> RecordFiles:
        held = self._data[image_id]
        if isinstance(held, dict):
            return dict(held)
        names, packed, _ = held
        n = len(names)
        v = struct.unpack(f"<{n * _FIELDS}q", packed)
        return {
            name: Fingerprint(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3], v[4 * n + i])
            for i, name in enumerate(names)
        }

    def unchanged(self, image_id: str, scan: RecordFingerprints) -> bool:
        """True when ``scan`` shows the very files this record was indexed from (the same
        names, each with the same size, mtime, ctime and inode, none of them racily
        clean): what comparing their fingerprints would say, without building them.
        False means only "compare them" (a record held as a dict is never judged here)."""
        mine, now = self._data.get(image_id), scan._data.get(image_id)
        if not isinstance(mine, tuple) or not isinstance(now, tuple) or not mine[2]:
            return False
        identity = 4 * 8 * len(mine[0])
        return mine[0] == now[0] and mine[1][:identity] == now[1][:identity]

    def __delitem__(self, image_id: str) -> None:
        del self._data[image_id]

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def load(self, rows: Iterable[tuple[str, str, Fingerprint | None]]) -> None:
        """Add records from ``(image_id, file, fingerprint)`` rows grouped by record (a
        None fingerprint: the record has no files), without holding them all as dicts."""
        current: str | None = None
        files: RecordFiles = {}
        for image_id, name, fp in rows:
            if image_id != current:
                if current is not None:
                    self[current] = files
                current, files = image_id, {}
            if fp is not None:
                files[name] = fp
        if current is not None:
            self[current] = files

    def __repr__(self) -> str:
        return f"RecordFingerprints({len(self._data)} records)"
