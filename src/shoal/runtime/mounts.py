"""The container root filesystem: an overlay of the image's layers (read-only lowerdirs) and the
container's own upper dir. mount(2) straight through libc: no fork, and the option string is
exactly ours (it is limited to one page, so long paths are made relative to a common parent)."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from shoal.errors import ShoalError

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_PAGE = 4096
_cwd_lock = threading.Lock()


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise ShoalError(f"mount {fstype} on {target}: {os.strerror(err)}")


def mount_overlay(lowerdirs: list[Path], upper: Path, work: Path, target: Path) -> None:
    lowers = [str(p) for p in lowerdirs]
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},index=off"
    if len(options) < _PAGE - 1:
        _mount("overlay", str(target), "overlay", 0, options)
        return
    common = Path(os.path.commonpath([*lowers, str(upper), str(work)]))
    rel = [os.path.relpath(p, common) for p in lowers]
    options = (f"lowerdir={':'.join(rel)},upperdir={os.path.relpath(upper, common)},"
               f"workdir={os.path.relpath(work, common)},index=off")
    if len(options) >= _PAGE - 1:
        raise ShoalError(f"too many image layers to mount ({len(lowers)})")
    with _cwd_lock:
        old = os.getcwd()
        os.chdir(common)
        try:
            _mount("overlay", str(target), "overlay", 0, options)
        finally:
            os.chdir(old)


def is_mounted(target: Path) -> bool:
    wanted = str(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == wanted for line in f)


def unmount(target: Path) -> None:
    """Lazy unmount (idempotent): the target may still be busy for a moment after exit."""
    while is_mounted(target):
        if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (22, 2):  # EINVAL/ENOENT: not a mount point (any more)
                return
            raise ShoalError(f"umount {target}: {os.strerror(err)}")


def mounts_under(prefix: Path) -> list[str]:
    base = str(prefix).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [p for p in (line.split()[4] for line in f) if p.startswith(base) or p == base[:-1]]
