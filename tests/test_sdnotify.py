"""Tests for the systemd notification client."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kymwatch.daemon.sdnotify import Notifier, NotifyEnv, SystemdNotifier


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (AF_UNIX paths are limited to ~107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="kwsd-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def path_receiver(short_dir: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound to a file-system path, and that path."""
    address = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    yield address, sock
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound to an abstract name, and that name in ``@`` form."""
    name = f"kymwatch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    yield "@" + name, sock
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(65536).decode("utf-8")


def test_path_socket_receives_each_message(path_receiver: tuple[str, socket.socket]) -> None:
    """Messages go to a file-system NOTIFY_SOCKET as the documented KEY=VALUE lines."""
    address, sock = path_receiver
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert _recv(sock) == "READY=1"
        assert notifier.status("indexing 3 records")
        assert _recv(sock) == "STATUS=indexing 3 records"
        assert notifier.watchdog()
        assert _recv(sock) == "WATCHDOG=1"
        assert notifier.stopping()
        assert _recv(sock) == "STOPPING=1"
        assert notifier.ready(status="idle")
        assert _recv(sock) == "READY=1\nSTATUS=idle"
        assert notifier.extend_timeout(1.5)
        assert _recv(sock) == "EXTEND_TIMEOUT_USEC=1500000"


def test_abstract_socket_receives_messages(
    abstract_receiver: tuple[str, socket.socket],
) -> None:
    """An ``@name`` NOTIFY_SOCKET is reached in the abstract namespace (leading NUL)."""
    address, sock = abstract_receiver
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert _recv(sock) == "READY=1"
        assert notifier.send("STATUS=raw")
        assert _recv(sock) == "STATUS=raw"


def test_socket_is_kept_open_between_sends(path_receiver: tuple[str, socket.socket]) -> None:
    """Consecutive notifications reuse one client socket (same sender address)."""
    address, sock = path_receiver
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        notifier.watchdog()
        _, first = sock.recvfrom(1024)
        notifier.watchdog()
        _, second = sock.recvfrom(1024)
        # An unbound AF_UNIX client autobinds on first send only when it is the same socket.
        assert first == second


def test_disabled_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET every call is a silent no-op returning False."""
    with capture_logs() as logs:
        notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "30000000"})
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
        assert notifier.watchdog_interval() is None
        notifier.close()
    assert logs == []


def test_empty_notify_socket_counts_as_unset() -> None:
    """An empty NOTIFY_SOCKET disables the notifier instead of failing."""
    assert not SystemdNotifier.from_env({"NOTIFY_SOCKET": ""}).enabled


def test_unsupported_address_is_disabled_with_a_warning() -> None:
    """A relative NOTIFY_SOCKET is not usable: disabled, and said so once in the log."""
    with capture_logs() as logs:
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "relative/notify"})
    assert not notifier.enabled
    assert [e["event"] for e in logs] == ["sd_notify_unsupported_address"]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """The keep-alive interval is WATCHDOG_USEC / 2, in seconds."""
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier.from_env(env).watchdog_interval() == 15.0


def test_watchdog_interval_with_our_pid() -> None:
    """A WATCHDOG_PID equal to our pid keeps the watchdog enabled."""
    env = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "5000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    assert SystemdNotifier.from_env(env).watchdog_interval() == 2.5


def test_watchdog_pid_mismatch_disables_watchdog() -> None:
    """A WATCHDOG_PID naming another process means the watchdog is not ours."""
    env = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    notifier = SystemdNotifier.from_env(env)
    assert notifier.enabled
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_bad_watchdog_usec_disables_watchdog(usec: str) -> None:
    """A missing, zero, negative or non-numeric WATCHDOG_USEC means no watchdog."""
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": usec}
    assert SystemdNotifier.from_env(env).watchdog_interval() is None


def test_send_failure_returns_false_and_logs_once(short_dir: Path) -> None:
    """A send to a missing socket never raises and logs sd_notify_failed only once."""
    address = str(short_dir / "nobody-listens")
    with capture_logs() as logs, SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as n:
        assert n.ready() is False
        assert n.status("still failing") is False
    failures = [e for e in logs if e["event"] == "sd_notify_failed"]
    assert len(failures) == 1
    assert failures[0]["address"] == address
    assert failures[0]["log_level"] == "warning"


def test_sending_recovers_once_the_socket_appears(short_dir: Path) -> None:
    """After a failed send the next send opens a fresh socket and succeeds."""
    address = str(short_dir / "late")
    with capture_logs(), SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.watchdog() is False
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(address)
        receiver.settimeout(10)
        try:
            assert notifier.watchdog() is True
            assert _recv(receiver) == "WATCHDOG=1"
        finally:
            receiver.close()


def test_notify_formats_fields(path_receiver: tuple[str, socket.socket]) -> None:
    """notify() upper-cases names, maps booleans to 1/0 and flattens line breaks."""
    address, sock = path_receiver
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.notify(status="two\nlines", ready=True, reloading=False)
        assert _recv(sock) == "STATUS=two lines\nREADY=1\nRELOADING=0"
        assert notifier.notify() is False


def test_notify_rejects_invalid_field_names() -> None:
    """A field name that is not [A-Z][A-Z0-9_]* raises ValueError."""
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify"})
    with pytest.raises(ValueError, match="field name"):
        notifier.notify(**{"bad-name": 1})


def test_notify_env_parses_abstract_and_path_addresses() -> None:
    """NotifyEnv maps ``@name`` to a NUL-prefixed name and keeps absolute paths."""
    assert NotifyEnv.parse({"NOTIFY_SOCKET": "@x"}).socket_address() == "\0x"
    assert NotifyEnv.parse({"NOTIFY_SOCKET": "/run/n"}).socket_address() == "/run/n"
    assert NotifyEnv.parse({"NOTIFY_SOCKET": "@"}).socket_address() is None
    assert NotifyEnv.parse({}).socket_address() is None


def test_systemd_notifier_satisfies_the_notifier_protocol() -> None:
    """SystemdNotifier can be passed wherever a Notifier is expected."""
    notifier: Notifier = SystemdNotifier.from_env({})
    assert notifier.watchdog_interval() is None


@pytest.mark.integration
def test_concurrent_senders_deliver_every_message(
    path_receiver: tuple[str, socket.socket],
) -> None:
    """Many threads notifying at once each deliver a whole datagram."""
    address, sock = path_receiver
    n_threads, per_thread = 8, 25
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        results: list[bool] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            for j in range(per_thread):
                ok = notifier.status(f"t{i}-{j}")
                with lock:
                    results.append(ok)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        received: set[str] = set()
        for t in threads:
            t.start()
        # Drain while sending so the receive queue never fills.
        while len(received) < n_threads * per_thread:
            received.add(_recv(sock))
        for t in threads:
            t.join()
    assert all(results)
    expected = {f"STATUS=t{i}-{j}" for i in range(n_threads) for j in range(per_thread)}
    assert received == expected
