"""Shared fixtures for the store and index tests (keep this small)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers_store import make_v2_store
from kymwatch.store import ZarrDataset


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where a test's dataset lives; the folder does not exist yet."""
    return tmp_path / "store.zarr"


@pytest.fixture
def plain_v2_store(store_path: Path) -> Path:
    """An empty zarr-format-2 dataset written with plain file I/O (no kymwatch API)."""
    return make_v2_store(store_path)


@pytest.fixture
def new_dataset(store_path: Path) -> ZarrDataset:
    """An empty dataset created by ``ZarrDataset`` (mode ``"a"``)."""
    return ZarrDataset(store_path, "a")


@pytest.fixture
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog event dicts logged during the test."""
    with structlog.testing.capture_logs() as logs:
        yield logs
