"""Errors of ``kymwatch service``.

They derive from :class:`kymwatch.errors.KymwatchError` and from the matching
builtin, like the rest of kymwatch's errors, so the CLI reports them as bad
input (one line, exit status 2).
"""

from __future__ import annotations

from kymwatch.errors import KymwatchError

__all__ = [
    "ExecutableNotFoundError",
    "ServiceNotInstalledError",
    "UnknownUserError",
    "UnsupportedPathError",
    "UnsupportedPlatformError",
]


class UnsupportedPlatformError(KymwatchError, RuntimeError):
    """No supported service manager (systemd or launchd) on this platform."""


class ServiceNotInstalledError(KymwatchError, FileNotFoundError):
    """``uninstall`` found no service file for the dataset."""


class ExecutableNotFoundError(KymwatchError, FileNotFoundError):
    """The program the service should run does not exist or is not executable."""


class UnsupportedPathError(KymwatchError, ValueError):
    """A path or name cannot be written into a service file (control characters, quotes)."""


class UnknownUserError(KymwatchError, LookupError):
    """``--run-as`` names an account this machine does not have."""
