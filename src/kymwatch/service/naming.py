"""Stable, unique service names for a dataset.

One dataset gets one service. Its name is a readable slug of the store's folder
name plus a short hash of the store's canonical absolute path, e.g.
``/data/lab/Exp 1.zarr`` → ``exp-1-zarr-3f2a9c1e``:

- systemd unit ``kymwatch-exp-1-zarr-3f2a9c1e.service``,
- launchd label ``org.kymflow.kymwatch.exp-1-zarr-3f2a9c1e``.

The path is canonicalised first (``~`` expanded, made absolute, symlinks
resolved), so every spelling of the same store gives the same name, and two
stores with the same folder name in different places get different names.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

__all__ = [
    "LAUNCHD_LABEL_PREFIX",
    "SYSTEMD_UNIT_PREFIX",
    "canonical_store",
    "launchd_label",
    "service_slug",
    "systemd_unit_name",
]

SYSTEMD_UNIT_PREFIX = "kymwatch-"
"""Every kymwatch unit name starts with this."""

LAUNCHD_LABEL_PREFIX = "org.kymflow.kymwatch."
"""Every kymwatch launchd label starts with this."""

_MAX_NAME_CHARS = 32
_HASH_CHARS = 8
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def canonical_store(store: str | os.PathLike[str]) -> Path:
    """The absolute, symlink-free form of a store path (it need not exist)."""
    return Path(store).expanduser().resolve()


def service_slug(store: str | os.PathLike[str]) -> str:
    """``<folder-name-slug>-<8 hex>`` for a store; stable across runs and hosts.

    Args:
        store: The dataset folder (canonicalised with :func:`canonical_store`).

    Returns:
        Lower-case ASCII letters, digits and dashes only.
    """
    path = canonical_store(store)
    ascii_name = unicodedata.normalize("NFKD", path.name).encode("ascii", "ignore").decode("ascii")
    name = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:_MAX_NAME_CHARS].strip("-")
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:_HASH_CHARS]
    return f"{name or 'store'}-{digest}"


def systemd_unit_name(store: str | os.PathLike[str]) -> str:
    """The systemd service name of a store, e.g. ``kymwatch-exp1-zarr-3f2a9c1e.service``."""
    return f"{SYSTEMD_UNIT_PREFIX}{service_slug(store)}.service"


def launchd_label(store: str | os.PathLike[str]) -> str:
    """The launchd job label of a store, e.g. ``org.kymflow.kymwatch.exp1-zarr-3f2a9c1e``."""
    return f"{LAUNCHD_LABEL_PREFIX}{service_slug(store)}"
