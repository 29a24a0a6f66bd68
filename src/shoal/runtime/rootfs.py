"""A container's filesystem seen from outside: `diff` (its upper dir against the image's
layers), `export` (the merged root as a tar), `commit` (the upper dir as a new image layer,
whiteouts as OCI's) and `cp` (both ways).

Every path a user names is resolved inside the container's root, never on the host:
reading goes through openat2(RESOLVE_IN_ROOT) and descriptors opened with O_NOFOLLOW below
it; writing goes through the builder's Copier (build/fs.py, each destination resolved in the
root when it is written) while the container is frozen, so its processes cannot swap a
directory for a symlink between our check and our write (moby freezes it for the same
reason). A running container is reached through /proc/<pid>/root (its volumes included); a
stopped one through its overlay, mounted for the copy under the container's lock."""

from __future__ import annotations

import contextlib
import ctypes
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.runtime import mounts
from shoal.runtime.control import frozen_while
from shoal.runtime.state import Container

# Made by the runtime or by shoal for every container (Docker keeps them in its "init" layer,
# so `diff` and `commit` never show them) when the image does not have them.
INIT_PATHS = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", "dev", "proc",
                        "sys", ".dockerenv"})


# ---- the root: mounted, reachable --------------------------------------------------------------

@contextlib.contextmanager
def container_root(c: Container, freeze: bool = True) -> Iterator[Path]:
    """A host path that is the container's `/`: /proc/<pid>/root of a running one (frozen for
    the duration unless `freeze` is false), else its overlay mounted for the duration."""
    if c.state.status == "running" and c.process_alive():
        root = Path(f"/proc/{c.state.pid}/root")
        with frozen_while(c) if freeze else contextlib.nullcontext():
            if not c.process_alive():  # exited (and its pid perhaps reused) meanwhile
                raise ShoalError(f"container {c.id} exited during the copy")
            yield root
        return
    with c.locked():
        if mounts.is_mounted(c.rootfs):
            yield c.rootfs
            return
        mounts.mount_overlay([Path(p) for p in c.lowerdirs], c.dir / "upper", c.dir / "work", c.rootfs)
        try:
            yield c.rootfs
        finally:
            mounts.unmount(c.rootfs)


@contextlib.contextmanager
def merged_root(c: Container) -> Iterator[Path]:
    """The container's own root filesystem (no volumes): its overlay, mounted if it is not."""
    if c.state.status == "running" and mounts.is_mounted(c.rootfs):
        with frozen_while(c):
            yield c.rootfs
        return
    with container_root(c) as root:
        yield root


# openat2(2) with RESOLVE_IN_ROOT: `..` and every symlink (absolute or relative) stay inside the
# directory fd, enforced by the kernel. Python has no wrapper: the raw syscall.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


# ---- diff ---------------------------------------------------------------------------------------

def _in_lower(c: Container, rel: str) -> bool:
    return any(os.path.lexists(os.path.join(d, rel)) for d in c.lowerdirs)


def changes(c: Container) -> list[tuple[str, str]]:
    """(kind, path) as `docker diff`: A added, C changed, D deleted (an overlay whiteout),
    sorted by path; the directories above a change are changed too."""
    upper = c.dir / "upper"
    found: dict[str, str] = {}
    hidden_below: set[str] = set()

    def walk(rel_dir: str) -> None:
        try:
            entries = sorted(os.scandir(upper / rel_dir if rel_dir else upper), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found[rel] = "D"
                continue
            lower = _in_lower(c, rel)
            if not lower and (rel in INIT_PATHS or rel.startswith("dev/")):
                hidden_below.add(rel_dir)
                continue
            found[rel] = "C" if lower else "A"
            if stat.S_ISDIR(st.st_mode):
                walk(rel)

    walk("")
    # A directory copied up only to hold one of the runtime's files is not a change of its own.
    for rel in sorted(hidden_below, key=len, reverse=True):
        while rel and found.get(rel) == "C" and not any(p.startswith(rel + "/") for p in found):
            del found[rel]
            rel = rel.rpartition("/")[0]
    return [(kind, "/" + rel) for rel, kind in sorted(found.items())]


# ---- export -------------------------------------------------------------------------------------

def _plain_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # the container's users are not the host's: numbers only
    return info


def export(c: Container, out: IO[bytes]) -> None:
    """The container's root filesystem as an uncompressed tar (docker export)."""
    with merged_root(c) as root:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(root_fd)):
                    _tar_entry(tar, root_fd, name, name)
        finally:
            os.close(root_fd)


