"""Which indexers the daemon runs: chosen at start, decided by the first artifacts of
an empty store, widened when a store gains another kymflow generation.

See ``kymwatch.index.registry`` for the rules; this module applies them to a running
daemon (its dataset, state, worker and status).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from kymwatch.daemon.changes import RecordChange
from kymwatch.daemon.reporter import Reporter
from kymwatch.daemon.state import IndexState
from kymwatch.daemon.status import DaemonStatus
from kymwatch.daemon.worker import Worker
from kymwatch.index import (
    UNDECIDED,
    DatasetIndexer,
    KymDataset,
    Selection,
    decide_from_artifacts,
    make_indexers,
    record_artifact_names,
    select_indexers,
    widen_selection,
)
from kymwatch.store import IMAGES_DIR

__all__ = ["IndexerChoice", "initial_indexers"]

log = structlog.get_logger(__name__)


def initial_indexers(
    root: Path, configured: Iterable[str] | None, given: list[DatasetIndexer] | None
) -> tuple[list[DatasetIndexer], str]:
    """The indexers to start with and why: ``given`` ("given"), else those configured,
    else those the store's content calls for (possibly ``UNDECIDED``)."""
    if given is not None:
        return given, "given"
    selection = select_indexers(root, configured)
    return make_indexers(selection), selection.reason


class IndexerChoice:
    """Changes the running set of indexers as the store reveals what it holds.

    Args:
        root: The store folder.
        kd: The dataset whose ``indexers`` are replaced.
        state: Records each selected indexer's schema version.
        worker: Refreshed after each change of indexers.
        status: Shows the indexers and why.
        reporter: Publishes the status after a change.
        auto: Whether new data may widen the set (no indexers given or configured).
        reason: Why the starting set was chosen (``UNDECIDED``: the first artifacts
            decide).
    """

    def __init__(
        self,
        root: Path,
        kd: KymDataset,
        state: IndexState,
        worker: Worker,
        status: DaemonStatus,
        reporter: Reporter,
        *,
        auto: bool,
        reason: str,
    ) -> None:
        self.root, self.kd, self.state, self.worker = root, kd, state, worker
        self.status, self.reporter, self.auto = status, reporter, auto
        self.undecided = reason == UNDECIDED
        status.indexers = [ix.name for ix in kd.indexers]
        status.indexers_reason = reason

    def decide(self, changes: Iterable[RecordChange]) -> None:
        """On a store that had no data at start, switch to the generation(s) the first
        artifacts of ``changes`` belong to (nothing while they say nothing)."""
        if not self.undecided:
            return
        names: set[str] = set()
        for change in changes:
            if change.artifacts is None:
                names |= record_artifact_names(self.root / IMAGES_DIR / change.image_id)
            else:
                names |= change.artifacts
        selection = decide_from_artifacts(names)
        if selection is not None:
            self.undecided = False
            self._select(selection)

    def widen(self, artifacts: set[str]) -> bool:
        """Add the indexers of a generation whose ``artifacts`` appear in a store that
        did not have it (only when choosing automatically and already decided).

        Returns:
            True if indexers were added: their tables must then be grown from every
            record (the caller runs the table check).
        """
        if not self.auto or self.undecided:
            return False
        selection = widen_selection((ix.name for ix in self.kd.indexers), artifacts)
        if selection is None:
            return False
        self._select(selection)
        return True

    def _select(self, selection: Selection) -> None:
        current = {ix.name: ix for ix in self.kd.indexers}
        self.kd.indexers = [current.get(n) or make_indexers([n])[0] for n in selection]
        for ix in self.kd.indexers:
            self.state.schema_versions[ix.name] = ix.schema_version
        self.worker.refresh_indexers()
        self.status.indexers = [ix.name for ix in self.kd.indexers]
        self.status.indexers_reason = selection.reason
        log.info("indexers_selected", indexers=self.status.indexers, reason=selection.reason)
        self.reporter.publish()
