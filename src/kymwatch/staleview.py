"""``kymwatch stale``, and the stale counts of ``kymwatch status`` when no daemon runs."""

from __future__ import annotations

import json
from pathlib import Path

from kymwatch.daemon.stalecount import tabled_gen2_indexers
from kymwatch.index import GENERATION_2, select_indexers
from kymwatch.index.staleness import Staleness, dataset_staleness, stale_counts

__all__ = ["show_stale", "stale_summary", "store_stale_indexers"]


def store_stale_indexers(root: Path) -> list[str]:
    """The generation-2 indexers that apply to the store (from what it holds)."""
    return [n for n in select_indexers(root, None) if n in GENERATION_2]


def stale_summary(root: Path) -> dict[str, int] | None:
    """Stale (analysed) records per generation-2 indexer that has a table; None if it
    cannot be computed. (Only tabled indexers: ``status`` stays cheap on other stores.)"""
    names = tabled_gen2_indexers(Path(root))
    try:
        return stale_counts(dataset_staleness(root, names))
    except Exception:  # status must answer whatever the store holds
        return None


def show_stale(root: Path, *, as_json: bool, show_all: bool) -> int:
    """Print the stale records of a store (all records with ``show_all``); returns 0."""
    names = store_stale_indexers(root)
    results = dataset_staleness(root, names)
    shown = [s for s in results if show_all or (s.is_stale and s.analysed)]
    counts = stale_counts(results)
    if as_json:
        doc = {"indexers": names, "counts": counts, "records": [s.to_dict() for s in shown]}
        print(json.dumps(doc, indent=2))
        return 0
    if not names:
        print(f"kymwatch: {root} holds no generation-2 analyses")
        return 0
    for name in names:
        mine = [s for s in shown if s.indexer == name]
        analysed = sum(1 for s in results if s.indexer == name and s.analysed)
        print(f"{name}: {counts.get(name, 0)} stale of {analysed} analysed records")
        for s in mine:
            print(f"  {s.image_id}  {s.reason}{_detail(s)}")
    return 0


def _detail(s: Staleness) -> str:
    parts = []
    if s.marker_n_rows is not None:
        parts.append(f"marker n_rows {s.marker_n_rows}")
    if not s.analysed:
        parts.append("never analysed")
    if s.error:
        parts.append(f"error: {s.error}")
    return f"  ({'; '.join(parts)})" if parts else ""
