"""Filesystem work for COPY, ADD and WORKDIR: an overlay of the parent image's layers with a
fresh upper dir (so writing into an existing directory is an ordinary overlay merge, and the
upper dir is exactly the new layer), paths resolved inside a root the way the daemon's
FollowSymlinkInScope does, the copy itself with Docker's ownership rules, and --chown names
looked up in the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.build.scope import TooManyLinks, follow_in_scope, fs_lookup

from shoal.errors import ShoalError

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_MS_RDONLY = 1


class CopyError(ShoalError):
    pass


def _mount_overlay(options: str, target: Path, flags: int = 0) -> None:
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise ShoalError(f"mount overlay on {target}: {os.strerror(err)}")


def _umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # not mounted (any more)
            raise ShoalError(f"umount {target}: {os.strerror(err)}")


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    # overlay's work/work dir is created 000: make it removable first.
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def writable_root(lowerdirs: list[Path], upper: Path, scratch: Path) -> Iterator[Path]:
    """A directory whose writes land in `upper` while showing `lowerdirs` (top first) below.
    With no lower layers the upper dir itself is the root: nothing to mount."""
    if not lowerdirs:
        yield upper
        return
    work = Path(tempfile.mkdtemp(prefix="work-", dir=scratch))
    merged = Path(tempfile.mkdtemp(prefix="merged-", dir=scratch))
    mounted = False
    try:
        _mount_overlay(f"lowerdir={':'.join(map(str, lowerdirs))},upperdir={upper},workdir={work},index=off",
                       merged)
        mounted = True
        yield merged
    finally:
        if mounted:
            _umount(merged)
        _rmtree(work)
        _rmtree(merged)


@contextmanager
def readonly_root(lowerdirs: list[Path], scratch: Path) -> Iterator[Path]:
    """The merged, read-only view of an image's layers."""
    if not lowerdirs:
        empty = Path(tempfile.mkdtemp(prefix="empty-", dir=scratch))
        try:
            yield empty
        finally:
            _rmtree(empty)
        return
    if len(lowerdirs) == 1:
        yield lowerdirs[0]
        return
    merged = Path(tempfile.mkdtemp(prefix="ro-", dir=scratch))
    mounted = False
    try:
        _mount_overlay(f"lowerdir={':'.join(map(str, lowerdirs))}", merged, _MS_RDONLY)
        mounted = True
        yield merged
    finally:
        if mounted:
            _umount(merged)
        _rmtree(merged)


def scoped_path(root: Path, path: str) -> Path:
    """`path` inside `root` with every existing symlink followed as if `root` were `/`."""
    try:
        rel = follow_in_scope(path, fs_lookup(lambda r: str(root / r)), keep_missing=True)
    except TooManyLinks:
        raise CopyError(f"too many links in {path}") from None
    return root / rel if rel else root


# --- --chown ---------------------------------------------------------------------------------

