"""The watch-mode decision: the store's mount from mountinfo, and inotify or polling for it."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from kymwatch.daemon.config import DaemonConfig
from kymwatch.daemon.mounts import (
    Mount,
    decide_watch_mode,
    find_mount,
    is_fuse,
    mount_of,
    parse_mountinfo,
    parse_mounts,
)
from kymwatch.daemon.polling import PollingWatcher, PollSettings
from kymwatch.daemon.sources import make_source

# A mountinfo as Linux writes it: optional fields before " - ", octal escapes in paths.
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 0:25 / / rw,relatime - overlay overlay rw,lowerdir=/l
30 27 8:1 / /data rw,relatime shared:1 - ext4 /dev/sda1 rw
31 30 0:40 / /data/lab\\040share rw,relatime shared:7 master:2 - nfs4 srv:/export rw,vers=4.2
32 30 0:41 / /data/mnt rw,nosuid,nodev,relatime - fuse /data/backing rw,user_id=0
33 30 0:42 / /data/ssh rw,nosuid,nodev - fuse.sshfs me@host:/x rw,user_id=0
34 30 0:43 / /data/usb rw - fuseblk /dev/sdb1 rw
35 30 0:44 / /data/mnt rw - ext4 /dev/sdc1 rw
36 27 0:45 / /data/tab\\011and\\134slash rw - cifs //srv/x rw
garbage line without separator
"""