def _tar_entry(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str) -> None:
    """`name` in the directory `dir_fd` (never followed if a symlink) and what is below it."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for child in sorted(os.listdir(fd)):
                _tar_entry(tar, fd, child, f"{arcname}/{child}")
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, f)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    # sockets are not part of a filesystem image


# ---- commit -------------------------------------------------------------------------------------

VALID_CHANGES = ("cmd", "entrypoint", "healthcheck", "env", "expose", "label", "onbuild", "stopsignal",
                 "user", "volume", "workdir")


def apply_changes(config: dict[str, Any], changes_: list[str]) -> dict[str, Any]:
    """`docker commit --change`: Dockerfile instructions applied to the container's config."""
    from shoal.build import dockerfile as df

    cfg = dict(config)
    for text in changes_:
        word = text.strip().split(None, 1)[0] if text.strip() else ""
        if word.lower() not in VALID_CHANGES:
            raise InvalidArgument(f"{word} is not a valid change command")
        try:
            cmd = df.parse_onbuild_trigger(text, "--change")
        except ShoalError as exc:
            raise InvalidArgument(str(exc)) from None
        shell = list(cfg.get("Shell") or ["/bin/sh", "-c"])
        if isinstance(cmd, df.KeyValueCommand) and cmd.name == "env":
            env = list(cfg.get("Env") or [])
            for k, v in cmd.pairs:
                env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif isinstance(cmd, df.KeyValueCommand):
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(cmd.pairs)}
        elif isinstance(cmd, df.ShellFormCommand):
            argv = None if cmd.cmdline is None else (
                shell + [" ".join(cmd.cmdline)] if cmd.prepend_shell else list(cmd.cmdline))
            cfg["Cmd" if cmd.name == "cmd" else "Entrypoint"] = argv
        elif isinstance(cmd, df.WordCommand):
            key = {"user": "User", "stopsignal": "StopSignal", "workdir": "WorkingDir"}[cmd.name]
            value = cmd.value
            if cmd.name == "workdir" and not value.startswith("/"):
                value = posixpath.join(cfg.get("WorkingDir") or "/", value)
            cfg[key] = value
        elif isinstance(cmd, df.ListCommand) and cmd.name == "expose":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in cmd.values:
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif isinstance(cmd, df.ListCommand) and cmd.name == "volume":
            cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{v: {} for v in cmd.values}}
        elif isinstance(cmd, df.HealthcheckCommand):
            hc: dict[str, Any] = {"Test": cmd.test}
            for key, value in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                               ("StartPeriod", cmd.start_period), ("Retries", cmd.retries)):
                if value:
                    hc[key] = value
            cfg["Healthcheck"] = hc
        elif isinstance(cmd, df.OnbuildCommand):
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [cmd.expression]
    return cfg


