"""The layer cache: (parent image ID, step key) -> the image ID that step produced.

The key holds everything that decides a step's result: the instruction with its arguments
expanded, the build args a RUN sees, and for COPY/ADD the hash of every source file. The map
is one small JSON file under the image store's root, rewritten atomically; entries whose image
is gone are simply misses."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal import paths


def step_key(parent_id: str, step: dict[str, Any]) -> str:
    """A stable digest of the parent image and a JSON-able description of the step."""
    payload = json.dumps({"parent": parent_id, "step": step}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class BuildCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._entries is None:
            try:
                data = json.loads(self.path.read_text())
                self._entries = {str(k): str(v) for k, v in data.get("steps", {}).items()}
            except (OSError, ValueError, AttributeError):
                self._entries = {}
        return self._entries

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, paths.PRIVATE_FILE)
        with open(lock_fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, key: str, image_id: str) -> None:
        """Record a step; merges with what other builds wrote meanwhile."""
        with self._locked():
            self._entries = None
            entries = self._load()
            entries[key] = image_id
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            paths.write_file(tmp, json.dumps({"steps": entries}, sort_keys=True))
            os.replace(tmp, self.path)

    def forget(self, image_ids: set[str]) -> None:
        """Drop entries that point at removed images (called lazily on misses)."""
        with self._locked():
            self._entries = None
            entries = self._load()
            kept = {k: v for k, v in entries.items() if v not in image_ids}
            if len(kept) != len(entries):
                tmp = self.path.with_suffix(f".tmp{os.getpid()}")
                paths.write_file(tmp, json.dumps({"steps": kept}, sort_keys=True))
                os.replace(tmp, self.path)
                self._entries = kept
