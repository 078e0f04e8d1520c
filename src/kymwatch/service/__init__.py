"""Run kymwatch as a service: a systemd template unit instance or a launchd job per dataset.

Used by ``kymwatch service install|uninstall``. Each dataset gets a stable name
(:mod:`.naming`: ``kymwatch@<systemd-escape --path STORE>.service``, or a launchd
label), its files are rendered from the definitions in the repository's top-level
``service/`` folder, shipped as package data (:mod:`.render`), and written where
the service manager looks (:mod:`.installer`); :mod:`.command` is the CLI glue.
"""

from typing import TYPE_CHECKING

from kymwatch._lazy import lazy_exports
from kymwatch.service.command import add_service_parser, run_service_command

if TYPE_CHECKING:  # imported on first use (the CLI's other commands need none of them)
    from kymwatch.service.errors import (
        ExecutableNotFoundError,
        ServiceNotInstalledError,
        UnsupportedPathError,
        UnsupportedPlatformError,
    )
    from kymwatch.service.installer import InstallResult, install, uninstall
    from kymwatch.service.locate import (
        Manager,
        default_executable,
        default_unit_dir,
        detect_manager,
        validate_store,
    )
    from kymwatch.service.naming import (
        launchd_label,
        service_slug,
        systemd_escape_path,
        systemd_unit_name,
    )
    from kymwatch.service.render import (
        Executable,
        launchd_log_path,
        render_launchd_plist,
        render_systemd_dropin,
        render_systemd_template,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ExecutableNotFoundError": "errors",
        "ServiceNotInstalledError": "errors",
        "UnsupportedPathError": "errors",
        "UnsupportedPlatformError": "errors",
        "InstallResult": "installer",
        "install": "installer",
        "uninstall": "installer",
        "Manager": "locate",
        "default_executable": "locate",
        "default_unit_dir": "locate",
        "detect_manager": "locate",
        "validate_store": "locate",
        "launchd_label": "naming",
        "service_slug": "naming",
        "systemd_unit_name": "naming",
        "Executable": "render",
        "launchd_log_path": "render",
        "render_launchd_plist": "render",
        "render_systemd_dropin": "render",
        "render_systemd_template": "render",
        "systemd_escape_path": "naming",
    },
)

__all__ = [
    "Executable",
    "ExecutableNotFoundError",
    "InstallResult",
    "Manager",
    "ServiceNotInstalledError",
    "UnsupportedPathError",
    "UnsupportedPlatformError",
    "add_service_parser",
    "default_executable",
    "default_unit_dir",
    "detect_manager",
    "install",
    "launchd_label",
    "launchd_log_path",
    "render_launchd_plist",
    "render_systemd_dropin",
    "render_systemd_template",
    "run_service_command",
    "service_slug",
    "systemd_escape_path",
    "systemd_unit_name",
    "uninstall",
    "validate_store",
]
