"""Reading a chunk of records with one or more indexers: outcomes, and rows in Arrow.

Each record's artifact is read on its own (one bad record never stops the others: any
exception becomes its outcome); the rows of the whole chunk are then converted to the
table schema at once (:func:`kymwatch.index.arrow_schema.conform_batch`). Each record is
read through one snapshot :class:`~kymwatch.store.ZarrImageRecord` for all the
indexers of a chunk (``analysis/`` listed once, each file opened once:
:mod:`kymwatch.store.lookup`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import pyarrow as pa

from kymwatch.errors import ArtifactInvalidError, ArtifactNotFoundError, ArtifactUnreadableError
from kymwatch.index.arrow_schema import RawRows, RowSpan, conform_batch
from kymwatch.index.base import DatasetIndexer, OutcomeStatus, RecordOutcome, extras_position
from kymwatch.index.frames import from_frame, is_frame
from kymwatch.index.gather import gather_spans, one_table
from kymwatch.index.indexers import raw_reader
from kymwatch.store import Listing, ZarrDataset, ZarrImageRecord

__all__ = [
    "ChunkResult",
    "Extracted",
    "HeldResults",
    "extract_batch",
    "extract_chunk",
    "extract_jobs",
]

Reader = Callable[[ZarrImageRecord], RawRows]
"""A built-in indexer's reader of one record's raw rows (:func:`raw_reader`)."""

Extracted = tuple[RecordOutcome, RowSpan | None]
"""A record's outcome and, for INDEXED, its rows in the table schema."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One indexer's reading of a chunk of records.

    Attributes:
        indexer: The indexer's name.
        table_name: The table it feeds.
        extracted: Each record's outcome and typed rows, in the order asked.
    """

    indexer: str
    table_name: str
    extracted: tuple[Extracted, ...]

    @property
    def outcomes(self) -> tuple[RecordOutcome, ...]:
        """Each record's outcome, in the order asked (rows of kept records not filled in)."""
        return tuple(o for o, _ in self.extracted)

    def table(self) -> pa.Table | None:
        """The rows of the indexed records in the order asked, as one table in this
        chunk's schema (extra columns typed over the chunk; a table merge types them
        over all its rows); None when no record has rows."""
        spans = [s for _, s in self.extracted if s is not None and s.count]
        return gather_spans(spans) if spans else None


def _label(ix: DatasetIndexer) -> str:
    label = getattr(ix, "indexer_label", None)
    return label if isinstance(label, str) else ix.name


def _read_one(ix: DatasetIndexer, rec: ZarrImageRecord, reader: Reader | None) -> RawRows:
    """The record's rows as read by ``reader`` (``ix``'s :func:`raw_reader`), or through
    ``extract_rows`` (a plugin's frame or table is taken as raw rows)."""
    if reader is not None:
        raw = reader(rec)
    else:
        rows = ix.extract_rows(rec)
        if isinstance(rows, pa.Table):
            source: pa.Table | dict[str, list[object]] = rows
        elif is_frame(rows):
            source = from_frame(rows)
        else:
            raise TypeError(f"extract_rows returned {type(rows).__name__}, not a DataFrame")
        n = source.num_rows if isinstance(source, pa.Table) else len(rows)
        raw = RawRows(rec.image_id, ix.name, "", source, n)
    raw.check()
    return raw


def _read(
    ix: DatasetIndexer, rec: ZarrImageRecord, reader: Reader | None
) -> RecordOutcome | RawRows:
    """``ix``'s reading of ``rec`` (``reader``: its :func:`raw_reader`, or None)."""
    image_id = rec.image_id
    # A built-in indexer finds no artifact in a removed record (checked below); another
    # indexer might not look: ask first.
    if reader is None and not rec.exists():
        return RecordOutcome(image_id, ix.name, OutcomeStatus.REMOVED)
    failed: RecordOutcome | None = None
    raw: RawRows | None = None
    try:
        raw = _read_one(ix, rec, reader)
    except ArtifactNotFoundError as e:
        failed = RecordOutcome(image_id, ix.name, OutcomeStatus.MISSING, keys=e.looked_for)
    except ArtifactUnreadableError as e:
        failed = RecordOutcome(
            image_id, ix.name, OutcomeStatus.UNREADABLE, path=e.path, error=e.reason
        )
    except ArtifactInvalidError as e:
        failed = RecordOutcome(
            image_id, ix.name, OutcomeStatus.INVALID, path=e.path, error=e.reason
        )
    except MemoryError:
        raise
    except Exception as e:  # any failure on one record is that record's outcome
        error = f"{type(e).__name__}: {str(e)[:500]}"
        failed = RecordOutcome(image_id, ix.name, OutcomeStatus.INVALID, error=error)
    if failed is not None:
        if not rec.exists():  # removed while we read it (the likely cause of the failure)
            return RecordOutcome(image_id, ix.name, OutcomeStatus.REMOVED)
        return failed
    assert raw is not None
    return raw


