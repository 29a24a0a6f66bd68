"""Where shoal keeps its state. Everything lives under one root so a crash can be cleaned up.

The roots are root's alone (0700), as Docker's /var/lib/docker is (0710 root:root): unpacked
layers hold set-uid binaries and containers' config.json holds their environment, so no other
user may traverse into them. Containers never reach their files by these host paths (the runtime
mounts them as root before the container's process starts), so a container running as another
uid is not affected. Each getter tightens its root on use, so a root made by an older shoal (0755)
is fixed by the next command or shoald start."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

# Directories and files only root may read; what a container must read by its own uid (its
# /etc/hosts, the layers' contents) carries its own mode below such a directory.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def ensure_private_dir(path: Path, mode: int = PRIVATE_DIR) -> Path:
    """Make `path` a directory (missing parents too) whose mode is exactly `mode`, whatever the
    umask, tightening one that exists with another mode. Missing parents are made with `mode`
    too (Path.mkdir gives them the umask's: clusters/ under a state root was 0755)."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        p.mkdir(exist_ok=True, mode=mode)
        os.chmod(p, mode)
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        os.chmod(path, mode)
    return path


def write_file(path: Path, data: str | bytes, mode: int = PRIVATE_FILE) -> None:
    """Write a whole file created with `mode` (not the umask's); an existing file gets `mode` too."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(raw)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> str | None:
    """Remove `path` and everything below it, never following a link; None when it is gone,
    else what stopped it. A container, a volume's user or a RUN step can nest directories
    thousands deep, or past PATH_MAX (mkdir and cd in a loop): shutil.rmtree recurses (a
    RecursionError near 1000 levels), holds a descriptor a level and uses whole paths
    (ENAMETOOLONG), so such a tree made its container unremovable. rm -rf walks any depth;
    it neither follows a link nor leaves this file system. Mounts below are detached first."""
    left = _detach_mounts_below(path)
    if left:
        return f"{left}: still mounted"
    errors: list[str] = []
    try:
        shutil.rmtree(path, onerror=lambda _f, where, info: errors.append(f"{where}: {info[1]}"))
    except RecursionError:
        pass
    if not os.path.lexists(path):
        return None
    proc = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True,
                          check=False)
    if not os.path.lexists(path):
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else (errors[0] if errors else str(path))


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        # mountinfo escapes space, tab, newline and backslash as \\ooo
        return {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f}


def _detach_mounts_below(path: Path) -> str | None:
    """Lazily unmount whatever is mounted at or below `path` before its files go: shutil.rmtree
    crosses mount points, and rm -rf --one-file-system does not see a bind of the same file
    system, so a host directory bound there (a volume's device, a volume subpath's bind, a mount
    a privileged container propagated into a volume) was emptied through it. The first mount
    point still there, if any."""
    if os.path.islink(path):
        return None  # not followed: rmtree refuses it
    base = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    try:
        below = sorted({p for p in _mount_points() if p == base or p.startswith(base + "/")}, key=len, reverse=True)
    except OSError:
        return None
    if not below:
        return None
    import ctypes  # only here: most removals have no mount below them

    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(8):  # mounts stacked on one point come off one at a time
        for point in below:
            # Only a point its own path still leads to (no link swapped into it since, by what
            # runs in the tree); MNT_DETACH | UMOUNT_NOFOLLOW.
            if os.path.realpath(point) == point:
                libc.umount2(point.encode(), 2 | 8)
        still = _mount_points()
        below = [p for p in below if p in still]
        if not below:
            return None
    return below[0]


def _root(path: Path) -> Path:
    """`path`, its symlinks resolved (as dockerd's ReadSymlinkedDirectory resolves its root),
    made root-only if it is not already. Mount points under it are found by their path in
    /proc/self/mountinfo, which is the resolved one: with a root reached through a link
    (/var -> /data/var), a volume bound to a host directory was not seen as mounted, and
    `volume rm` emptied that host directory through the mount."""
    path = Path(os.path.realpath(path))
    try:
        if stat.S_IMODE(os.stat(path).st_mode) == PRIVATE_DIR:
            return path
    except FileNotFoundError:
        pass
    except OSError:
        return path
    try:
        ensure_private_dir(path)
    except OSError:
        pass  # not root, or a read-only file system: the operation that needs it reports that
    return path


def state_root() -> Path:
    """Persistent state (images, containers); SHOAL_ROOT moves it (tests use a temp dir)."""
    return _root(Path(os.environ.get("SHOAL_ROOT", "/var/lib/shoal")))


def run_root() -> Path:
    """Volatile state (runtime state dirs, sockets); cleared by a reboot like /run itself."""
    env = os.environ.get("SHOAL_RUN")
    if env:
        return _root(Path(env))
    return _root(state_root() / "run" if "SHOAL_ROOT" in os.environ else Path("/run/shoal"))


def socket_path() -> Path:
    """shoald's API socket, where it listens and where the CLI's client connects by default."""
    return Path(os.environ.get("SHOAL_SOCKET", str(run_root() / "shoal.sock")))


def cache_root() -> Path:
    """Build caches that survive `rm -rf $SHOAL_ROOT` (the offline base image rootfs, whose
    set-uid binaries are as dangerous as a layer's)."""
    return _root(Path(os.environ.get("SHOAL_CACHE", "/var/cache/shoal")))
