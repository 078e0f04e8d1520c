"""The polling hot set: records changed recently, whose artifact files every poll stats.

A writer that rewrites files in place (no folder mtime changes) usually keeps
rewriting the same records while it acquires. The rotation of
:class:`~kymwatch.daemon.pollscan.PollScanner` finds such a rewrite only at the
record's turn (once every ``full_every`` polls, minutes on a large store); once a
change of a record has been seen, the record is "hot" for ``hold_s`` seconds and
its artifact files are statted at every poll, so its next rewrites are seen within
one interval. The set is bounded (``limit`` records; the least recently changed
leaves first), so its cost per poll is too.

Pure logic: the time is an argument, the stat call is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["HotSet"]

Stat = tuple[int, int, int, int]
Files = tuple[tuple[str, Stat], ...]
"""(absolute path, stat) of a record's artifact files, as its last listing saw them."""


@dataclass(slots=True)
class _Hot:
    since: float  # when a change of the record was last seen
    files: Files


class HotSet:
    """Records changed in the last ``hold_s`` seconds, at most ``limit`` of them.

    Args:
        hold_s: Seconds a record stays hot after its last seen change (0: no hot set).
        limit: Most records kept hot (0: no hot set).
    """

    def __init__(self, hold_s: float = 300.0, limit: int = 100) -> None:
        if hold_s < 0 or limit < 0:
            raise ValueError(f"hold_s and limit must not be negative: {hold_s!r}, {limit!r}")
        self.hold_s, self.limit = hold_s, limit
        self._hot: dict[str, _Hot] = {}  # in the order of their last change

    def __len__(self) -> int:
        return len(self._hot)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._hot

    def mark(self, image_id: str, files: Sequence[tuple[str, Stat]], now: float) -> None:
        """A change of ``image_id`` was seen at ``now``: hot from now, with ``files``."""
        if self.limit == 0 or self.hold_s == 0:
            return
        self._hot.pop(image_id, None)
        self._hot[image_id] = _Hot(now, tuple(files))
        while len(self._hot) > self.limit:
            del self._hot[next(iter(self._hot))]

    def refresh(self, image_id: str, files: Sequence[tuple[str, Stat]]) -> None:
        """``image_id`` was listed again without a change: keep its hold, take its
        files as listed now."""
        hot = self._hot.get(image_id)
        if hot is not None:
            hot.files = tuple(files)

    def discard(self, image_id: str) -> None:
        """Forget ``image_id`` (its record is gone)."""
        self._hot.pop(image_id, None)

    def clear(self) -> None:
        """Forget every record."""
        self._hot.clear()

    def expire(self, now: float) -> None:
        """Drop the records whose last change is more than ``hold_s`` before ``now``."""
        while self._hot:
            image_id, hot = next(iter(self._hot.items()))
            if now - hot.since <= self.hold_s:
                return
            del self._hot[image_id]

    def changed(self, stat_file: Callable[[str], Stat | None], now: float) -> tuple[set[str], int]:
        """Expire, then stat the files of each hot record.

        Returns:
            The hot records one of whose files differs from its last listing (or is
            gone), and how many files were statted.
        """
        self.expire(now)
        out: set[str] = set()
        statted = 0
        for image_id, hot in self._hot.items():
            for path, sig in hot.files:
                statted += 1
                if stat_file(path) != sig:
                    out.add(image_id)
                    break
        return out, statted
