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

    @property
    def runs(self) -> bool:
        """As a desired state: the task is to be started and run until its status gets there.
        A job's task is desired COMPLETE from the start (swarmkit's jobs orchestrator and
        restart supervisor), a service's RUNNING."""
        return self in (TaskState.RUNNING, TaskState.COMPLETE)

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
    # When its node restarted it in place while the manager was away (agent/localrestart.py),
    # as the node reports them: they count against max_attempts with the restarted tasks.
    local_restarts: list[float] = field(default_factory=list)
    # depends_on: the first tasks of a service are prepared but parked until these services
    # (full names) meet their condition, so a stack starts in order (docker compose does this;
    # Swarm does not).
    waits_for: list[str] = field(default_factory=list)
    # When its node first reported it RUNNING (the dispatcher sets it): the updater counts a
    # failure within update_config.monitor of this, as swarmkit's updatedTasks timestamps.
    started_at: float = 0.0
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


NODE_STATES = ("unknown", "down", "ready", "disconnected")  # swarmkit NodeStatus.State
AVAILABILITIES = ("active", "pause", "drain")  # NodeSpec.Availability
ROLES = ("worker", "manager")
REACHABILITIES = ("unknown", "unreachable", "reachable")  # RaftMemberStatus.Reachability


def _this_machine() -> str:
    # As dockerd reports it (uname -m: x86_64, aarch64); the scheduler's platform filter maps
    # x86_64 -> amd64 and aarch64 -> arm64 itself, as swarmkit does.
    import platform

    return platform.machine()


@dataclass
class Platform:
    os: str = "linux"
    architecture: str = field(default_factory=_this_machine)


@dataclass
class NodeResources:
    """What the node offers (NCPU x 1e9 nano CPUs, MemTotal) and its discrete generic resources
    (dockerd's node-generic-resources, `kind -> count`)."""

    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: dict[str, int] = field(default_factory=dict)


@dataclass
class EngineDescription:
    engine_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # the daemon's labels (engine.labels.*)
    plugins: list[dict[str, str]] = field(default_factory=list)  # [{"type": "Volume", "name": "local"}]


@dataclass
class TLSInfo:
    """Placeholder until nodes have certificates: the root CA (PEM) and the issuer of the
    node's certificate, as `node inspect` prints them."""

    trust_root: str = ""
    cert_issuer_subject: str = ""  # base64 of the DER subject
    cert_issuer_public_key: str = ""  # base64 of the DER public key

    _API = (("trust_root", "TrustRoot"), ("cert_issuer_subject", "CertIssuerSubject"),
            ("cert_issuer_public_key", "CertIssuerPublicKey"))

    @classmethod
    def from_api(cls, info: dict[str, str]) -> TLSInfo:
        """From the API's form (manager/ca.py node_tls_info: TrustRoot, CertIssuerSubject, ...)."""
        return cls(**{ours: info.get(theirs, "") for ours, theirs in cls._API})

    def to_api(self) -> dict[str, str]:
        return {theirs: getattr(self, ours) for ours, theirs in self._API}


@dataclass
class NodeStatus:
    state: str = "ready"  # one of NODE_STATES
    message: str = ""
    addr: str = ""  # the address the manager sees the node at


@dataclass
class ManagerStatus:
    leader: bool = False
    reachability: str = "reachable"  # one of REACHABILITIES
    addr: str = ""  # host:port of the manager's cluster API


_LEGACY = ("state", "addr", "nano_cpus", "memory_bytes", "engine_version")


