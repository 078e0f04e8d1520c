"""Thrift's compact protocol, generically: a struct as field id → (type, value).

Parquet's footer (``FileMetaData``) is a Thrift struct in the compact protocol. This
module reads and writes any such struct without a schema: each field keeps its id, its
wire type and its value, in the order read, so a struct decoded and encoded again gives
the same bytes, fields this code knows nothing of included (a newer writer's additions
round-trip unchanged). The wire format is Apache Thrift's ``TCompactProtocol``: fields
as a delta of their id (or the id in full) and a type nibble, integers as zigzag
varints, binary as a varint length and the bytes, lists as a size and element type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "BINARY",
    "BOOL",
    "BYTE",
    "DOUBLE",
    "I16",
    "I32",
    "I64",
    "LIST",
    "MAP",
    "SET",
    "STRUCT",
    "Hole",
    "Raw",
    "TList",
    "TMap",
    "TStruct",
    "ThriftError",
    "Value",
    "decode_struct",
    "decode_struct_fields",
    "encode_struct",
    "encode_template",
    "fill_template",
]

# The compact protocol's type ids (a struct field of type bool carries its value in
# the type: 1 true, 2 false; BOOL stands for both here).
BOOL = 1
_FALSE = 2
BYTE = 3
I16 = 4
I32 = 5
I64 = 6
DOUBLE = 7
BINARY = 8
LIST = 9
SET = 10
MAP = 11
STRUCT = 12

_MAX_DEPTH = 64


class ThriftError(ValueError):
    """Bytes that are not a well-formed compact-protocol struct."""


Value: TypeAlias = "bool | int | float | bytes | TList | TMap | TStruct | Raw | Hole"


@dataclass(frozen=True, slots=True)
class Raw:
    """A value already encoded, written as it is."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Hole:
    """An integer left out of an encoding, to be filled in later
    (:func:`encode_template`); ``value`` is the caller's, never written."""

    value: int
    kind: str = ""


@dataclass(slots=True)
class TList:
    """A list (or set) of values of one element type (booleans: their raw byte)."""

    etype: int
    items: list[Value]
    kind: int = LIST


@dataclass(slots=True)
class TMap:
    """A map, as its key and value types and its pairs in wire order."""

    ktype: int
    vtype: int
    items: list[tuple[Value, Value]]


@dataclass(slots=True)
class TStruct:
    """A struct: field id → (wire type, value), in wire order."""

    fields: dict[int, tuple[int, Value]] = field(default_factory=dict)

    def get(self, fid: int) -> Value | None:
        """The value of field ``fid`` (None if absent)."""
        entry = self.fields.get(fid)
        return None if entry is None else entry[1]

    def get_int(self, fid: int) -> int | None:
        """The value of an integer field (None if absent); ThriftError if not an integer."""
        v = self.get(fid)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ThriftError(f"field {fid} is not an integer")
        return v

    def get_struct(self, fid: int) -> TStruct | None:
        """The value of a struct field (None if absent); ThriftError if not a struct."""
        v = self.get(fid)
        if v is None:
            return None
        if not isinstance(v, TStruct):
            raise ThriftError(f"field {fid} is not a struct")
        return v

    def get_list(self, fid: int) -> list[Value] | None:
        """The items of a list field (None if absent); ThriftError if not a list."""
        v = self.get(fid)
        if v is None:
            return None
        if not isinstance(v, TList):
            raise ThriftError(f"field {fid} is not a list")
        return v.items

    def set_value(self, fid: int, value: Value) -> None:
        """Replace the value of field ``fid``, which must be present (its type kept)."""
        ftype, _ = self.fields[fid]
        self.fields[fid] = (ftype, value)


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ThriftError("varint too long")


def _zigzag_at(data: bytes, pos: int) -> tuple[int, int]:
    n, pos = _varint_at(data, pos)
    return (n >> 1) ^ -(n & 1), pos


def _take(data: bytes, pos: int, n: int) -> tuple[bytes, int]:
    end = pos + n
    if n < 0 or end > len(data):
        raise ThriftError("truncated struct")
    return data[pos:end], end


