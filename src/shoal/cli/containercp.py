"""`shoal cp` (docker/cli cli/command/container/cp.go, moby's archive rules): files between a
container and the host, both ways. Reading goes through openat2(RESOLVE_IN_ROOT) and descriptors
opened with O_NOFOLLOW below it (runtime/rootfs.py); writing goes through the builder's Copier
(build/fs.py: each destination resolved inside the root when it is written) while the
container is frozen; a tar from stdin, and what the host receives, go through the project's
hardened tar unpacker (image/layers.py) first. So no symlink a container makes can lead a read
or a write out of its root."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.runtime.rootfs import _tar_entry, container_root, open_in_root
from shoal.runtime.state import Container


def _not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


@contextlib.contextmanager
def _root_fd(root: Path) -> Iterator[int]:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _split_source(path: str) -> tuple[str, str, bool]:
    """(parent, name, contents only): `dir/.` copies the directory's contents (docker cp)."""
    contents = path.endswith("/.") or path == "."
    clean = posixpath.normpath("/" + path.lstrip("/"))
    parent, _, name = clean.rpartition("/")
    return parent or "/", name, contents


@contextlib.contextmanager
def _source(c: Container, ref: str, src: str, follow_link: bool) -> Iterator[tuple[int, str, os.stat_result, bool]]:
    """The source of a copy out of the container, opened inside its root: (an O_PATH descriptor
    of its parent or of itself, its name under that ("" for itself), its stat, contents only)."""
    parent, name, contents = _split_source(src)
    with container_root(c) as root, _root_fd(root) as root_fd:
        try:
            pfd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            raise _not_found(src, ref) from None
        try:
            if name and follow_link:  # -L: the last link followed, inside the root too
                try:
                    target = open_in_root(root_fd, posixpath.join(parent, name), os.O_PATH)
                except OSError:
                    raise _not_found(src, ref) from None
                os.close(pfd)
                pfd, name = target, ""
            if name:
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except OSError:
                    raise _not_found(src, ref) from None
            else:
                st = os.fstat(pfd)
                name = posixpath.basename(posixpath.normpath("/" + src.lstrip("/"))) or "/"
            yield pfd, name, st, contents
        finally:
            os.close(pfd)


def copy_out(c: Container, ref: str, src: str, *, follow_link: bool = False,
             tar_out: IO[bytes] | None = None, host_dest: str | None = None, archive: bool = False) -> int:
    """`cp CONTAINER:SRC -|DEST`: a tar on `tar_out`, or the files at `host_dest` on the host
    (owned by the caller unless `archive`, as docker cp). Returns the size of the archive as
    docker's Go tar writer makes it (what `Successfully copied` counts), 0 for `tar_out`."""
    with _source(c, ref, src, follow_link) as (pfd, name, st, contents):
        if tar_out is not None:
            with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _tar_source(tar, pfd, name, st, contents)
            return 0
        assert host_dest is not None
        return _to_host(pfd, name, st, contents, host_dest, archive)


def archive_out(c: Container, ref: str, src: str, *, follow_link: bool, for_host: bool,
                opened: Callable[[str, bool], None], out: IO[bytes]) -> None:
    """The node's side of `cp CONTAINER:SRC` for a remote CLI (GET /containers/{id}/archive):
    `opened(name, is_dir)` once the source is found, then its tar on `out`: as `cp ... -`
    writes it, or (`for_host`) the whole source under host_name(name), which the CLI unpacks
    with unpack_to_host as a local copy does."""
    with _source(c, ref, src, follow_link) as (pfd, name, st, contents):
        opened(name, stat.S_ISDIR(st.st_mode))
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            if for_host:
                _tar_source(tar, pfd, host_name(name), st, False)
            else:
                _tar_source(tar, pfd, name, st, contents)


