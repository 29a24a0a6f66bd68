"""A container's record on disk (containers/<id>/container.json) and the live facts read back
from conmon's exit files and /proc, so any process (CLI, exit command, a future daemon) sees
the same truth and a container outlives the shoal process that started it."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from shoal.errors import NotFound
from shoal.paths import write_file
from shoal.runtime.spec import ContainerSpec


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return value.__dict__
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class ContainerState:
    status: str = "created"  # created | running | exited | dead
    pid: int = 0
    pid_start: int = 0  # /proc/<pid>/stat starttime, so a recycled pid is not mistaken for ours
    conmon_pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class Container:
    id: str
    name: str
    created: float
    image: str  # as the user wrote it
    image_id: str
    spec: ContainerSpec
    path: str
    args: list[str]
    config: dict[str, Any]  # Docker's Config block (Hostname, Env, Cmd, Entrypoint, ...)
    runtime: str
    dir: Path
    state: ContainerState = field(default_factory=ContainerState)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # inspect's Mounts
    anonymous_volumes: list[str] = field(default_factory=list)
    lowerdirs: list[str] = field(default_factory=list)
    network: dict[str, Any] = field(default_factory=dict)  # netns path, addresses

    # ---- files -------------------------------------------------------------------------------
    @property
    def record(self) -> Path:
        return self.dir / "container.json"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def log_path(self) -> Path:
        return self.dir / "ctr.log"

    @property
    def exit_dir(self) -> Path:
        return self.dir / "exits"

    @property
    def persist_dir(self) -> Path:
        return self.dir / "persist"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def to_json(self) -> str:
        # json walks the dataclasses itself: asdict() deep-copies the whole spec in Python first,
        # which was a tenth of a task's start (the record is saved three times).
        return json.dumps(self, default=_plain)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Container:
        data = dict(data)
        data["spec"] = ContainerSpec.from_dict(data["spec"])
        data["state"] = ContainerState(**data.get("state", {}))
        data["dir"] = Path(data["dir"])
        return cls(**data)

    def save(self) -> None:
        tmp = self.record.with_suffix(".tmp")
        write_file(tmp, self.to_json())  # 0600: the spec carries the environment
        os.replace(tmp, self.record)

    @classmethod
    def load(cls, directory: Path) -> Container:
        return cls.from_dict(json.loads((directory / "container.json").read_text()))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises start/stop/cleanup/remove of this container across processes."""
        try:
            fd = os.open(self.dir / "shoal.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise NotFound(f"No such container: {self.id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- live facts --------------------------------------------------------------------------
    def exit_file(self) -> Path:
        return self.exit_dir / self.id

    def read_exit(self) -> tuple[int, float] | None:
        """conmon's record of the exit: (code, time). Written even when no shoal runs."""
        for path in (self.persist_dir / "exit", self.exit_file()):
            try:
                text = path.read_text().strip()
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if text:
                return int(text), mtime
        return None

    def conmon_oom(self) -> bool:
        return (self.persist_dir / "oom").exists()

    def process_alive(self) -> bool:
        return bool(self.state.pid) and proc_start_time(self.state.pid) == self.state.pid_start

    def refresh(self) -> ContainerState:
        """The current state: the record, corrected by conmon's exit file and /proc."""
        st = self.state
        if st.status != "running":
            return st
        exited = self.read_exit()
        if exited is not None:
            st.status, st.exit_code, st.finished_at = "exited", exited[0], exited[1]
            st.oom_killed = st.oom_killed or self.conmon_oom()
        elif not self.process_alive() and not conmon_alive(st.conmon_pid):
            # conmon itself died (killed): nobody recorded the exit.
            st.status, st.exit_code, st.finished_at = "exited", 255, st.finished_at or time.time()
            st.error = st.error or "container monitor exited unexpectedly"
        if st.status == "exited" and st.exit_code == 137 and not st.oom_killed:
            st.oom_killed = self.conmon_oom()
        return st


def proc_start_time(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return -1
    return int(fields[19])


def conmon_alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "conmon":
            return False
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
