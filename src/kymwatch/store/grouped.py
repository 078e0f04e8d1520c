"""Table files written as row groups: an edit encodes only the groups it touched.

A table file is one Parquet file of several row groups cut between records
(:mod:`kymwatch.store.groupplan`). Written whole, its groups are encoded in one pass
of pyarrow's writer (a group per ``write_table``). After an edit, only the groups
holding a touched record are encoded (each as a small file in memory); every other
group is copied as bytes from the file written before and the file is stitched
together (:mod:`kymwatch.store.stitch`). The file copied from must still be the very file
described by the :class:`GroupedFile` kept of it (same fingerprint, checked on the
open file). Anything else (no previous file known, another writer's file, a schema or
metadata change, rows without an id, a file that cannot be stitched) writes the table
whole. The file is still written to a temporary name, fsynced and renamed
(:func:`kymwatch.store.atomic.atomic_write`): readers see one ordinary Parquet file,
which pandas and pyarrow read as one table.
"""

from __future__ import annotations

import dataclasses
import io
import os
from bisect import bisect_left
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from kymwatch.store.atomic import atomic_write
from kymwatch.store.encoding import write_options
from kymwatch.store.engine import SortedTable
from kymwatch.store.groupplan import TARGET_ROWS, Cut, Group, plan_edit, plan_full
from kymwatch.store.scan import Fingerprint
from kymwatch.store.stitch import Piece, Source, StitchRefusedError, stitch
from kymwatch.store.tables import LazyPool, table_fingerprint, write_table_arrow, writer_pool

__all__ = [
    "BURST_RECORDS",
    "TARGET_ROWS",
    "GroupedFile",
    "read_layout",
    "start_grouped_write",
    "write_grouped",
]

log = structlog.get_logger(__name__)

_encoders = LazyPool(2, "kymwatch-encode")
"""The threads that encode the row groups of an edit touching several groups."""


BURST_RECORDS = 16
"""A write after an update of more records than this (a burst's batch: it touches most
groups) encodes the table in one piece, as before row groups: in groups it cost ~17 %
more CPU (10k records, batches of 50, ``bench/rowgroups_ab.py --batch 50``). The next
edit then writes the table whole in groups, once."""


@dataclass(frozen=True, slots=True)
class GroupedFile:
    """A table file as kymwatch wrote it in row groups.

    Attributes:
        stamp: The file's fingerprint right after its rename.
        schema: The Arrow schema written (with its metadata).
        groups: Its row groups' ids and rows, in file order.
        footer: Its footer as parsed (the groups' metadata and byte ranges); None for
            a file written in one pass, whose footer is read when an edit first copies
            from it.
        encoded: How many of its groups this write encoded (the others were copied).
    """

    stamp: Fingerprint
    schema: pa.Schema
    groups: tuple[Group, ...]
    footer: Source | None
    encoded: int


