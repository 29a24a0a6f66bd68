"""Named and anonymous volumes: state_root()/volumes/<name>/_data, filled on first use with the
image's content at the mount point (Docker's copy-up)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from shoal.errors import InvalidArgument
from shoal.runtime import mounts
from shoal.paths import state_root

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def volumes_root() -> Path:
    return state_root() / "volumes"


def data_dir(name: str) -> Path:
    return volumes_root() / name / "_data"


def validate_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
            "directory, use absolute path")


def ensure(name: str) -> tuple[Path, bool]:
    """The volume's data dir; True when it was made just now (and so needs copy-up)."""
    validate_name(name)
    data = data_dir(name)
    if data.is_dir():
        return data, False
    data.mkdir(parents=True, exist_ok=True)
    (data.parent / "fresh").touch()
    return data, True


def copy_up(name: str, rootfs: Path, target: str) -> None:
    """Copy the image's files at the mount point into a volume used for the first time. The
    mount point is resolved inside the container's root (mounts.open_dir_in_root): an image's
    symlink such as /srv -> / must lead to the image's files, never the host's."""
    marker = volumes_root() / name / "fresh"
    if not marker.exists():
        return
    fd = mounts.open_dir_in_root(rootfs, target)
    if fd is not None:
        try:
            # cp -a keeps owners, modes, links and xattrs, as Docker's copy-up does; it reads
            # the directory through the descriptor found inside the root, not by a host path.
            subprocess.run(["cp", "-a", f"/proc/self/fd/{fd}/.", str(data_dir(name))], check=True,
                           pass_fds=(fd,))
        finally:
            os.close(fd)
    marker.unlink()


def remove(name: str) -> None:
    shutil.rmtree(volumes_root() / name, ignore_errors=True)
