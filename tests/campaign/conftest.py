"""The long reliability campaign: collected with the suite, run only with ``--campaign``.

``./dev campaign`` runs ``pytest tests/campaign --campaign``. Without the option every
test here is skipped with a visible reason, so the normal ``pytest`` run stays fast.

After a campaign run the results collected by the tests (cycles, faults hit,
failures) replace the section between the campaign markers in
``docs/reliability.md``; the rest of that page is written by hand.

Scale knobs (environment variables): ``KYMWATCH_CAMPAIGN_KILLS`` (kill cycles,
default 120), ``KYMWATCH_CAMPAIGN_EXAMPLES`` (model-based examples, default 40),
``KYMWATCH_CAMPAIGN_STEPS`` (steps per example, default 40),
``KYMWATCH_CAMPAIGN_WRITER_KILLS`` (writer-kill cycles, default 20),
``KYMWATCH_CAMPAIGN_DELETION_KILLS`` (kill cycles with deletions, default 60).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN = "<!-- campaign-results:begin -->"
END = "<!-- campaign-results:end -->"

_RESULTS: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--campaign`` (run the long reliability campaign)."""
    parser.addoption(
        "--campaign",
        action="store_true",
        default=False,
        help="run the long reliability campaign in tests/campaign (slow)",
    )


def campaign_enabled(config: pytest.Config) -> bool:
    """True when the run was asked for the campaign."""
    return bool(getattr(config.option, "campaign", False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the campaign tests unless ``--campaign`` was given."""
    if campaign_enabled(config):
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="long reliability campaign: run ./dev campaign")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
def campaign_record() -> Iterator[dict[str, Any]]:
    """A result row for docs/reliability.md; the test fills it, the session writes it."""
    row: dict[str, Any] = {"fault": "", "cycles": 0, "result": "failed", "notes": ""}
    yield row
    _RESULTS.append(row)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the campaign's results into docs/reliability.md."""
    if not campaign_enabled(session.config) or not _RESULTS or not DOC.exists():
        return
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "",
        f"Last campaign run: {when} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}); "
        f"pytest exit status {int(exitstatus)}.",
        "",
        "| campaign test | fault | cycles | result | notes |",
        "|---|---|---|---|---|",
    ]
    for row in _RESULTS:
        notes = str(row["notes"]).replace("|", "/").replace("\n", " ")
        lines.append(
            f"| `{row.get('test', '')}` | {row['fault']} | {row['cycles']} | {row['result']} "
            f"| {notes} |"
        )
    lines += ["", END]
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + "\n".join(lines) + tail)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Put the failure message of a campaign test into its result row."""
    report = yield
    row = getattr(item, "funcargs", {}).get("campaign_record")
    if row is not None and report.when == "call" and report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = str(getattr(crash, "message", report.longrepr)).splitlines()[0][:300]
        row["notes"] = f"{row['notes']} FAILED: {message}".strip()
    return report


@pytest.fixture(autouse=True)
def _name_result(request: pytest.FixtureRequest) -> None:
    """Let ``campaign_record`` rows carry the test's name."""
    if "campaign_record" in request.fixturenames:
        request.getfixturevalue("campaign_record")["test"] = request.node.name
