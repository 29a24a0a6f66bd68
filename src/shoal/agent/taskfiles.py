"""A task's secrets and configs as files: written only to a tmpfs mounted for the task under the
run root (as Docker mounts one per container: nodev, nosuid, noexec, 0700, read-only once
filled), so a secret never reaches a disk whatever file system the run root is on; owned and
moded as the reference says, bind-mounted read-only at its target (/run/secrets/<name> for a
secret by default); the tmpfs is unmounted with the task."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

from shoal import paths
from shoal.errors import NotFound, ShoalError
from shoal.runtime.spec import Mount
from shoal.store import secretbox
from shoal.store.base import Store

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MNT_DETACH = 2
_FLAGS = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
_libc = ctypes.CDLL(None, use_errno=True)


def task_dir(task_id: str) -> Path:
    return paths.run_root() / "taskfiles" / task_id


def _mount_tmpfs(target: Path, size: int, read_only: bool = False) -> None:
    flags = _FLAGS | (_MS_REMOUNT | _MS_RDONLY if read_only else 0)
    options = f"mode=0700,uid=0,gid=0,size={size}".encode()
    if _libc.mount(b"shoal-taskfiles", str(target).encode(), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise ShoalError(f"tmpfs for the task's secrets at {target}: {os.strerror(err)}")


def _is_mount(path: Path) -> bool:
    return os.path.ismount(path)


# expand(kind, object ID, data, get): a templated object's data rendered for the task, where
# get(kind, name) gives the data of another object the task has (agent/templating.py).
Expand = Callable[[str, str, bytes, Callable[[str, str], bytes]], bytes]


def materialize(store: Store, task_id: str, task_spec: dict[str, Any],
                expand: Expand | None = None) -> list[Mount]:
    """Write the task's files and return the mounts that put them in place. `expand` fills in
    Swarm's templates for the task, in an object made with the golang template driver; the
    rendered data, like the rest, exists only in memory and on the task's tmpfs."""
    mounts: list[Mount] = []
    refs = [("secret", r) for r in task_spec.get("secrets") or []] + \
           [("config", r) for r in task_spec.get("configs") or []]
    if not refs:
        return mounts

    def get(kind: str, name: str) -> bytes:
        found = next((o for o in store.list(kind) if o["name"] == name), None)
        if found is None:
            raise NotFound(f"{kind} not found: {name}")
        return secretbox.content(kind, found)

    contents = []
    for kind, ref in refs:
        found = next((o for o in store.list(kind) if o["name"] == ref["source"]), None)
        if found is None:
            raise NotFound(f"{kind} not found: {ref['source']}")
        data = secretbox.content(kind, found)
        if found.get("template_driver") == "golang" and expand is not None:
            data = expand(kind, str(found.get("id") or ""), data, get)
        contents.append((kind, ref, data))
    directory = task_dir(task_id)
    paths.ensure_private_dir(directory.parent)
    _collect(store, keep=task_id)
    if _is_mount(directory):  # made by an earlier attempt: filled again from the store
        remove(task_id)
    paths.ensure_private_dir(directory)
    # Room for the files and their inodes; a tmpfs takes memory only for what is written.
    size = sum(len(data) for _, _, data in contents) + 4096 * (len(contents) + 1)
    _mount_tmpfs(directory, size)
    try:
        for n, (kind, ref, data) in enumerate(contents):
            path = directory / f"{kind}-{n}"
            mode = int(ref.get("mode", 0o444))
            if not 0 <= mode <= 0xFFFFFFFF:  # moby's File.Mode is a uint32 (its API refuses others)
                raise ShoalError(f"{kind} {ref.get('source', '')} mode: {mode} is not a file mode")
            target = str(ref["target"])
            uid, gid = (_owner(kind, ref, key) for key in ("uid", "gid"))
            paths.write_file(path, data, 0o600)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
            if not target.startswith("/"):  # a config's relative File.Name: under / (moby)
                target = "/" + target
            mounts.append(Mount(type="bind", source=str(path), target=target, read_only=True))
        _mount_tmpfs(directory, size, read_only=True)
    except BaseException:
        remove(task_id)
        raise
    return mounts


def _owner(kind: str, ref: dict[str, Any], key: str) -> int:
    """A reference's uid or gid as moby's setupSecretDir reads it (strconv.Atoi; "" is 0, as
    docker/cli sends it). A bad one fails the task with moby's words, naming the key: a
    ValueError or OverflowError here left the task PREPARING, prepared again in a tight loop."""
    text = str(ref.get(key) or "0")
    what = f"{kind} {ref.get('source', '')} {key}"
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ShoalError(f'{what}: strconv.Atoi: parsing "{text[:40]}": invalid syntax')
    if len(text) > 20:  # past int64 (and int() of thousands of digits is itself an error)
        raise ShoalError(f'{what}: strconv.Atoi: parsing "{text[:40]}": value out of range')
    value = int(text)
    if not 0 <= value < 0xFFFFFFFF:  # (uid_t)-1 means "unchanged" to chown, not an owner
        raise ShoalError(f"{what}: error setting ownership for {kind}: chown {ref.get('target', '')} to {value}: "
                         f"invalid argument")
    return value


def _collect(store: Store, keep: str) -> None:
    """Unmount the files of tasks the store no longer has (their removal was missed: shoald was
    killed, or the container was removed by hand), so secrets do not outlive their task."""
    try:
        names = os.listdir(task_dir(keep).parent)
    except FileNotFoundError:
        return
    live = {t["id"] for t in store.list("task")} | {keep}
    for name in names:
        if name not in live:
            remove(name)


def remove(task_id: str) -> None:
    """Unmount the task's tmpfs (its files go with it) and remove the mount point."""
    directory = task_dir(task_id)
    while _is_mount(directory):
        if _libc.umount2(str(directory).encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise ShoalError(f"unmount {directory}: {os.strerror(err)}")
            break
    shutil.rmtree(directory, ignore_errors=True)
