"""Reading the state of an older kymwatch (format 1) to migrate it.

Format 1 kept ``index/state.json`` (format, indexer versions), the fingerprints in
``index/state-fingerprints.parquet`` (size, mtime_ns, inode: no ctime) and the
crash journal in ``index/state-journal.txt``. A migrated fingerprint gets
:data:`~kymwatch.store.UNKNOWN_CTIME` and, as its scan time, the time that state
was saved: the reconcile trusts the file only if its ctime is older than that, and
re-reads anything touched since (see :meth:`Fingerprint.same_as`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kymwatch.store import INDEX_DIR, UNKNOWN_CTIME, Fingerprint, RecordFiles

__all__ = ["LEGACY_FILES", "load_legacy"]

_FILES = "state-fingerprints.parquet"
_META = "state.json"
_JOURNAL = "state-journal.txt"
LEGACY_FILES = (_FILES, _META, _JOURNAL)
"""Files of a format-1 state under ``index/`` (removed once the new state is saved)."""


def load_legacy(root: Path) -> tuple[dict[str, RecordFiles], dict[str, int], set[str]] | None:
    """Records, indexer versions and journaled records of a format-1 state (None: none).

    Raises:
        OSError, ValueError, pyarrow.ArrowException: the old state is damaged.
    """
    index = root / INDEX_DIR
    meta_path = index / _META
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_bytes())
    if meta.get("format") != 1:
        raise ValueError(f"state format {meta.get('format')!r}")
    saved_ns = os.stat(meta_path).st_mtime_ns
    with pa.OSFile(str(index / _FILES)) as f:
        cols = pq.read_table(f, use_threads=False).to_pydict()
    records: dict[str, RecordFiles] = {}
    for image_id, name, size, mtime_ns, inode in zip(
        cols["image_id"], cols["file"], cols["size"], cols["mtime_ns"], cols["inode"], strict=True
    ):
        files = records.setdefault(str(image_id), {})
        if name:
            files[str(name)] = Fingerprint(size, mtime_ns, UNKNOWN_CTIME, inode, saved_ns)
    versions = {str(k): int(v) for k, v in meta["schema_versions"].items()}
    try:
        lines = (index / _JOURNAL).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return records, versions, {line for line in lines if line}