def commit(c: Container, images: Any, reference: str = "", *, message: str = "", author: str = "",
           changes_: list[str] | None = None, pause: bool = True) -> Any:
    """A new image: the container's image with its upper dir as one more layer (whiteouts as
    OCI's `.wh.` entries, write_layer_tar), its config the container's with --change applied."""
    from shoal.image.store import format_time

    if c.state.status == "dead":
        raise ShoalError(f"You cannot commit container {c.id} which is Dead")
    base = images.resolve(c.image_id)
    run_config = {k: v for k, v in c.config.items() if k not in ("StopTimeout",)}
    run_config["Image"] = c.image_id
    run_config = apply_changes(run_config, list(changes_ or []))
    if reference:
        images._tag_ref(reference)  # a bad name fails before anything is written
    scratch = c.dir / f"commit-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with frozen_while(c) if pause else contextlib.nullcontext():
            # a copy: the store moves the layer's directory into its snapshots
            subprocess.run(["cp", "-a", "--", str(c.dir / "upper"), str(scratch)], check=True,
                           capture_output=True)
        _drop_init_paths(c, scratch)
        layer = None if _empty(scratch) else images.layer_from_dir(scratch)
    except subprocess.CalledProcessError as exc:
        raise ShoalError(f"commit: copying the container's changes: {exc.stderr.decode().strip()}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    now = format_time(time.time())
    parent_cfg = base.config
    cfg: dict[str, Any] = {"architecture": parent_cfg.get("architecture") or "amd64",
                           "os": parent_cfg.get("os") or "linux", "config": run_config,
                           "container": c.id, "created": now}
    if author:
        cfg["author"] = author
    if message:
        cfg["comment"] = message
    entry: dict[str, Any] = {"created": now, "created_by": " ".join(c.config.get("Cmd") or [])}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    if layer is None:
        entry["empty_layer"] = True
    cfg["history"] = list(parent_cfg.get("history") or []) + [entry]
    layers = list(base.layers) + ([layer] if layer is not None else [])
    return images.create_image(cfg, layers, tags=[reference] if reference else [], parent=base.id)


def _drop_init_paths(c: Container, scratch: Path) -> None:
    for rel in sorted(INIT_PATHS):
        p = scratch / rel
        if os.path.lexists(p) and not _in_lower(c, rel):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    etc = scratch / "etc"
    if etc.is_dir() and not etc.is_symlink() and not any(etc.iterdir()) and _in_lower(c, "etc"):
        etc.rmdir()  # copied up only for the runtime's files


def _empty(path: Path) -> bool:
    return not any(path.iterdir())


# ---- cp -----------------------------------------------------------------------------------------

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


def copy_out(c: Container, ref: str, src: str, *, follow_link: bool = False,
             tar_out: IO[bytes] | None = None, host_dest: str | None = None, archive: bool = False) -> None:
    """`cp CONTAINER:SRC -|DEST`: a tar on `tar_out`, or the files at `host_dest` on the host
    (owned by the caller unless `archive`, as docker cp)."""
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
            if tar_out is not None:
                with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _tar_source(tar, pfd, name, st, contents)
                return
            assert host_dest is not None
            _to_host(pfd, name, st, contents, host_dest, archive)
        finally:
            os.close(pfd)


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


def _is_fd_itself(pfd: int, st: os.stat_result) -> bool:
    own = os.fstat(pfd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _to_host(pfd: int, name: str, st: os.stat_result, contents: bool, dest: str, archive: bool) -> None:
    """docker cp's rules on the host side: into DEST when it is a directory, else as DEST
    (whose parent must exist); a directory never replaces a file."""
    dest_path = Path(dest)
    if dest_path.is_dir():
        target = dest_path if contents else dest_path / (name if name != "/" else "rootfs")
    else:
        if dest.endswith("/"):
            raise NotFound(f"destination directory {dest} must exist")  # go-archive's ErrDirNotExists
        if not dest_path.parent.is_dir():
            raise NotFound(f"stat {dest_path.parent}: no such file or directory")
        if stat.S_ISDIR(st.st_mode) and dest_path.exists():
            raise InvalidArgument("cannot copy directory")
        target = dest_path
    # The tar the container side yields, unpacked through the project's hardened layer unpacker
    # into a staging dir next to the target, then moved in: nothing of the container's naming
    # can place a file outside `target`.
    import tempfile

    from shoal.image.layers import unpack_layer

    staging = Path(tempfile.mkdtemp(prefix=".shoal-cp-", dir=target.parent))  # same fs: moved in
    produced_name = "rootfs" if name == "/" else name
    try:
        r, w = os.pipe()
        import threading

        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(w, "wb") as out:
                    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                        _tar_source(tar, pfd, produced_name, st, False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=produce)
        thread.start()
        with os.fdopen(r, "rb") as inp:
            unpack_layer(inp, staging, source="container", hash=False)
        thread.join()
        if errors:
            raise errors[0]
        produced = staging / produced_name
        if not archive:
            _chown_tree(produced, os.getuid(), os.getgid())
        if contents:
            target.mkdir(exist_ok=True)
            for child in produced.iterdir():
                _replace(child, target / child.name)
        else:
            _replace(produced, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