def test_mountinfo_parses_types_sources_and_escaped_mount_points() -> None:
    """Mount points decode ``\\040`` (space), ``\\011`` and ``\\134``; optional fields
    before the separator are skipped; a malformed line is ignored."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 9
    assert Mount("/data/lab share", "nfs4", "srv:/export") in mounts
    assert Mount("/data/tab\tand\\slash", "cifs", "//srv/x") in mounts
    assert Mount("/data/ssh", "fuse.sshfs", "me@host:/x") in mounts


def test_longest_mount_point_prefix_wins_and_a_later_mount_covers_an_earlier() -> None:
    """The mount of a path is the longest mount point above it (not a mere string prefix),
    and the last one listed when two are stacked on the same point."""
    mounts = parse_mountinfo(MOUNTINFO)

    def fs(path: str) -> str | None:
        m = mount_of(path, mounts)
        return m.fs_type if m else None

    assert fs("/data/lab share/exp.zarr") == "nfs4"
    assert fs("/data/lab") == "ext4"  # "/data/lab share" is not above "/data/lab"
    assert fs("/data/ssh/store.zarr") == "fuse.sshfs"
    assert fs("/data/mnt/store.zarr") == "ext4"  # stacked over the fuse mount
    assert fs("/data") == "ext4"
    assert fs("/home/x") == "overlay"
    assert mount_of("/x", []) is None


def test_proc_mounts_format_is_parsed_too() -> None:
    """The fstab-like ``/proc/mounts`` (the fallback) yields the same mounts, escapes decoded."""
    text = "srv:/e /mnt/a\\040b nfs rw 0 0\n/dev/x / ext4 rw 0 0\nshort\n"
    assert parse_mounts(text) == [Mount("/mnt/a b", "nfs", "srv:/e"), Mount("/", "ext4", "/dev/x")]


@pytest.mark.parametrize(
    ("fs_type", "reason"),
    [
        ("fuse", "fuse"),
        ("fuse.sshfs", "fuse"),
        ("fuse.rclone", "fuse"),
        ("fuse.juicefs", "fuse"),
        ("fuse.mergerfs", "fuse"),
        ("fuseblk", "fuse"),
        ("nfs", "network"),
        ("nfs4", "network"),
        ("cifs", "network"),
        ("smb3", "network"),
        ("9p", "network"),
        ("ceph", "network"),
        ("lustre", "network"),
        ("virtiofs", "network"),
    ],
)
def test_fuse_and_network_file_systems_are_polled(fs_type: str, reason: str) -> None:
    """Every FUSE type and every network type is polled, with the reason and mount named."""
    d = decide_watch_mode(Mount("/mnt/x", fs_type))
    assert (d.mode, d.reason, d.fs_type, d.mount_point) == ("polling", reason, fs_type, "/mnt/x")


@pytest.mark.parametrize("fs_type", ["ext4", "xfs", "btrfs", "overlay", "tmpfs", "zfs", "apfs"])
def test_local_file_systems_use_inotify(fs_type: str) -> None:
    """A local file system is watched with inotify (reason ``local``)."""
    d = decide_watch_mode(Mount("/", fs_type))
    assert (d.mode, d.reason) == ("inotify", "local")


def test_inotify_option_overrides_fuse_and_network_but_polling_option_wins_anywhere() -> None:
    """``--inotify`` watches a FUSE/network store with inotify; ``--polling`` polls even a
    local store; without inotify at all, everything is polled."""
    fuse, local = Mount("/m", "fuse.sshfs"), Mount("/", "ext4")
    assert decide_watch_mode(fuse, inotify=True).mode == "inotify"
    assert decide_watch_mode(fuse, inotify=True).reason == "inotify_requested"
    assert decide_watch_mode(local, inotify=True).reason == "local"
    assert decide_watch_mode(local, polling=True).reason == "polling_requested"
    gone = decide_watch_mode(fuse, inotify=True, inotify_available=False)
    assert (gone.mode, gone.reason) == ("polling", "inotify_unavailable")


def test_unknown_mount_is_treated_as_local() -> None:
    """Without a readable mount table the store is watched as a local one (as before)."""
    d = decide_watch_mode(None)
    assert (d.mode, d.reason, d.fs_type, d.mount_point) == ("inotify", "local", "", "")


def test_is_fuse_matches_the_fuse_family_only() -> None:
    """``fuse``, ``fuse.<prog>`` and ``fuseblk`` are FUSE; ``fusectl`` (its control fs) is not."""
    assert all(map(is_fuse, ["fuse", "fuse.s3fs", "fuseblk"]))
    assert not any(map(is_fuse, ["fusectl", "ext4", "nfs"]))


def test_find_mount_resolves_symbolic_links_and_falls_back_to_proc_mounts(tmp_path: Path) -> None:
    """A store reached through a symbolic link is judged by its real place; an unreadable
    mountinfo falls back to the mounts file; neither readable gives None."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    target = os.path.realpath(real)
    info = tmp_path / "mountinfo"
    info.write_text(f"1 0 0:1 / / rw - ext4 /dev/a rw\n2 1 0:2 / {target} rw - fuse.s3fs b rw\n")
    m = find_mount(link / "store.zarr", mountinfo=str(info), mounts="/nonexistent")
    assert m == Mount(target, "fuse.s3fs", "b")
    fallback = tmp_path / "mounts"
    fallback.write_text(f"srv:/e {target} nfs4 rw 0 0\n")
    m = find_mount(link, mountinfo=str(tmp_path / "none"), mounts=str(fallback))
    assert m is not None and m.fs_type == "nfs4"
    assert find_mount(link, mountinfo=str(tmp_path / "a"), mounts=str(tmp_path / "b")) is None


def test_config_refuses_both_polling_and_inotify(tmp_path: Path) -> None:
    """Asking for both watch modes is a configuration error, not a silent choice."""
    with pytest.raises(ValueError, match="polling and inotify"):
        DaemonConfig(store=tmp_path, polling=True, inotify=True)


def test_make_source_polls_with_the_configured_settings_and_logs_the_decision(
    tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    """``--polling`` gives a polling source with the configured interval bounds and
    verification period, and logs ``watch_mode_chosen`` with its reason."""
    config = DaemonConfig(
        store=tmp_path,
        polling=True,
        poll_interval_s=0.5,
        poll_max_interval_s=7.0,
        poll_full_every=3,
    )
    source, decision = make_source(tmp_path, lambda _: None, config)
    assert isinstance(source, PollingWatcher)
    assert source.settings == PollSettings(0.5, 7.0, full_every=3)
    assert source.scanner.full_every == 3
    assert (decision.mode, decision.reason) == ("polling", "polling_requested")
    chosen = [e for e in captured_logs if e["event"] == "watch_mode_chosen"]
    assert [(e["watch_mode"], e["reason"]) for e in chosen] == [("polling", "polling_requested")]
    assert not [e for e in captured_logs if e["event"] == "polling_fallback"]
