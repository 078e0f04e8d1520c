"""What lies between a record becoming due and its table being replaced (issue 14).

A single edit's way to its table carries only the work a published table needs: no
status write before it, one folder fsync per batch, the crash journal committed beside
the extraction and merge but before any rename. Records are kymflow-shaped (UUID image
ids, string event ids, both generations); the oracle is a fresh rebuild.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import assert_tables_match_rebuild
from helpers_loop import add_kym_record, kym_events
from helpers_store import make_v2_store, write_parquet_artifact
from kymwatch.daemon import Daemon, DaemonConfig, DaemonState, DaemonStatus, RecordChange


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0xA1B2C3D4 << 96 | i, version=4)) for i in range(n)]


class _Order:
    """Records, in order, the status files written and the table files renamed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_write = DaemonStatus.write
        real_replace = Path.replace

        def write(status: DaemonStatus, root: Path) -> None:
            self.calls.append(f"status:{status.state.value}")
            real_write(status, root)

        def replace(path: Path, target: Any) -> Any:
            if Path(target).parent.name == "tables":
                self.calls.append(f"table:{Path(target).name}")
            return real_replace(path, target)

        monkeypatch.setattr(DaemonStatus, "write", write)
        monkeypatch.setattr(Path, "replace", replace)


def _daemon(tmp_path: Path, ids: list[str]) -> tuple[Path, Daemon]:
    store = make_v2_store(tmp_path / "store.zarr")
    for i, image_id in enumerate(ids):
        add_kym_record(store, image_id, n_events=1 + i % 3)
    daemon = Daemon(DaemonConfig(store=store, indexers=("velocity_events", "radon_report")))
    daemon.reporter.set_state(DaemonState.WATCHING)
    assert daemon.indexing.index([RecordChange(i) for i in ids], 0.0, source="reconcile")
    return store, daemon


def _edit(store: Path, image_id: str) -> RecordChange:
    """Rewrite the record's events (kymflow's atomic way) and name the change."""
    write_parquet_artifact(store, image_id, "velocity_events", kym_events(4, start_s=7.0))
    return RecordChange(image_id)


def test_a_single_edit_writes_its_status_after_its_tables_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-record chunk publishes no ``indexing`` status ahead of its table writes: the
    status is written once, after them, as ``watching``."""
    store, daemon = _daemon(tmp_path, _ids(3))
    order = _Order(monkeypatch)
    assert daemon.indexing.index([_edit(store, _ids(3)[1])], 0.0, source="events")
    tables = [i for i, c in enumerate(order.calls) if c.startswith("table:")]
    statuses = [i for i, c in enumerate(order.calls) if c.startswith("status:")]
    assert tables and statuses, order.calls
    assert min(statuses) > max(tables), order.calls
    assert "status:indexing" not in order.calls
    assert order.calls[-1] == "status:watching"
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_large_chunk_still_publishes_indexing_before_its_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of many records (a burst, a reconcile) shows ``indexing`` in the status
    file while it works, then ``watching``."""
    ids = _ids(25)
    store, daemon = _daemon(tmp_path, ids)
    order = _Order(monkeypatch)
    changes = [_edit(store, i) for i in ids]
    assert daemon.indexing.index(changes, 0.0, source="events")
    first_table = next(i for i, c in enumerate(order.calls) if c.startswith("table:"))
    assert "status:indexing" in order.calls[:first_table], order.calls
    assert order.calls[-1] == "status:watching"
    daemon.state.close()
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_a_heartbeat_during_a_quiet_chunk_shows_indexing(tmp_path: Path) -> None:
    """The state of a quiet chunk is set, only not written: any publication meanwhile
    (a heartbeat while a table lock is awaited) carries ``indexing``."""
    store, daemon = _daemon(tmp_path, _ids(2))
    seen: list[str] = []
    real = daemon.worker.process

    def process(batch: Any, *, final: bool = False) -> Any:
        daemon.reporter.publish()  # what a heartbeat between lock waits does
        seen.append(json.loads((store / "index" / "status.json").read_text())["state"])
        return real(batch, final=final)

    daemon.worker.process = process  # type: ignore[method-assign]
    assert daemon.indexing.index([_edit(store, _ids(2)[0])], 0.0, source="events")
    assert seen == ["indexing"]
    daemon.state.close()
