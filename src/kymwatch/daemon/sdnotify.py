"""A small client for the systemd notification protocol (``sd_notify``).

Under systemd with ``Type=notify`` the service manager passes a datagram socket
in ``$NOTIFY_SOCKET``; the daemon sends newline-separated ``KEY=VALUE`` lines to
it: ``READY=1`` once it serves, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` as a keep-alive when ``WatchdogSec=`` is set, ``STOPPING=1`` on
shutdown. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the
daemon can call the notifier unconditionally.

The address is a file-system path (``/run/systemd/notify``) or an abstract
socket name written with a leading ``@`` (sent with a leading NUL byte). No
systemd library is needed: it is one ``AF_UNIX``/``SOCK_DGRAM`` socket, opened on
first use, kept open and guarded by a lock so any thread may notify. A failed
send never raises: the first failure is logged (``sd_notify_failed``) and the
call returns False.

Example:
    notifier = SystemdNotifier.from_env()
    notifier.status("reconciling")  # returns False, silently, outside systemd
    notifier.ready()
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import structlog

__all__ = ["Notifier", "NotifyEnv", "SystemdNotifier"]

log = structlog.get_logger(__name__)

_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SEND_TIMEOUT_S = 2.0


class Notifier(Protocol):
    """What the daemon needs from a service-manager notifier (a seam for tests)."""

    def ready(self, status: str | None = None) -> bool:
        """Tell the manager start-up is complete."""
        ...

    def status(self, text: str) -> bool:
        """Publish a one-line human-readable status."""
        ...

    def watchdog(self) -> bool:
        """Send a watchdog keep-alive."""
        ...

    def stopping(self) -> bool:
        """Tell the manager the daemon is shutting down."""
        ...

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives, or None when no watchdog is expected."""
        ...


@dataclass(frozen=True, slots=True)
class NotifyEnv:
    """The notification settings systemd passes in the environment.

    Attributes:
        address: The socket address as given in ``$NOTIFY_SOCKET`` (path or
            ``@abstract``), or None when unset or empty.
        watchdog_usec: ``$WATCHDOG_USEC`` when it is a positive integer, else None.
        watchdog_pid: ``$WATCHDOG_PID`` when it is a positive integer, else None.
    """

    address: str | None
    watchdog_usec: int | None
    watchdog_pid: int | None

    @classmethod
    def parse(cls, environ: Mapping[str, str]) -> NotifyEnv:
        """Read the settings from an environment mapping.

        Args:
            environ: Usually ``os.environ``.

        Returns:
            The parsed settings; malformed numbers count as unset.
        """
        return cls(
            address=environ.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_positive_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_positive_int(environ.get("WATCHDOG_PID")),
        )

    def socket_address(self) -> str | None:
        """The address in the form ``socket.sendto`` takes, or None if unusable.

        ``/path`` is used as is, ``@name`` becomes ``"\\0name"`` (Linux abstract
        namespace). Other forms (relative paths, ``vsock:``) are not supported.
        """
        if self.address is None:
            return None
        if self.address.startswith("/"):
            return self.address
        if self.address.startswith("@") and len(self.address) > 1:
            return "\0" + self.address[1:]
        return None


def _positive_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    # One field per line: a line break inside a value would start a bogus field.
    return " ".join(str(value).splitlines())


class SystemdNotifier:
    """Sends ``sd_notify`` messages to ``$NOTIFY_SOCKET``; a no-op without it.

    Build it with :meth:`from_env`. All methods are thread-safe and never raise
    because of the socket; they return True when the datagram was sent.

    Args:
        env: The parsed environment settings.
    """

    __slots__ = ("_address", "_env", "_failure_logged", "_lock", "_sock")

    def __init__(self, env: NotifyEnv) -> None:
        self._env = env
        self._address = env.socket_address()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failure_logged = False
        if env.address is not None and self._address is None:
            log.warning("sd_notify_unsupported_address", address=env.address)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """Create a notifier from the process environment.

        Args:
            environ: The environment to read (``os.environ`` by default).

        Returns:
            A notifier; disabled when ``$NOTIFY_SOCKET`` is unset or unusable.
        """
        return cls(NotifyEnv.parse(environ))

    @property
    def env(self) -> NotifyEnv:
        """The settings this notifier was built from."""
        return self._env

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (we run under systemd)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``, in seconds.

        Returns:
            Half of ``$WATCHDOG_USEC`` (as ``sd_watchdog_enabled`` advises), or
            None when notifications are disabled, no watchdog is configured, or
            ``$WATCHDOG_PID`` names another process.
        """
        env = self._env
        if not self.enabled or env.watchdog_usec is None:
            return None
        if env.watchdog_pid is not None and env.watchdog_pid != os.getpid():
            return None
        return env.watchdog_usec / 2 / 1_000_000

    def send(self, msg: str) -> bool:
        """Send a raw notification message (``KEY=VALUE`` lines).

        Args:
            msg: The message, e.g. ``"READY=1\\nSTATUS=idle"``.

        Returns:
            True if the datagram was sent; False when disabled or on failure.
        """
        address = self._address
        if address is None:
            return False
        data = msg.encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.settimeout(_SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(data, address)
            except OSError as e:
                self._drop_socket()
                if not self._failure_logged:
                    self._failure_logged = True
                    log.warning(
                        "sd_notify_failed",
                        address=self._env.address,
                        error=f"{type(e).__name__}: {e}",
                    )
                return False
        return True

    def notify(self, **fields: object) -> bool:
        """Send one message made of fields, e.g. ``notify(ready=1, status="idle")``.

        Keyword names are upper-cased into systemd field names (``READY``,
        ``STATUS``, ``EXTEND_TIMEOUT_USEC``...); True/False become ``1``/``0``;
        line breaks inside a value become spaces.

        Returns:
            True if sent; False when disabled, on failure, or with no fields.

        Raises:
            ValueError: A keyword is not a valid field name.
        """
        lines = []
        for key, value in fields.items():
            name = key.upper()
            if not _FIELD_NAME.match(name):
                raise ValueError(f"invalid sd_notify field name: {key!r}")
            lines.append(f"{name}={_format_value(value)}")
        if not lines:
            return False
        return self.send("\n".join(lines))

    def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1`` (and ``STATUS=`` when given): start-up is complete."""
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        """Send ``STATUS=<text>``, shown by ``systemctl status``."""
        return self.notify(status=text)

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1``, the keep-alive for ``WatchdogSec=``."""
        return self.notify(watchdog=1)

    def stopping(self) -> bool:
        """Send ``STOPPING=1``: shutdown has begun."""
        return self.notify(stopping=1)

    def extend_timeout(self, seconds: float) -> bool:
        """Send ``EXTEND_TIMEOUT_USEC``: ask for more time to start or stop.

        Args:
            seconds: How long from now the current start/stop may still take.
        """
        return self.notify(extend_timeout_usec=max(0, int(seconds * 1_000_000)))

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        with self._lock:
            self._drop_socket()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SystemdNotifier(address={self._env.address!r}, enabled={self.enabled})"
