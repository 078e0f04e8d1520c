"""Where a table file's row groups are cut, and which of them an edit re-encodes.

A table kymwatch writes is sorted by ``image_id`` (:mod:`kymwatch.store.engine`); its
file is written as row groups of about :data:`TARGET_ROWS` rows each, cut between
records (a record's rows are never split). An edit replaces the rows of a few records
(``touched``): only the groups whose id range holds one of them are encoded again, the
others are copied from the previous file as bytes (:mod:`kymwatch.store.grouped`).

Each group covers the ids from its first one up to the next group's first (the first
group: from the lowest); a new record goes to the group whose range covers it. A
re-encoded group keeps its bounds while its rows stay within half to twice the target;
otherwise the run of re-encoded groups around it is cut again evenly (after taking in
its smaller neighbour, when the run has shrunk below half the target).
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["TARGET_ROWS", "Cut", "Group", "plan_edit", "plan_full"]

TARGET_ROWS = 16384
"""Rows per row group aimed at (see ``bench/ANALYSIS.md``, "Row groups, session 7")."""


@dataclass(frozen=True, slots=True)
class Group:
    """A row group of a table file: the ids it holds and its rows."""

    first_id: str
    last_id: str
    rows: int


@dataclass(frozen=True, slots=True)
class Cut:
    """A row group of the file to write.

    Attributes:
        start: Its first row in the new table.
        rows: Its rows.
        group: Its ids and rows.
        old: The index of the previous file's group it copies unchanged (None: encoded).
    """

    start: int
    rows: int
    group: Group
    old: int | None


def _cut(ids: Sequence[str], offsets: array[int], lo: int, hi: int, old: int | None) -> Cut:
    """The cut of ids ``lo:hi`` (at least one)."""
    start, stop = offsets[lo], offsets[hi]
    return Cut(start, stop - start, Group(ids[lo], ids[hi - 1], stop - start), old)


def _even(ids: Sequence[str], offsets: array[int], lo: int, hi: int, target: int) -> list[Cut]:
    """Ids ``lo:hi`` cut into about ``rows / target`` groups of about equal rows, each
    cut at the record boundary nearest to its ideal row (the rows left shared by the
    groups left); a group below half the target (beside a record larger than the
    target) is then merged into its smaller neighbour."""
    if hi <= lo:
        return []
    rows = offsets[hi] - offsets[lo]
    k = max(1, round(rows / target))
    bounds = [lo]
    for j in range(1, k):
        at = offsets[bounds[-1]]
        want = at + (offsets[hi] - at) / (k - j + 1)
        i = bisect_left(offsets, want, bounds[-1] + 1, hi)
        if i > bounds[-1] + 1 and want - offsets[i - 1] <= offsets[i] - want:
            i -= 1  # the boundary just before the ideal row is nearer
        if bounds[-1] < i < hi:
            bounds.append(i)
    bounds.append(hi)
    low = max(1, target // 2)
    while len(bounds) > 2:
        sizes = [offsets[b] - offsets[a] for a, b in itertools.pairwise(bounds)]
        small = min(range(len(sizes)), key=sizes.__getitem__)
        if sizes[small] >= low:
            break
        left = small > 0 and (small == len(sizes) - 1 or sizes[small - 1] <= sizes[small + 1])
        del bounds[small if left else small + 1]  # the boundary to the smaller neighbour
    return [_cut(ids, offsets, a, b, None) for a, b in itertools.pairwise(bounds)]


def plan_full(ids: Sequence[str], offsets: array[int], target: int = TARGET_ROWS) -> list[Cut]:
    """The row groups of a table written whole: about ``rows / target`` even groups
    (none for a table without rows)."""
    return _even(ids, offsets, 0, len(ids), target)


def plan_edit(
    ids: Sequence[str],
    offsets: array[int],
    old: Sequence[Group],
    touched: Collection[str],
    target: int = TARGET_ROWS,
) -> list[Cut] | None:
    """The row groups of a table after an edit of ``touched`` records, given the groups
    of the file written before it (``old``); None when the whole table must be encoded
    (no old groups, or no rows left).

    A group none of whose ids was touched is copied (its ``old`` index set): its rows
    are the same as before, which is checked on its bounds and row count (a mismatch
    re-encodes it).
    """
    if not old or not ids:
        return None
    firsts = [g.first_id for g in old]
    # ids lo[k]:lo[k + 1] of the new table fall in old group k
    lo = [0, *(bisect_left(ids, f) for f in firsts[1:]), len(ids)]
    dirty = [False] * len(old)
    for t in touched:
        dirty[max(0, bisect_right(firsts, t) - 1)] = True
    for k, g in enumerate(old):
        a, b = lo[k], lo[k + 1]
        same = b > a and (ids[a], ids[b - 1], offsets[b] - offsets[a]) == (
            g.first_id,
            g.last_id,
            g.rows,
        )
        dirty[k] = dirty[k] or not same
    low, high = max(1, target // 2), 2 * target

    def rows(a: int, b: int) -> int:
        """Rows of old groups a:b in the new table."""
        return offsets[lo[b]] - offsets[lo[a]]

    def runs() -> list[tuple[int, int]]:
        out, k = [], 0
        while k < len(old):
            if dirty[k]:
                j = k
                while j < len(old) and dirty[j]:
                    j += 1
                out.append((k, j))
                k = j
            else:
                k += 1
        return out

    def fits(a: int, b: int) -> bool:
        return len(old) == 1 or all(low <= rows(k, k + 1) <= high for k in range(a, b))

    grown = True
    while grown:  # a shrunk run takes in its smaller clean neighbour, until none is left
        grown = False
        for a, b in runs():
            if fits(a, b) or rows(a, b) >= low:
                continue
            sides = [k for k in (a - 1, b) if 0 <= k < len(old)]
            if sides:
                dirty[min(sides, key=lambda k: rows(k, k + 1))] = True
                grown = True
                break
    cuts: list[Cut] = []
    k = 0
    for a, b in runs():
        cuts += [_cut(ids, offsets, lo[j], lo[j + 1], j) for j in range(k, a)]
        if fits(a, b):
            cuts += [_cut(ids, offsets, lo[j], lo[j + 1], None) for j in range(a, b)]
        else:
            cuts += _even(ids, offsets, lo[a], lo[b], target)
        k = b
    cuts += [_cut(ids, offsets, lo[j], lo[j + 1], j) for j in range(k, len(old))]
    return cuts