def _lookup(root: Path, file: str, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        text = scoped_path(root, file).read_text(errors="replace")
    except OSError:
        raise CopyError(f"unable to convert uid/gid chown string to host mapping: "
                        f"can't find {'uid' if what == 'user' else 'gid'} for {what} {name}: "
                        f"open {file}: no such file or directory") from None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    raise CopyError(f"unable to convert uid/gid chown string to host mapping: "
                    f"can't find {'uid' if what == 'user' else 'gid'} for {what} {name}: "
                    f"no such {what}: {name}")


def parse_chown(spec: str, root: Path) -> tuple[int, int]:
    """moby parseChownFlag: `user[:group]`, names from the image; a lone user is also the group."""
    parts = spec.split(":")
    if len(parts) > 2:
        raise CopyError(f"invalid chown string format: {spec}")
    user, group = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return _lookup(root, "/etc/passwd", user, "user"), _lookup(root, "/etc/group", group, "group")


def parse_chmod(spec: str) -> int:
    try:
        mode = int(spec, 8)
    except ValueError:
        raise CopyError(f"invalid chmod parameter: {spec}. it should be octal string and between 0 and 07777") from None
    if not 0 <= mode <= 0o7777:
        raise CopyError(f"invalid chmod parameter: {spec}. it should be octal string and between 0 and 07777")
    return mode


# --- copying ---------------------------------------------------------------------------------

class Copier:
    """Copies into a destination root; `owner` None keeps the source's ownership."""

    def __init__(self, owner: tuple[int, int] | None, mode: int | None) -> None:
        self.owner = owner
        self.mode = mode

    def _finish(self, path: Path, st: os.stat_result) -> None:
        uid, gid = self.owner if self.owner is not None else (st.st_uid, st.st_gid)
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def mkdir_parents(self, path: Path, root: Path) -> None:
        """MkdirAllAndChown(0755) with only the new directories chowned."""
        missing = []
        p = path
        while not p.exists() and p != root:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)
            if self.owner is not None:
                os.lchown(d, *self.owner)

    def copy_entry(self, src: Path, dst: Path) -> None:
        st = os.lstat(src)
        if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
            dst.unlink()
        elif dst.is_dir() and not stat.S_ISDIR(st.st_mode):
            shutil.rmtree(dst)
        if stat.S_ISDIR(st.st_mode):
            if not dst.exists():
                dst.mkdir()
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
        else:
            os.mknod(dst, st.st_mode, st.st_rdev)
        self._finish(dst, st)

    def copy_file(self, src: Path, dst: Path, root: Path) -> None:
        self.mkdir_parents(dst.parent, root)
        self.copy_entry(src, dst)

    def copy_tree(self, src: Path, dst: Path, root: Path, include: Callable[[str], bool] | None = None) -> None:
        """The contents of directory `src` into `dst` (created, and chowned, if new)."""
        existed = dst.exists()
        self.mkdir_parents(dst, root)
        if not existed and self.owner is not None:
            os.lchown(dst, *self.owner)
        for dirpath, dirnames, filenames in os.walk(src):
            rel_dir = os.path.relpath(dirpath, src)
            for name in sorted(dirnames) + sorted(filenames):
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                if include is not None and not include(rel):
                    continue
                s = Path(dirpath, name)
                target = dst / rel
                if not target.parent.exists():
                    self.mkdir_parents(target.parent, root)
                self.copy_entry(s, target)
            # os.walk does not descend into symlinked dirs; that is what we want
        # Directory mtimes were disturbed by creating their children: restore them.
        for dirpath, dirnames, _ in os.walk(src, topdown=False):
            for name in dirnames:
                rel = os.path.relpath(os.path.join(dirpath, name), src)
                if include is not None and not include(rel):
                    continue
                s = os.lstat(os.path.join(dirpath, name))
                t = dst / rel
                if t.is_dir() and not t.is_symlink():
                    os.utime(t, ns=(s.st_atime_ns, s.st_mtime_ns))

    def write_file(self, data: bytes, dst: Path, root: Path, mode: int = 0o644) -> None:
        self.mkdir_parents(dst.parent, root)
        if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
            dst.unlink()
        dst.write_bytes(data)
        os.chmod(dst, self.mode if self.mode is not None else mode)
        uid, gid = self.owner if self.owner is not None else (0, 0)
        os.lchown(dst, uid, gid)


def is_archive(path: Path) -> bool:
    """go-archive IsArchivePath: a (possibly compressed) tar that reads."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def extract_archive(path: Path, dst: Path, root: Path) -> None:
    """ADD's local tar auto-extraction: ownership and modes from the archive, nothing outside dst."""
    Copier(None, None).mkdir_parents(dst, root)
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(dst, numeric_owner=True, filter="tar")
    except (tarfile.TarError, OSError) as exc:
        raise CopyError(f"failed to copy files: {exc}") from None


def dir_is_empty(path: Path) -> bool:
    try:
        return not any(os.scandir(path))
    except FileNotFoundError:
        return True


def prune_copied_up_dirs(upper: Path, lowerdirs: list[Path]) -> None:
    """Remove empty directories an overlay copied up without changing them (e.g. /etc, when
    the runtime created and removed the /etc/hosts mount point): same type, mode and owner as
    below, not opaque. Without this `RUN true` would commit a layer holding only `etc/`."""
    if not lowerdirs:
        return
    from shoal.runtime.layers import LayeredView

    view = LayeredView(lowerdirs)
    for dirpath, _dirnames, _files in os.walk(upper, topdown=False):
        path = Path(dirpath)
        if path == upper or any(os.scandir(path)):
            continue
        try:
            if os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                continue
        except OSError:
            pass
        found = view.resolve("/" + str(path.relative_to(upper)))
        if found is None:
            continue
        st, below = os.lstat(path), found[1]
        if (stat.S_ISDIR(below.st_mode) and below.st_mode == st.st_mode
                and (below.st_uid, below.st_gid) == (st.st_uid, st.st_gid)):
            path.rmdir()


remove_tree = _rmtree
