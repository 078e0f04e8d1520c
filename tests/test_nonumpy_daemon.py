"""The daemon runs without numpy: a real ``kymwatch run`` (and ``rebuild``) on a
kymflow-shaped store of both generations keeps numpy out of its process, says so on its
start line, indexes edits and syncs to tables equal to a fresh rebuild; ``KYMWATCH_NUMPY=1``
and an installed plug-in keep numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import DaemonProcess, assert_tables_match_rebuild
from helpers_store import (
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    write_csv_gz_artifact,
    write_json_artifact,
    write_mixed_generations,
    write_parquet_artifact,
)

SITE = Path(__file__).parent / "data" / "plugin" / "site"
_NUMPY_CORE = "_multiarray_umath"


def _store(tmp_path: Path) -> tuple[Path, list[str]]:
    store = tmp_path / "dataset.zarr"
    return store, write_mixed_generations(store, 12, without_artifacts=3)


def _edit(store: Path, ids: list[str]) -> None:
    """Edits of both generations (string and UUID event ids, a csv.gz, a legacy radon
    report, a generation-2 events table) and a new artifact on the bare record."""
    write_parquet_artifact(store, ids[1], "velocity_events", events_frame(3))
    write_csv_gz_artifact(store, ids[5], "velocity_events", events_frame(2, start_s=5.0))
    write_json_artifact(store, ids[5], "radon_report", legacy_radon_report(2.5))
    write_parquet_artifact(store, ids[0], "velocity_events/events", gen2_events_frame(4))
    write_json_artifact(store, ids[3], "radon_report", legacy_radon_report(1.0))


def _numpy_mapped(pid: int) -> bool:
    """Whether process ``pid`` has numpy's compiled core mapped."""
    return _NUMPY_CORE in Path(f"/proc/{pid}/maps").read_text()


def _start_line(d: DaemonProcess) -> dict[str, object]:
    for line in d.log_path.read_text().splitlines():
        doc = json.loads(line)
        if doc.get("event") == "daemon_started":
            return dict(doc)
    raise AssertionError("no daemon_started line")


@pytest.mark.integration
def test_daemon_runs_without_numpy(tmp_path: Path) -> None:
    """With the built-in indexers the daemon keeps numpy out (start line: ``kept out``),
    indexes edits of both generations without numpy mapped, and its tables equal a
    fresh rebuild."""
    store, ids = _store(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "KYMWATCH_NUMPY"}
    with DaemonProcess(store, env=env) as d:
        d.sync()
        _edit(store, ids)
        d.sync()
        assert d.proc is not None
        assert not _numpy_mapped(d.proc.pid), "the daemon loaded numpy"
        memory = _start_line(d)["memory"]
        assert isinstance(memory, dict)
        assert memory["numpy"] == "kept out"
    assert_tables_match_rebuild(store, tmp_path / "scratch")


@pytest.mark.integration
def test_keep_numpy_env_keeps_it(tmp_path: Path) -> None:
    """``KYMWATCH_NUMPY=1`` keeps numpy: pyarrow loads it, the start line says why."""
    store, _ = _store(tmp_path)
    with DaemonProcess(store, env={"KYMWATCH_NUMPY": "1"}) as d:
        d.sync()
        assert d.proc is not None
        assert _numpy_mapped(d.proc.pid)
        memory = _start_line(d)["memory"]
        assert isinstance(memory, dict)
        assert memory["numpy"] == "allowed (KYMWATCH_NUMPY=1)"


@pytest.mark.integration
def test_installed_plugin_keeps_numpy(tmp_path: Path) -> None:
    """An installed plug-in indexer (here one returning DataFrames) keeps numpy, and
    runs: its table is written."""
    store, ids = _store(tmp_path)
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    with DaemonProcess(store, env={"PYTHONPATH": path}) as d:
        _edit(store, ids)
        d.sync()
        assert (store / "tables" / "event_counts.parquet").exists()
        memory = _start_line(d)["memory"]
        assert isinstance(memory, dict)
        assert str(memory["numpy"]).startswith("allowed (plug-in indexers: ")


@pytest.mark.integration
def test_rebuild_runs_without_numpy(tmp_path: Path) -> None:
    """``kymwatch rebuild`` keeps numpy out too and writes every table (numpy would be
    in ``sys.modules`` of the process had anything imported it)."""
    store, ids = _store(tmp_path)
    _edit(store, ids)
    code = (
        "import sys\n"
        "from kymwatch.cli import main\n"
        "rc = main(['rebuild', '--no-progress', sys.argv[1]])\n"
        "print('NUMPY', 'numpy' in sys.modules, flush=True)\n"
        "import os; os._exit(rc)  # pyarrow's teardown may abort (apache/arrow#34314)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KYMWATCH_NUMPY"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "NUMPY False" in out
    assert {"velocity_events", "radon_report", "kym_velocity_events", "kym_radon"} <= {
        p.stem for p in (store / "tables").glob("*.parquet")
    }
