"""Filesystem work for COPY, ADD and WORKDIR: an overlay of the parent image's layers with a
fresh upper dir (so writing into an existing directory is an ordinary overlay merge, and the
upper dir is exactly the new layer), paths resolved inside a root the way the daemon's
FollowSymlinkInScope does, the copy itself with Docker's ownership rules, and --chown names
looked up in the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import re
import shutil
import stat
import subprocess
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
    """Remove a scratch tree. Its content may come from a RUN step (symlinks to anywhere):
    nothing is followed, only real directories are made writable."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    try:
        # overlay's work/work dir is created 000: make it removable first. os.walk lists
        # symlinks to directories among the directories: lstat decides, never chmod through a link.
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if stat.S_ISDIR(_lstat_mode(Path(full))):
                    with contextlib.suppress(OSError):
                        os.chmod(full, 0o700)   # a real directory (lstat), nothing runs in here now
        shutil.rmtree(path, ignore_errors=True)
    except (RecursionError, OSError):
        pass
    if os.path.lexists(path):
        # A RUN step may nest directories thousands deep, or make paths longer than PATH_MAX
        # (mkdir and cd in a loop): os.walk and shutil.rmtree recurse (a RecursionError past
        # ~1000 levels), hold a descriptor a level (EMFILE, ignored) and use whole paths
        # (ENAMETOOLONG). The tree stayed, and collect_scratch then failed every later build on
        # this host. rm walks any depth; it never follows a link nor leaves this file system.
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, check=False)


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


def in_root(root: Path, path: str) -> Path:
    """The host path of `path` in `root` for creating or replacing it: every component but the
    last resolved inside the root (a symlink there never leads out), the last one kept as it
    is, so a symlink in its place is replaced, not followed."""
    parent, _, name = posixpath.normpath("/" + path).rpartition("/")
    return scoped_path(root, parent) / name if name else root


def root_rel(root: Path, host: Path) -> str:
    """The in-root path ("/a/b") of a host path below `root`."""
    rel = os.path.relpath(host, root)
    return "/" if rel == "." else "/" + rel


def is_dir_in_root(root: Path, path: str) -> bool:
    """Whether `path` names a directory, its symlinks (the last one too) followed in `root`."""
    return stat.S_ISDIR(_lstat_mode(scoped_path(root, path)))


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return 0


