"""Tests for the daemon's rotating, reopening log file handler."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from kymwatch.logfile import DEFAULT_BACKUP_COUNT, DEFAULT_MAX_BYTES, LogFileHandler


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under the common umask 022, restoring the previous one."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def handlers() -> Iterator[list[LogFileHandler]]:
    """A list whose handlers are closed after the test."""
    created: list[LogFileHandler] = []
    yield created
    for handler in created:
        handler.close()


def _emit(handler: LogFileHandler, message: str) -> None:
    record = logging.makeLogRecord({"msg": message, "levelno": logging.INFO, "levelname": "INFO"})
    handler.handle(record)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_defaults_are_ten_mebibytes_and_five_backups(
    tmp_path: Path, handlers: list[LogFileHandler]
) -> None:
    """Without arguments the handler rotates at 10 MiB and keeps five backups."""
    assert DEFAULT_MAX_BYTES == 10 * 1024 * 1024
    assert DEFAULT_BACKUP_COUNT == 5
    handler = LogFileHandler(tmp_path / "k.log")
    handlers.append(handler)
    assert handler.rotates


def test_writes_one_line_per_record(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """Each record becomes one newline-terminated formatted line, appended."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    _emit(handler, '{"event": "a"}')
    _emit(handler, '{"event": "b"}')
    assert path.read_text(encoding="utf-8") == 'INFO {"event": "a"}\nINFO {"event": "b"}\n'


