"""Model-based reliability test: random store histories under the real daemon.

A Hypothesis state machine applies random operations to a real store while the
real daemon runs as a subprocess (``kymwatch run``): add a record, write,
overwrite or delete an artifact (velocity events parquet; radon report as JSON or
parquet), write a corrupt artifact, delete or overwrite a record, restart or crash
(kill -9) the daemon, stop it and change the store while it is down. After every
step, while the daemon runs, it waits on the sync barrier and checks the oracle:
each table equals a fresh rebuild, except that a record whose current artifact is
corrupt keeps exactly the rows it had when its artifact was last good (the model
tracks those rows from the last check at which they were verified).

The sync barrier is ``kymwatch.daemon.request_sync`` called in-process: the same
barrier as ``kymwatch sync`` without a Python start-up per step.

The in-suite run is small and derandomized; ``tests/campaign`` runs the same machine
with many more, random examples. A failure shrinks to a short, readable list of
``state.<operation>(...)`` calls.
"""

from __future__ import annotations

import atexit
import gzip
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness import WAIT_S, DaemonProcess, fresh_rebuild, live_tables
from helpers_store import (
    analysis_file,
    delete_record,
    events_frame,
    legacy_radon_report,
    make_v2_store,
    write_file,
    write_json_artifact,
    write_parquet_artifact,
    write_v2_record,
)
from kymwatch.daemon import request_sync
from kymwatch.store import read_table_file

pytestmark = pytest.mark.integration

EVENTS = "velocity_events.parquet"
RADON_JSON = "radon_report.json"
RADON_PARQUET = "radon_report.parquet"
FILES = (EVENTS, RADON_JSON, RADON_PARQUET)
TABLES = ("velocity_events", "radon_report")
CORRUPTIONS = ("garbage", "truncated", "empty", "wrong_shape")


# -- artifact content ----------------------------------------------------------------------
def radon_rows(mean: float, n: int) -> list[dict[str, Any]]:
    """``n`` radon report rows (legacy keys), one per ROI, around ``mean``."""
    return [legacy_radon_report(mean + i, roi_id=i + 1, note=f"roi{i}") for i in range(n)]


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as parquet file content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    return bytes(sink.getvalue().to_pybytes())


