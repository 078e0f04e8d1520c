"""What the measured kymwatch build offers, read from ``kymwatch run --help``.

The benchmarks run on whatever code is checked out; an option that does not exist
yet in this build (``--settle-ms``, ``--inotify``) is reported as "not available in
this build" instead of failing the section.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys


@functools.cache
def help_text(command: str = "run") -> str:
    """``kymwatch <command> --help`` of the measured build ("" if it cannot run)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "kymwatch", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def has_option(option: str, command: str = "run") -> bool:
    """True if ``kymwatch <command>`` accepts ``option`` (e.g. ``--settle-ms``)."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text(command)) is not None


def has_command(command: str) -> bool:
    """True if ``kymwatch`` has the sub-command ``command``."""
    return bool(help_text(command))


def summary() -> dict[str, bool]:
    """The feature flags recorded with every run."""
    return {
        "settle_ms": has_option("--settle-ms"),
        "polling": has_option("--polling"),
        "inotify_option": has_option("--inotify"),
        "indexers_option": has_option("--indexers"),
    }