def _conform(ix: DatasetIndexer, raws: Sequence[RawRows]) -> list[RowSpan | str]:
    """Each record's typed rows, or why they cannot be typed."""
    try:
        return list(conform_batch(raws, ix.columns, extras_position(ix), indexer=_label(ix)))
    except MemoryError:
        raise
    except Exception:  # one record's rows break the batch: find it, record by record
        if len(raws) == 1:
            raise
    out: list[RowSpan | str] = []
    for raw in raws:
        try:
            out.extend(_conform(ix, [raw]))
        except MemoryError:
            raise
        except Exception as e:
            out.append(f"rows cannot be typed: {type(e).__name__}: {str(e)[:500]}")
    return out


def extract_chunk(
    store: ZarrDataset,
    indexers: Sequence[DatasetIndexer],
    ids: Sequence[str],
    *,
    listed: Mapping[str, Listing] | None = None,
) -> list[ChunkResult]:
    """Read the records ``ids`` with each of ``indexers``: one :class:`ChunkResult` per
    indexer (in that order), each record's rows typed to the indexer's table schema.

    Each record is listed once for all the indexers. Nothing is written and no table is
    read: a caller merges the results into tables (``KymDataset``, a distributed
    rebuild). One bad record never stops the others (its outcome says why).
    ``listed`` gives records' folders as listed already (not listed again).

    Raises:
        InvalidNameError: an id is not a valid record id.
    """
    reads = _read_records(store, [(ix, ids) for ix in indexers], listed)
    return [
        ChunkResult(ix.name, ix.table_name, tuple(_typed(ix, read)))
        for ix, read in zip(indexers, reads, strict=True)
    ]