def corrupt_bytes(file: str, how: str) -> bytes:
    """Content of ``file`` broken in the way ``how`` names (each keeps old rows)."""
    if file.endswith(".json"):
        good = json.dumps(radon_rows(1.0, 2)).encode()
        return {
            "garbage": b"\x00\xffnot json at all\x89PNG",
            "truncated": good[: len(good) // 2],
            "empty": b"",
            "wrong_shape": b"42",  # valid JSON, but not an object or a list of objects
        }[how]
    good_df = events_frame(4) if file == EVENTS else pd.DataFrame(radon_rows(1.0, 2))
    good = parquet_bytes(good_df)
    if how == "wrong_shape":  # a parquet whose columns cannot be cast to the schema
        bad = {"t0_s": ["soon", "later"], "roi_id": ["a", "b"], "vel_mean": ["x", "y"]}
        return parquet_bytes(pd.DataFrame(bad))
    return {
        "garbage": b"PAR1 this is not a parquet file \x00\x01\x02",
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }[how]


def gzip_json(obj: Any) -> bytes:
    """``obj`` as gzipped JSON (the legacy radon report format)."""
    return gzip.compress(json.dumps(obj).encode())


# -- the model -----------------------------------------------------------------------------
@dataclass
class RecordModel:
    """What the model knows of one record: each artifact file is good or corrupt."""

    files: dict[str, str] = field(default_factory=dict)  # file -> "good" | "corrupt"

    def table_source(self, table: str) -> str | None:
        """The file a table's indexer reads for this record (None: no artifact)."""
        if table == "velocity_events":
            return EVENTS if EVENTS in self.files else None
        for f in (RADON_PARQUET, RADON_JSON):
            if f in self.files:
                return f
        return None

    def corrupt_for(self, table: str) -> bool:
        """True when the table's current artifact of this record is corrupt."""
        src = self.table_source(table)
        return src is not None and self.files[src] == "corrupt"


def rows_of(df: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """The rows of one record in a table, re-indexed from 0."""
    return df[df["image_id"] == image_id].reset_index(drop=True)


def check_tables(
    store: Path, scratch: Path, records: dict[str, RecordModel], last_good: dict[str, dict]
) -> None:
    """The oracle with kept rows: raise AssertionError on any difference.

    ``last_good[table][image_id]`` holds the verified rows of each record from the
    previous check; it is updated in place with this check's verified rows.
    """
    fresh, live = fresh_rebuild(store, scratch), live_tables(store)
    for table in TABLES:
        corrupt = {i for i, r in records.items() if r.corrupt_for(table)}
        got, expected = live[table], fresh[table]
        got_ok = got[~got["image_id"].isin(corrupt)].reset_index(drop=True)
        exp_ok = expected[~expected["image_id"].isin(corrupt)].reset_index(drop=True)
        if not got_ok.equals(exp_ok):
            raise AssertionError(
                f"table {table!r} differs from a fresh rebuild (corrupt records left out: "
                f"{sorted(corrupt)}):\nlive:\n{got_ok}\nrebuild:\n{exp_ok}"
            )
        for image_id in sorted(corrupt):
            kept = rows_of(got, image_id)
            want = last_good[table].get(image_id)
            if want is None:
                want = got.iloc[0:0].reset_index(drop=True)
            if not kept.equals(want):
                raise AssertionError(
                    f"table {table!r}: record {image_id!r} has a corrupt artifact and should "
                    f"keep its last good rows\nkept:\n{kept}\nlast good:\n{want}"
                )
        good = {i: rows_of(got, i) for i in records if i not in corrupt}
        kept = {i: last_good[table][i] for i in corrupt if i in last_good[table]}
        last_good[table] = good | kept


_STARTED: list[DaemonProcess] = []


@atexit.register
def _kill_leftover_daemons() -> None:
    """A run cut short (a timeout while shrinking) may skip teardown: leave no daemon."""
    for d in _STARTED:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()


class StoreMachine(RuleBasedStateMachine):
    """Random operations on a real store under the real daemon, checked after each step."""

    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="kymwatch-model-"))
        self.store = make_v2_store(self.tmp / "store.zarr")
        self.scratch = self.tmp / "scratch"
        self.model: dict[str, RecordModel] = {}
        self.last_good: dict[str, dict[str, pd.DataFrame]] = {t: {} for t in TABLES}
        self.counter = 0
        self.daemon: DaemonProcess | None = None
        self._start()

    # -- daemon lifecycle -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the daemon is up."""
        return self.daemon is not None

    def _start(self) -> None:
        self.daemon = DaemonProcess(self.store, quiet_ms=50)
        _STARTED.append(self.daemon)
        self.daemon.start()

    @precondition(lambda self: self.running)
    @rule(crash=st.booleans())
    def restart_daemon(self, crash: bool) -> None:
        """Restart the daemon: SIGTERM and wait, or SIGKILL (no shutdown at all)."""
        assert self.daemon is not None
        if crash:
            self.daemon.kill()
            self._assert_tables_parse()
        else:
            code = self.daemon.stop()
            assert code == 0, self.daemon.read_output()
        self._start()

    @precondition(lambda self: self.running)
    @rule()
    def stop_daemon(self) -> None:
        """Stop the daemon; the next operations change the store while it is down."""
        assert self.daemon is not None
        code = self.daemon.stop()
        assert code == 0, self.daemon.read_output()
        self.daemon = None

    @precondition(lambda self: not self.running)
    @rule()
    def start_daemon(self) -> None:
        """Start the daemon again after the store changed while it was down."""
        self._start()

    # -- records --------------------------------------------------------------------------
    @initialize(target=records)
    def first_record(self) -> str:
        """Every history starts with a record holding both artifacts ..."""
        image_id = self._new_record()
        self._write_events(image_id, 3, 0, atomic=True)
        self._write_radon_json(image_id, 2, 1.5, legacy_gz=False)
        return image_id

    @initialize(target=records)
    def second_record(self) -> str:
        """... and one with a radon report parquet only."""
        image_id = self._new_record()
        df = pd.DataFrame(radon_rows(4.0, 1))
        write_parquet_artifact(self.store, image_id, "radon_report", df)
        self.model[image_id].files[RADON_PARQUET] = "good"
        return image_id

    def _new_record(self) -> str:
        image_id = f"rec{self.counter:03d}"
        self.counter += 1
        write_v2_record(self.store, image_id)
        self.model[image_id] = RecordModel()
        return image_id

    @rule(target=records)
    def add_record(self) -> str:
        """A new record without artifacts."""
        return self._new_record()

    @rule(image_id=consumes(records))
    def delete_record(self, image_id: str) -> None:
        """Remove a record folder with everything in it."""
        delete_record(self.store, image_id)
        del self.model[image_id]

    @rule(image_id=records, n=st.integers(0, 4))
    def overwrite_record(self, image_id: str, n: int) -> None:
        """Zarr-overwrite style: delete the record folder, recreate it with new events."""
        delete_record(self.store, image_id)
        write_v2_record(self.store, image_id)
        self.model[image_id] = RecordModel()
        self._write_events(image_id, n, 7, atomic=True)

    # -- artifacts ------------------------------------------------------------------------
    def _write_events(self, image_id: str, n: int, start: int, *, atomic: bool) -> None:
        df = events_frame(n, start_s=float(start))
        write_parquet_artifact(self.store, image_id, "velocity_events", df, atomic=atomic)
        self.model[image_id].files[EVENTS] = "good"

    def _write_radon_json(self, image_id: str, n: int, mean: float, *, legacy_gz: bool) -> None:
        rows: Any = radon_rows(mean, n) if n != 1 else radon_rows(mean, 1)[0]
        write_json_artifact(self.store, image_id, "radon_report", rows)
        if legacy_gz:  # a stale legacy file next to it must not matter (.json wins)
            gz = analysis_file(self.store, image_id, "radon_report", "json.gz")
            write_file(gz, gzip_json(radon_rows(99.0, 1)))
        self.model[image_id].files[RADON_JSON] = "good"

    @rule(image_id=records, n=st.integers(0, 4), start=st.integers(0, 9), atomic=st.booleans())
    def write_events(self, image_id: str, n: int, start: int, atomic: bool) -> None:
        """Write or overwrite the velocity events parquet (atomically or in place)."""
        self._write_events(image_id, n, start, atomic=atomic)

    @rule(image_id=records, n=st.integers(0, 3), mean=st.integers(0, 5), legacy_gz=st.booleans())
    def write_radon_json(self, image_id: str, n: int, mean: int, legacy_gz: bool) -> None:
        """Write the radon report JSON: one object (n == 1) or a list of ``n`` objects."""
        self._write_radon_json(image_id, n, float(mean), legacy_gz=legacy_gz)

    @rule(image_id=records, n=st.integers(0, 3), mean=st.integers(0, 5))
    def write_radon_parquet(self, image_id: str, n: int, mean: int) -> None:
        """Write the radon report parquet (it wins over the JSON)."""
        df = pd.DataFrame(radon_rows(float(mean), n))
        write_parquet_artifact(self.store, image_id, "radon_report", df)
        self.model[image_id].files[RADON_PARQUET] = "good"

    @rule(image_id=records, file=st.sampled_from(FILES))
    def delete_artifact(self, image_id: str, file: str) -> None:
        """Delete one artifact file (a no-op if the record does not have it)."""
        (self.store / "images" / image_id / "analysis" / file).unlink(missing_ok=True)
        self.model[image_id].files.pop(file, None)

    @rule(
        image_id=records,
        file=st.sampled_from(FILES),
        how=st.sampled_from(CORRUPTIONS),
        atomic=st.booleans(),
    )
    def corrupt_artifact(self, image_id: str, file: str, how: str, atomic: bool) -> None:
        """Write a corrupt artifact: garbage, truncated, empty or of the wrong shape."""
        path = self.store / "images" / image_id / "analysis" / file
        write_file(path, corrupt_bytes(file, how), atomic=atomic)
        self.model[image_id].files[file] = "corrupt"

    # -- the invariant --------------------------------------------------------------------
    def _assert_tables_parse(self) -> None:
        for p in (self.store / "tables").glob("*.parquet"):
            read_table_file(p)

    @invariant()
    def tables_match_the_model(self) -> None:
        """After a sync, tables equal a fresh rebuild; corrupt records keep last good rows."""
        if self.daemon is None:
            self._assert_tables_parse()
            return
        request_sync(self.store, timeout=WAIT_S)
        check_tables(self.store, self.scratch, self.model, self.last_good)

    def teardown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc is not None:
                self.daemon.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def machine_settings(examples: int, steps: int, *, derandomize: bool) -> settings:
    """Hypothesis settings for a run of the machine (no deadline, no database)."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False,
    )


def test_random_histories_keep_tables_equal_to_a_rebuild() -> None:
    """Random store histories under the real daemon keep every table equal to a rebuild."""
    run_state_machine_as_test(StoreMachine, settings=machine_settings(8, 20, derandomize=True))
