"""Layer tars <-> snapshot directories.

`unpack_layer` applies an OCI layer tar to an empty directory that will be used as an overlayfs
lowerdir: `.wh.name` entries become 0/0 character devices and `.wh..wh..opq` becomes the
`trusted.overlay.opaque=y` xattr, which is what overlayfs itself uses. `write_layer_tar` is the
inverse for an overlay upperdir. Neither ever writes or reads outside the given directory: names
with `..` or a leading `/` are refused, and nothing is created below a symlink.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shoal.errors import ShoalError

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
_PAX_XATTR = "SCHILY.xattr."
_CHUNK = 1 << 20
_IS_ROOT = os.geteuid() == 0


class LayerError(ShoalError):
    """A layer tar that cannot be applied: corrupt, truncated or unsafe."""


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    unpacked_size: int  # bytes of regular file content, as Docker counts a layer's size
    tar_size: int  # bytes of the uncompressed tar stream


# --- compression ------------------------------------------------------------------------------

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def detect_compression(head: bytes) -> str:
    """`gzip`, `bzip2`, `xz`, `zstd` or `none`, from the first bytes of a stream."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class _ZstdReader(io.RawIOBase):
    """zstd decompression through the zstd binary (Python 3.11 has no zstd module)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._raw = raw
        self._feed_error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        try:
            while chunk := self._raw.read(_CHUNK):
                self._proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # surfaced to the reading side
            self._feed_error = exc
        finally:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        assert self._proc.stdout is not None
        data = self._proc.stdout.read1(len(buffer)) if hasattr(self._proc.stdout, "read1") else \
            self._proc.stdout.read(len(buffer))
        if not data:
            self._finish()
        buffer[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._feeder.join()
        code = self._proc.wait()
        if self._feed_error is not None:
            raise self._feed_error
        if code != 0:
            assert self._proc.stderr is not None
            message = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise LayerError(f"zstd: {message[-1] if message else 'decompression failed'}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._feeder.join(timeout=5)
        super().close()


def decompressed(raw: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed bytes of `raw` (already known to use `compression`)."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "bzip2":
        return bz2.BZ2File(raw, "rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(raw, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        return io.BufferedReader(_ZstdReader(raw), _CHUNK)  # type: ignore[return-value]
    return raw


class HashingReader(io.RawIOBase):
    """Passes reads through, hashing and counting what went by (and telling `tee`)."""

    def __init__(self, inner: BinaryIO, tee: Callable[[bytes], object] | None = None, hash: bool = True) -> None:
        self._inner = inner
        self._tee = tee
        self.sha = hashlib.sha256() if hash else None
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            if self.sha is not None:
                self.sha.update(data)
            self.count += len(data)
            if self._tee is not None:
                self._tee(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest() if self.sha is not None else ""


# --- tar -> snapshot --------------------------------------------------------------------------


# Directory levels an entry may be below the layer root. PATH_MAX allows ~2000 ("d/d/..."),
# but every tree made here is later removed or walked by Python's recursive shutil/os.walk
# (about one frame a level, 1000 at most): deeper, a failed unpack left its tree behind with a
# RecursionError. No real image nests anywhere near this.
MAX_DEPTH = 512


def _clean_name(name: str) -> str:
    """The member's path relative to the snapshot root; refuses anything that could escape."""
    if name.startswith("/"):
        raise LayerError(f"unsafe path in layer: {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"unsafe path in layer: {name!r} leaves the layer")
    if len(parts) > MAX_DEPTH:
        raise LayerError(f"unsafe path in layer: {name[:64]!r}... is {len(parts)} levels deep "
                         f"(at most {MAX_DEPTH})")
    return "/".join(parts)


def _ignore_eperm(func: Callable[[], object]) -> None:
    """Ownership and privileged xattrs need root; without it the content is still usable."""
    try:
        func()
    except PermissionError:
        if _IS_ROOT:
            raise
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP) and _IS_ROOT:
            raise