def extract_jobs(
    store: ZarrDataset,
    jobs: Sequence[tuple[DatasetIndexer, Sequence[str]]],
    *,
    chunk: int,
    listed: Mapping[str, Listing] | None = None,
) -> list[list[Extracted]]:
    """Read each job's records ``ids`` with its indexer (a daemon's batch: each indexer
    with its own records): each job's outcomes and typed rows, in its ``ids`` order.

    A record several jobs read is listed once for all of them and a file they share is
    parsed once (one snapshot :class:`~kymwatch.store.ZarrImageRecord` per record, as
    :func:`extract_chunk`); each indexer's outcome for a record is the one reading it
    alone gives. Records are read ``chunk`` at a time (the union of the jobs' ids, in
    the order they first appear), each chunk's rows typed at once per indexer.
    ``listed`` gives records' folders as a scan just listed them (the daemon's
    fingerprint scan, taken before the reads): they are not listed again.

    Raises:
        InvalidNameError: an id is not a valid record id.
    """
    position = {i: k for k, i in enumerate(dict.fromkeys(i for _, ids in jobs for i in ids))}
    n_chunks = -(-len(position) // chunk)
    parts: list[list[list[str]]] = [[[] for _ in range(n_chunks)] for _ in jobs]
    for (_, ids), by_chunk in zip(jobs, parts, strict=True):
        for i in dict.fromkeys(ids):
            by_chunk[position[i] // chunk].append(i)
    done: list[dict[str, Extracted]] = [{} for _ in jobs]
    for n in range(n_chunks):
        subjobs = [(ix, by_chunk[n]) for (ix, _), by_chunk in zip(jobs, parts, strict=True)]
        reads = _read_records(store, subjobs, listed)
        for (ix, ids), read, out in zip(subjobs, reads, done, strict=True):
            out.update(zip(ids, _typed(ix, read), strict=True))
    return [[out[i] for i in ids] for (_, ids), out in zip(jobs, done, strict=True)]


def _read_records(
    store: ZarrDataset,
    jobs: Sequence[tuple[DatasetIndexer, Sequence[str]]],
    listed: Mapping[str, Listing] | None = None,
) -> list[list[RecordOutcome | RawRows]]:
    """Each job's reads of its ``ids`` (in that order), every record read through one
    snapshot for all the jobs that name it (in the order they first name it), primed
    with its folders' names where ``listed`` has them."""
    known: Mapping[str, Listing] = listed or {}
    reads: list[list[RecordOutcome | RawRows]] = [[] for _ in jobs]
    readers = [raw_reader(ix) for ix, _ in jobs]
    if all(ids is jobs[0][1] for _, ids in jobs):  # one list of records (a rebuild's chunk)
        each = [
            (ix, reader, out) for (ix, _), reader, out in zip(jobs, readers, reads, strict=True)
        ]
        for image_id in jobs[0][1] if jobs else ():
            rec = ZarrImageRecord(store, image_id, snapshot=True, listed=known.get(image_id))
            for ix, reader, out in each:
                out.append(_read(ix, rec, reader))
        return reads
    wanted: dict[str, list[int]] = {}
    for k, (_, ids) in enumerate(jobs):
        for image_id in ids:
            ks = wanted.setdefault(image_id, [])
            if not ks or ks[-1] != k:
                ks.append(k)
    got: list[dict[str, RecordOutcome | RawRows]] = [{} for _ in jobs]
    for image_id, ks in wanted.items():
        rec = ZarrImageRecord(store, image_id, snapshot=True, listed=known.get(image_id))
        for k in ks:
            got[k][image_id] = _read(jobs[k][0], rec, readers[k])
    for k, (_, ids) in enumerate(jobs):
        reads[k] = [got[k][i] for i in ids]
    return reads


def extract_batch(ix: DatasetIndexer, store: ZarrDataset, ids: Sequence[str]) -> list[Extracted]:
    """Read ``ids`` with ``ix``: each record's outcome and, for INDEXED, its typed rows."""
    [chunk] = extract_chunk(store, [ix], ids)
    return list(chunk.extracted)


def _typed(ix: DatasetIndexer, read: Sequence[RecordOutcome | RawRows]) -> list[Extracted]:
    """The outcomes, with the raw rows of the chunk typed at once."""
    raws = [r for r in read if isinstance(r, RawRows)]
    conformed = _conform(ix, raws) if raws else []
    recut = iter(one_table([t for t in conformed if isinstance(t, RowSpan)]))
    typed = iter([t if isinstance(t, str) else next(recut) for t in conformed])
    out: list[Extracted] = []
    for r in read:
        if isinstance(r, RecordOutcome):
            out.append((r, None))
            continue
        rows = next(typed)
        if isinstance(rows, str):
            outcome = RecordOutcome(r.image_id, ix.name, OutcomeStatus.INVALID, error=rows)
            out.append((outcome, None))
        else:
            outcome = RecordOutcome(r.image_id, ix.name, OutcomeStatus.INDEXED, rows.count)
            out.append((outcome, rows))
    return out


class HeldResults(Sequence[Extracted]):
    """One indexer's results over many chunks, held compactly while a rebuild reads the
    rest: each chunk's outcomes and the one table its rows are in; the ``(outcome,
    rows)`` pairs (:data:`Extracted`) are made when iterated. A chunk whose rows are in
    several tables (raw schemas that give a column two types) keeps its pairs."""

    def __init__(self) -> None:
        self._chunks: list[tuple[tuple[RecordOutcome, ...], pa.Table | None, tuple[Extracted, ...]]]
        self._chunks = []
        self._len = 0

    def add(self, chunk: ChunkResult) -> None:
        """Hold ``chunk``'s results after those already held."""
        table = _one_batch(chunk.extracted)
        if table is None:
            self._chunks.append((chunk.outcomes, None, chunk.extracted))
        else:
            self._chunks.append((tuple(o for o, _ in chunk.extracted), table, ()))
        self._len += len(chunk.extracted)

    def __len__(self) -> int:
        return self._len

    def outcomes(self) -> Iterator[RecordOutcome]:
        """Each record's outcome, in order (no rows made)."""
        for outcomes, _, _ in self._chunks:
            yield from outcomes

    def rows(self) -> int:
        """The rows held (every record's rows)."""
        return sum(
            table.num_rows if table is not None else sum(s.count for _, s in pairs if s is not None)
            for _, table, pairs in self._chunks
        )

    def whole_tables(self) -> list[tuple[tuple[RecordOutcome, ...], pa.Table]] | None:
        """Each chunk's outcomes and the one table holding its indexed records' rows in
        their order (no other rows; a chunk without rows is left out); None if a chunk's
        rows are not in one table or a record keeps its old rows (unreadable or
        invalid): then the pairs are needed. A rebuild's merge takes each chunk's table
        whole (:func:`~kymwatch.index.tablework.merge_rebuild`: no per-record slices)."""
        out: list[tuple[tuple[RecordOutcome, ...], pa.Table]] = []
        for outcomes, table, pairs in self._chunks:
            if any(o.keeps_old_rows for o in outcomes):
                return None
            if table is not None:
                out.append((outcomes, table))
            elif any(span is not None for _, span in pairs):  # rows (or columns) apart
                return None
        return out

    def __iter__(self) -> Iterator[Extracted]:
        for outcomes, table, pairs in self._chunks:
            if table is None:
                yield from pairs
                continue
            pos = 0
            for o in outcomes:
                if o.status is OutcomeStatus.INDEXED:
                    yield o, RowSpan(table, pos, o.rows)
                    pos += o.rows
                else:
                    yield o, None

    @overload
    def __getitem__(self, index: int) -> Extracted: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Extracted]: ...
    def __getitem__(self, index: int | slice) -> Extracted | Sequence[Extracted]:
        return list(self)[index]


def _one_batch(extracted: Sequence[Extracted]) -> pa.Table | None:
    """The table all rows of ``extracted`` lie in, one record after the other from its
    first row to its last (as :func:`one_table` leaves a chunk), else None."""
    table: pa.Table | None = None
    pos = 0
    for o, span in extracted:
        if span is None:
            if o.status is OutcomeStatus.INDEXED:
                return None
            continue
        if o.status is not OutcomeStatus.INDEXED or span.count != o.rows:
            return None
        if not span.count:
            continue
        if table is None:
            table = span.batch
        if span.batch is not table or span.start != pos:
            return None
        pos += span.count
    return table if table is not None and pos == table.num_rows else None