def _read_regular(path: Path, limit: int = 16 << 20) -> str:
    """An image file's text, only if it is a regular file: a FIFO or device planted at
    /etc/passwd must not hang or flood the builder."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return f.read(limit).decode(errors="replace")


# --- --chown ---------------------------------------------------------------------------------

def _numeric_id(text: str) -> int | None:
    """`text` as a uid/gid when it is one (BuildKit's ParseUint(s, 10, 32)): ASCII digits
    within 32 bits. Anything else is a name: int() took "١٢٣" as 123, and an id past 32
    bits reached lchown as an OverflowError traceback."""
    if text.isascii() and text.isdigit() and int(text) <= 0xFFFFFFFF:
        return int(text)
    return None


def _lookup(root: Path, file: str, name: str, what: str) -> int:
    numeric = _numeric_id(name)
    if numeric is not None:
        return numeric
    try:
        text = _read_regular(scoped_path(root, file))
    except OSError:
        raise CopyError(f"unable to convert uid/gid chown string to host mapping: "
                        f"can't find {'uid' if what == 'user' else 'gid'} for {what} {name}: "
                        f"open {file}: no such file or directory") from None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and (found := _numeric_id(fields[2])) is not None:
            return found
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

def _copy_data(src: int, dst: int, size: int) -> None:
    """The bytes of `src` into the empty `dst`, holes left as holes (SEEK_DATA/SEEK_HOLE):
    the unpacker keeps a tar's sparse file sparse, and a plain copy wrote every zero of it
    (a 10KiB tar declaring 2GiB, copied in by `cp -` or ADD, wrote 2GiB)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:   # only a hole is left
                break
            raise
        # a file growing as it is read is copied as long as it was when opened
        end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        while start < end:
            chunk = os.pread(src, min(1 << 20, end - start), start)
            if not chunk:   # the file shrank under us: what is there is copied
                end = start
                break
            written = os.pwrite(dst, chunk, start)
            start += written
        pos = max(end, pos + 1)
    os.ftruncate(dst, size)


@contextmanager
def open_beneath(root: Path, rel: str) -> Iterator[tuple[int, str]]:
    """A descriptor of the directory holding `rel` under `root`, opened a name at a time with
    no link followed, and `rel`'s last name ("." for `root` itself). The builder resolved the
    source's links in scope when the step began, so none is left on the way; a build context
    is the user's directory and changes meanwhile, and a directory of it swapped for a link to
    the host's / was followed out by path (`COPY d/f` and `COPY d` copied host files)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise CopyError(f"failed to copy files: {rel}: {name}: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
        yield fd, parts[-1] if parts else "."
    finally:
        os.close(fd)


@contextmanager
def opened_dir(parent: int, name: str, rel: str) -> Iterator[int]:
    """Directory `name` of `parent`, not through a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        raise CopyError(f"failed to copy files: {rel}: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_file(parent: int, name: str, rel: str) -> Iterator[int | None]:
    """File `name` of `parent` opened for reading, not through a link and without waiting on
    a FIFO; None when it is not a regular file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENODEV):   # a socket or device: not an archive
            yield None
            return
        raise CopyError(f"failed to copy files: {rel}: {exc.strerror}") from None
    try:
        yield fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


class Copier:
    """Copies into the image root `root`; `owner` None keeps the source's ownership.

    Every destination is an in-root path ("/app/x") resolved with `in_root` at the moment it
    is written, so neither the image's symlinks nor ones the copy itself just made can lead a
    write out of the root. Nothing else runs in the root while the builder copies, so
    resolving and then acting on the resolved path is not racy."""

    def __init__(self, root: Path, owner: tuple[int, int] | None, mode: int | None) -> None:
        self.root = root
        self.owner = owner
        self.mode = mode
        self._links: dict[tuple[int, int], Path] = {}   # source inode -> first copy (hard links)

    def _finish(self, path: Path, st: os.stat_result) -> None:
        uid, gid = self.owner if self.owner is not None else (st.st_uid, st.st_gid)
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def mkdirs(self, path: str) -> Path:
        """MkdirAllAndChown(0755) inside the root with only the new directories chowned; the
        host path of the (resolved) directory."""
        resolved = scoped_path(self.root, path)
        rel = os.path.relpath(resolved, self.root)
        current = self.root
        for name in ([] if rel == "." else rel.split("/")):
            current = current / name
            mode = _lstat_mode(current)
            if mode == 0:
                os.mkdir(current, 0o755)
                os.chmod(current, 0o755)
                if self.owner is not None:
                    os.lchown(current, *self.owner)
            elif not stat.S_ISDIR(mode):   # scoped_path resolved every symlink: a file is in the way
                raise CopyError(f"mkdir {path}: not a directory")
        return current

    def _target(self, path: str) -> Path:
        """The host path to create `path` at, its parents made (in the root) if missing."""
        parent = posixpath.dirname(posixpath.normpath("/" + path))
        target = in_root(self.root, path)
        if not stat.S_ISDIR(_lstat_mode(target.parent)):
            self.mkdirs(parent)
            target = in_root(self.root, path)
        return target

    def copy_entry(self, src: Path | str, path: str, keep_links: bool = False, dir_fd: int | None = None) -> None:
        """One entry; with `dir_fd`, `src` is a name in that directory. What is read is the
        entry lstat saw: a file swapped meanwhile for a link (or a FIFO) is an error, never
        followed (or waited on)."""
        st = os.lstat(src, dir_fd=dir_fd)
        dst = self._target(path)
        mode = _lstat_mode(dst)
        if mode and not stat.S_ISDIR(mode):
            os.unlink(dst)        # a file or a symlink: replaced, never followed
        elif stat.S_ISDIR(mode) and not stat.S_ISDIR(st.st_mode):
            shutil.rmtree(dst)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if not stat.S_ISDIR(mode):
                os.mkdir(dst)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src, dir_fd=dir_fd), dst)
        elif keep_links and st.st_nlink > 1 and key in self._links:
            os.link(self._links[key], dst, follow_symlinks=False)
            return
        elif stat.S_ISREG(st.st_mode):
            try:
                fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                raise CopyError(f"failed to copy files: open {os.fspath(src)}: {exc.strerror}") from None
            try:
                now = os.fstat(fin)
                if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != key:
                    raise CopyError(f"failed to copy files: {os.fspath(src)} was replaced while it was copied")
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as fout:
                    _copy_data(fin, fout.fileno(), now.st_size)
            finally:
                os.close(fin)
            if keep_links and st.st_nlink > 1:
                self._links[key] = dst
        elif stat.S_ISSOCK(st.st_mode):
            return            # go-archive skips sockets: the context's tar never holds one
        else:
            os.mknod(dst, st.st_mode, st.st_rdev)
        self._finish(dst, st)

    def copy_file(self, src: Path | str, path: str, dir_fd: int | None = None) -> None:
        self.copy_entry(src, path, dir_fd=dir_fd)

    def copy_tree(self, src: Path | str, path: str, include: Callable[[str], bool] | None = None,
                  keep_links: bool = False, implicit_dirs: set[str] | None = None,
                  dir_fd: int | None = None) -> None:
        """The contents of directory `src` into `path` (created, and chowned, if new).
        `implicit_dirs`: directories of `src` that only stand for a path (a tar's parents with
        no entry of their own): where the root already has a directory there, even through a
        symlink (an image's /lib -> usr/lib), they are followed in the root, not replaced.
        Walked by descriptor (os.fwalk): a directory of a build context swapped for a link
        while it is copied is not followed out of it."""
        implicit = implicit_dirs or set()
        existed = is_dir_in_root(self.root, path)
        dst = root_rel(self.root, self.mkdirs(path))
        if not existed and self.owner is not None:
            os.lchown(scoped_path(self.root, dst), *self.owner)
        for dirpath, dirnames, filenames, dfd in os.fwalk(src, dir_fd=dir_fd):
            rel_dir = os.path.relpath(dirpath, src)
            for name in sorted(dirnames) + sorted(filenames):
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                if include is not None and not include(rel):
                    continue
                if rel in implicit and is_dir_in_root(self.root, posixpath.join(dst, rel)):
                    continue
                self.copy_entry(name, posixpath.join(dst, rel), keep_links, dir_fd=dfd)
            # fwalk does not descend into symlinked dirs; that is what we want
        # Directory mtimes were disturbed by creating their children: restore them.
        for dirpath, dirnames, _, dfd in os.fwalk(src, topdown=False, dir_fd=dir_fd):
            for name in dirnames:
                rel = os.path.relpath(os.path.join(dirpath, name), src)
                if (include is not None and not include(rel)) or rel in implicit:
                    continue
                s = os.lstat(name, dir_fd=dfd)
                t = in_root(self.root, posixpath.join(dst, rel))
                if stat.S_ISDIR(_lstat_mode(t)) and stat.S_ISDIR(s.st_mode):
                    os.utime(t, ns=(s.st_atime_ns, s.st_mtime_ns))

    def write_file(self, data: bytes, path: str, mode: int = 0o644) -> None:
        dst = self._target(path)
        current = _lstat_mode(dst)
        if stat.S_ISDIR(current):
            raise CopyError(f"cannot write {path}: is a directory")
        if current:
            os.unlink(dst)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        uid, gid = self.owner if self.owner is not None else (0, 0)
        os.lchown(dst, uid, gid)
        os.chmod(dst, self.mode if self.mode is not None else mode)


def is_archive(path: Path) -> bool:
    """go-archive IsArchivePath: a (possibly compressed) tar that reads."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def extract_archive(path: Path, dst: str, root: Path, scratch: Path, name: str | None = None) -> None:
    """ADD's local tar auto-extraction: ownership and modes from the archive, nothing outside
    the root. The tar is unpacked by the layer unpacker (names with `..` or a leading `/`
    refused, hard links only to earlier members, nothing created below a symlink) into an empty
    staging directory, then copied into place like COPY does, every path resolved in the root,
    hard links kept. Python's tarfile filters are not used: their path checks can be defeated
    (CVE-2025-4517)."""
    from shoal.image.layers import LayerError, decompressed, detect_compression, unpack_layer

    staging = Path(tempfile.mkdtemp(prefix="add-", dir=scratch))
    try:
        with open(path, "rb") as raw:
            compression = detect_compression(raw.read(8))
            raw.seek(0)
            try:
                unpack_layer(decompressed(raw, compression), staging, source=name or path.name, hash=False)
            except LayerError as exc:
                raise CopyError(f"failed to copy files: {exc}") from None
        Copier(root, None, None).copy_tree(staging, dst, keep_links=True,
                                           implicit_dirs=_implicit_dirs(staging, path, name or path.name))
    finally:
        _rmtree(staging)


def _implicit_dirs(staging: Path, path: Path, name: str) -> set[str]:
    """The directories of the unpacked tree that the tar has no entry for."""
    explicit = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                tar.members.clear()  # tarfile keeps every member read: a million entries, 500MB
                if member.isdir():
                    explicit.add("/".join(p for p in member.name.split("/") if p not in ("", ".")))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CopyError(f"failed to copy files: {name}: {exc}") from None
    implicit = set()
    for dirpath, dirnames, _ in os.walk(staging):
        for name in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), staging)
            if rel not in explicit:
                implicit.add(rel)
    return implicit


def check_depth(root: Path) -> None:
    """layers.check_depth (a RUN step's changes no layer can hold), as a CopyError: checked
    before the builder's other walks of a step's upper directory, which recurse."""
    from shoal.image.layers import LayerError
    from shoal.image.layers import check_depth as check

    try:
        check(root)
    except LayerError as exc:
        raise CopyError(str(exc)) from None


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


def collect_scratch(scratch_root: Path, owner_alive: Callable[[str], bool]) -> list[Path]:
    """Remove the scratch directories (`b<PID-STARTTIME>-*`: upper dirs, overlay mounts of
    COPY and WORKDIR steps, staging, downloads) of builds that were killed; a live build's
    scratch is left alone."""
    from shoal.runtime import mounts

    collected = []
    try:
        entries = list(scratch_root.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        m = re.fullmatch(r"b([0-9]+-[0-9]+)-.*", entry.name)
        if m is None or owner_alive(m.group(1)):
            continue
        for target in reversed(mounts.mounts_under(entry)):
            mounts.unmount(Path(target))
        _rmtree(entry)
        collected.append(entry)
    return collected
