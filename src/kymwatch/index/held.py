"""Results held back from a publish: a daemon's backlog, merged and written once.

:class:`HeldTables` wraps :meth:`~kymwatch.index.publish.Publisher.publish`. A call with
``hold`` merges and writes nothing: each table's results are kept, by table name. The
next call without it hands them to the publisher as ``earlier`` results, merged with
its own (a record's last result wins, as if merged one after the other), and each
table is written once: a daemon's backlog pays one merge (an O(rows) splice and
compaction) and one write per table for several chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kymwatch.errors import TableUnreadableError
from kymwatch.index.base import DatasetIndexer
from kymwatch.index.batch import Extracted
from kymwatch.index.publish import Earlier, Merged, Publisher

__all__ = ["HeldTables"]


@dataclass(frozen=True, slots=True)
class _Held:
    """One table's results held, not merged yet (the lists grow with each held call)."""

    ix: DatasetIndexer
    ids: list[str]
    results: list[Extracted]
    start: float
    id_set: set[str]


class HeldTables:
    """The results held for the tables of one store, and their publishing.

    Args:
        pub: The store's publisher, which merges and writes them.
    """

    def __init__(self, pub: Publisher) -> None:
        self._pub = pub
        self._held: dict[str, _Held] = {}  # by table name, in the order first held
        self.written: list[str] = []
        """Held tables the last publish without ``hold`` wrote (with its own)."""

    def __contains__(self, table_name: object) -> bool:
        return table_name in self._held

    def __bool__(self) -> bool:
        return bool(self._held)

    def names(self) -> list[str]:
        """Names of the tables with results held (sorted)."""
        return sorted(self._held)

    def names_record(self, table_name: str, image_id: str) -> bool:
        """Whether results held for ``table_name`` name record ``image_id``."""
        held = self._held.get(table_name)
        return held is not None and image_id in held.id_set

    def publish(
        self,
        extracted: Sequence[tuple[DatasetIndexer, list[str], Sequence[Extracted]]],
        start: float,
        *,
        before_write: Callable[[], object] | None = None,
        hold: bool = False,
    ) -> tuple[list[Merged], dict[str, TableUnreadableError]]:
        """:meth:`~kymwatch.index.publish.Publisher.publish` ``extracted`` with every
        result held so far, which is then no longer held.

        With ``hold`` nothing is merged nor written: the results are held after those
        held before (a table file that cannot be parsed is reported now, and nothing of
        its indexer's is held); the returned merges are the tables as they are
        (``changed`` False). A failure drops every held result (the caller's records
        stay due).

        Returns:
            The merged tables, in the order of ``extracted``, and the error of each
            indexer whose table file cannot be parsed.
        """
        if hold:
            return self._hold(extracted, start)
        held, self._held = self._held, {}
        self.written = []
        earlier = {n: Earlier(h.ix, h.ids, h.results, h.start) for n, h in held.items()}
        merged, unreadable, self.written = self._pub.publish(
            extracted, start, before_write=before_write, earlier=earlier
        )
        return merged, unreadable

    def write(self, start: float, *, before_write: Callable[[], object] | None = None) -> None:
        """Merge and write every held table (see :meth:`publish`); nothing if none is."""
        if self._held:
            self.publish([], start, before_write=before_write)

    def _hold(
        self,
        extracted: Sequence[tuple[DatasetIndexer, list[str], Sequence[Extracted]]],
        start: float,
    ) -> tuple[list[Merged], dict[str, TableUnreadableError]]:
        """Keep each indexer's results for its table, after those held (smallest table
        first, the order they are written in); each table as it is."""
        pub = self._pub
        merged: dict[int, Merged] = {}
        unreadable: dict[str, TableUnreadableError] = {}
        with pub.store.table_lock():
            try:
                for k in pub.smallest_first(extracted):
                    ix, ids, results = extracted[k]
                    try:  # a damaged file: raised now
                        current = pub.read_for_update(ix, replace_all=False)
                    except TableUnreadableError as e:
                        unreadable[ix.name] = e
                        continue
                    held = self._held.get(ix.table_name)
                    if held is None:
                        held = self._held[ix.table_name] = _Held(ix, [], [], start, set())
                    held.ids.extend(ids)
                    held.results.extend(results)
                    held.id_set.update(ids)
                    as_is = frozenset[str]()  # no record's rows replaced: the table as it is
                    merged[k] = Merged(ix, ids, results, current, False, start, current, as_is)
            except BaseException:  # held results not written are lost (the caller's
                self._held.clear()  # records stay due)
                raise
        return [merged[k] for k in sorted(merged)], unreadable