def _reopen_dir(fd_or_parent: int, name: str, is_self: bool) -> int:
    """A readable descriptor of the directory: `name` under `fd_or_parent`, or the O_PATH fd
    itself (-L followed, or the root) reopened through /proc/self/fd."""
    if is_self:
        return os.open(f"/proc/self/fd/{fd_or_parent}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd_or_parent)


def _tar_source(tar: tarfile.TarFile, pfd: int, name: str, st: os.stat_result, contents: bool) -> None:
    is_self = stat.S_ISDIR(st.st_mode) and _is_fd_itself(pfd, st)
    if stat.S_ISDIR(st.st_mode):
        dfd = _reopen_dir(pfd, name, is_self)
        try:
            _check_depth(Path(f"/proc/self/fd/{dfd}"), name)
            if not contents:
                info = tarfile.TarInfo(name if name != "/" else ".")
                info.type, info.mode = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode)
                info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
                tar.addfile(info)
            prefix = "" if contents else (name if name != "/" else ".") + "/"
            for child in sorted(os.listdir(dfd)):
                _tar_entry(tar, dfd, child, prefix + child)
        finally:
            os.close(dfd)
        return
    if _is_fd_itself(pfd, st):  # -L to a file: read it through its O_PATH descriptor
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            info.mtime, info.size = int(st.st_mtime), st.st_size
            with os.fdopen(os.dup(fd), "rb") as f:
                tar.addfile(info, f)
        finally:
            os.close(fd)
        return
    _tar_entry(tar, pfd, name, name)


def _check_depth(tree: Path, name: str) -> None:
    """A container (or a host directory copied in) may nest directories thousands deep; the
    copy's walks recurse (a RecursionError traceback, after part of the copy was made). Past
    what a layer holds (and what the other side's unpacker takes) it is one line, before the
    first byte."""
    from shoal.image.layers import LayerError, check_depth

    try:
        check_depth(tree)
    except LayerError as exc:
        raise ShoalError(f"{name}: {exc}") from None


