"""The current problems, kept across a restart in ``index/kymwatch-problems.json``.

A problem is a record that is not right *now*, one per record and indexer: an
artifact missing, unreadable or invalid (the last outcome of its indexing). A
restarted daemon re-reads only the records whose files changed while it was down
(see :mod:`kymwatch.daemon.state`), so the problems of unchanged records would be
forgotten: the daemon saves them here (atomically, when they changed, at most every
``SAVE_EVERY_S`` and when it stops) and loads them back at start. Every record the
startup reconcile re-indexes gets a new outcome that replaces or clears its entry,
so a problem fixed on disk while the daemon was down disappears.

The file holds every problem (the status file lists at most 50); a mixed store's
first index leaves one per record of the other generation and indexer (15,000 at 10k
records), so equal values are held once (:class:`SharedValues`: 12 → ~5 MiB loaded).
Nothing here raises: a file that cannot be read is ignored (the problems of unchanged records
are then unknown until they change), one that cannot be written is logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kymwatch._lazy import lazy_logger
from kymwatch.store import IMAGES_DIR, INDEX_DIR, atomic_write_bytes, store_is_whole

__all__ = ["PROBLEMS_FILE", "SAVE_EVERY_S", "SharedValues", "load_problems", "save_problems"]

log = lazy_logger(__name__)

PROBLEMS_FILE = "kymwatch-problems.json"
"""Under ``index/``; named apart from kymflow's own ``index/`` files."""

SAVE_EVERY_S = 30.0
"""Least time between two saves while the problems keep changing (a first index)."""

_FORMAT = 1
_SHARED_MAX = 4096  # distinct looked-for lists kept for sharing
Key = tuple[str, str]


class SharedValues:
    """One object for equal values of many problems: a looked-for list (the same for
    every record an indexer misses) and, within one pass, any string (image ids, names,
    timestamps). The values are never changed in place, so sharing them is safe."""

    def __init__(self) -> None:
        self._lists: dict[tuple[str, ...], list[str]] = {}

    def looked_for(self, keys: Iterable[str]) -> list[str]:
        """A list equal to ``keys``, shared with every equal one handed out before."""
        key = tuple(keys)
        shared = self._lists.get(key)
        if shared is None:
            if len(self._lists) >= _SHARED_MAX:
                self._lists.clear()
            shared = self._lists[key] = list(key)
        return shared

    def share(self, problem: dict[str, Any], strings: dict[str, str]) -> dict[str, Any]:
        """``problem``, changed in place: its strings taken from ``strings`` (a pass's
        pool, filled as it goes) and its looked-for list shared."""
        for k, v in problem.items():
            if isinstance(v, str):
                problem[k] = strings.setdefault(v, v)
            elif k == "looked_for" and isinstance(v, list) and all(isinstance(x, str) for x in v):
                problem[k] = self.looked_for(v)
        return problem


def load_problems(
    root: Path, indexers: Iterable[str], shared: SharedValues | None = None
) -> dict[Key, dict[str, Any]]:
    """The problems saved by the last daemon, for the ``indexers`` that run now and the
    records that still exist (empty if there is no readable file); equal values are
    held once (``shared``: the pool of looked-for lists to use)."""
    path = root / INDEX_DIR / PROBLEMS_FILE
    try:
        doc = json.loads(path.read_bytes())
        entries = doc["problems"] if doc.get("format") == _FORMAT else []
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("problems_unreadable", path=str(path), error=str(e))
        return {}
    wanted = set(indexers)
    try:  # one listing, not a stat per problem (10k problems: 450 → 45-70 ms here)
        with os.scandir(root / IMAGES_DIR) as it:
            records = {e.name for e in it if e.is_dir(follow_symlinks=False)}
    except OSError:
        return {}
    shared = shared or SharedValues()
    strings: dict[str, str] = {}
    out: dict[Key, dict[str, Any]] = {}
    for p in entries if isinstance(entries, list) else []:
        if not isinstance(p, dict):
            continue
        image_id, indexer = p.get("image_id"), p.get("indexer")
        if image_id not in records or indexer not in wanted:
            continue  # a record gone while the daemon was down: nothing is wrong with it
        entry = shared.share(p, strings)
        out[(entry["image_id"], entry["indexer"])] = entry
    return out


def save_problems(root: Path, problems: Mapping[Key, Mapping[str, Any]]) -> bool:
    """Write every current problem (sorted); False if it could not be written."""
    if not store_is_whole(root):
        return False  # never write into a store that was moved or is being deleted
    doc = {"format": _FORMAT, "problems": [problems[k] for k in sorted(problems)]}
    path = root / INDEX_DIR / PROBLEMS_FILE
    try:
        atomic_write_bytes(path, json.dumps(doc).encode(), fsync=False, within=root)
    except OSError as e:
        log.warning("problems_write_failed", path=str(path), error=str(e))
        return False
    return True
