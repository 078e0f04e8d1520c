"""Rebuild and first index on a Dask cluster (issue 13): the same tables as a local rebuild."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from harness import WAIT_S, DaemonProcess, assert_tables_match_rebuild, kymwatch
from helpers_store import (
    analysis_file,
    events_frame,
    gen2_events_frame,
    legacy_radon_report,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.cli import main
from kymwatch.index import KymDataset, VelocityEventsIndexer
from kymwatch.index import distributed as dist
from kymwatch.index.distributed import (
    ChunkFailedError,
    ClusterSpec,
    ClusterUnavailableError,
    cluster,
    cluster_extractor,
)
from kymwatch.store import ZarrImageRecord

pytest.importorskip("dask.distributed")

TABLES = ("velocity_events", "radon_report", "kym_velocity_events", "kym_radon")
ROI = {"roi_id": 1, "roi_type": "rect", "data": {"x0": 1, "x1": 7, "y0": 2, "y1": 7}}
GEN1 = [f"1f0c{n:04d}-9b1e-4c1a-8a55-2f6f0d7b{n:04d}" for n in range(8)]
GEN2 = [f"2e9d{n:04d}-7a2b-4d3c-9e11-5a1c3b2d{n:04d}" for n in range(8)]


def _gen2_record(root: Path, image_id: str, n: int) -> None:
    write_v2_record(root, image_id)
    write_parquet_artifact(root, image_id, "velocity_events/events", gen2_events_frame(n + 1))
    write_json_artifact(root, image_id, "velocity_events/params", {"threshold": 0.5})
    results = pd.DataFrame({"roi_id": [1], "velocity": [0.5 + n]})
    write_parquet_artifact(root, image_id, "radon/results", results)
    write_json_artifact(root, image_id, "radon/params", {"window": 9})
    write_json_artifact(root, image_id, "metadata", {"version": "2.0", "rois": [ROI]})


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    """Both generations, kymflow-shaped (UUID record ids, string event ids "e0", UUID
    event ids), with truncated parquet, broken JSON and a record without artifacts."""
    root = make_v2_store(tmp_path / "store.zarr")
    for n, image_id in enumerate(GEN1):
        write_v2_record(root, image_id)
        write_parquet_artifact(root, image_id, "velocity_events", events_frame(n % 4))
        write_json_artifact(root, image_id, "radon_report", legacy_radon_report(0.1 * n))
    for n, image_id in enumerate(GEN2):
        _gen2_record(root, image_id, n)
    write_file(analysis_file(root, GEN1[1], "velocity_events", "parquet"), b"PAR1 torn")
    write_file(analysis_file(root, GEN1[2], "radon_report", "json"), b'{"vel_mean": ')
    write_file(analysis_file(root, GEN2[3], "velocity_events/events", "parquet"), b"not parquet")
    write_v2_record(root, "3a7b0000-0000-4000-8000-00000000empty")
    return root


def _copy(store: Path, name: str) -> Path:
    dest = store.parent / name
    shutil.copytree(store, dest)
    return dest


def _tables(store: Path) -> dict[str, Any]:
    return {t: pq.read_table(store / "tables" / f"{t}.parquet") for t in TABLES}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A local cluster of two worker processes, shared by this module's tests."""
    with cluster(ClusterSpec(None, 2)) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the cluster path -------------------------------------------------------------------------
@pytest.mark.integration
def test_rebuild_on_local2_equals_a_local_rebuild(mixed_store: Path) -> None:
    """``rebuild --dask local:2`` writes exactly the tables of a local rebuild."""
    there = _copy(mixed_store, "dask.zarr")
    kymwatch("rebuild", mixed_store, check=True)
    out = kymwatch("rebuild", there, "--dask", "local:2", check=True).stdout
    assert "kym_velocity_events:" in out
    local, remote = _tables(mixed_store), _tables(there)
    for name in TABLES:
        assert remote[name].num_rows > 0
        assert remote[name].equals(local[name]), name
        assert remote[name].schema.equals(local[name].schema, check_metadata=True), name


