"""The session between a node's agent and the manager's dispatcher, as swarmkit's
api/dispatcher.proto: the agent registers with its node description and gets a session; it then
receives assignment sets (the tasks the node must run, with the secrets, configs and service
records they need) and sends task status updates and heartbeats. Nothing else crosses between
the roles: the agent never reads or writes the manager's store.

Every message here is a plain dataclass that serialises to JSON (`to_json` / `from_json`), so the
in-process session (one node: agent/inprocess.py) and the HTTPS one (agent/session_https.py) carry
the same values. Bytes (a secret's data) travel base64-encoded; on the agent they are held in
memory only and written nowhere but the task's tmpfs (agent/taskfiles.py).

Errors a session raises:
- `Unreachable`: the manager could not be reached or did not answer in time. The agent keeps
  running what it has and tries again with backoff.
- `SessionInvalid`: the manager does not know this session (it restarted, another session of the
  node replaced it, or the node was marked down): register again (swarmkit's ErrSessionInvalid,
  ErrNodeNotRegistered).
- `NodeRemoved`: the node was removed from the cluster (`node rm`): the agent stops and removes
  its tasks (their replacements run elsewhere) and keeps asking, refused, as swarmkit's does.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shoal.errors import ShoalError
from shoal.model import _serde

T = TypeVar("T")

# Swarm's default is 5 s (swarmkit dispatcher DefaultHeartBeatPeriod); ours is shorter so a lost
# node is Down within about 3 s (period * HEARTBEAT_GRACE): see manager/dispatcher.py.
DEFAULT_HEARTBEAT_PERIOD = 1.0
# An agent whose registration got no answer (lost in a partition, a manager restarting) registers
# again within this: session_https's CALL_TIMEOUT (10 s) plus the agent's longest backoff (5 s
# with up to 50 % jitter). The dispatcher gives a session with no heartbeat yet, and the nodes a
# restarted manager has not heard from, at least this long before taking them for Down.
REGISTER_RETRY = 20.0


class Unreachable(ShoalError):
    """The manager did not answer: keep running, retry with backoff."""


class CertificateUnusable(Unreachable):
    """This node's own certificate, key or root cannot be loaded: no manager can be asked until
    the files are restored (or the node leaves and joins again)."""


class SessionInvalid(ShoalError):
    """The manager does not know this session any more: register again."""


class NodeRemoved(ShoalError):
    """The manager refused this node. `confirmed`: it said the node was removed (`node rm`), so
    nothing this node runs is wanted any more; else only its certificate was refused (another
    cluster's, say), which proves nothing about its tasks."""

    def __init__(self, message: str = "", confirmed: bool = True) -> None:
        super().__init__(message)
        self.confirmed = confirmed


# ---- registration -------------------------------------------------------------------------------
@dataclass
class PlatformInfo:
    """As swarmkit's api.Platform: `os` is runtime.GOOS (linux), `architecture` as dockerd reports
    it (uname -m: x86_64, aarch64)."""

    os: str = "linux"
    architecture: str = ""


@dataclass
class Resources:
    nano_cpus: int = 0  # NCPU x 1e9
    memory_bytes: int = 0  # MemTotal
    generic: dict[str, int] = field(default_factory=dict)  # discrete generic resources: kind -> count


@dataclass
class EngineInfo:
    engine_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # the daemon's labels (engine.labels.*)
    plugins: list[dict[str, str]] = field(default_factory=list)  # [{"type": "Volume", "name": "local"}]


@dataclass
class NodeDescription:
    """What a node tells the manager about itself at registration (swarmkit NodeDescription plus
    the address it wants to be reached at). The manager keeps the node's spec (role,
    availability, labels) as it was: a description never changes them."""

    hostname: str
    platform: PlatformInfo = field(default_factory=PlatformInfo)
    resources: Resources = field(default_factory=Resources)
    engine: EngineInfo = field(default_factory=EngineInfo)
    advertise_addr: str = ""  # host or host:port; empty: the address the manager sees
    # The node ID the agent has (from its certificate, or <root>/node_id on one node); empty for
    # a first registration, when the manager picks one.
    node_id: str = ""
    # The node's WireGuard public key and port for encrypted overlay networks, new at every
    # registration (network/wireguard.py); empty when the node has no WireGuard.
    wireguard: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionInfo:
    """The manager's answer to a registration (swarmkit SessionMessage)."""

    node_id: str
    session_id: str
    heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD  # seconds
    managers: list[str] = field(default_factory=list)  # addresses of the managers (host:port)
    # The node as the manager stores it (model.cluster.Node.to_dict()): the worker reads its
    # hostname, platform and labels for templates and the containers' labels.
    node: dict[str, Any] = field(default_factory=dict)


# ---- assignments --------------------------------------------------------------------------------
class AssignmentType(str, enum.Enum):
    COMPLETE = "complete"  # everything the node must run: what is not listed is no longer wanted
    INCREMENTAL = "incremental"  # changes since the set whose sequence is `applies_to`


@dataclass
class FileData:
    """A secret's or config's data, for the tasks of this node that reference it. `data` is the
    raw bytes; it is base64 in JSON."""

    kind: str  # "secret" or "config"
    id: str
    name: str
    data: bytes = b""
    # The data's digest as the task spec names it (manager/files.py), so a changed secret is a
    # new value the agent can tell apart.
    digest: str = ""
    # "golang": Swarm's templates in the data ({{.Service.Name}}, {{.Task.Slot}}, ...) are
    # expanded for each task that mounts it (`config create --template-driver golang`).
    template_driver: str = ""


@dataclass
class ServiceRecord:
    """What a node's resolver and load balancer need of one service on one network: its VIP (for
    endpoint mode vip), the addresses of its running tasks (on every node), and its aliases."""

    network: str  # network name, as a task's `networks[].network`
    network_id: str
    service_id: str
    service_name: str
    vip: str | None = None
    task_ips: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    mode: str = "vip"  # "vip" or "dnsrr"
    # The service's published ports ({protocol, target, published, mode}), so a node running
    # its tasks publishes them too (each node's port answers from that node's tasks).
    ports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AssignmentSet:
    """One message of the assignment stream (swarmkit AssignmentsMessage).

    COMPLETE: `tasks`, `files` and `services` are everything; anything the agent has that is not
    listed is no longer wanted (a task the manager replaced while this node was away: the agent
    shuts it down and removes it, so no slot runs twice).
    INCREMENTAL (applies to the set `applies_to`): `tasks` and `files` are added or changed,
    `removed_tasks` / `removed_files` are gone; `services` is None when unchanged, else the full
    list again (it is small, and whole lists are simpler to apply than differences).
    `tasks` are model.cluster.Task.to_dict() records; only the manager's fields matter to the
    agent (spec, desired state, networks given): the status it reports is its own."""

    type: AssignmentType
    sequence: int
    applies_to: int = 0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    removed_tasks: list[str] = field(default_factory=list)
    files: list[FileData] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)  # "<kind>/<id>"
    services: list[ServiceRecord] | None = None
    node: dict[str, Any] | None = None  # the node record when it changed (labels, availability)
    # The networks this node's tasks attach to, as the manager made and allocated them (ID,
    # name, driver, subnet, gateway, range, labels, options: network/store.py's Network record
    # without its node-local endpoints): the node renders them (agent/netglue.py). None when
    # unchanged, else the full list again, as `services`.
    networks: list[dict[str, Any]] | None = None
    # Service ID -> the encoded registry credentials its tasks pull their image with (`service
    # create --with-registry-auth`: image/registryauth.py), for the services of this node's
    # tasks only. None when unchanged, else the full map again. The agent keeps it in memory.
    registry_auths: dict[str, str] | None = None
    # The containers attached to the networks this node has (manager/controlapi/attachments.py
    # records: id, node_id, container_id, container_name, aliases, network, addresses): the node's own to
    # detach once their container is gone, every one for its resolver. None when unchanged.
    attachments: list[dict[str, Any]] | None = None


