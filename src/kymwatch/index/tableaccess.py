"""kymflow's table API of :class:`~kymwatch.index.kymdataset.KymDataset`: reading the
dataset tables (cached, as DataFrames or Arrow) and writing them back whole.

The cache, merges and writes themselves are :class:`~kymwatch.index.publish.Publisher`'s;
the indexing that drives them is :mod:`~kymwatch.index.kymdataset`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

from kymwatch.index.base import DatasetIndexer
from kymwatch.index.frames import to_frame, with_pandas_metadata
from kymwatch.index.publish import Publisher
from kymwatch.store import SortedTable, ZarrDataset, table_fingerprint, write_table_arrow

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TableAccess"]


class TableAccess:
    """Table reads and whole-table writes over a store and its indexers' tables
    (a base of :class:`~kymwatch.index.kymdataset.KymDataset`, which sets the attributes)."""

    store: ZarrDataset
    indexers: list[DatasetIndexer]
    _pub: Publisher

    def load_tables(self, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """Load (or refresh) tables; default: every indexer's table and every table on disk."""
        if names is None:
            names = {ix.table_name for ix in self.indexers} | set(self.store.list_table_names())
        return {name: self.get_table(name) for name in sorted(names)}

    def get_table(self, name: str) -> pd.DataFrame:
        """Table ``name`` (empty with its schema if an indexer owns it but it is not built)."""
        st = self._pub.read(name)
        stamp = self._pub.stamps.get(name)
        cached = self._pub.frames.get(name)
        if cached is None or cached[0] != stamp or stamp is None:
            cached = (stamp, to_frame(st.table))
            self._pub.frames[name] = cached
        return cached[1].copy(deep=False)

    def get_arrow(self, name: str) -> pa.Table:
        """Table ``name`` as Arrow (sorted by ``image_id``; no pandas conversion)."""
        return self._pub.read(name).table

    def current_cached(self, name: str) -> SortedTable | None:
        """The cached copy of table ``name`` while its files are still the ones it was
        read from or written as; None otherwise (not cached, changed on disk since,
        adopted from another program's schema, whose values the copy coerced, or kept
        without its image-id map because no indexer of it is in use).

        Nothing is read or cached, so another thread may call it (the daemon's stale
        counter). A copy replaced meanwhile may be the one before the batch in hand;
        that batch's records are judged again after it.
        """
        pub = self._pub
        st = pub.tables.get(name)
        if st is None or name in pub.foreign or (len(st) and not st.ids):
            return None
        if table_fingerprint(self.store.table_path(name)) != pub.stamps.get(name):
            return None
        if pub.parted.stamp(name) != pub.part_stamps.get(name):
            return None
        return st

    def table_image_ids(self, name: str) -> set[str]:
        """The image ids that have rows in table ``name``."""
        st = self._pub.read(name)
        if st.ids or "image_id" not in st.table.column_names:
            return set(st.ids)
        return {str(v) for v in st.table.column("image_id").drop_null().to_pylist()}

    def save_table(self, name: str, df: pd.DataFrame | None = None) -> None:
        """Write table ``name`` atomically under the store lock, and cache it.

        Without ``df`` the cached table is written (kymflow's ``save_table(name)``;
        KeyError if it was never loaded). A frame is written as given; it is adopted
        (typed, sorted) when read back.
        """
        self.store.check_writable()
        if df is None:
            if name not in self._pub.tables:
                raise KeyError(f"table not loaded in cache: {name}")
            table = self._pub.tables[name].table
            if self._pub.indexer_for_table(name) is not None:
                table = with_pandas_metadata(table)
        else:
            table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        with self.store.table_lock():
            path = self.store.table_path(name)
            self._pub.stamps[name] = write_table_arrow(path, table, within=self.store.path)
            self._pub.tables.pop(name, None)
            self._pub.frames.pop(name, None)

    def save_all_tables(self) -> None:
        """Write every cached table."""
        for name in list(self._pub.tables):
            self.save_table(name)