class _Applier:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.root = os.fspath(dest)
        self.known_dirs: set[str] = {""}
        # directory mtimes, set once their children are in; keyed by the member's path so an
        # entry that later replaces the directory (a symlink to the host) drops its timestamp
        self.dir_times: dict[str, float] = {}
        self.unpacked_size = 0

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def ensure_parent(self, rel: str) -> None:
        """Every ancestor of `rel` is a real directory inside the snapshot (created if missing:
        it may come from a lower layer); a symlink or file in the way is refused."""
        missing: list[str] = []  # the ancestors not known yet, nearest first (a loop, not
        parent = rel.rpartition("/")[0]  # recursion: a path may be thousands of levels deep)
        while parent not in self.known_dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for parent in reversed(missing):
            full = self.path(parent)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                os.mkdir(full, 0o755)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise LayerError(f"unsafe path in layer: {rel!r} is below a non-directory {parent!r}")
            self.known_dirs.add(parent)

    def clear(self, rel: str, keep_dir: bool) -> None:
        """Remove what is at `rel` (a later entry for the same name replaces an earlier one)."""
        full = self.path(rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(full)
            self.known_dirs = {d for d in self.known_dirs if d != rel and not d.startswith(rel + "/")}
            for d in [d for d in self.dir_times if d == rel or d.startswith(rel + "/")]:
                del self.dir_times[d]
        else:
            os.unlink(full)

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = _clean_name(member.name)
        base = rel.rpartition("/")[2]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base, member)
            return
        if not rel:
            self.metadata("", member)  # the layer root: `./`
            return
        self.ensure_parent(rel)
        full = self.path(rel)
        self.clear(rel, keep_dir=member.isdir())
        if member.isdir():
            if not os.path.isdir(full):
                os.mkdir(full, 0o700)
            self.known_dirs.add(rel)
        elif member.isreg():
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                if member.sparse is not None:
                    _write_sparse(tar, member, out)
                else:
                    source = tar.extractfile(member)
                    assert source is not None
                    shutil.copyfileobj(source, out, _CHUNK)
            self.unpacked_size += member.size
        elif member.issym():
            os.symlink(member.linkname, full)
        elif member.islnk():
            target_rel = _clean_name(member.linkname)
            target = self.path(target_rel)
            self.ensure_parent(target_rel)
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                raise LayerError(f"hard link {member.name!r} points to {member.linkname!r}, "
                                 "which is not in the layer") from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"hard link {member.name!r} points to a directory")
            os.link(target, full, follow_symlinks=False)
            return  # a hard link shares the target's inode and metadata
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(full, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(full, 0o600)
        else:
            return  # sockets and unknown types are not part of a filesystem image
        self.metadata(rel, member)

    def whiteout(self, rel: str, base: str, member: tarfile.TarInfo) -> None:
        parent = rel.rpartition("/")[0]
        self.ensure_parent(rel)
        if base == WHITEOUT_OPAQUE:
            full = self.path(parent)
            if parent and not os.path.isdir(full):
                os.mkdir(full, 0o755)
            os.setxattr(full, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk ...) means nothing to overlayfs
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise LayerError(f"unsafe path in layer: {member.name!r}")
        target_rel = f"{parent}/{name}" if parent else name
        self.clear(target_rel, keep_dir=False)
        full = self.path(target_rel)
        os.mknod(full, stat.S_IFCHR, os.makedev(0, 0))
        _ignore_eperm(lambda: os.lchown(full, member.uid, member.gid))

    def metadata(self, rel: str, member: tarfile.TarInfo) -> None:
        full = self.path(rel)
        _ignore_eperm(lambda: os.lchown(full, member.uid, member.gid))
        for key, value in member.pax_headers.items():
            if key.startswith(_PAX_XATTR):
                attr = key[len(_PAX_XATTR) :]
                if attr.startswith(_OVERLAY_XATTR_PREFIX):
                    continue  # only whiteout entries may make overlay metadata
                raw = value.encode("utf-8", "surrogateescape")
                _ignore_eperm(lambda: os.setxattr(full, attr, raw, follow_symlinks=False))
        if member.issym():
            os.utime(full, (member.mtime, member.mtime), follow_symlinks=False)
            return
        os.chmod(full, member.mode & 0o7777)  # after chown, which clears set-id bits
        if member.isdir():
            self.dir_times.pop(rel, None)  # a repeated entry's time counts in its new place
            self.dir_times[rel] = member.mtime  # set last: children change it
        else:
            os.utime(full, (member.mtime, member.mtime))

    def finish(self) -> None:
        # Every path here is still the directory its entry made (clear() drops replaced ones);
        # not following a final link is a second guard against a write through to the host.
        for rel, mtime in reversed(self.dir_times.items()):
            os.utime(self.path(rel), (mtime, mtime), follow_symlinks=False)


def _write_sparse(tar: tarfile.TarFile, member: tarfile.TarInfo, out: BinaryIO) -> None:
    """A sparse member (GNU or PAX sparse formats) written with its holes left as holes: the
    archive holds only the data regions, one after another in map order, and a few hundred
    bytes may declare a file of terabytes. tarfile's reader would hand back every zero of the
    holes (4GiB written for a 10KiB tar), so the regions are read from the stream directly
    and written at their offsets, and the file is then cut to its size."""
    stored = tar.offset - member.offset_data  # the data area, block-padded
    remaining = stored
    tar.fileobj.seek(member.offset_data)  # type: ignore[union-attr]  # forward only: where it is
    for offset, size in member.sparse or ():
        if size == 0:
            continue
        if offset < 0 or size < 0 or offset + size > member.size or size > remaining:
            raise LayerError(f"invalid sparse map for {member.name!r}: region {offset}+{size} "
                             f"outside the file ({member.size} bytes, {stored} stored)")
        remaining -= size
        out.seek(offset)
        while size:
            chunk = tar.fileobj.read(min(size, _CHUNK))  # type: ignore[union-attr]
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            out.write(chunk)
            size -= len(chunk)
    out.truncate(member.size)


class _HeaderProblem(Exception):
    pass


# tarfile's header errors (not in typeshed): a zero block, no data, a short block, a bad block.
_EOF_HEADER: type[Exception] = getattr(tarfile, "EOFHeaderError")
_EMPTY_HEADER: type[Exception] = getattr(tarfile, "EmptyHeaderError")
_TRUNCATED_HEADER: type[Exception] = getattr(tarfile, "TruncatedHeaderError")
_INVALID_HEADER: type[Exception] = getattr(tarfile, "InvalidHeaderError")


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive quietly at a bad header after the first member, and at end of
    data without the end-of-archive blocks: a corrupt or cut tar would import as a shorter
    one. Both are errors here; only a zero block ends the archive."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except _EOF_HEADER:
            raise
        except _EMPTY_HEADER:
            raise _HeaderProblem("unexpected end of data") from None
        except (_TRUNCATED_HEADER, _INVALID_HEADER) as exc:
            raise _HeaderProblem(f"invalid tar header ({exc})") from None


def unpack_layer(stream: BinaryIO, dest: Path, source: str = "layer", hash: bool = True) -> UnpackResult:
    """Apply the uncompressed tar `stream` to the empty directory `dest`.

    Returns the diff_id of the stream (read to its very end, padding included; "" when `hash`
    is false because the caller hashes the same bytes already). Raises
    LayerError for a corrupt, truncated or unsafe tar; `dest` is then half-filled and the caller
    removes it.
    """
    reader = HashingReader(stream, hash=hash)
    applier = _Applier(dest)
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=_CHUNK,  # type: ignore[call-overload]
                          tarinfo=_StrictTarInfo) as tar:
            for member in tar:
                # tarfile keeps every member it has read (TarFile.members), even streaming: a
                # layer of a million empty files (a 10MB gzip) held 500MB. Nothing here looks
                # a member up again (hard links are the applier's), so none is kept.
                tar.members.clear()
                try:
                    applier.apply(tar, member)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or isinstance(exc, gzip.BadGzipFile):
                        raise
                    # the entry's name, not the scratch path the kernel refused (a bad xattr
                    # value, a name too long for the filesystem...)
                    raise LayerError(f"{source}: cannot unpack {member.name!r}: "
                                     f"{exc.strerror or exc}") from None
        reader.drain()
    except LayerError as exc:
        # which layer, tar or archive: the same unsafe entry means something else in each
        text = str(exc)
        raise LayerError(text if text.startswith(f"{source}: ") else f"{source}: {text}") from None
    except _HeaderProblem as exc:
        raise LayerError(f"{source}: invalid or truncated tar archive: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise LayerError(f"{source}: invalid or truncated tar archive: {_reason(exc)}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ShoalError(f"{source}: no space left on device while unpacking the layer") from None
        if isinstance(exc, (gzip.BadGzipFile,)):
            raise LayerError(f"{source}: invalid or truncated tar archive: {_reason(exc)}") from None
        raise ShoalError(f"{source}: cannot unpack layer: {exc}") from None
    applier.finish()
    if reader.count == 0:
        raise LayerError(f"{source}: invalid tar archive: empty file")
    return UnpackResult(diff_id=reader.digest(), unpacked_size=applier.unpacked_size, tar_size=reader.count)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, EOFError) or not text:
        return "unexpected end of data"
    return text


