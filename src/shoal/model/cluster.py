"""Cluster objects as swarmkit models them: services, tasks, nodes. Plain data, no I/O.

Task states are ordered like swarmkit's (api/types.proto): the observed state only moves
forward, so a late or duplicated status report can never move a task back."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class TaskState(enum.IntEnum):
    NEW = 0
    PENDING = 64
    ASSIGNED = 192
    ACCEPTED = 256
    PREPARING = 320
    READY = 384
    STARTING = 448
    RUNNING = 512
    COMPLETE = 576
    SHUTDOWN = 640
    FAILED = 704
    REJECTED = 768
    REMOVE = 800
    ORPHANED = 832

    @property
    def text(self) -> str:
        """The API string: `running`."""
        return self.name.lower()

    @property
    def pretty(self) -> str:
        """docker/cli PrettyPrint: `Running`."""
        return self.name.capitalize()

    @property
    def terminal(self) -> bool:
        return self > TaskState.RUNNING

    @classmethod
    def parse(cls, text: str) -> TaskState:
        return cls[text.upper()]


@dataclass
class TaskStatus:
    state: TaskState = TaskState.NEW
    timestamp: float = field(default_factory=time.time)
    message: str = "created"
    err: str = ""
    container_id: str = ""
    pid: int = 0
    exit_code: int | None = None


@dataclass
class Task:
    id: str
    service_id: str
    service_name: str
    slot: int  # 0 for global tasks: they are keyed by node instead
    node_id: str = ""
    spec_version: int = 0
    desired_state: TaskState = TaskState.RUNNING
    status: TaskStatus = field(default_factory=TaskStatus)
    created_at: float = field(default_factory=time.time)
    networks: list[dict[str, Any]] = field(default_factory=list)  # [{network, addresses, aliases}]
    spec: dict[str, Any] = field(default_factory=dict)  # the service's task spec when created
    # Restart and update gates: a task parked at desired READY goes RUNNING once `start_after`
    # has passed and the task it replaces (if any) has stopped (swarmkit's DelayStart).
    start_after: float = 0.0
    replaces: str = ""
    restarted: bool = False  # created by the restart supervisor (counts against max_attempts)
    # depends_on: the first tasks of a service are prepared but parked until these services
    # (full names) meet their condition, so a stack starts in order (docker compose does this;
    # Swarm does not).
    waits_for: list[str] = field(default_factory=list)
    version: int = 0  # store revision of the last write

    @property
    def name(self) -> str:
        """`webapp_web.1`, or `webapp_web.<node id>` for a global task."""
        return f"{self.service_name}.{self.slot if self.slot else self.node_id}"

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(): it deep-copies the task's spec on every status write. The spec and
        # networks are shared as they are (values read from the store are read-only).
        data = dict(self.__dict__)
        data["desired_state"] = self.desired_state.text
        data["status"] = dict(self.status.__dict__, state=self.status.state.text)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        data = dict(data)
        status = dict(data.pop("status"))
        status["state"] = TaskState[status["state"].upper()]
        data["desired_state"] = TaskState[data["desired_state"].upper()]
        known = _TASK_FIELDS
        return cls(status=TaskStatus(**status), **{k: v for k, v in data.items() if k in known})

    def advance(self, state: TaskState, message: str, err: str = "", now: float | None = None) -> bool:
        """Move the observed state forward; a report that would move it back is dropped."""
        if state < self.status.state:
            return False
        self.status = TaskStatus(
            state=state,
            timestamp=now if now is not None else time.time(),
            message=message,
            err=err,
            container_id=self.status.container_id,
            pid=self.status.pid,
            exit_code=self.status.exit_code,
        )
        return True


_TASK_FIELDS = frozenset(Task.__dataclass_fields__)


@dataclass
class Node:
    id: str
    hostname: str
    role: str = "manager"
    availability: str = "active"  # active, pause, drain
    state: str = "ready"  # unknown, down, ready, disconnected
    addr: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    nano_cpus: int = 0
    memory_bytes: int = 0
    engine_version: str = ""
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
