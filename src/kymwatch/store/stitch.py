"""Parquet files stitched from row groups: new groups encoded, old ones copied as bytes.

A Parquet file is ``PAR1``, its row groups (each column chunk a byte range of pages),
the footer (a Thrift compact ``FileMetaData``, :mod:`kymwatch.store.thrift`), the
footer's length (4 bytes, little-endian) and ``PAR1``. Pages hold no absolute offsets:
only the footer does. So a file can be made of the row groups of other files (a group
just encoded as a standalone file in memory, or a group of the file written last) by
concatenating their byte ranges and writing a footer whose offsets are shifted by how
far each group moved. Field ids are those of parquet-format's ``parquet.thrift``.

What cannot be shifted safely is refused (:class:`StitchRefusedError`; the caller encodes
the whole table instead): encrypted files, page indexes (their offsets and contents
point elsewhere in the file), column data in another file, an offset outside its row
group's byte range, and sources whose file metadata other than the row groups and the
row count differ (schema, key-value metadata such as the Arrow schema and pandas
metadata, column orders, writer).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from kymwatch.store.thrift import (
    STRUCT,
    Hole,
    Raw,
    ThriftError,
    TList,
    TStruct,
    Value,
    decode_struct,
    decode_struct_fields,
    encode_struct,
    encode_template,
    fill_template,
)

__all__ = ["MAGIC", "Piece", "Source", "StitchRefusedError", "stitch", "write_range"]

MAGIC = b"PAR1"
_TAIL = 8  # footer length + magic

# FileMetaData
_FM_NUM_ROWS, _FM_ROW_GROUPS = 3, 4
_FM_ENCRYPTION, _FM_SIGNING_KEY = 8, 9
# RowGroup
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
# ColumnChunk
_CC_FILE_PATH, _CC_FILE_OFFSET, _CC_META = 1, 2, 3
_CC_REFUSED = {
    4: "offset index",
    5: "offset index",
    6: "column index",
    7: "column index",
    8: "column encryption",
    9: "column encryption",
}
# ColumnMetaData
_CM_TOTAL_COMPRESSED = 7
_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICT_PAGE = 9, 10, 11
_CM_BLOOM, _CM_BLOOM_LENGTH = 14, 15


class StitchRefusedError(ValueError):
    """A file or row group whose bytes cannot be copied with shifted offsets."""


@dataclass(frozen=True, slots=True)
class Source:
    """A Parquet file whose row groups may be copied: its bytes in memory, or an open
    file descriptor (read with ``pread``, its position untouched).

    Attributes:
        data: The whole file, or a file descriptor (empty: a file's footer kept without
            its data, as :func:`stitch` returns it; ``dataclasses.replace`` it with
            the file's descriptor to copy from it).
        meta: Its footer.
        common: The footer's fields but the row groups and row count, as written (the
            pieces of one stitched file must agree on it).
        spans: Each row group's byte range (start, length).
        rows: Each row group's rows.
        templates: Each row group's metadata as a template (:meth:`template`), made
            once and shared with the copies of this source.
    """

    data: bytes | int
    meta: TStruct
    common: bytes
    spans: tuple[tuple[int, int], ...]
    rows: tuple[int, ...]
    templates: dict[int, Template] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, data: bytes | int) -> Source:
        """Parse a file's footer (StitchRefusedError if it is not a plain Parquet file whose
        groups can be moved)."""
        size = len(data) if isinstance(data, bytes) else os.fstat(data).st_size
        if size < len(MAGIC) + _TAIL:
            raise StitchRefusedError("too short for a parquet file")
        tail = _read(data, size - _TAIL, _TAIL)
        if tail[4:] != MAGIC or _read(data, 0, 4) != MAGIC:
            raise StitchRefusedError("not a plain parquet file (magic)")
        (n,) = struct.unpack("<I", tail[:4])
        footer_at = size - _TAIL - n
        if footer_at < len(MAGIC):
            raise StitchRefusedError("footer length out of range")
        footer = _read(data, footer_at, n)
        try:
            meta, used, fields = decode_struct_fields(footer)
        except ThriftError as e:
            raise StitchRefusedError(f"footer unreadable: {e}") from e
        if used != n:
            raise StitchRefusedError("footer length does not match")
        if meta.get(_FM_ENCRYPTION) is not None or meta.get(_FM_SIGNING_KEY) is not None:
            raise StitchRefusedError("encrypted file")
        try:
            groups = _row_groups(meta)
            spans = tuple(_span(rg, footer_at) for rg in groups)
            rows = tuple(rg.get_int(_RG_NUM_ROWS) for rg in groups)
        except ThriftError as e:
            raise StitchRefusedError(f"footer malformed: {e}") from e
        if any(n is None or n < 0 for n in rows):
            raise StitchRefusedError("row group without a row count")
        # the other fields as written (each after its id): equal bytes, equal values
        common = b"".join(
            b"%d:" % fid + footer[a:b] for fid, a, b in fields if fid not in _PER_FILE
        )
        return cls(data, meta, common, spans, tuple(n or 0 for n in rows))

    @property
    def row_groups(self) -> list[TStruct]:
        """The row groups' metadata, in file order."""
        return _row_groups(self.meta)

    def template(self, k: int) -> Template:
        """Row group ``k``'s metadata encoded with holes for its offsets (relative to its
        start) and ordinal, made once."""
        t = self.templates.get(k)
        if t is None:
            t = self.templates[k] = _template(self.row_groups[k], self.spans[k][0])
        return t