def _is_fd_itself(pfd: int, st: os.stat_result) -> bool:
    own = os.fstat(pfd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def host_name(name: str) -> str:
    """The name a copied source gets on the host (the container's root: `rootfs`)."""
    return "rootfs" if name == "/" else name


def host_target(name: str, is_dir: bool, contents: bool, dest: str) -> Path:
    """docker cp's rules on the host side: into DEST when it is a directory, else as DEST
    (whose parent must exist); a directory never replaces a file."""
    dest_path = Path(dest)
    if dest_path.is_dir():
        return dest_path if contents else dest_path / host_name(name)
    if dest.endswith("/"):
        raise NotFound(f"destination directory {dest} must exist")  # go-archive's ErrDirNotExists
    if not dest_path.parent.is_dir():
        raise NotFound(f"stat {dest_path.parent}: no such file or directory")
    if is_dir and dest_path.exists():
        raise InvalidArgument("cannot copy directory")
    return dest_path


def unpack_to_host(inp: IO[bytes], name: str, target: Path, contents: bool, archive: bool,
                   measure: bool = False) -> int:
    """The tar of a source (its top entry named host_name(name)) unpacked through the project's
    hardened layer unpacker into a staging dir next to the target, then moved in: nothing of the
    container's naming can place a file outside `target`. `measure`: returns the size docker's
    tar of what arrived would have (host_tar_size: the summary of a copy from a remote node,
    whose archive was made there), else 0."""
    import tempfile

    from shoal.image.layers import unpack_layer

    staging = Path(tempfile.mkdtemp(prefix=".shoal-cp-", dir=target.parent))  # same fs: moved in
    try:
        unpack_layer(inp, staging, source="container", hash=False)
        produced = staging / host_name(name)
        size = host_tar_size(str(produced)) if measure else 0
        if not archive:
            _chown_tree(produced, os.getuid(), os.getgid())
        if contents:
            target.mkdir(exist_ok=True)
            for child in produced.iterdir():
                _replace(child, target / child.name)
        else:
            _replace(produced, target)
        return size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _to_host(pfd: int, name: str, st: os.stat_result, contents: bool, dest: str, archive: bool) -> int:
    target = host_target(name, stat.S_ISDIR(st.st_mode), contents, dest)
    import threading

    r, w = os.pipe()
    errors: list[BaseException] = []
    sizes: list[int] = []

    def produce() -> None:
        try:
            with os.fdopen(w, "wb") as out:
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _tar_source(tar, pfd, host_name(name), st, False)
                    sizes.append(go_tar_size(tar.offset))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        with os.fdopen(r, "rb") as inp:
            unpack_to_host(inp, name, target, contents, archive)
    except ShoalError:
        thread.join()
        if errors:  # the tar was cut because making it failed: that is the reason to give
            raise errors[0] from None
        raise
    finally:
        thread.join()
    if errors:
        raise errors[0]
    return sizes[0]


def go_tar_size(members_size: int) -> int:
    """Go's archive/tar ends an archive with two zero blocks and no padding to a record (Python
    pads to 10 KiB), so docker's count is the members' blocks plus 1 KiB."""
    return members_size + 2 * tarfile.BLOCKSIZE


def host_tar_size(path: str) -> int:
    """The size of the tar docker would send for a host path: a header block per entry and each
    regular file's data in whole blocks (long names' extra headers aside)."""
    def entry(st: os.stat_result) -> int:
        data = st.st_size if stat.S_ISREG(st.st_mode) else 0
        return tarfile.BLOCKSIZE + -(-data // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE

    top = os.lstat(path)
    total = entry(top)
    if stat.S_ISDIR(top.st_mode):
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                total += entry(os.lstat(os.path.join(dirpath, n)))
    return go_tar_size(total)


def _replace(src: Path, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink() and src.is_dir():
        for child in src.iterdir():  # merge into an existing directory, as cp -a does
            _replace(child, dst / child.name)
        shutil.copystat(src, dst)
        return
    if dst.is_dir() and not dst.is_symlink():
        raise InvalidArgument("cannot overwrite directory " + str(dst) + " with non-directory")
    os.replace(src, dst)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                os.lchown(os.path.join(dirpath, n), uid, gid)


def copy_in(c: Container, ref: str, dest: str, *, host_src: str | None = None,
            tar_in: IO[bytes] | None = None, archive: bool = False) -> None:
    """`cp SRC|- CONTAINER:DEST`. A host source is owned by the container's root unless
    `archive` (then as on the host); a tar from stdin is unpacked by the hardened layer
    unpacker first (its own ownership kept), then copied in like a directory's contents."""
    import tempfile

    from shoal.build.fs import Copier, CopyError, in_root
    from shoal.image.layers import unpack_layer

    staging: Path | None = None
    try:
        if tar_in is not None:
            staging = Path(tempfile.mkdtemp(prefix="cp-", dir=c.dir))
            unpack_layer(tar_in, staging, source="archive", hash=False)
            source, contents, owner = staging, True, None
        else:
            assert host_src is not None
            source = Path(host_src)
            if not os.path.lexists(source):
                raise NotFound(f"stat {host_src}: no such file or directory")
            contents = host_src.endswith("/.")
            owner = None if archive else (0, 0)
            if source.is_dir() and not source.is_symlink():
                _check_depth(source, f"cannot copy {host_src}")
        with container_root(c) as root:
            copier = Copier(root, owner, None)
            try:
                dest_is_dir = _is_dir(root, dest)
                if tar_in is not None or contents:
                    if not dest_is_dir and tar_in is not None:
                        raise InvalidArgument(f'destination "{ref}:{dest}" must be a directory')
                    if not dest_is_dir:
                        raise NotFound(f"Could not find the file {dest} in container {ref}")
                    _copy_contents(copier, source, dest)
                    return
                name = source.name
                if dest_is_dir:
                    target = posixpath.join(dest, name)
                else:
                    parent = posixpath.dirname(posixpath.normpath("/" + dest.lstrip("/")))
                    if not _is_dir(root, parent):
                        raise NotFound(f"Could not find the file {parent} in container {ref}")
                    if dest.endswith("/"):
                        raise NotFound(f"Could not find the file {dest} in container {ref}")
                    target = dest
                existing = in_root(root, target)
                if source.is_dir() and not source.is_symlink() and os.path.lexists(existing) \
                        and not stat.S_ISDIR(os.lstat(existing).st_mode):
                    raise InvalidArgument("cannot copy directory")
                _copy_one(copier, source, target)
            except CopyError as exc:
                raise ShoalError(str(exc)) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _is_dir(root: Path, path: str) -> bool:
    """is_dir_in_root, the root itself included (/proc/<pid>/root is a link to lstat)."""
    from shoal.build.fs import is_dir_in_root

    return posixpath.normpath("/" + path.lstrip("/")) == "/" or is_dir_in_root(root, path)


def _copy_contents(copier: Any, source: Path, dest: str) -> None:
    for child in sorted(source.iterdir()):
        _copy_one(copier, child, posixpath.join(dest, child.name))


def _copy_one(copier: Any, source: Path, target: str) -> None:
    from shoal.build.fs import scoped_path

    copier.copy_entry(source, target, keep_links=True)
    if source.is_dir() and not source.is_symlink():
        copier.copy_tree(source, target, keep_links=True)
        copier._finish(scoped_path(copier.root, target), os.lstat(source))  # its own mtime again
