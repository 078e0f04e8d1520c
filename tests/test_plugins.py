"""Third-party indexers: an installed plug-in (entry-point group ``kymwatch.indexers``) is
found, selected on every store, shown in ``status`` and run by the daemon subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild, kymwatch
from helpers_store import events_frame, make_v2_store, write_parquet_artifact, write_v2_record
from kymwatch.store import read_table_file

pytestmark = pytest.mark.integration

SITE = Path(__file__).parent / "data" / "plugin" / "site"


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_plugin_is_found_through_its_entry_point() -> None:
    """With the plug-in on the path, the registry lists it beside the built-in indexers."""
    code = (
        "from kymwatch.index import available_indexers, make_indexers;"
        "import json; print(json.dumps([sorted(available_indexers()),"
        " make_indexers(['event_counts'])[0].table_name]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **_env()},
        check=True,
    ).stdout
    names, table = json.loads(out)
    assert "event_counts" in names and {"velocity_events", "kym_radon"} <= set(names)
    assert table == "event_counts"


def test_daemon_runs_an_installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon subprocess runs the plug-in next to the selected built-ins, shows it in
    status, keeps its table equal to a rebuild, and ``rebuild --indexer`` runs it."""
    store = make_v2_store(tmp_path / "store.zarr")
    for image_id, n in (("0b9e7c1a-a", 3), ("0b9e7c1a-b", 1)):
        write_v2_record(store, image_id)
        write_parquet_artifact(store, image_id, "velocity_events", events_frame(n))
    with DaemonProcess(store, env=_env()) as d:
        d.sync()
        status = json.loads((store / "index" / "status.json").read_text())
        assert status["indexers"] == ["velocity_events", "radon_report", "event_counts"]
        write_v2_record(store, "0b9e7c1a-c")
        write_parquet_artifact(store, "0b9e7c1a-c", "velocity_events", events_frame(5))
        d.sync()
        table = read_table_file(store / "tables" / "event_counts.parquet")
        counts = dict(zip(table["image_id"], table["n_events"], strict=True))
        assert counts == {"0b9e7c1a-a": 3, "0b9e7c1a-b": 1, "0b9e7c1a-c": 5}
    proc = kymwatch("status", store, "--json")
    assert json.loads(proc.stdout)["status"]["indexers"][-1] == "event_counts"
    env = {**os.environ, **_env()}
    rebuilt = subprocess.run(
        [sys.executable, "-m", "kymwatch", "rebuild", str(store), "--indexer", "event_counts"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert rebuilt.stdout.startswith("event_counts: 3 rows")
    monkeypatch.syspath_prepend(str(SITE))  # the oracle below runs the plug-in too
    assert_tables_match_rebuild(store, tmp_path / "scratch")


def test_unknown_indexer_is_one_line(tmp_path: Path) -> None:
    """``run --indexers nope`` and ``rebuild --indexer nope`` say so in one line, exit 2."""
    store = make_v2_store(tmp_path / "store.zarr")
    for args in (("run", store, "--indexers", "nope"), ("rebuild", store, "--indexer", "nope")):
        proc = kymwatch(*args)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0
        assert "no indexer named 'nope'" in proc.stderr
