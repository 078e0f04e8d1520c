"""Micro-benchmark: CPU time per file of ways to read a chunk's small parquet files.

Run as ``python bench/readparquet.py STORE [RECORDS]``: the parquet artifacts of the first
RECORDS (default 1,000) records of STORE are read by each way in turn, several rounds
interleaved (the machine is shared: compare within one run); prints the best round's CPU
microseconds per file of each way. Hand-run for issue 11 ("rebuild rec/s/core").
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs
import pyarrow.parquet as pq
from pyarrow._parquet import ParquetReader

Way = Callable[[list[str], list[bytes]], int]


def _read_bytes(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, os.fstat(fd).st_size + 1)
    finally:
        os.close(fd)


def current(paths: list[str], raws: list[bytes]) -> int:
    """The store's way before: os.read, then ParquetReader on the bytes."""
    n = 0
    for p in paths:
        r = ParquetReader()
        r.open(pa.BufferReader(_read_bytes(p)), pre_buffer=False)
        n += r.read_all(use_threads=False).num_rows
    return n


def parse_only(paths: list[str], raws: list[bytes]) -> int:
    """ParquetReader on bytes already in memory (the parse alone)."""
    n = 0
    for raw in raws:
        r = ParquetReader()
        r.open(pa.BufferReader(raw), pre_buffer=False)
        n += r.read_all(use_threads=False).num_rows
    return n


def footer_only(paths: list[str], raws: list[bytes]) -> int:
    """ParquetReader.open on bytes in memory, no read (the footer's share)."""
    n = 0
    for raw in raws:
        r = ParquetReader()
        r.open(pa.BufferReader(raw), pre_buffer=False)
        n += r.metadata.num_rows
    return n


def metadata_reuse(paths: list[str], raws: list[bytes]) -> int:
    """The footer parsed once per file name and reused (NOT correct in general: row
    group offsets and statistics are per file; shows what a shared footer would save)."""
    n = 0
    seen: dict[str, pq.FileMetaData] = {}
    for p, raw in zip(paths, raws, strict=True):
        key = p.rsplit("/analysis/", 1)[1]
        r = ParquetReader()
        md = seen.get(key)
        if md is not None and len(raw) == seen_size.get(key):
            r.open(pa.BufferReader(raw), pre_buffer=False, metadata=md)
        else:
            r.open(pa.BufferReader(raw), pre_buffer=False)
            seen[key] = r.metadata
            seen_size[key] = len(raw)
        n += r.read_all(use_threads=False).num_rows
    return n


seen_size: dict[str, int] = {}


def parquet_file_bytes(paths: list[str], raws: list[bytes]) -> int:
    """pq.ParquetFile on the bytes, pre_buffer off, no threads."""
    n = 0
    for p in paths:
        f = pq.ParquetFile(pa.BufferReader(_read_bytes(p)), pre_buffer=False)
        n += f.read(use_threads=False).num_rows
    return n


def parquet_file_path(paths: list[str], raws: list[bytes]) -> int:
    """pq.ParquetFile on the path (Arrow's own file), pre_buffer off, buffer_size 0."""
    n = 0
    for p in paths:
        f = pq.ParquetFile(p, pre_buffer=False, buffer_size=0)
        n += f.read(use_threads=False).num_rows
    return n


def parquet_file_mmap(paths: list[str], raws: list[bytes]) -> int:
    """pq.ParquetFile on the path, memory-mapped."""
    n = 0
    for p in paths:
        f = pq.ParquetFile(p, pre_buffer=False, memory_map=True)
        n += f.read(use_threads=False).num_rows
    return n


def reader_path(paths: list[str], raws: list[bytes]) -> int:
    """ParquetReader on the path (Arrow opens and reads the file)."""
    n = 0
    for p in paths:
        r = ParquetReader()
        r.open(p, pre_buffer=False)
        n += r.read_all(use_threads=False).num_rows
    return n


def read_table(paths: list[str], raws: list[bytes]) -> int:
    """pq.read_table on the bytes, no threads."""
    n = 0
    for p in paths:
        n += pq.read_table(pa.BufferReader(_read_bytes(p)), use_threads=False).num_rows
    return n


def dataset_scan(paths: list[str], raws: list[bytes]) -> int:
    """One pyarrow.dataset scan per artifact name (files of one name share a schema
    here; the dataset's schema is the first file's), fragment per batch."""
    n = 0
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(p.rsplit("/analysis/", 1)[1], []).append(p)
    for group in by_name.values():
        d = ds.dataset(group, format="parquet")
        for tagged in d.scanner(use_threads=False).scan_batches():
            n += tagged.record_batch.num_rows
            _ = tagged.fragment.path
    return n


def dataset_per_fragment(paths: list[str], raws: list[bytes]) -> int:
    """A parquet fragment per file, each read on its own (its own schema)."""
    n = 0
    fmt = ds.ParquetFileFormat()
    fs = pa.fs.LocalFileSystem()
    for p in paths:
        frag = fmt.make_fragment(p, filesystem=fs)
        n += frag.to_table(use_threads=False).num_rows
    return n


WAYS: dict[str, Way] = {
    "current (os.read + ParquetReader)": current,
    "parse only (bytes in memory)": parse_only,
    "footer only (open, no read)": footer_only,
    "footer reused per name (incorrect)": metadata_reuse,
    "ParquetFile(bytes)": parquet_file_bytes,
    "ParquetFile(path, buffer_size=0)": parquet_file_path,
    "ParquetFile(path, memory_map)": parquet_file_mmap,
    "ParquetReader(path)": reader_path,
    "read_table(bytes, no threads)": read_table,
    "dataset scan per name": dataset_scan,
    "dataset fragment per file": dataset_per_fragment,
}


def main() -> None:
    """Time every way over the same files; print microseconds of CPU per file."""
    store = sys.argv[1]
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    ids = sorted(os.listdir(os.path.join(store, "images")))[:records]
    paths = [
        f
        for i in ids
        for f in sorted(
            glob.glob(
                os.path.join(store, "images", i, "analysis", "**", "*.parquet"), recursive=True
            )
        )
    ]
    raws = [_read_bytes(p) for p in paths]
    best: dict[str, float] = {}
    expected = parse_only(paths, raws)
    for _ in range(int(os.environ.get("ROUNDS", "3"))):
        for name, way in WAYS.items():
            t = time.process_time()
            rows = way(paths, raws)
            dt = time.process_time() - t
            if name.startswith("footer only"):
                rows = expected if rows == expected else -1
            assert rows == expected, (name, rows, expected)
            best[name] = min(best.get(name, dt), dt)
    print(f"{len(paths)} files of {len(ids)} records, {expected} rows")
    base = best["current (os.read + ParquetReader)"]
    for name, dt in best.items():
        print(f"{name:40s} {dt / len(paths) * 1e6:8.1f} us/file  {dt / base:5.2f}x")


if __name__ == "__main__":
    main()