def _encode(table: pa.Table, options: dict[str, object]) -> Source:
    """One row group's rows as a standalone Parquet file in memory."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=max(1, table.num_rows), **options)
    return Source.of(buf.getvalue())


def _plan(
    st: SortedTable, touched: Collection[str] | None, previous: GroupedFile | None
) -> tuple[list[Cut], GroupedFile | None]:
    """The groups to write, and the previous file to copy from (None: all encoded)."""
    if (
        previous is not None
        and touched is not None
        and previous.schema.equals(st.table.schema, check_metadata=True)
    ):
        cuts = plan_edit(st.ids, st.offsets, previous.groups, touched, TARGET_ROWS)
        if cuts is not None and any(c.old is not None for c in cuts):
            return cuts, previous
    return plan_full(st.ids, st.offsets, TARGET_ROWS), None


def write_grouped(
    path: Path,
    st: SortedTable,
    *,
    touched: Collection[str] | None,
    previous: GroupedFile | None,
    within: Path | None = None,
    sync_folder: bool = True,
    options: dict[str, object] | None = None,
) -> GroupedFile | Fingerprint:
    """Replace a table file atomically with ``st``, in row groups; returns what was
    written (a table that cannot be cut: rows without an id, none at all, or a burst's
    update of more than :data:`BURST_RECORDS` records, is written in one piece, and only
    its fingerprint is returned).

    Args:
        path: The table file.
        st: The table (sorted by image id; its schema's metadata is written).
        touched: The records whose rows changed since ``previous`` (None: unknown).
        previous: The file as written last (its groups not touched are copied from
            it when it is still that file).
        within, sync_folder, options: As for
            :func:`~kymwatch.store.tables.write_table_arrow`.
    """
    if options is None:
        options = write_options(st.table)
    many = touched is not None and len(touched) > BURST_RECORDS
    if many or not st.ids or st.offsets[-1] != st.table.num_rows:
        return write_table_arrow(
            path, st.table, within=within, sync_folder=sync_folder, options=options
        )
    cuts, source = _plan(st, touched, previous)
    if source is not None:
        try:
            return _write(path, st, cuts, source, options, within, sync_folder)
        except (StitchRefusedError, _StaleSourceError, OSError) as e:
            # the previous file cannot be copied from (replaced, damaged, a read error):
            # the table is encoded whole (a failure of the write itself raises there)
            log.info("table_groups_rewritten", path=str(path), reason=str(e))
            cuts = plan_full(st.ids, st.offsets, TARGET_ROWS)
    return _write(path, st, cuts, None, options, within, sync_folder)


class _StaleSourceError(Exception):
    """The previous file is no longer the one written (replaced or changed since)."""


def _write(
    path: Path,
    st: SortedTable,
    cuts: Sequence[Cut],
    previous: GroupedFile | None,
    options: dict[str, object],
    within: Path | None,
    sync_folder: bool,
) -> GroupedFile:
    """Write ``cuts``: all encoded in one pass (``previous`` None), or stitched from the
    groups encoded now and those copied from ``previous``."""
    groups = tuple(c.group for c in cuts)
    if previous is None:
        atomic_write(
            path, partial(_write_whole, st.table, cuts, options), within=within,
            sync_folder=sync_folder,
        )  # fmt: skip
        stamp = table_fingerprint(path)
        assert stamp is not None
        return GroupedFile(stamp, st.table.schema, groups, None, len(cuts))
    fresh = [c for c in cuts if c.old is None]
    if len(fresh) > 1:  # encoded at once, on the encoder threads
        pool = _encoders()
        jobs = [pool.submit(_encode, st.table.slice(c.start, c.rows), options) for c in fresh]
        sources = [f.result() for f in jobs]
    else:
        sources = [_encode(st.table.slice(c.start, c.rows), options) for c in fresh]
    encoded = iter(sources)
    fd_old = os.open(path, os.O_RDONLY)
    try:
        if Fingerprint.of(os.fstat(fd_old)) != previous.stamp:
            raise _StaleSourceError("table file changed since it was written")
        if previous.footer is None:  # written in one pass: its footer is read once now
            old = Source.of(fd_old)
            if old.rows != tuple(g.rows for g in previous.groups):
                raise _StaleSourceError("table file's row groups are not those written")
        else:
            old = dataclasses.replace(previous.footer, data=fd_old)
        pieces = [Piece(old, c.old) if c.old is not None else Piece(next(encoded), 0) for c in cuts]
        footers: list[Source] = []

        def write(tmp: Path) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                footers.append(stitch(pieces, fd))
            finally:
                os.close(fd)

        atomic_write(path, write, within=within, sync_folder=sync_folder)
    finally:
        os.close(fd_old)
    stamp = table_fingerprint(path)
    assert stamp is not None
    return GroupedFile(stamp, st.table.schema, groups, footers[0], len(fresh))


def _write_whole(
    table: pa.Table, cuts: Sequence[Cut], options: dict[str, object], tmp: Path
) -> None:
    """Encode every group of ``table`` into ``tmp`` in one pass of pyarrow's writer (one
    ``write_table`` per group: a group is never cut by the writer's own size limit)."""
    with pq.ParquetWriter(tmp, table.schema, **options) as writer:
        for c in cuts:
            writer.write_table(table.slice(c.start, c.rows), row_group_size=c.rows)


def read_layout(
    path: Path, st: SortedTable, stamp: Fingerprint, schema: pa.Schema
) -> GroupedFile | None:
    """The row groups of a table file whose rows were just read, unchanged, as ``st``
    (the file's fingerprint then: ``stamp``; its Arrow schema: ``schema``), so that the
    next edit can copy them: None unless the file is still that one, can be stitched
    from, and each of its groups is cut between records (e.g. after a restart, a file
    this code wrote). The footer is read here, once."""
    offsets = st.offsets
    if not st.ids or offsets[-1] != st.table.num_rows:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if Fingerprint.of(os.fstat(fd)) != stamp:
            return None
        source = Source.of(fd)
    except (OSError, StitchRefusedError):
        return None
    finally:
        os.close(fd)
    groups, at = [], 0
    for rows in source.rows:
        lo, hi = bisect_left(offsets, at), bisect_left(offsets, at + rows)
        if rows <= 0 or hi >= len(offsets) or offsets[lo] != at or offsets[hi] != at + rows:
            return None  # a group that does not start and end between records
        groups.append(Group(st.ids[lo], st.ids[hi - 1], rows))
        at += rows
    if at != st.table.num_rows:
        return None
    footer = dataclasses.replace(source, data=b"")
    return GroupedFile(stamp, schema, tuple(groups), footer, 0)


def start_grouped_write(
    path: Path,
    st: SortedTable,
    *,
    touched: Collection[str] | None,
    previous: GroupedFile | None,
    within: Path | None = None,
) -> Future[GroupedFile | Fingerprint]:
    """Start :func:`write_grouped` on a writer thread, its folder not synced (as
    :func:`~kymwatch.store.tables.start_table_writes`: the caller syncs it once the
    future is done). The encoder's options are chosen here, on the caller's thread."""
    options = write_options(st.table)
    return writer_pool().submit(
        write_grouped,
        path,
        st,
        touched=touched,
        previous=previous,
        within=within,
        sync_folder=False,
        options=options,
    )