Template: TypeAlias = tuple[list[bytes], list[Hole]]
"""A row group's encoded metadata around its holes (see :func:`encode_template`)."""


_PER_FILE = (_FM_NUM_ROWS, _FM_ROW_GROUPS)


def _row_groups(meta: TStruct) -> list[TStruct]:
    """The row groups of a footer (those :func:`stitch` kept encoded: decoded)."""
    items = meta.get_list(_FM_ROW_GROUPS)
    if items is None:
        raise ThriftError("no row groups")
    decoded = [decode_struct(g.data)[0] if isinstance(g, Raw) else g for g in items]
    groups = [g for g in decoded if isinstance(g, TStruct)]
    if len(groups) != len(items):
        raise ThriftError("row groups are not structs")
    return groups


def _read(data: bytes | int, offset: int, n: int) -> bytes:
    if isinstance(data, bytes):
        return data[offset : offset + n]
    out = os.pread(data, n, offset)
    if len(out) != n:
        raise StitchRefusedError("file shorter than its footer says")
    return out


def _columns(rg: TStruct) -> list[tuple[TStruct, TStruct]]:
    """(ColumnChunk, ColumnMetaData) of each column of a row group."""
    out = []
    for cc in rg.get_list(_RG_COLUMNS) or []:
        if not isinstance(cc, TStruct):
            raise ThriftError("column chunk is not a struct")
        meta = cc.get_struct(_CC_META)
        if meta is None:
            raise StitchRefusedError("column chunk without metadata")
        out.append((cc, meta))
    return out


def _span(rg: TStruct, footer_at: int) -> tuple[int, int]:
    """The byte range of a row group, checked to hold every offset it refers to."""
    chunks = _columns(rg)
    if not chunks:
        raise StitchRefusedError("row group without columns")
    starts, ends = [], []
    for cc, cm in chunks:
        if cc.get(_CC_FILE_PATH) is not None:
            raise StitchRefusedError("column data in another file")
        for fid, what in _CC_REFUSED.items():
            if cc.get(fid) is not None:
                raise StitchRefusedError(f"{what} present")
        data_at, dict_at = cm.get_int(_CM_DATA_PAGE), cm.get_int(_CM_DICT_PAGE)
        size = cm.get_int(_CM_TOTAL_COMPRESSED)
        if data_at is None or size is None:
            raise StitchRefusedError("column chunk without offset or size")
        start = min(data_at, dict_at) if dict_at else data_at
        starts.append(start)
        ends.append(start + size)
    lo, hi = min(starts), max(ends)
    if lo < len(MAGIC) or hi > footer_at:
        raise StitchRefusedError("row group outside the file's data")
    for at in _offsets(rg):
        if not lo <= at <= hi:
            raise StitchRefusedError("offset outside its row group")
    for _, cm in chunks:
        bloom = cm.get_int(_CM_BLOOM)
        if bloom is not None:
            length = cm.get_int(_CM_BLOOM_LENGTH)
            if length is None or bloom + length > hi:
                raise StitchRefusedError("bloom filter outside its row group")
    return lo, hi - lo


def _offsets(rg: TStruct) -> list[int]:
    """Every absolute offset a row group's metadata holds."""
    out = []
    at = rg.get_int(_RG_FILE_OFFSET)
    if at is not None:
        out.append(at)
    for cc, cm in _columns(rg):
        at = cc.get_int(_CC_FILE_OFFSET)
        if at:
            out.append(at)
        for fid in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICT_PAGE, _CM_BLOOM):
            at = cm.get_int(fid)
            if at:
                out.append(at)
    return out