@dataclass(init=False)
class Node:
    """A node as swarmkit's api.Node, laid out flat where the API and CLI read it: the spec's
    role, availability and labels and the description's hostname at the top; platform,
    resources, engine and TLS info (the rest of NodeDescription, sent at registration), status
    and manager status as their own records.

    The keywords state, addr, nano_cpus, memory_bytes and engine_version (the fields of the
    first, flat record) are still taken, by the constructor and from stored records."""

    id: str
    hostname: str
    role: str
    availability: str
    labels: dict[str, str]
    platform: Platform
    resources: NodeResources
    engine: EngineDescription
    tls_info: TLSInfo
    status: NodeStatus
    manager_status: ManagerStatus | None
    created_at: float
    updated_at: float
    version: int

    def __init__(
        self,
        id: str,
        hostname: str = "",
        role: str = "manager",
        availability: str = "active",
        labels: dict[str, str] | None = None,
        platform: Platform | None = None,
        resources: NodeResources | None = None,
        engine: EngineDescription | None = None,
        tls_info: TLSInfo | None = None,
        status: NodeStatus | None = None,
        manager_status: ManagerStatus | None = None,
        created_at: float | None = None,
        updated_at: float | None = None,
        version: int = 0,
        *,
        state: str | None = None,
        addr: str | None = None,
        nano_cpus: int | None = None,
        memory_bytes: int | None = None,
        engine_version: str | None = None,
    ) -> None:
        now = time.time()
        self.id = id
        self.hostname = hostname
        self.role = role
        self.availability = availability
        self.labels = dict(labels or {})
        self.platform = platform if platform is not None else Platform()
        self.resources = resources if resources is not None else NodeResources()
        self.engine = engine if engine is not None else EngineDescription()
        self.tls_info = tls_info if tls_info is not None else TLSInfo()
        self.status = status if status is not None else NodeStatus()
        self.manager_status = manager_status
        if manager_status is None and role == "manager":
            self.manager_status = ManagerStatus(leader=True, addr=self.status.addr)
        self.created_at = now if created_at is None else created_at
        self.updated_at = self.created_at if updated_at is None else updated_at
        self.version = version
        if state is not None:
            self.status.state = state
        if addr is not None:
            self.status.addr = addr
        if nano_cpus is not None:
            self.resources.nano_cpus = nano_cpus
        if memory_bytes is not None:
            self.resources.memory_bytes = memory_bytes
        if engine_version is not None:
            self.engine.engine_version = engine_version

    # The flat names the manager's loops and the agent read.
    @property
    def state(self) -> str:
        return self.status.state

    @property
    def addr(self) -> str:
        return self.status.addr

    @property
    def nano_cpus(self) -> int:
        return self.resources.nano_cpus

    @property
    def memory_bytes(self) -> int:
        return self.resources.memory_bytes

    @property
    def engine_version(self) -> str:
        return self.engine.engine_version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        """A stored node; a record of the first, flat layout (state, addr, nano_cpus,
        memory_bytes, engine_version at the top) is read into the records above. Where a
        record holds both (registered again over an old one), the records win."""

        def record(kind: Any, key: str) -> Any:
            raw = data.get(key)
            if not isinstance(raw, dict):
                return None
            known = kind.__dataclass_fields__
            return kind(**{k: _thaw(v) for k, v in raw.items() if k in known})

        legacy = {k: data[k] for k in _LEGACY if k in data and not _nested_has(data, k)}
        status = record(NodeStatus, "status")
        manager = record(ManagerStatus, "manager_status")
        node = cls(
            id=data["id"],
            hostname=data.get("hostname", ""),
            role=data.get("role", "manager"),
            availability=data.get("availability", "active"),
            labels=dict(data.get("labels") or {}),
            platform=record(Platform, "platform"),
            resources=record(NodeResources, "resources"),
            engine=record(EngineDescription, "engine"),
            tls_info=record(TLSInfo, "tls_info"),
            status=status,
            manager_status=manager,
            created_at=data.get("created_at", 0.0),
            updated_at=data.get("updated_at", data.get("created_at", 0.0)),
            version=data.get("version", 0),
            **legacy,
        )
        if "manager_status" in data and data["manager_status"] is None:
            node.manager_status = None
        return node


# Where each flat field of the first layout lives now.
_NESTED = {"state": "status", "addr": "status", "nano_cpus": "resources", "memory_bytes": "resources",
           "engine_version": "engine"}


def _nested_has(data: dict[str, Any], key: str) -> bool:
    nested = data.get(_NESTED[key])
    return isinstance(nested, dict) and key in nested


def _thaw(value: Any) -> Any:
    """A plain copy of a value read from the store (whose nested values are read-only)."""
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thaw(v) for v in value]
    return value