def test_rotates_before_exceeding_max_bytes(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """A record that would push the file past max_bytes goes to a fresh file after rotation."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=30, backup_count=3)
    handlers.append(handler)
    for i in range(3):
        _emit(handler, f"line-{i:03d}")  # 9 bytes each with the newline
    assert _lines(path) == ["line-000", "line-001", "line-002"]
    assert not handler.backup_path(1).exists()
    _emit(handler, "line-003")  # 27 + 9 > 30
    assert _lines(path) == ["line-003"]
    assert _lines(handler.backup_path(1)) == ["line-000", "line-001", "line-002"]
    assert path.stat().st_size <= 30


def test_keeps_only_backup_count_files(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """Rotation shifts .1 → .2 → ... and drops what would exceed backup_count."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=5, backup_count=2)
    handlers.append(handler)
    for i in range(5):
        _emit(handler, f"r{i}")  # 3 bytes each: every second record rotates
    assert _lines(path) == ["r4"]
    assert _lines(handler.backup_path(1)) == ["r3"]
    assert _lines(handler.backup_path(2)) == ["r2"]
    assert not handler.backup_path(3).exists()


def test_oversized_record_is_written_without_looping(
    tmp_path: Path, handlers: list[LogFileHandler]
) -> None:
    """A single record larger than max_bytes is written whole into an empty file."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=10, backup_count=1)
    handlers.append(handler)
    _emit(handler, "x" * 50)
    assert _lines(path) == ["x" * 50]
    assert not handler.backup_path(1).exists()


def test_zero_backup_count_never_rotates(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """backup_count=0 disables size rotation, as in the standard library."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=5, backup_count=0)
    handlers.append(handler)
    for i in range(4):
        _emit(handler, f"r{i}")
    assert _lines(path) == ["r0", "r1", "r2", "r3"]
    assert not handler.rotates


def test_reopens_after_external_rename(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """After logrotate renames the file, the next record starts a new file at the path."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    _emit(handler, "before")
    moved = tmp_path / "k.log-20261125"
    path.rename(moved)
    _emit(handler, "after")
    assert _lines(moved) == ["before"]
    assert _lines(path) == ["after"]


def test_reopens_after_external_removal(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """After the file is deleted, the next record recreates it."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    _emit(handler, "before")
    path.unlink()
    _emit(handler, "after")
    assert _lines(path) == ["after"]


def test_store_deleted_while_the_log_is_reopened_is_not_recreated(
    tmp_path: Path, handlers: list[LogFileHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store deleted between the handler's check of the log folder and its reopening
    (the check still saw the folder) is not recreated: the open file keeps the lines."""
    store = tmp_path / "store.zarr"
    path = store / "index" / "kymwatch.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    _emit(handler, "before")
    shutil.rmtree(store)
    monkeypatch.setattr(Path, "is_dir", lambda self: True)  # the check ran before the rmtree
    _emit(handler, "after")
    monkeypatch.undo()
    assert not store.exists()


def test_a_log_kept_open_while_reopening_is_not_allowed(
    tmp_path: Path, handlers: list[LogFileHandler]
) -> None:
    """While ``reopen_if`` says no (a store being deleted), a removed log file is not
    created again: the lines go to the open file; once it says yes, the path is reopened."""
    path = tmp_path / "k.log"
    allowed = [False]
    handler = LogFileHandler(path, reopen_if=lambda: allowed[0])
    handlers.append(handler)
    _emit(handler, "before")
    path.unlink()
    _emit(handler, "while deleting")
    assert not path.exists()
    allowed[0] = True
    _emit(handler, "after")
    assert _lines(path) == ["after"]


def test_a_store_log_is_reopened_only_while_the_store_is_whole(tmp_path: Path) -> None:
    """The daemon's log inside a store: after a logrotate it is reopened; once the store's
    ``images/`` is gone (``rm -rf`` under way) it is not created again."""
    from kymwatch.logconfig import configure_logging

    store = tmp_path / "store.zarr"
    (store / "images").mkdir(parents=True)
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    log_file = store / "index" / "kymwatch.log"
    root = logging.getLogger()
    saved = (structlog.get_config(), list(root.handlers), root.level)
    configure_logging(level="info", log_file=log_file, console="none")
    logger = logging.getLogger("kymwatch.test")
    try:
        logger.info("first")
        log_file.rename(log_file.with_name("kymwatch.log.1"))
        logger.info("after logrotate")
        assert log_file.exists()
        log_file.unlink()
        (store / "images").rmdir()
        logger.info("while the store is deleted")
        assert not log_file.exists()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        config, handlers, level = saved
        structlog.configure(**config)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_reopens_when_path_is_replaced(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """A different file moved onto the path (new inode) is appended to, not the old one."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    _emit(handler, "first")
    replacement = tmp_path / "other"
    replacement.write_text("header\n", encoding="utf-8")
    old = tmp_path / "old"
    path.rename(old)
    replacement.rename(path)
    _emit(handler, "second")
    assert _lines(path) == ["header", "second"]
    assert _lines(old) == ["first"]


def test_after_copytruncate_size_restarts(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """After an external truncate (copytruncate) records go to the start and size is re-read."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=20, backup_count=1)
    handlers.append(handler)
    _emit(handler, "aaaaaaaa")
    _emit(handler, "bbbbbbbb")
    os.truncate(path, 0)
    _emit(handler, "cccccccc")
    assert _lines(path) == ["cccccccc"]
    assert not handler.backup_path(1).exists()


def test_new_file_mode_is_0640(
    tmp_path: Path, umask_022: None, handlers: list[LogFileHandler]
) -> None:
    """A created log file is owner rw, group r, nothing for others."""
    path = tmp_path / "k.log"
    handlers.append(LogFileHandler(path))
    assert _mode(path) == 0o640


def test_rotated_and_reopened_files_keep_the_mode(
    tmp_path: Path, umask_022: None, handlers: list[LogFileHandler]
) -> None:
    """Files created by rotation and by reopening also get mode 0640."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path, max_bytes=4, backup_count=1)
    handlers.append(handler)
    _emit(handler, "abc")
    _emit(handler, "def")  # rotates
    assert _mode(path) == 0o640
    assert _mode(handler.backup_path(1)) == 0o640
    path.unlink()
    _emit(handler, "ghi")  # reopens
    assert _mode(path) == 0o640


def test_umask_can_only_narrow_the_mode(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """A stricter umask removes further bits; it never widens the mode."""
    previous = os.umask(0o077)
    try:
        handlers.append(LogFileHandler(tmp_path / "k.log"))
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "k.log") == 0o600


def test_existing_world_writable_file_is_narrowed(
    tmp_path: Path, handlers: list[LogFileHandler]
) -> None:
    """Opening an existing 0666 log file narrows it to the handler's mode."""
    path = tmp_path / "k.log"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(0o666)
    handler = LogFileHandler(path)
    handlers.append(handler)
    _emit(handler, "new")
    assert _mode(path) == 0o640
    assert _lines(path) == ["old", "new"]


def test_world_writable_mode_is_refused(tmp_path: Path) -> None:
    """A mode that grants write access to others raises ValueError."""
    with pytest.raises(ValueError, match="world-writable"):
        LogFileHandler(tmp_path / "k.log", mode=0o662)


def test_delay_opens_at_first_record(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """With delay=True the file (and its folder) appear only at the first record."""
    path = tmp_path / "index" / "k.log"
    handler = LogFileHandler(path, delay=True)
    handlers.append(handler)
    assert not path.exists()
    _emit(handler, "hello")
    assert _lines(path) == ["hello"]


def test_works_through_a_logger(tmp_path: Path, handlers: list[LogFileHandler]) -> None:
    """The handler plugs into a standard logger and honours levels."""
    path = tmp_path / "k.log"
    handler = LogFileHandler(path)
    handlers.append(handler)
    logger = logging.getLogger("kymwatch.test_logfile")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.debug("hidden")
        logger.info("shown %d", 1)
    finally:
        logger.removeHandler(handler)
    assert _lines(path) == ["shown 1"]
