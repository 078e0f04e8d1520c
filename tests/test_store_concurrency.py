"""Table writes from several real processes: no lost rows, no torn reads.

Each test starts plain ``python -c`` subprocesses. They signal readiness with a file
and start together when the test creates a "go" file, so their work overlaps even
though interpreter start-up times differ. Timeouts are generous and only guard
against hangs; no test asserts how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from helpers_store import events_frame, write_parquet_artifact
from kymwatch.index import KymDataset
from kymwatch.store import ZarrDataset

pytestmark = pytest.mark.integration

TIMEOUT_S = 240.0

# Shared by every child: wait for the test's "go" file after announcing readiness.
_PRELUDE = """
import json, pathlib, sys, time
root, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
args = sys.argv[4:]
ready.touch()
while not go.exists():
    time.sleep(0.005)
"""

_REPLACE_ROWS = """
import pandas as pd
from kymwatch.store import ZarrDataset
prefix, n = args[0], int(args[1])
ds = ZarrDataset(root, "a")
for i in range(n):
    ds.replace_rows_for_image_id("t", f"{prefix}{i:03d}", pd.DataFrame({"v": [i, i + 1]}))
"""

_UPDATE_IMAGES = """
from kymwatch.index import KymDataset
kd = KymDataset(root)
for image_id in args:
    kd.update_image("velocity_events", image_id)
"""

_REWRITE_TABLE = """
import pandas as pd
from kymwatch.store import ZarrDataset
ds = ZarrDataset(root, "a")
for version in range(1, int(args[0]) + 1):
    n = 100 + (version % 13) * 10
    ds.save_table("t", pd.DataFrame({"version": [version] * n, "i": list(range(n))}))
"""

_READ_TABLE_LOOP = """
from kymwatch.index import KymDataset
from kymwatch.store import ZarrDataset
stop = pathlib.Path(args[0])
ds, kd = ZarrDataset(root, "r"), KymDataset(root, "r")
reads, versions, problems = 0, set(), []
while True:
    finished = stop.exists()
    for df in (ds.load_table("t"), kd.get_table("t")):
        found = set(df["version"].tolist())
        if len(found) != 1:
            problems.append(f"mixed versions {sorted(found)[:5]}")
            continue
        version = found.pop()
        n = 100 + (version % 13) * 10
        if df["i"].tolist() != list(range(n)):
            problems.append(f"version {version}: {len(df)} rows, expected {n}")
        versions.add(version)
        reads += 1
    if finished:
        break
print(json.dumps({"reads": reads, "versions": sorted(versions), "problems": problems[:10]}))
"""


class _Children:
    """Subprocesses started on one "go" signal, with output collected at the end."""

    def __init__(self, tmp_path: Path, root: Path) -> None:
        self.tmp = tmp_path
        self.root = root
        self.go = tmp_path / "go"
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, body: str, *args: str) -> subprocess.Popen[str]:
        ready = self.tmp / f"ready-{len(self.procs)}"
        argv = [sys.executable, "-c", _PRELUDE + body, str(self.root), str(ready), str(self.go)]
        proc = subprocess.Popen(
            [*argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append((proc, ready))
        return proc

    def release(self) -> None:
        """Wait until every child is ready, then let them all go."""
        deadline = time.monotonic() + TIMEOUT_S
        for proc, ready in self.procs:
            while not ready.exists():
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "child never became ready"
                time.sleep(0.01)
        self.go.touch()

    @staticmethod
    def finish(proc: subprocess.Popen[str]) -> str:
        """Wait for ``proc``; fail with its stderr unless it exits 0. Returns its stdout."""
        out, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, err
        return out

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def children(tmp_path: Path, store_path: Path) -> Iterator[_Children]:
    """A launcher for child processes working on the test's store; kills leftovers."""
    launcher = _Children(tmp_path, store_path)
    yield launcher
    launcher.kill_all()


def test_concurrent_replace_rows_lose_nothing(store_path: Path, children: _Children) -> None:
    """Two processes replacing rows of 50 different records each in one table lose no rows."""
    ZarrDataset(store_path, "a")
    a = children.start(_REPLACE_ROWS, "a", "50")
    b = children.start(_REPLACE_ROWS, "b", "50")
    children.release()
    children.finish(a)
    children.finish(b)

    table = ZarrDataset(store_path, "r").load_table("t")
    counts = table["image_id"].value_counts()
    expected = {f"{p}{i:03d}" for p in "ab" for i in range(50)}
    assert set(counts.index) == expected
    assert (counts == 2).all()
    assert len(table) == 200


def test_concurrent_kymdataset_updates_lose_nothing(store_path: Path, children: _Children) -> None:
    """Two processes indexing disjoint records into the same table keep each other's rows."""
    ds = ZarrDataset(store_path, "a")
    ids = [f"r{i:02d}" for i in range(40)]
    for image_id in ids:
        ds.images_path.joinpath(image_id).mkdir()
        write_parquet_artifact(store_path, image_id, "velocity_events", events_frame(3))
    a = children.start(_UPDATE_IMAGES, *ids[::2])
    b = children.start(_UPDATE_IMAGES, *ids[1::2])
    children.release()
    children.finish(a)
    children.finish(b)

    table = KymDataset(store_path, "r").get_table("velocity_events")
    assert table["image_id"].tolist() == sorted(ids * 3)


def test_reader_never_sees_a_torn_or_partial_table(
    tmp_path: Path, store_path: Path, children: _Children
) -> None:
    """A process reading a table in a loop while another rewrites it 200 times sees only whole
    versions: every read parses and holds exactly one version's complete row set."""
    rewrites = 200
    ds = ZarrDataset(store_path, "a")
    ds.save_table("t", pd.DataFrame({"version": [0] * 100, "i": list(range(100))}))
    stop = tmp_path / "stop"
    reader = children.start(_READ_TABLE_LOOP, str(stop))
    writer = children.start(_REWRITE_TABLE, str(rewrites))
    children.release()
    children.finish(writer)
    stop.touch()
    result = json.loads(children.finish(reader))

    assert result["problems"] == []
    assert result["reads"] >= 2
    assert max(result["versions"]) == rewrites
    assert sorted(p.name for p in ds.tables_path.iterdir()) == ["t.parquet"]
