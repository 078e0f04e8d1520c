"""The service definitions live in the repository's top-level ``service/`` folder, are
what ``service install`` renders, and ship in the wheel as package data."""

from __future__ import annotations

import plistlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kymwatch.service import render_launchd_plist, render_systemd_template
from kymwatch.service.render import definition

REPO = Path(__file__).resolve().parents[1]
DEFINITIONS = [
    "systemd/system/kymwatch@.service",
    "systemd/user/kymwatch@.service",
    "launchd/org.kymflow.kymwatch.plist",
]


@pytest.mark.parametrize("name", DEFINITIONS)
def test_definitions_are_read_from_the_service_folder(name: str) -> None:
    """Each definition the renderer reads is the file under service/ in the repository."""
    assert definition(name) == (REPO / "service" / name).read_bytes()


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_rendered_unit_is_the_template_file_with_the_program_filled_in(
    tmp_path: Path, user: bool
) -> None:
    """`service install` changes nothing in the template unit but the program."""
    exe = tmp_path / "venv" / "bin" / "kymwatch"
    kind = "user" if user else "system"
    text = (REPO / "service" / "systemd" / kind / "kymwatch@.service").read_text()
    assert text.count("${kymwatch}") == 1 and "run %f" in text
    assert render_systemd_template(exe, user=user) == text.replace("${kymwatch}", str(exe))


def test_rendered_plist_keeps_every_key_of_the_base_file(tmp_path: Path) -> None:
    """The launchd job is the base plist of service/ plus the per-dataset keys."""
    base = plistlib.loads(
        (REPO / "service" / "launchd" / "org.kymflow.kymwatch.plist").read_bytes()
    )
    job = plistlib.loads(render_launchd_plist(tmp_path / "s.zarr", tmp_path / "kymwatch"))
    assert {k: job[k] for k in base} == base


@pytest.mark.integration
def test_the_wheel_ships_the_definitions(tmp_path: Path) -> None:
    """A wheel built from the checkout holds service/ as kymwatch/service/definitions/."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "hatchling" in proc.stderr:
        pytest.skip(f"the build backend cannot be installed here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("kymwatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for name in DEFINITIONS:
            packaged = zf.read(f"kymwatch/service/definitions/{name}")
            assert packaged == (REPO / "service" / name).read_bytes()