# --- snapshot/upperdir -> tar -----------------------------------------------------------------


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Pre-order, name-sorted walk (parents before children) that never follows symlinks."""
    full = os.path.join(root, rel) if rel else root
    entries = sorted(os.scandir(full), key=lambda e: e.name)
    for entry in entries:
        child = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        yield child, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child)


def check_depth(root: Path) -> None:
    """Refuse a directory tree no layer can hold: directories nested more than MAX_DEPTH deep
    (unpack_layer's limit, so such a layer could never be loaded back) or a path longer than
    the kernel takes. A container or a RUN step may nest directories thousands deep (mkdir and
    cd in a loop), and the walks that make a layer (_walk, os.walk) recurse: a RecursionError
    traceback. This walk keeps a stack of its own; it names the first path too deep."""
    stack: list[tuple[str, int]] = [(os.fspath(root), 0)]
    while stack:
        path, depth = stack.pop()
        try:
            with os.scandir(path) as entries:
                dirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise LayerError(f"{_shown_rel(root, path)} is a path longer than the system allows") from None
            raise
        if dirs and depth + 1 > MAX_DEPTH:
            raise LayerError(f"{_shown_rel(root, dirs[0])} is more than {MAX_DEPTH} directories deep")
        stack.extend((d, depth + 1) for d in dirs)


def _shown_rel(root: Path, path: str) -> str:
    rel = os.path.relpath(path, root)
    return rel if len(rel) <= 80 else rel[:77] + "..."


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    result: dict[str, str] = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR_PREFIX):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        result[_PAX_XATTR + name] = value.decode("utf-8", "surrogateescape")
    return result


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class _Counting:
    """A write-only stream that knows its position (what tarfile's "w" mode asks of it)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos


def write_layer_tar(upper: Path, out: BinaryIO) -> None:
    """Write the overlay upperdir `upper` as an OCI layer tar to `out`.

    Overlay whiteouts (0/0 character devices) become `.wh.<name>` entries and opaque
    directories get a `.wh..wh..opq` entry. Entries are sorted and carry no user/group names,
    so the same content (with the same mtimes) always gives the same tar and diff_id.
    """
    root = os.fspath(upper)
    links: dict[tuple[int, int], str] = {}
    # Plain "w" mode writes straight to `out` (the "w|" stream mode copies every block through
    # its own buffer); it only needs tell(), which a counting wrapper gives.
    with tarfile.open(fileobj=_Counting(out), mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for rel, st in _walk(root):
            full = os.path.join(root, rel)
            info = tarfile.TarInfo(rel)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mtime = int(st.st_mtime)
            info.mode = stat.S_IMODE(st.st_mode)
            mode = st.st_mode
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                parent, _, name = rel.rpartition("/")
                info.name = f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name
                info.type, info.mode, info.size = tarfile.REGTYPE, 0o600, 0
                tar.addfile(info)
                continue
            if not stat.S_ISDIR(mode):
                info.pax_headers = _xattrs(full)
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                info.pax_headers = _xattrs(full)
                tar.addfile(info)
                if _is_opaque(full):
                    marker = tarfile.TarInfo(f"{rel}/{WHITEOUT_OPAQUE}")
                    marker.type, marker.mode = tarfile.REGTYPE, info.mode
                    marker.uid, marker.gid, marker.mtime = info.uid, info.gid, info.mtime
                    marker.uname = marker.gname = ""
                    tar.addfile(marker)
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type, info.linkname = tarfile.LNKTYPE, links[key]
                    tar.addfile(info)
                    continue
                if st.st_nlink > 1:
                    links[key] = rel
                info.type, info.size = tarfile.REGTYPE, st.st_size
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            elif stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
                tar.addfile(info)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tar.addfile(info)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            # sockets are skipped, as Docker does


def dir_size(root: Path) -> int:
    """Bytes of regular file content under `root` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _rel, st in _walk(os.fspath(root)):
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def strip_overlay_metadata(root: Path) -> None:
    """Remove overlay bookkeeping xattrs (origin, impure...) from a former upperdir before it
    becomes a lowerdir; whiteouts and the opaque flag stay."""
    for rel, st in _walk(os.fspath(root)):
        if stat.S_ISLNK(st.st_mode):
            continue
        full = os.path.join(os.fspath(root), rel)
        try:
            names = os.listxattr(full, follow_symlinks=False)
        except OSError:
            continue
        for name in names:
            if name.startswith(_OVERLAY_XATTR_PREFIX) and name != OPAQUE_XATTR:
                try:
                    os.removexattr(full, name, follow_symlinks=False)
                except OSError:
                    pass
