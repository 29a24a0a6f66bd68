"""The container root filesystem: an overlay of the image's layers (read-only lowerdirs) and the
container's own upper dir. mount(2) straight through libc: no fork, and the option string is
exactly ours (it is limited to one page, so long paths are made relative to a common parent)."""

from __future__ import annotations

import ctypes
import os
import stat
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
    wanted = os.path.realpath(target)  # mountinfo names the resolved path
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


# ---- paths inside a container's root ---------------------------------------------------------
# shoal creates the working directory and copies a volume's first contents on the host, in the
# container's root filesystem before the container runs. The image decides what that root holds,
# symlinks included: `/srv -> /` with a volume at /srv/etc must mean the image's /etc, never the
# host's. Every such path is resolved as Docker's FollowSymlinkInScope does, each component in
# turn with lstat and readlink, an absolute link target and `..` taken from the container's
# root; then it is walked again with O_NOFOLLOW descriptors, so what is created or read is the
# directory the resolution found, not whatever a link swapped in meanwhile points to.

_MAX_LINKS = 255


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path `path` (a path in the container) names inside `root`, every symlink
    followed within `root`. Parts that do not exist are kept as written (lexically cleaned)."""
    base = os.path.abspath(root)
    resolved: list[str] = []
    pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part in ("", "."):
            continue
        candidate = os.path.join(base, *resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise ShoalError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending += [p for p in reversed(target.split("/")) if p not in ("", ".")]
            continue
        resolved.append(part)
    return Path(base, *resolved)


def _walk(root: Path, path: str, create: bool, mode: int = 0o755) -> int:
    """An O_PATH descriptor of the directory `path` names in `root` (see resolve_in_root),
    reached with O_NOFOLLOW at every step; missing directories made when `create`."""
    target = resolve_in_root(root, path)
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in target.relative_to(os.path.abspath(root)).parts:
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened with O_NOFOLLOW below all the same
                nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def mkdirs_in_root(root: Path, path: str, mode: int = 0o755) -> Path:
    """mkdir -p of a container path inside `root` (a WORKDIR, a mount point); the host path it
    resolved to. Docker's error when a component is a file."""
    try:
        os.close(_walk(root, path, create=True, mode=mode))
    except (NotADirectoryError, FileExistsError):
        raise ShoalError(f"Cannot mkdir: {path} is not a directory") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a link appeared where the resolution found a directory
            raise ShoalError(f"Cannot mkdir: {path} changed while it was made") from None
        raise ShoalError(f"Cannot mkdir: {path}: {exc.strerror}") from None
    return resolve_in_root(root, path)


def open_dir_in_root(root: Path, path: str) -> int | None:
    """An O_PATH descriptor of the directory `path` names inside `root`, or None when there is
    no directory there. The caller closes it."""
    try:
        return _walk(root, path, create=False)
    except OSError:
        return None


def mount_point_in_root(root: Path, path: str, is_dir: bool) -> None:
    """Make the mount point of a volume, bind or tmpfs inside `root` before the runtime mounts
    there, as Docker does: through the image's symlinks as the container would see them (the
    runtime resolves the destination the same way, but makes no directory under a link)."""
    if is_dir:
        mkdirs_in_root(root, path)
        return
    parent, _, name = path.rstrip("/").rpartition("/")
    mkdirs_in_root(root, parent or "/")
    target = resolve_in_root(root, path)
    if os.path.lexists(target):
        return  # a file already (or something the runtime will refuse with its own error)
    fd = _walk(root, parent or "/", create=False)
    try:
        os.close(os.open(target.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=fd))
    except FileExistsError:
        pass
    finally:
        os.close(fd)