@pytest.mark.integration
def test_outcomes_are_logged_as_locally(mixed_store: Path, client: Any) -> None:
    """Outcomes read on the cluster (missing, unreadable, invalid) are logged as a local
    rebuild logs them."""
    there = _copy(mixed_store, "dask.zarr")

    def events(root: Path, remote: bool) -> list[tuple[str, str, str]]:
        kd = KymDataset(root)
        if remote:
            kd.extractor = dist.ClusterExtractor(client, root, chunk_records=3)
        with capture_logs() as logs:
            kd.rebuild_report("velocity_events")
            kd.rebuild_report("radon_report")
        keep = {"artifact_missing", "artifact_unreadable", "artifact_invalid"}
        return sorted((e["event"], e["image_id"], e["indexer"]) for e in logs if e["event"] in keep)

    local = events(mixed_store, remote=False)
    assert ("artifact_unreadable", GEN1[1], "velocity_events") in local
    assert events(there, remote=True) == local


@pytest.mark.integration
def test_a_chunk_comes_back_with_one_shared_table(mixed_store: Path, client: Any) -> None:
    """The records of a chunk come back sharing one Arrow table (sent once, not once per
    record), as a local read gives them."""
    ix = VelocityEventsIndexer()

    def tables(results: list[Any]) -> int:
        return len({id(span.batch) for _, span in results if span is not None})

    here = KymDataset(mixed_store).extract_here(ix, GEN1)
    there = dist.ClusterExtractor(client, mixed_store, chunk_records=100)(ix, GEN1)
    assert [o for o, _ in there] == [o for o, _ in here]
    assert tables(there) == tables(here) < len(GEN1) - 2


class _DiesOnce(VelocityEventsIndexer):
    """``velocity_events`` whose first read on a Dask worker kills that worker process."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = str(marker)

    def read_raw(self, rec: ZarrImageRecord) -> Any:
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # not on a worker: the local oracle
            return super().read_raw(rec)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().read_raw(rec)
        os.close(fd)
        os._exit(1)  # the worker dies mid-chunk


@pytest.mark.integration
def test_a_worker_killed_mid_chunk_gives_the_same_table(mixed_store: Path) -> None:
    """A worker that dies in the middle of a chunk is replaced by Dask and the table is
    the one a local rebuild writes."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    there = _copy(mixed_store, "dask.zarr")
    marker = mixed_store.parent / "killed"
    local = KymDataset(mixed_store, indexers=[_DiesOnce(marker)])
    local.rebuild_report("velocity_events")
    assert not marker.exists()
    remote = KymDataset(there, indexers=[_DiesOnce(marker)])
    with cluster_extractor(ClusterSpec(None, 2), there, chunk_records=4) as extract:
        remote.extractor = extract
        remote.rebuild_report("velocity_events")
    assert marker.exists()  # a worker really died
    assert _tables_of(there, "velocity_events").equals(_tables_of(mixed_store, "velocity_events"))


def _tables_of(store: Path, name: str) -> Any:
    return pq.read_table(store / "tables" / f"{name}.parquet")


class _AlwaysFails(VelocityEventsIndexer):
    """``velocity_events`` whose reads crash the worker's task outright (not one record)."""

    def read_raw(self, rec: ZarrImageRecord) -> Any:
        raise MemoryError("worker out of memory")


@pytest.mark.integration
def test_a_chunk_that_keeps_failing_names_its_records_and_writes_no_table(
    mixed_store: Path, client: Any
) -> None:
    """A chunk failing after Dask's retries fails the rebuild with its records named,
    and the table on disk is left as it was."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    KymDataset(mixed_store).rebuild_report("velocity_events")
    before = _tables_of(mixed_store, "velocity_events")
    kd = KymDataset(mixed_store, indexers=[_AlwaysFails()])
    kd.extractor = dist.ClusterExtractor(client, mixed_store, chunk_records=100)
    with pytest.raises(ChunkFailedError, match=GEN1[0]) as failed:
        kd.rebuild_report("velocity_events")
    assert set(failed.value.image_ids) >= set(GEN1)
    assert _tables_of(mixed_store, "velocity_events").equals(before)


class _HoldsALock(VelocityEventsIndexer):
    """An indexer that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


@pytest.mark.integration
def test_an_indexer_the_workers_cannot_receive_is_one_clear_error(
    mixed_store: Path, client: Any
) -> None:
    """An indexer that cannot be sent to the workers fails with a ClusterError naming it."""
    kd = KymDataset(mixed_store, indexers=[_HoldsALock()])
    kd.extractor = dist.ClusterExtractor(client, mixed_store)
    with pytest.raises(dist.ClusterError, match="indexer velocity_events cannot be sent"):
        kd.rebuild_report("velocity_events")
    assert not (mixed_store / "tables" / "velocity_events.parquet").exists()


