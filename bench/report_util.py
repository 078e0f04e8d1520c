"""Formatting helpers shared by the report modules."""

from __future__ import annotations

import math
from typing import Any


def f(x: Any, nd: int = 2) -> str:
    """A number for a table cell ("-" for None/NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def k(n: int) -> str:
    """10000 → "10k"."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table (and a blank line)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += [
        "| " + " | ".join(f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return [*out, ""]


def sec(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The result of a section, or None if it has none."""
    s = results.get("sections", {}).get(name)
    return s["result"] if s else None


def meta(results: dict[str, Any], name: str) -> str:
    """When and how a section was measured, and the background load meanwhile."""
    s = results["sections"][name]
    bg = s["background"]
    before = bg.get("before") or {}
    waited = f", waited {before['waited_s']:.0f} s for a quiet machine" if before else ""
    changed = (
        " **kymwatch's sources changed while this section ran** (other people commit to the "
        "repository); later measurements in it may use the newer code."
        if s.get("src_changed_during")
        else ""
    )
    return (
        f"*Measured {s['date_utc']} (commit {s['git_commit']}), took {s['seconds']:.0f} s; "
        f"other processes used {bg['other_cores']:.2f} cores on average meanwhile{waited}.*"
        f"{changed}"
    )