def _moved(rg: TStruct, move: Callable[[int], Value], ordinal: Value) -> TStruct:
    """A copy of a row group's metadata with each offset ``at`` replaced by
    ``move(at)`` and its ordinal (if any) by ``ordinal`` (only the structs on the way to
    an offset are copied: the rest is shared, never changed)."""
    rg = TStruct(dict(rg.fields))
    at = rg.get_int(_RG_FILE_OFFSET)
    if at is not None:
        rg.set_value(_RG_FILE_OFFSET, move(at))
    if rg.get(_RG_ORDINAL) is not None:
        rg.set_value(_RG_ORDINAL, ordinal)
    columns: list[Value] = []
    for old_cc, old_cm in _columns(rg):
        cc, cm = TStruct(dict(old_cc.fields)), TStruct(dict(old_cm.fields))
        at = cc.get_int(_CC_FILE_OFFSET)
        if at:
            cc.set_value(_CC_FILE_OFFSET, move(at))
        for fid in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICT_PAGE, _CM_BLOOM):
            at = cm.get_int(fid)
            if at:  # a zero dictionary offset: written by some writers for "none"
                cm.set_value(fid, move(at))
        cc.set_value(_CC_META, cm)
        columns.append(cc)
    rg.set_value(_RG_COLUMNS, TList(STRUCT, columns))
    return rg


def _template(rg: TStruct, start: int) -> Template:
    return encode_template(_moved(rg, lambda at: Hole(at - start), Hole(0, "ordinal")))


@dataclass(frozen=True, slots=True)
class Piece:
    """Row group ``index`` of ``source``, to be placed in a stitched file."""

    source: Source
    index: int


def stitch(pieces: Sequence[Piece], fd: int) -> Source:
    """Write a Parquet file of ``pieces``' row groups, in order, to ``fd`` (at its
    position, which must be the start of an empty file); returns the new file's footer
    and its groups' byte ranges (as a source without data: see ``Source.data``).
    StitchRefusedError (nothing written) if the pieces' files disagree on anything but
    their row groups, or if there are none."""
    if not pieces:
        raise StitchRefusedError("no row groups")
    first = pieces[0].source
    if any(p.source.common != first.common for p in pieces):
        raise StitchRefusedError("the pieces' schemas or metadata differ")
    groups: list[Value] = []
    templates: dict[int, Template] = {}
    spans: list[tuple[int, int]] = []
    rows = 0
    at = len(MAGIC)
    os.write(fd, MAGIC)
    for k, p in enumerate(pieces):
        start, length = p.source.spans[p.index]
        write_range(p.source.data, start, length, fd)
        templates[k] = pieces_t, holes = p.source.template(p.index)
        values = [k if h.kind == "ordinal" else h.value + at for h in holes]
        groups.append(Raw(fill_template(pieces_t, values)))
        rows += p.source.rows[p.index]
        spans.append((at, length))
        at += length
    meta = TStruct(dict(first.meta.fields))
    meta.set_value(_FM_NUM_ROWS, rows)
    meta.set_value(_FM_ROW_GROUPS, TList(STRUCT, groups))
    footer = encode_struct(meta)
    _write_all(fd, footer + struct.pack("<I", len(footer)) + MAGIC)
    counts = tuple(p.source.rows[p.index] for p in pieces)
    return Source(b"", meta, first.common, tuple(spans), counts, templates)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def write_range(data: bytes | int, start: int, length: int, fd: int) -> None:
    """Append ``length`` bytes of ``data`` (bytes, or a file descriptor) from ``start``
    to ``fd`` at its position: between files with ``copy_file_range`` (no copy through
    user space), else ``pread``/``write``. StitchRefusedError if the source is shorter."""
    if isinstance(data, bytes):
        _write_all(fd, memoryview(data)[start : start + length])
        return
    done = 0
    copy_range = getattr(os, "copy_file_range", None)
    while done < length and copy_range is not None:
        try:
            n = copy_range(data, fd, length - done, start + done)
        except OSError as e:
            if e.errno not in _NO_COPY_RANGE:
                raise
            break
        if n == 0:
            raise StitchRefusedError("source file ended early")
        done += n
    while done < length:
        chunk = os.pread(data, min(length - done, 1 << 22), start + done)
        if not chunk:
            raise StitchRefusedError("source file ended early")
        _write_all(fd, chunk)
        done += len(chunk)
