"""Which mount a store is on, and whether the OS's notifications can see its writes.

inotify reports only the changes made through this kernel's VFS: a write by another
machine to a share, or through the backing folder of a FUSE mount, produces no event
on the mount. So the watch mode is decided from the store's mount
(:func:`find_mount`, from ``/proc/self/mountinfo``; on macOS from the ``mount``
command) by :func:`decide_watch_mode`, a pure function: FUSE (``fuse``, ``fuse.*``,
``fuseblk``, macFUSE) and network or host-shared file systems are polled unless the
user insists (``--inotify``); other stores get the platform's own notifications
(:func:`native_watch_mode`: inotify on Linux, FSEvents on macOS — the same applies to
FSEvents, which sees only this machine's writes too).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NETWORK_FS",
    "Mount",
    "WatchDecision",
    "decide_watch_mode",
    "find_mount",
    "is_fuse",
    "mount_of",
    "native_watch_mode",
    "parse_bsd_mount",
    "parse_mountinfo",
    "parse_mounts",
]

NETWORK_FS = frozenset(
    {
        # network file systems
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "davfs", "9p",
        # cluster / parallel file systems (other nodes write)
        "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "gfs2", "ocfs2", "orangefs",
        "pvfs2", "panfs", "cvfs",
        # folders shared by a hypervisor host or Windows (WSL)
        "virtiofs", "vboxsf", "vmhgfs", "prl_fs", "drvfs",
        # macOS: AFP and WebDAV shares (smbfs and nfs are listed above)
        "afpfs", "webdav",
    }
)  # fmt: skip
"""File-system types on which writes made elsewhere are not seen by inotify."""

MOUNTINFO = "/proc/self/mountinfo"
MOUNTS = "/proc/mounts"

_ESCAPE = re.compile(r"\\([0-7]{3})")
_BSD_LINE = re.compile(r"^(.*) on (/.*?) \(([^,)]+)[,)]")
MOUNT_COMMAND = ("/sbin/mount",)
"""How the mounts are listed on macOS (no ``/proc``)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount as the kernel lists it.

    Attributes:
        mount_point: Where it is mounted (escapes such as ``\\040`` decoded).
        fs_type: The file-system type (``ext4``, ``fuse``, ``fuse.sshfs``, ``nfs4``).
        source: What is mounted (a device, ``server:/export``, a FUSE program's source).
    """

    mount_point: str
    fs_type: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class WatchDecision:
    """How a store is watched, and why.

    Attributes:
        mode: ``inotify`` or ``polling``.
        reason: ``local`` (inotify on a local file system), ``fuse``, ``network``,
            ``polling_requested`` (``--polling``), ``inotify_requested``
            (``--inotify`` on a FUSE/network mount), ``inotify_unavailable``.
        fs_type: The store's file-system type ("" if unknown).
        mount_point: The store's mount point ("" if unknown).
    """

    mode: str
    reason: str
    fs_type: str = ""
    mount_point: str = ""


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` text, in its order (later mounts on
    the same point are on top). Malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(Mount(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])))
        except (ValueError, IndexError):
            continue
    return mounts


def parse_mounts(text: str) -> list[Mount]:
    """The mounts of a ``/proc/mounts`` (fstab-like) text, in its order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape(fields[1]), fields[2], _unescape(fields[0])))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding the absolute, resolved ``path``: the longest mount point that
    is ``path`` or a folder above it (the last listed, if stacked)."""
    best: Mount | None = None
    for m in mounts:
        point = m.mount_point
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = m
    return best


def parse_bsd_mount(text: str) -> list[Mount]:
    """The mounts of macOS's ``mount`` output (``//me@nas/lab on /Volumes/lab (smbfs,
    nodev, nosuid, mounted by me)``), in its order."""
    mounts = []
    for line in text.splitlines():
        m = _BSD_LINE.match(line)
        if m:
            mounts.append(Mount(m.group(2), m.group(3).strip(), m.group(1)))
    return mounts


def find_mount(
    path: Path,
    mountinfo: str = MOUNTINFO,
    mounts: str = MOUNTS,
    *,
    platform: str = sys.platform,
    mount_command: tuple[str, ...] = MOUNT_COMMAND,
) -> Mount | None:
    """The mount of ``path`` (symbolic links resolved), from ``mountinfo``, else
    ``mounts``; on macOS from the ``mount`` command; None where none can be read."""
    target = os.path.realpath(path)
    for file, parse in ((mountinfo, parse_mountinfo), (mounts, parse_mounts)):
        try:
            with open(file, encoding="utf-8", errors="surrogateescape") as f:
                listed = parse(f.read())
        except OSError:
            continue
        if listed:
            return mount_of(target, listed)
    if platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                mount_command, capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return mount_of(target, parse_bsd_mount(out))
    return None


def is_fuse(fs_type: str) -> bool:
    """True for FUSE file systems: ``fuse``, ``fuse.<program>``, ``fuseblk``; on macOS
    ``macfuse`` / ``osxfuse`` (and their ``fuse-t`` NFS bridge shows as ``nfs``)."""
    return fs_type in ("fuse", "fuseblk", "macfuse", "osxfuse") or fs_type.startswith("fuse.")


def native_watch_mode(platform: str = sys.platform) -> str | None:
    """The OS's own change notification for ``platform``: ``inotify`` on Linux,
    ``fsevents`` on macOS, None elsewhere (the daemon polls)."""
    if platform.startswith("linux"):
        return "inotify"
    if platform == "darwin":
        return "fsevents"
    return None


def decide_watch_mode(
    mount: Mount | None,
    *,
    polling: bool = False,
    inotify: bool = False,
    inotify_available: bool = True,
    native: str = "inotify",
) -> WatchDecision:
    """Choose the OS's notifications (inotify, FSEvents) or polling for a store on ``mount``.

    Args:
        mount: The store's mount (None: unknown, treated as local).
        polling: The user asked for polling (``--polling``).
        inotify: The user asked for the OS's notifications (``--inotify``): a FUSE or
            network file system known to see only local writes.
        inotify_available: Whether the OS's notifications can be used at all.
        native: Their mode's name (:func:`native_watch_mode`): ``inotify`` on Linux,
            ``fsevents`` on macOS. Neither sees writes made by other machines, so
            network and FUSE file systems are polled on both.
    """
    fs_type = mount.fs_type if mount else ""
    point = mount.mount_point if mount else ""
    remote = "fuse" if is_fuse(fs_type) else "network" if fs_type in NETWORK_FS else None
    if polling:
        return WatchDecision("polling", "polling_requested", fs_type, point)
    if not inotify_available:
        return WatchDecision("polling", "inotify_unavailable", fs_type, point)
    if remote is None:
        return WatchDecision(native, "local", fs_type, point)
    if inotify:
        return WatchDecision(native, "inotify_requested", fs_type, point)
    return WatchDecision("polling", remote, fs_type, point)
