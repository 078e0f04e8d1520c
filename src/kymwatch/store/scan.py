"""Fingerprints of artifact files, and scanning a dataset for them.

A fingerprint is (size, mtime_ns, inode): an atomic replace changes the inode even
when size and a coarse mtime do not. Scans never follow symbolic links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kymwatch.store.layout import (
    ANALYSIS_DIR,
    IMAGES_DIR,
    is_temporary_name,
    is_valid_image_id,
    split_artifact_file,
)

__all__ = ["Fingerprint", "RecordFiles", "scan_dataset", "scan_record"]

RecordFiles = dict[str, "Fingerprint"]
"""Artifact file name (relative to ``analysis/``) → fingerprint."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of one version of a file."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        """The fingerprint of a stat result."""
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def _scan_analysis(folder: str, prefix: str, out: RecordFiles, depth: int) -> None:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        name = entry.name
        if is_temporary_name(name):
            continue
        rel = f"{prefix}{name}"
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth < 8:
                    _scan_analysis(entry.path, f"{rel}/", out, depth + 1)
            elif split_artifact_file(rel) is not None:
                out[rel] = Fingerprint.of(entry.stat(follow_symlinks=False))
        except FileNotFoundError:  # removed while scanning
            continue


def scan_record(record_path: Path) -> RecordFiles:
    """Fingerprints of every artifact file of one record (empty if it has none)."""
    out: RecordFiles = {}
    _scan_analysis(os.path.join(record_path, ANALYSIS_DIR), "", out, 0)
    return out


def scan_dataset(root: Path, skipped: list[str] | None = None) -> dict[str, RecordFiles]:
    """Fingerprints of every artifact of every record: image_id → files.

    Args:
        root: The dataset folder.
        skipped: If given, receives the paths of entries under ``images/`` that are
            not records (names that cannot be image ids, symbolic links, files).
    """
    result: dict[str, RecordFiles] = {}
    try:
        entries = list(os.scandir(os.path.join(root, IMAGES_DIR)))
    except FileNotFoundError:
        return result
    for entry in entries:
        if is_valid_image_id(entry.name) and entry.is_dir(follow_symlinks=False):
            result[entry.name] = scan_record(Path(entry.path))
        elif skipped is not None and not entry.name.startswith("."):
            skipped.append(entry.path)
    return result
