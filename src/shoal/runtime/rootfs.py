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
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shoal.errors import ShoalError
from shoal.paths import remove_tree
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


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(RESOLVE_IN_ROOT): `..` and every symlink stay inside `root_fd` (the kernel's
    rule, not ours); the helper build steps use."""
    from shoal.runtime.build_step import _open_in_root

    return _open_in_root(root_fd, path, flags)


# ---- diff ---------------------------------------------------------------------------------------

def _in_lower(c: Container, rel: str) -> bool:
    return any(os.path.lexists(os.path.join(d, rel)) for d in c.lowerdirs)


def _check_changes(c: Container, what: str) -> None:
    """A container may nest directories thousands deep; the walks below recurse (a
    RecursionError traceback). Past what a layer holds (512 levels) it is one line instead."""
    from shoal.image.layers import LayerError, check_depth

    try:
        check_depth(c.dir / "upper")
    except LayerError as exc:
        raise ShoalError(f"{what}: the container's changes: {exc}") from None


def changes(c: Container) -> list[tuple[str, str]]:
    """(kind, path) as `docker diff`: A added, C changed, D deleted (an overlay whiteout),
    sorted by path; the directories above a change are changed too."""
    upper = c.dir / "upper"
    _check_changes(c, "diff")
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

def export(c: Container, out: IO[bytes]) -> None:
    """The container's root filesystem as an uncompressed tar (docker export)."""
    _check_changes(c, "export")  # before the first byte of the tar
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

def commit(c: Container, images: Any, reference: str = "", *, message: str = "", author: str = "",
           run_config: dict[str, Any] | None = None, pause: bool = True) -> Any:
    """A new image: the container's image with its upper dir as one more layer (whiteouts as
    OCI's `.wh.` entries, write_layer_tar); its config `run_config` (the container's, with the
    CLI's --change applied) or the container's own."""
    from shoal.image.layers import LayerError
    from shoal.image.store import format_time

    if c.state.status == "dead":
        raise ShoalError(f"You cannot commit container {c.id} which is Dead")
    base = images.resolve(c.image_id)
    run_config = dict(run_config if run_config is not None else base_config(c))
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
    except LayerError as exc:  # changes no layer can hold (nested past MAX_DEPTH)
        raise ShoalError(f"commit: the container's changes: {exc}") from None
    except subprocess.CalledProcessError as exc:
        raise ShoalError(f"commit: copying the container's changes: {exc.stderr.decode().strip()}") from None
    finally:
        remove_tree(scratch)  # the container's own tree, which may be nested past shutil.rmtree
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


def base_config(c: Container) -> dict[str, Any]:
    """The config a commit starts from: the container's (moby merges it over the image's)."""
    cfg = {k: v for k, v in c.config.items() if k != "StopTimeout"}
    cfg["Image"] = c.image_id
    return cfg


def _drop_init_paths(c: Container, scratch: Path) -> None:
    for rel in sorted(INIT_PATHS):
        p = scratch / rel
        if os.path.lexists(p) and not _in_lower(c, rel):
            if p.is_dir() and not p.is_symlink():
                remove_tree(p)
            else:
                p.unlink()
    etc = scratch / "etc"
    if etc.is_dir() and not etc.is_symlink() and not any(etc.iterdir()) and _in_lower(c, "etc"):
        etc.rmdir()  # copied up only for the runtime's files


def _empty(path: Path) -> bool:
    return not any(path.iterdir())