def _read_value(data: bytes, pos: int, t: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise ThriftError("values nested too deep")
    if t in (I16, I32, I64):
        return _zigzag_at(data, pos)
    if t == BINARY:
        n, pos = _varint_at(data, pos)
        return _take(data, pos, n)
    if t == STRUCT:
        return _read_struct(data, pos, depth + 1)
    if t in (LIST, SET):
        head = data[pos]
        pos += 1
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint_at(data, pos)
        if etype in (BOOL, _FALSE):  # one raw byte each
            raw, pos = _take(data, pos, size)
            return TList(etype, list(raw), t), pos
        items: list[Value] = []
        for _ in range(size):
            item, pos = _read_value(data, pos, etype, depth + 1)
            items.append(item)
        return TList(etype, items, t), pos
    if t == BYTE:
        b = data[pos]
        return (b - 256 if b > 127 else b), pos + 1
    if t == DOUBLE:
        raw, pos = _take(data, pos, 8)
        v: float = struct.unpack("<d", raw)[0]
        return v, pos
    if t == MAP:
        size, pos = _varint_at(data, pos)
        if size == 0:
            return TMap(0, 0, []), pos
        kv = data[pos]
        pos += 1
        kt, vt = kv >> 4, kv & 0x0F
        pairs: list[tuple[Value, Value]] = []
        for _ in range(size):
            k, pos = _read_value(data, pos, kt, depth + 1)
            v2, pos = _read_value(data, pos, vt, depth + 1)
            pairs.append((k, v2))
        return TMap(kt, vt, pairs), pos
    raise ThriftError(f"unknown compact type {t}")


def _read_struct(
    data: bytes, pos: int, depth: int, spans: list[tuple[int, int, int]] | None = None
) -> tuple[TStruct, int]:
    """The struct at ``pos`` and the position after it; with ``spans``, each field's
    (id, first byte, end) is appended to it."""
    if depth > _MAX_DEPTH:
        raise ThriftError("structs nested too deep")
    fields: dict[int, tuple[int, Value]] = {}
    last = 0
    while True:
        start = pos
        head = data[pos]
        pos += 1
        if head == 0:
            return TStruct(fields), pos
        ftype, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            fid, pos = _zigzag_at(data, pos)
        last = fid
        if ftype in (BOOL, _FALSE):
            fields[fid] = (BOOL, ftype == BOOL)
        else:
            value, pos = _read_value(data, pos, ftype, depth)
            fields[fid] = (ftype, value)
        if spans is not None:
            spans.append((fid, start, pos))


def decode_struct(data: bytes | memoryview) -> tuple[TStruct, int]:
    """The struct at the start of ``data`` and the bytes it took; ThriftError if malformed."""
    s, pos, _ = decode_struct_fields(data)
    return s, pos


def decode_struct_fields(
    data: bytes | memoryview,
) -> tuple[TStruct, int, list[tuple[int, int, int]]]:
    """As :func:`decode_struct`, with each top-level field's (id, first byte, end): a
    field's bytes (its header encoded against the field before it)."""
    raw = bytes(data)
    spans: list[tuple[int, int, int]] = []
    try:
        s, pos = _read_struct(raw, 0, 0, spans)
    except IndexError:
        raise ThriftError("truncated struct") from None
    return s, pos, spans


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)


class _Out(bytearray):
    """Encoded bytes, and where the holes left in them are."""

    holes: list[tuple[int, Hole]]


def _write_value(out: bytearray, t: int, v: Value) -> None:
    if isinstance(v, Raw):
        out += v.data
    elif isinstance(v, Hole):
        assert isinstance(out, _Out) and t in (I16, I32, I64)
        out.holes.append((len(out), v))
    elif t == BYTE:
        assert isinstance(v, int)
        out.append(v & 0xFF)
    elif t in (I16, I32, I64):
        assert isinstance(v, int) and not isinstance(v, bool)
        _zigzag(out, v)
    elif t == DOUBLE:
        assert isinstance(v, float)
        out += struct.pack("<d", v)
    elif t == BINARY:
        assert isinstance(v, bytes)
        _varint(out, len(v))
        out += v
    elif t in (LIST, SET):
        assert isinstance(v, TList)
        n = len(v.items)
        if n < 15:
            out.append((n << 4) | v.etype)
        else:
            out.append(0xF0 | v.etype)
            _varint(out, n)
        if v.etype in (BOOL, _FALSE):
            for b in v.items:
                assert isinstance(b, int)
                out.append(b & 0xFF)
        else:
            for item in v.items:
                _write_value(out, v.etype, item)
    elif t == MAP:
        assert isinstance(v, TMap)
        _varint(out, len(v.items))
        if v.items:
            out.append((v.ktype << 4) | v.vtype)
            for k, val in v.items:
                _write_value(out, v.ktype, k)
                _write_value(out, v.vtype, val)
    elif t == STRUCT:
        assert isinstance(v, TStruct)
        _write_struct(out, v)
    else:
        raise ThriftError(f"unknown compact type {t}")


def _write_struct(out: bytearray, s: TStruct) -> None:
    last = 0
    for fid, (ftype, value) in s.fields.items():
        wire = (BOOL if value else _FALSE) if ftype == BOOL else ftype
        if last < fid <= last + 15:
            out.append(((fid - last) << 4) | wire)
        else:
            out.append(wire)
            _zigzag(out, fid)
        last = fid
        if ftype != BOOL:
            _write_value(out, ftype, value)
    out.append(0)


def encode_struct(s: TStruct) -> bytes:
    """The compact-protocol bytes of ``s`` (a :class:`Raw` value is written as it is)."""
    out = bytearray()
    _write_struct(out, s)
    return bytes(out)


def encode_template(s: TStruct) -> tuple[list[bytes], list[Hole]]:
    """The bytes of ``s`` cut at each :class:`Hole` (an integer field's value): one more
    piece than holes; :func:`fill_template` joins them around the holes' values. Filling
    a struct's few changing integers this way costs a fraction of encoding it again."""
    out = _Out()
    out.holes = []
    _write_struct(out, s)
    pieces, at = [], 0
    for pos, _ in out.holes:
        pieces.append(bytes(out[at:pos]))
        at = pos
    pieces.append(bytes(out[at:]))
    return pieces, [h for _, h in out.holes]


def fill_template(pieces: list[bytes], values: list[int]) -> bytes:
    """The bytes of a template (:func:`encode_template`) with its holes' values."""
    out = bytearray(pieces[0])
    for v, piece in zip(values, pieces[1:], strict=True):
        _zigzag(out, v)
        out += piece
    return bytes(out)