# ---- status -------------------------------------------------------------------------------------
@dataclass
class TaskStatusUpdate:
    """One task's observed state (swarmkit UpdateTaskStatusRequest_TaskStatusUpdate), with the
    fields only the node knows: its container, process, exit code and its addresses on each
    network (`networks`: [{network, addresses, aliases}], None when unchanged). The manager
    applies it forward-only (model.cluster.Task.advance) and only for tasks assigned to the
    sending node."""

    task_id: str
    state: str  # TaskState text: "running"
    message: str = ""
    err: str = ""
    timestamp: float = 0.0
    container_id: str = ""
    pid: int = 0
    exit_code: int | None = None
    networks: list[dict[str, Any]] | None = None
    # When the node restarted the task in place while its manager was away (wall clock, oldest
    # first; agent/localrestart.py): the orchestrator counts them against max_attempts. None:
    # none, or unchanged.
    restarts: list[float] | None = None


# ---- logs ---------------------------------------------------------------------------------------
@dataclass
class LogSubscription:
    """The manager asking the node for a service's task logs (swarmkit's SubscriptionMessage on
    the ListenSubscriptions stream). The node answers with `publish_logs` batches, the last one
    with `close` set (for `follow`, only when the manager ends the subscription: a message with
    `close` set here). `tail` None is every line; a follow subscription also covers the
    service's tasks that start on the node later."""

    id: str
    service_id: str
    tail: int | None = None
    follow: bool = False
    close: bool = False


