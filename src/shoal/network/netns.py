"""Network namespaces kept alive by a bind mount, and running code inside one.

A namespace is created the way dockerd does it: a short-lived thread unshares its own network
namespace and bind-mounts /proc/self/task/<tid>/ns/net onto a file, so the namespace outlives
the thread and can be found again after a crash. Code runs inside a namespace in a thread that
setns()es first; the rest of the process stays in the host namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from shoal.runtime.mounts import is_mounted, unmount  # noqa: F401 - is_mounted: part of this module's API
from typing import TypeVar

from shoal import paths

CLONE_NEWNET = 0x40000000
MS_BIND = 4096

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def netns_dir() -> Path:
    return paths.run_root() / "netns"


def netns_path(container_id: str) -> Path:
    return netns_dir() / container_id


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def run_in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh OS thread and return its result (or raise its exception)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="shoal-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def create(path: Path) -> Path:
    """Make a new, empty network namespace pinned at `path` (loopback brought up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def make() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(source, str(path).encode(), b"none", MS_BIND, None), f"bind mount {path}")
        _link_up_loopback()

    try:
        run_in_thread(make)
    except BaseException:
        remove(path)
        raise
    return path


def _link_up_loopback() -> None:
    from shoal.network import rtnl

    with rtnl.Rtnl() as nl:
        nl.set_up(rtnl.LOOPBACK_INDEX)


def remove(path: Path) -> None:
    """Unmount and delete a pinned namespace; a missing one is fine (idempotent)."""
    unmount(path)
    path.unlink(missing_ok=True)


def run_in(path: Path | str, fn: Callable[[], T]) -> T:
    """Run fn inside the network namespace pinned at `path`, in a thread of its own."""

    def inside() -> T:
        fd = os.open(path, os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(fd)
        return fn()

    return run_in_thread(inside)


def socket_in(path: Path | str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that belongs to the namespace at `path` (it stays there when used from outside)."""
    return run_in(path, lambda: socket.socket(family, kind))


def list_pinned() -> list[Path]:
    d = netns_dir()
    return sorted(d.iterdir()) if d.is_dir() else []