# -- no cluster, no dask ----------------------------------------------------------------------
def _cli(prelude: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``kymwatch ARGV`` in a subprocess that first runs ``prelude``."""
    code = f"import sys\n{prelude}\nfrom kymwatch.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=WAIT_S
    )


@pytest.mark.integration
def test_no_cluster_is_one_clear_line(mixed_store: Path) -> None:
    """A scheduler that does not answer gives one line on stderr, exit 1, and no table."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    quick = "import kymwatch.index.distributed as d; d.CONNECT_TIMEOUT_S = 1.0"
    done = _cli(quick, "rebuild", str(mixed_store), "--dask", address)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kymwatch: error: no Dask scheduler answers at " + address)
    assert not (mixed_store / "tables" / "velocity_events.parquet").exists()


@pytest.mark.integration
@pytest.mark.parametrize("command", ["rebuild", "run"])
def test_without_dask_installed_dask_says_how_to_install(mixed_store: Path, command: str) -> None:
    """Without dask.distributed, ``rebuild --dask`` and ``run --dask`` print one line
    saying how to install it, and exit 2."""
    hide = "sys.modules['dask.distributed'] = sys.modules['distributed'] = None"
    done = _cli(hide, command, str(mixed_store), "--dask", "local:2")
    assert done.returncode == 2
    hint = "kymwatch: error: --dask needs dask.distributed: pip install 'kymwatch[dask]'"
    assert done.stderr.strip() == hint
    assert not (mixed_store / "tables" / "velocity_events.parquet").exists()


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("local", ClusterSpec(None)),
        ("local:3", ClusterSpec(None, 3)),
        ("tcp://10.0.0.5:8786", ClusterSpec("tcp://10.0.0.5:8786")),
    ],
)
def test_cluster_spec_parses_addresses_and_local_clusters(text: str, spec: ClusterSpec) -> None:
    """``--dask`` takes local, local:N or a scheduler address."""
    assert ClusterSpec.parse(text) == spec
    assert str(spec) == text


def test_a_bad_local_worker_count_is_a_usage_error(
    mixed_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dask local:0`` is refused with one line, exit 2."""
    with pytest.raises(SystemExit) as done:
        main(["rebuild", str(mixed_store), "--dask", "local:0"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "positive number of workers" in err


@pytest.mark.parametrize("address", ["foo://sched:8786", "tcp://sched.lab", "sched lab"])
def test_a_malformed_address_is_refused_before_connecting(address: str) -> None:
    """An address Dask cannot use is a ClusterUnavailableError (a ConnectionError) naming it."""
    refused = pytest.raises(ClusterUnavailableError, match="not a Dask scheduler address")
    with refused as e, cluster(ClusterSpec(address), timeout_s=1):
        pass
    assert isinstance(e.value, ConnectionError)
    assert address in str(e.value)


# -- the daemon -------------------------------------------------------------------------------
@pytest.mark.integration
def test_daemon_first_index_on_the_cluster_equals_a_rebuild(mixed_store: Path) -> None:
    """A daemon started with ``--dask local:2`` reads its first index on the cluster and
    ends with the tables of a fresh rebuild."""
    with DaemonProcess(mixed_store, "--dask", "local:2", "--dask-threshold", "5") as d:
        read = d.events("cluster_read")
        used = d.events("cluster_reads_used")
    assert read and read[0]["records"] == len(GEN1) + len(GEN2) + 1
    assert used and used[0]["reused"] > 0
    assert_tables_match_rebuild(mixed_store, mixed_store.parent / "scratch")


@pytest.mark.integration
def test_daemon_falls_back_locally_when_the_cluster_is_unreachable(mixed_store: Path) -> None:
    """A daemon whose cluster does not answer warns once and indexes locally."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    with DaemonProcess(mixed_store, "--dask", address, "--dask-threshold", "5") as d:
        fallback = d.events("cluster_fallback")
    assert fallback and "no Dask scheduler answers" in fallback[0]["error"]
    assert_tables_match_rebuild(mixed_store, mixed_store.parent / "scratch")
