"""Stable, unique service names for a dataset.

One dataset gets one service.

- systemd: an instance of the template unit ``kymwatch@.service`` whose instance
  is the store's path escaped as ``systemd-escape --path`` does
  (``/data/lab/exp1.zarr`` → ``kymwatch@data-lab-exp1.zarr.service``); the unit
  gets the path back as ``%f``.
- launchd (no templates): the label ``org.kymflow.kymwatch.<slug>``, a readable
  slug of the store's folder name plus a short hash of the store's canonical
  path (``/data/lab/Exp 1.zarr`` → ``org.kymflow.kymwatch.exp-1-zarr-3f2a9c1e``).

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
    "SYSTEMD_TEMPLATE",
    "SYSTEMD_UNIT_PREFIX",
    "canonical_store",
    "launchd_label",
    "service_slug",
    "systemd_escape_path",
    "systemd_unit_name",
]

SYSTEMD_UNIT_PREFIX = "kymwatch@"
"""Every kymwatch unit name starts with this."""

SYSTEMD_TEMPLATE = "kymwatch@.service"
"""The template unit every dataset's service is an instance of."""

_UNIT_NAME_MAX = 255
_ESCAPE_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.")

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


def systemd_escape_path(path: str | os.PathLike[str]) -> str:
    """``systemd-escape --path``: the absolute ``path`` without its outer slashes, each
    ``/`` as ``-``, and every byte but ASCII letters, digits, ``:``, ``_`` and ``.``
    (and a leading ``.``) as ``\\xNN``; ``/`` itself is ``-``."""
    text = os.path.normpath(os.fspath(path)).strip("/")
    if not text:
        return "-"
    out = []
    for i, byte in enumerate(os.fsencode(text)):
        if byte == ord("/"):
            out.append("-")
        elif byte in _ESCAPE_KEEP and not (i == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def systemd_unit_name(store: str | os.PathLike[str]) -> str:
    """The systemd service of a store: ``kymwatch@<escaped path>.service``.

    Raises:
        UnsupportedPathError: the escaped path is too long for a unit name (255 bytes).
    """
    name = f"{SYSTEMD_UNIT_PREFIX}{systemd_escape_path(canonical_store(store))}.service"
    if len(name) > _UNIT_NAME_MAX:
        from kymwatch.service.errors import UnsupportedPathError

        raise UnsupportedPathError(
            f"the path of {store} is too long for a systemd unit name once escaped "
            f"({len(name)} > {_UNIT_NAME_MAX} characters); use a shorter path or a symbolic link"
        )
    return name


def launchd_label(store: str | os.PathLike[str]) -> str:
    """The launchd job label of a store, e.g. ``org.kymflow.kymwatch.exp1-zarr-3f2a9c1e``."""
    return f"{LAUNCHD_LABEL_PREFIX}{service_slug(store)}"
