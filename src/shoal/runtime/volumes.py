"""Named and anonymous volumes: state_root()/volumes/<name>/_data, filled on first use with the
image's content at the mount point (Docker's copy-up)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from shoal.errors import InvalidArgument
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


def copy_up(name: str, source: Path) -> None:
    """Copy the image's files at the mount point into a volume used for the first time."""
    marker = volumes_root() / name / "fresh"
    if not marker.exists():
        return
    if source.is_dir() and not source.is_symlink():
        # cp -a keeps owners, modes, links and xattrs, as Docker's copy-up does.
        subprocess.run(["cp", "-a", f"{source}/.", str(data_dir(name))], check=True)
    marker.unlink()


def remove(name: str) -> None:
    shutil.rmtree(volumes_root() / name, ignore_errors=True)
