"""A task's secrets and configs as files: written under SHOAL_RUN (a tmpfs on a real host, so a
secret never reaches the disk), owned and moded as the reference says, bind-mounted read-only at
its target (/run/secrets/<name> for a secret by default)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.errors import NotFound
from shoal.runtime.spec import Mount
from shoal.store.base import Store


def task_dir(task_id: str) -> Path:
    return paths.run_root() / "taskfiles" / task_id


def materialize(store: Store, task_id: str, task_spec: dict[str, Any]) -> list[Mount]:
    """Write the task's files and return the mounts that put them in place."""
    mounts: list[Mount] = []
    refs = [("secret", r) for r in task_spec.get("secrets") or []] + \
           [("config", r) for r in task_spec.get("configs") or []]
    if not refs:
        return mounts
    directory = task_dir(task_id)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for n, (kind, ref) in enumerate(refs):
        found = next((o for o in store.list(kind) if o["name"] == ref["source"]), None)
        if found is None:
            raise NotFound(f"{kind} not found: {ref['source']}")
        path = directory / f"{kind}-{n}"
        path.write_bytes(base64.b64decode(found["data"]))
        os.chown(path, int(ref.get("uid") or 0), int(ref.get("gid") or 0))
        os.chmod(path, int(ref.get("mode", 0o444)))
        mounts.append(Mount(type="bind", source=str(path), target=ref["target"], read_only=True))
    return mounts


def remove(task_id: str) -> None:
    shutil.rmtree(task_dir(task_id), ignore_errors=True)
