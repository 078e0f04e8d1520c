"""Reading artifact files: the bytes of a regular file, never through a symbolic link,
and their parsing as JSON or as an Arrow table (Parquet, gzipped CSV).

Every failure is an :class:`~kymwatch.errors.ArtifactUnreadableError` (or
:class:`~kymwatch.errors.ArtifactInvalidError` for JSON nested too deeply) naming the
record, the artifact and the file.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kymwatch.errors import ArtifactInvalidError, ArtifactUnreadableError
from kymwatch.store.layout import ArtifactFormat

try:
    from pyarrow._parquet import ParquetReader as _ParquetReader
except ImportError:  # pragma: no cover - a pyarrow without it
    _ParquetReader = None

__all__ = ["parse_json_bytes", "parse_table_bytes", "read_if_present", "read_regular_file"]

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _read_small_parquet(raw: bytes) -> pa.Table:
    """Parse a small parquet file held in memory.

    ``pq.read_table`` builds a dataset per file and ``pq.ParquetFile`` adds Python-side
    set-up (nested paths) that costs more than reading ten rows: the reader underneath
    ``ParquetFile`` is used when this pyarrow has it. No pre-buffering or threads: the
    bytes are in memory and few.
    """
    if _ParquetReader is not None:
        try:
            reader = _ParquetReader()
            reader.open(pa.BufferReader(raw), pre_buffer=False)
        except TypeError:  # another pyarrow's signature: the public way below
            pass
        else:
            table: pa.Table = reader.read_all(use_threads=False)
            return table
    return pq.ParquetFile(pa.BufferReader(raw), pre_buffer=False).read(use_threads=False)


def _read_fd(fd: int, size: int) -> bytes:
    """Everything left in regular file ``fd`` (no Python file object): one read of one
    byte more than the size ``fstat`` gave (a short read of a regular file is its end),
    then, if the file grew meanwhile, reads until its end."""
    first = os.read(fd, size + 1)
    if len(first) <= size:
        return first
    parts = [first]
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def read_regular_file(image_id: str, name: str, path: str | Path) -> bytes:
    """The whole file at ``path`` (artifact ``name`` of record ``image_id``).

    Opened with O_NOFOLLOW | O_NONBLOCK and checked with fstat, so neither a
    symlink swapped in nor a FIFO can redirect or block the read.

    Raises:
        ArtifactUnreadableError: a symbolic link, not a regular file, or unreadable.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        raise _open_failed(image_id, name, path, e) from e
    return _read_opened(image_id, name, path, fd)


# What an open says when nothing is at the path (a plain look-up's lstat says "absent").
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})


def read_if_present(image_id: str, name: str, path: str | Path) -> bytes | None:
    """:func:`read_regular_file`, or None when nothing is at ``path``: one ``open``
    both finds and opens the file (no ``lstat`` first). Anything that is there but
    cannot be read (a symbolic link, a FIFO, a folder, no permission) raises.

    Raises:
        ArtifactUnreadableError: something is at ``path`` but it cannot be read.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        if e.errno in _ABSENT:
            return None
        raise _open_failed(image_id, name, path, e) from e
    return _read_opened(image_id, name, path, fd)


def _open_failed(image_id: str, name: str, path: str | Path, e: OSError) -> ArtifactUnreadableError:
    reason = "symbolic links are not followed" if os.path.islink(path) else str(e)
    return ArtifactUnreadableError(image_id, name, str(path), reason)


def _read_opened(image_id: str, name: str, path: str | Path, fd: int) -> bytes:
    """The whole regular file open as ``fd`` (closed here)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactUnreadableError(image_id, name, str(path), "not a regular file")
        return _read_fd(fd, st.st_size)
    except OSError as e:
        raise ArtifactUnreadableError(image_id, name, str(path), str(e)) from e
    finally:
        os.close(fd)


def parse_json_bytes(
    image_id: str, name: str, found: tuple[str | Path, ArtifactFormat], raw: bytes
) -> Any:
    """Parse ``raw``, the bytes of JSON artifact ``name`` read from ``found``.

    Raises:
        ArtifactUnreadableError: not JSON (or not gzip for ``.json.gz``).
        ArtifactInvalidError: JSON nested too deeply to parse.
    """
    path, fmt = found
    try:
        text = gzip.decompress(raw) if fmt is ArtifactFormat.JSON_GZ else raw
        return json.loads(text)
    except (OSError, EOFError, ValueError) as e:
        raise ArtifactUnreadableError(image_id, name, str(path), str(e)) from e
    except RecursionError as e:  # complete, but nested too deep to parse: not transient
        reason = f"JSON nested too deeply to parse ({e})"
        raise ArtifactInvalidError(image_id, name, str(path), reason) from e


def parse_table_bytes(
    image_id: str, name: str, found: tuple[str | Path, ArtifactFormat], raw: bytes
) -> pa.Table:
    """Parse ``raw``, the bytes of tabular artifact ``name`` (Parquet or gzipped CSV)
    read from ``found``, as Arrow.

    Raises:
        ArtifactUnreadableError: not a readable file of its format.
    """
    path, fmt = found
    try:
        if fmt is ArtifactFormat.PARQUET:
            return _read_small_parquet(raw)
        table: pa.Table = pa_csv.read_csv(pa.BufferReader(gzip.decompress(raw)))
    except (pa.ArrowException, OSError, EOFError, ValueError) as e:
        raise ArtifactUnreadableError(image_id, name, str(path), str(e)) from e
    return table