# ---- JSON ---------------------------------------------------------------------------------------
def to_json(obj: Any) -> Any:
    """A message as JSON-ready data (dicts, lists, strings, numbers; bytes as base64)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """The message of type `cls` from what to_json gave (unknown keys ignored)."""
    obj = _serde.from_dict(cls, data)
    _decode_bytes(obj)
    return obj


def _decode_bytes(obj: Any) -> None:
    if isinstance(obj, FileData) and isinstance(obj.data, str):
        obj.data = base64.b64decode(obj.data)
    elif isinstance(obj, AssignmentSet):
        obj.type = AssignmentType(obj.type)
        for f in obj.files:
            _decode_bytes(f)


# ---- the interface ------------------------------------------------------------------------------
class Session(ABC):
    """An agent's connection to the dispatcher. One session at a time per node: registering
    again ends the previous one. All methods may raise Unreachable or SessionInvalid."""

    @abstractmethod
    async def register(self, description: NodeDescription) -> SessionInfo:
        """Open a session (swarmkit Session): the manager records the node and answers with its
        node ID, a session ID and the heartbeat period."""

    @abstractmethod
    def assignments(self) -> AsyncIterator[AssignmentSet]:
        """The assignment stream of the open session: a COMPLETE set first, then INCREMENTAL
        sets as the manager's state changes. Ends (raises SessionInvalid or Unreachable) when
        the session does."""

    @abstractmethod
    async def update_status(self, updates: list[TaskStatusUpdate]) -> None:
        """Report task states in one batch (one manager transaction). Updates for tasks the node
        no longer has are dropped by the manager, not refused: a retry is always safe."""

    @abstractmethod
    async def heartbeat(self, applied: int | None = None) -> float:
        """Tell the manager the node is alive; returns the period to wait before the next one.
        The session tells the manager which period the node keeps to until this answer reaches
        it (the last one it was answered with), so a lost answer never holds the node to a
        shorter period it did not hear of.
        `applied`: the sequence of the newest assignment set whose service records this node's
        rotations (VIPs, published ports) now follow; the manager holds a task's stop until the
        other nodes have applied records without it (manager/dispatcher.py stop_ready)."""

    @abstractmethod
    def log_subscriptions(self) -> AsyncIterator[LogSubscription]:
        """The open session's log subscriptions: the open ones first, then new and closed ones
        as the manager makes and ends them. Ends when the session does."""

    @abstractmethod
    async def publish_logs(self, subscription_id: str, records: list[dict[str, Any]], close: bool = False) -> bool:
        """Send log lines ({task_id, service, slot, node, stream, time, line}) for a
        subscription; `close`: the node has sent everything. False: the subscription is gone
        (the client left), stop sending."""

    async def attach_network(self, network: str, container_id: str, name: str = "",
                             aliases: list[str] | None = None) -> dict[str, Any]:
        """A container of this node attaching to an attachable swarm network (swarmkit's
        ResourceAllocator.AttachNetwork): {"attachment": its record with the address the manager
        allocated, "network": the network as the node makes its copy}. NotFound: no swarm
        network of that name; PermissionDenied (a ShoalError): not manually attachable."""
        raise Unreachable("this session cannot attach containers to swarm networks")

    async def detach_network(self, attachment_id: str) -> None:
        """The attachment's container is gone: its address is free again (DetachNetwork)."""
        raise Unreachable("this session cannot detach containers from swarm networks")

    @abstractmethod
    async def close(self) -> None:
        """End the session (the node is not marked down for it: a new session may follow)."""
