"""The dispatcher: the manager's side of every agent's session, as swarmkit's manager/dispatcher.

- Registration: a node record from the node's description. A node known already keeps its spec
  (role, availability, labels): only its description and status change.
- Sessions: one per node, with an ID; a new session of a node ends the old one (its calls fail
  with SessionInvalid and its assignment stream ends).
- Heartbeats: the node is told a period (the configured one plus up to EPSILON_RATIO of jitter,
  as swarmkit's periodChooser spreads 1,000 nodes); a node that sends none for
  period * GRACE_MULTIPLIER is marked Down, and the orchestrator replaces its tasks. The period
  a deadline is counted in is never shorter than the one the node says it follows (its last
  answered heartbeat's): an answer can be lost (a heartbeat the node gave up on in a partition
  reaches the manager once the link is back), and a node still on a longer period must not be
  held to a shorter one it never heard of. A new session, until the node calls with it, and nodes
  in the store that no session has claimed since the dispatcher started (a manager restart) get
  at least REGISTER_RETRY: a node whose registration got no answer, or whose manager was away,
  registers again within that, so neither a lost answer nor a restarted manager takes a healthy
  node for a lost one.
- Status updates: a node may update only tasks assigned to it; states only move forward
  (Task.advance); a batch is one store transaction.
- Assignments: per session, the tasks assigned to the node (scheduled: ASSIGNED or further), the
  secrets and configs they reference (data unsealed in memory, never in the store's events or a
  file) and the service records for DNS and load balancing: a COMPLETE set first, then
  INCREMENTAL ones computed against what that session was last sent whenever the store changes.

The core is synchronous and thread-safe (the HTTPS routes of manager/dispatcher_http.py and the
in-process session of agent/inprocess.py both call it); `stream` and `run` are its asyncio
side."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shoal.agent.pool import off_loop
from shoal.agent.session import (DEFAULT_HEARTBEAT_PERIOD, REGISTER_RETRY, AssignmentSet, AssignmentType,
                                 FileData, LogSubscription, NodeDescription, NodeRemoved, ServiceRecord,
                                 SessionInfo, SessionInvalid, TaskStatusUpdate)
from shoal.errors import ShoalError
from shoal.ids import new_swarm_id
from shoal.manager.logbroker import LogBroker
from shoal.model.cluster import EngineDescription, Node, NodeResources, NodeStatus, Platform, Task, TaskState
from shoal.store.base import Store

log = logging.getLogger("shoald.dispatcher")

GRACE_MULTIPLIER = 3  # swarmkit defaultGracePeriodMultiplier
UNKNOWN_GRACE_MULTIPLIER = 2 * GRACE_MULTIPLIER  # nodes not seen since the manager started
EPSILON_RATIO = 0.1  # swarmkit: 500 ms of jitter on a 5 s period
RESYNC = 5.0  # seconds: a session's stream looks at the store at least this often
# A task leaving running is sent to its node only once every other node has applied service
# records without it (its rotations no longer pick it), or after this long: a node that is down,
# partitioned or too old to acknowledge (a live one applies records in one agent pass, well under
# a second) must not keep a scale-down or an update waiting until its heartbeats run out.
STOP_HOLD_MAX = 2.0
HOLD_POLL = 0.05  # seconds: how often a session holding a stop looks again (acks also wake it)
_DISPATCHED = frozenset(s.text for s in TaskState if s >= TaskState.ASSIGNED)  # states a node is sent


@dataclass
class _View:
    """What every session's sets are computed from, read once per store revision (100 agents
    after one change cost one read of the tasks, not 100)."""

    revision: int
    tasks_by_node: dict[str, dict[str, dict[str, Any]]]
    services: list[ServiceRecord]
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> record
    # Overlay networks: name -> [(task address, node ID)] of the tasks placed on a node (issue 12);
    # node ID -> (its address, hostname) for the nodes that are not down.
    peers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Containers attached to attachable networks (controlapi/attachments.py): their records.
    attachments: list[dict[str, Any]] = field(default_factory=list)


class NotAssigned(ShoalError):
    """A node reported the status of a task that is not assigned to it."""


@dataclass
class _Session:
    node_id: str
    session_id: str
    deadline: float
    period: float
    longest: float = 0.0  # the longest period this session was answered with: what a node may say it follows
    used: bool = False  # the node has called with this session: it has the registration's answer
    sequence: int = 0
    tasks: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # task ID -> what was sent
    files: dict[str, Any] = field(default_factory=dict)  # "kind/id" -> version sent
    services: list[ServiceRecord] | None = None
    services_seq: int = 0  # the set `services` was last sent in
    applied: int = 0  # the newest set whose records the node's rotations follow (its heartbeats)
    holds: dict[str, float] = field(default_factory=dict)  # task ID -> when its stop was first held
    networks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
    node_key: tuple[Any, ...] | None = None
    registry_auths: dict[str, str] | None = None  # service ID -> encoded credentials sent
    revision: int = -1  # the store revision the last set was computed at
    wake: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    closed: bool = False


def _task_key(raw: dict[str, Any]) -> tuple[Any, ...]:
    """The fields the manager owns. A status write by the node changes none of them, so it is
    not echoed back (swarmkit's TasksEqualStable)."""
    return (raw.get("desired_state"), raw.get("spec_version"), raw.get("start_after"), raw.get("node_id"),
            tuple(raw.get("waits_for") or ()))


# Desired states a node runs a task in: a job's task is desired COMPLETE while it runs.
_RUNS = frozenset(s.text for s in TaskState if s.runs)


def _stopping(sent: tuple[Any, ...] | None, raw: dict[str, Any]) -> bool:
    """The node was sent the task wanted running, it runs (so service records list it), and the
    manager now wants it stopped."""
    return sent is not None and sent[0] in _RUNS and raw.get("desired_state") not in _RUNS \
        and raw["status"]["state"] == "running"


def _node_key(raw: dict[str, Any]) -> tuple[Any, ...]:
    return (raw.get("hostname"), raw.get("role"), raw.get("availability"),
            tuple(sorted((raw.get("labels") or {}).items())))


def service_records(store: Store) -> list[ServiceRecord]:
    """Each service on each of its networks: VIP, running tasks' addresses (tasks running and
    wanted running, on every node), aliases and endpoint mode."""
    tasks = store.list("task")
    by_service: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        if t["status"]["state"] == "running" and t.get("desired_state") in _RUNS:
            by_service.setdefault(t["service_id"], []).append(t)
    records = []
    from shoal.manager import ingress

    for svc in store.list("service"):
        spec = ingress.effective(svc.get("spec", {}))  # its tasks' ingress attachment too
        endpoint = svc.get("endpoint") or {}
        vips = {v["network"]: v["addr"] for v in endpoint.get("vips", [])}
        for attachment in spec.get("networks") or []:
            name = attachment["target"]
            ips = [a["addresses"][0].split("/")[0] for t in by_service.get(svc["id"], [])
                   for a in t.get("networks") or [] if a["network"] == name and a.get("addresses")]
            records.append(ServiceRecord(network=name, network_id=attachment.get("id", ""), service_id=svc["id"],
                                         service_name=svc["name"], vip=vips.get(name), task_ips=ips,
                                         aliases=list(attachment.get("aliases") or []),
                                         mode=endpoint.get("mode", "vip"),
                                         ports=[dict(p) for p in endpoint.get("ports") or []]))
    return records


def _container_events(tx: Any, task: Task, was: TaskState, had_container: str, had_pid: int = 0) -> None:
    """The container events a node's status report stands for (create, start, die), noted in
    the manager's event log so `shoal events` shows the containers of every node, each with the
    attributes dockerd gives a task's container (its labels, image, name; exitCode on die)."""
    cid = task.status.container_id
    if not cid:
        return
    actions = []
    if not had_container:
        actions.append("create")
    # A pid is reported once the process runs; a node's queue keeps only a task's newest state,
    # so one report may stand for start and die together.
    ran = task.status.pid > 0
    if task.status.state >= TaskState.RUNNING > was and ran:
        actions.append("start")
    if task.status.state > TaskState.RUNNING >= was and ran:
        actions.append("die")
    if task.status.state == was == TaskState.RUNNING and had_pid and task.status.pid not in (0, had_pid):
        # Restarted in place by a node whose manager was away (agent/localrestart.py): its
        # container died and started again, as dockerd reports a restart policy's restart.
        actions += ["die", "start"]
    if not actions:
        return
    spec = task.spec or {}
    name = f"{task.service_name}.{task.slot or task.node_id}.{task.id}"
    attributes = {str(k): str(v) for k, v in (spec.get("container_labels") or {}).items()}
    attributes.update({"com.docker.swarm.node.id": task.node_id, "com.docker.swarm.service.id": task.service_id,
                       "com.docker.swarm.service.name": task.service_name, "com.docker.swarm.task": "",
                       "com.docker.swarm.task.id": task.id, "com.docker.swarm.task.name": name,
                       "image": str(spec.get("image") or ""), "name": name})
    for action in actions:
        attrs = dict(attributes)
        if action == "die":
            attrs["exitCode"] = str(task.status.exit_code if task.status.exit_code is not None else 0)
        tx.note("container", cid, action, {"id": cid, "node_id": task.node_id, "attributes": attrs})


_PLACED = frozenset(s.text for s in TaskState if TaskState.ASSIGNED <= s <= TaskState.RUNNING)
MAX_LOCAL_RESTARTS = 1000  # a task's in-place restarts kept (the newest): max_attempts counts them


def _restarts(reported: Any) -> list[float]:
    """A node's in-place restarts of a task (agent/localrestart.py), as times in order; anything
    else in the list is dropped (a bad report must not break the orchestrator's count)."""
    times = sorted(float(t) for t in reported if isinstance(t, (int, float)) and not isinstance(t, bool)) \
        if isinstance(reported, list) else []
    return times[-MAX_LOCAL_RESTARTS:]


def overlay_peers(tasks: list[dict[str, Any]],
                  attachments: Iterable[dict[str, Any]] = ()) -> dict[str, list[tuple[str, str]]]:
    """network name -> (address, node ID) of every task that is placed on a node and not finished
    (its address is held: allocator._held), so the other nodes can reach it from the moment its
    node makes it until it ends; and of every attached container (held until detached)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for a in attachments:
        for addr in a.get("addresses") or []:
            out.setdefault(a["network"], []).append((addr.split("/")[0], a["node_id"]))
    for t in tasks:
        node_id = t.get("node_id")
        if not node_id or t["status"]["state"] not in _PLACED:
            continue
        for attachment in t.get("networks") or []:
            for addr in attachment.get("addresses") or []:
                out.setdefault(attachment["network"], []).append((addr.split("/")[0], node_id))
    return out


def mesh_networks(services: list[ServiceRecord]) -> set[str]:
    """The networks of services that publish a port in ingress mode: every node has them, its
    published port reaching the tasks of every node (the routing mesh, network/mesh.py)."""
    return {r.network for r in services
            if any(p.get("published") and p.get("mode", "ingress") == "ingress" for p in r.ports)}


def _live_nodes(store: Store) -> dict[str, tuple[str, str]]:
    from shoal.network.overlay import node_address

    out = {}
    for raw in store.list("node"):
        node = Node.from_dict(raw)
        addr = node_address(node.status.addr)
        if node.status.state != "down" and addr:
            out[node.id] = (addr, node.hostname)
    return out


def overlay_record(view: _View, name: str, node_id: str,
                   tunnels: dict[str, tuple[str, str, int]] | None = None) -> dict[str, Any]:
    """The network as the node is sent it; an overlay network carries the node's own address
    (the local end of its VXLAN tunnels) and its peers: the tasks of the network on the other
    nodes that are up, each with its node's address and name. An encrypted one also carries
    the node's WireGuard tunnel address and every other live node's key, endpoint and tunnel
    address (`tunnels`: node ID -> (tunnel address, public key, port)); none for a node that
    gave no key, whose devices are then not made."""
    record = view.networks[name]
    if record.get("driver") != "overlay":
        return record
    wireguard: dict[str, Any] = {}
    own = (tunnels or {}).get(node_id)
    if "encrypted" in (record.get("options") or {}) and own is not None:
        wireguard = {"address": own[0], "peers": [
            {"node": view.nodes[nid][0], "tunnel": tunnel, "key": key, "endpoint": f"{view.nodes[nid][0]}:{port}"}
            for nid, (tunnel, key, port) in sorted((tunnels or {}).items())
            if nid != node_id and nid in view.nodes]}
    local = view.nodes.get(node_id, ("", ""))[0]
    peers = sorted({(ip, *view.nodes[nid]) for ip, nid in view.peers.get(name, ())
                    if nid != node_id and nid in view.nodes})
    # Every other live node, task or not: any of them may be the entry node of a published
    # port's connection whose reply goes back through it (the routing mesh, network/mesh.py).
    nodes = sorted({addr for nid, (addr, _host) in view.nodes.items() if nid != node_id and addr})
    out = {"local": local, "peers": [{"ip": ip, "node": addr, "name": host} for ip, addr, host in peers],
           "nodes": nodes}
    if wireguard:
        out["wireguard"] = wireguard
    return {**record, "overlay": out}


class Dispatcher:
    def __init__(self, store: Store, heartbeat_period: float = DEFAULT_HEARTBEAT_PERIOD,
                 on_change: Callable[[], None] = lambda: None, managers: list[str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 network_records: Callable[[], dict[str, dict[str, Any]]] | None = None) -> None:
        self.store = store
        # The manager's networks by name (spec and allocation), for the nodes whose tasks
        # attach to them; None: no networks to send (tests of the dispatcher alone).
        self.network_records = network_records
        self.heartbeat_period = heartbeat_period
        self.on_change = on_change  # the manager's loops: node states and task states changed
        self.managers = list(managers or [])
        self.clock = clock
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}  # node ID -> its current session
        # Nodes the store says are ready that no session has claimed yet: node ID -> deadline.
        self._unknown: dict[str, float] = {}
        self._started = False
        self._files_cache: dict[tuple[str, str, int], bytes] = {}
        self._view: _View | None = None
        self.logs = LogBroker()  # `service logs` across nodes, over the sessions
        # Encrypted overlay networks: node ID -> (tunnel address, WireGuard public key, port), from
        # the node's last registration (a node makes a new key at each; manager/tunnels.py).
        self._tunnels: dict[str, tuple[str, str, int]] = {}

    def _current_view(self, revision: int) -> _View:
        view = self._view
        if view is not None and view.revision == revision:
            return view
        by_node: dict[str, dict[str, dict[str, Any]]] = {}
        all_tasks = self.store.list("task")
        for t in all_tasks:
            node_id = t.get("node_id")
            if node_id and t["status"]["state"] in _DISPATCHED:
                by_node.setdefault(node_id, {})[t["id"]] = t
        # Read after the revision: a write in between makes the next look read again.
        attachments = self.store.list("attachment")
        view = _View(revision, by_node, service_records(self.store),
                     self.network_records() if self.network_records is not None else {},
                     overlay_peers(all_tasks, attachments), _live_nodes(self.store), attachments)
        self._view = view
        return view

    def network_state(self, name: str) -> dict[str, Any]:
        """`network inspect` of a swarm network beyond its record: its VNI (Docker shows it in
        Options) and its Peers, the nodes that are up and have it (a task of it placed there,
        or every node for a network of the routing mesh), by hostname and address."""
        from shoal.network.overlay import vni_of

        view = self._current_view(self.store.revision())
        record = view.networks.get(name)
        if record is None or record.get("driver") != "overlay":
            return {}
        ids = set(view.nodes) if name in mesh_networks(view.services) else \
            {nid for _ip, nid in view.peers.get(name, ()) if nid in view.nodes}
        peers = sorted((view.nodes[nid] for nid in ids), key=lambda n: tuple(int(o) for o in n[0].split(".")))
        return {"vni": vni_of(record.get("options") or {}), "peers": [{"Name": host, "IP": addr} for addr, host in peers]}

    # ---- heartbeats ------------------------------------------------------------------------------
    def _choose_period(self) -> float:
        return self.heartbeat_period * (1 + random.random() * EPSILON_RATIO)

    def start(self) -> None:
        """Give every node the store thinks up (a manager restart) the unknown-node grace, in
        state Unknown until it registers again, as swarmkit's markNodesUnknown does: `node ls`
        said Ready for a node cut off (or gone) since before the restart, for 20 s."""
        with self._lock:
            if self._started:
                return
            self._started = True
            deadline = self.clock() + max(self.heartbeat_period * UNKNOWN_GRACE_MULTIPLIER, REGISTER_RETRY)
            for raw in self.store.list("node"):
                if (raw.get("status") or {}).get("state", raw.get("state")) in ("ready", "unknown") \
                        and raw["id"] not in self._sessions:
                    self._unknown[raw["id"]] = deadline
            pending = set(self._unknown)
        with self.store.transaction() as tx:
            for node_id in pending:
                raw = tx.get("node", node_id)
                with self._lock:
                    if raw is None or node_id not in self._unknown:
                        continue  # registered meanwhile
                node = Node.from_dict(raw)
                node.status = NodeStatus(state="unknown", addr=node.status.addr,
                                         message='Node moved to "unknown" state due to leadership change in cluster')
                tx.update("node", node.to_dict())
        if pending:
            self.on_change()

    def set_heartbeat_period(self, period: float) -> None:
        """`swarm update --dispatcher-heartbeat`: nodes take it at their next heartbeat."""
        if period <= 0:
            raise ShoalError(f"heartbeat period must be positive, not {period}")
        self.heartbeat_period = period

    def overdue(self) -> bool:
        """Is any heartbeat overdue? (A look at the deadlines, no I/O.)"""
        now = self.clock()
        with self._lock:
            return any(s.deadline < now for s in self._sessions.values()) or \
                any(d < now for d in self._unknown.values())

    def expire(self) -> list[str]:
        """Mark Down every node whose heartbeat is overdue; returns their IDs."""
        now = self.clock()
        with self._lock:
            late = [s for s in self._sessions.values() if s.deadline < now]
            for s in late:
                self._end(s)
            unknown = [n for n, d in self._unknown.items() if d < now]
            for n in unknown:
                del self._unknown[n]
        if late:
            self._mark_down([s.node_id for s in late], "heartbeat failure")
        if unknown:
            self._mark_down(unknown, 'heartbeat failure for node in "unknown" state')
        return [s.node_id for s in late] + unknown

    def _mark_down(self, node_ids: list[str], message: str) -> None:
        with self.store.transaction() as tx:
            for node_id in node_ids:
                raw = tx.get("node", node_id)
                if raw is None:
                    continue
                node = Node.from_dict(raw)
                if node.status.state == "down":
                    continue
                node.status = NodeStatus(state="down", message=message, addr=node.status.addr)
                node.updated_at = time.time()
                tx.update("node", node.to_dict())
                log.warning("node %s (%s) is down: %s", node_id, node.hostname, message)
        self.on_change()

    # ---- sessions --------------------------------------------------------------------------------
    def register(self, description: NodeDescription, addr: str = "", role: str = "worker") -> SessionInfo:
        """Open a session for the node (swarmkit Session). `addr` is the address the manager sees
        the node at (the advertised one wins); `role` is taken only by a node seen for the first
        time (the join token's role): a known node keeps its spec."""
        node_id = description.node_id or new_swarm_id()
        now = time.time()
        with self._lock:
            # Before the store's write: the sets it makes every session compute name the new key.
            self._set_tunnel(node_id, description.wireguard)
            # Before it too: start() no longer marks the node Unknown over this write's Ready.
            self._unknown.pop(node_id, None)
        with self.store.transaction() as tx:
            current = tx.get("node", node_id)
            node = Node(id=node_id, role=role) if current is None else Node.from_dict(current)
            if current is None:
                node.created_at = now
            node.hostname = description.hostname
            node.platform = Platform(os=description.platform.os,
                                     architecture=description.platform.architecture or node.platform.architecture)
            node.resources = NodeResources(nano_cpus=description.resources.nano_cpus,
                                           memory_bytes=description.resources.memory_bytes,
                                           generic=dict(description.resources.generic))
            node.engine = EngineDescription(engine_version=description.engine.engine_version,
                                            labels=dict(description.engine.labels),
                                            plugins=[dict(p) for p in description.engine.plugins])
            # A registration that names no address (the manager's own node, over the in-process
            # session) keeps the one stored (swarm init's advertise address): without it, a
            # restarted manager was no overlay's VXLAN peer and its node's mesh broke.
            node.status = NodeStatus(state="ready", message="",
                                     addr=description.advertise_addr or addr or node.status.addr)
            if node.manager_status is not None and not node.manager_status.addr:
                node.manager_status.addr = node.status.addr
            node.updated_at = now
            stored = tx.create("node", node.to_dict()) if current is None else tx.update("node", node.to_dict())
        period = self._choose_period()
        # Until the node calls with it, the session may be one whose answer was lost (a
        # registration the node gave up on, arriving after a partition heals): the node registers
        # again within REGISTER_RETRY, which ends this session without taking the node for Down.
        session = _Session(node_id=node_id, session_id=new_swarm_id(), period=period, longest=period,
                           deadline=self.clock() + max(period * GRACE_MULTIPLIER, REGISTER_RETRY))
        with self._lock:
            old = self._sessions.get(node_id)
            if old is not None:
                self._end(old)
            self._sessions[node_id] = session
            self._unknown.pop(node_id, None)
        self.on_change()
        self.notify()  # every node's encrypted networks name this node's new key
        return SessionInfo(node_id=node_id, session_id=session.session_id, heartbeat_period=period,
                           managers=list(self.managers), node=dict(stored))

    def _set_tunnel(self, node_id: str, wg: dict[str, Any]) -> None:
        """The node's WireGuard key and a tunnel address (the one it had, else a new one)."""
        from shoal.manager import tunnels
        from shoal.network.wireguard import valid_key

        key, port = (wg or {}).get("key"), (wg or {}).get("port")
        if not isinstance(key, str) or not valid_key(key) or not isinstance(port, int) or not 0 < port < 65536:
            self._tunnels.pop(node_id, None)  # no WireGuard there: no tunnel to it
            return
        had = self._tunnels.get(node_id)
        address = had[0] if had is not None else \
            tunnels.allocate(node_id, {t[0] for nid, t in self._tunnels.items() if nid != node_id})
        self._tunnels[node_id] = (address, key, port)

    def _end(self, session: _Session) -> None:
        session.closed = True
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]
        self._wake(session)
        self.logs.end(session.node_id, session.session_id)

    def _session(self, node_id: str, session_id: str) -> _Session:
        with self._lock:
            session = self._sessions.get(node_id)
            if session is None or session.session_id != session_id or session.closed:
                if self.store.get("node", node_id) is None:
                    raise NodeRemoved(f"node {node_id} is not part of the cluster")
                raise SessionInvalid(f"session {session_id} of node {node_id} is not valid")
            if not session.used:
                # The node has the answer to its registration: from now on the session's deadline
                # is the heartbeats', not the wait for a registration that may have been lost.
                session.used = True
                session.deadline = self.clock() + session.period * GRACE_MULTIPLIER
            return session

    def heartbeat(self, node_id: str, session_id: str, applied: int | None = None,
                  following: float | None = None) -> float:
        """The node is alive; returns its next period. `following`: the period the node keeps
        to until this answer reaches it (its last answered heartbeat's); None: the one this
        session was last answered with (an in-process session loses no answer)."""
        session = self._session(node_id, session_id)
        period = self._choose_period()
        with self._lock:
            # The answer may never reach the node: until it says it has the new period, it is
            # held to the longer of the two (a shorter one holds it from its next heartbeat).
            said = session.period if following is None else min(following, session.longest)
            held = max(period, said)
            session.period = period
            session.longest = max(session.longest, period)
            session.deadline = self.clock() + held * GRACE_MULTIPLIER
            advanced = applied is not None and session.sequence >= applied > session.applied
            if advanced:
                session.applied = int(applied or 0)
            holding = advanced and any(s.holds for s in self._sessions.values())
        if holding:
            self.notify()  # a held stop may go now
        return period

    def close(self, node_id: str, session_id: str) -> None:
        with self._lock:
            session = self._sessions.get(node_id)
            if session is not None and session.session_id == session_id:
                self._end(session)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ---- status ----------------------------------------------------------------------------------
    def update_status(self, node_id: str, session_id: str, updates: list[TaskStatusUpdate]) -> None:
        """Apply a node's task states in one transaction: every update is checked first (a task
        of another node fails the whole batch, as swarmkit's UpdateTaskStatus does); a task gone
        from the store is skipped; a state behind the stored one is dropped."""
        self._session(node_id, session_id)
        if not updates:
            return
        changed = False
        with self.store.transaction() as tx:
            found = []
            for u in updates:
                raw = tx.get("task", u.task_id)
                if raw is None:
                    continue
                if raw.get("node_id") != node_id:
                    raise NotAssigned(f"cannot update task {u.task_id}: it is not assigned to node {node_id}")
                found.append((u, raw))
            for u, raw in found:
                task = Task.from_dict(raw)
                state = TaskState.parse(u.state)
                old = task.status
                if state == old.state and (u.message, u.err) == (old.message, old.err) \
                        and u.container_id in ("", old.container_id) and u.pid in (0, old.pid) \
                        and u.exit_code in (None, old.exit_code) and u.networks in (None, raw.get("networks")) \
                        and u.restarts in (None, task.local_restarts):
                    continue  # a repeat (a retry after a lost answer, a new session's resend)
                if state < TaskState.ASSIGNED or not task.advance(state, u.message, err=u.err, now=u.timestamp or None):
                    continue
                if state == TaskState.RUNNING and old.state < TaskState.RUNNING:
                    task.started_at = task.status.timestamp  # the updater's monitor runs from it
                if u.container_id:
                    task.status.container_id = u.container_id
                if u.pid:
                    task.status.pid = u.pid
                if u.exit_code is not None:
                    task.status.exit_code = u.exit_code
                if u.networks is not None:
                    task.networks = u.networks
                if u.restarts is not None:
                    task.local_restarts = _restarts(u.restarts)
                _container_events(tx, task, old.state, old.container_id, old.pid)
                tx.update("task", task.to_dict())
                changed = True
        if changed:
            self.on_change()
            self.notify()

    # ---- logs ------------------------------------------------------------------------------------
    async def log_subscriptions(self, node_id: str, session_id: str) -> AsyncIterator[LogSubscription]:
        """The session's log subscriptions (manager/logbroker.py); ends with SessionInvalid
        when the session does."""
        session = self._session(node_id, session_id)
        async for message in self.logs.listen(node_id, lambda: not session.closed, session_id):
            yield message
        raise SessionInvalid(f"session {session_id} of node {node_id} ended")

    def publish_logs(self, node_id: str, session_id: str, subscription_id: str,
                     records: list[dict[str, Any]], close: bool) -> bool:
        self._session(node_id, session_id)
        return self.logs.publish(node_id, subscription_id, records, close)

    # ---- assignments -----------------------------------------------------------------------------
    def _file(self, kind: str, obj: dict[str, Any]) -> bytes:
        from shoal.store import secretbox

        key = (kind, obj["id"], int(obj.get("version") or 0))
        data = self._files_cache.get(key)
        if data is None:
            data = secretbox.content(kind, obj)
            if len(self._files_cache) > 1000:
                self._files_cache.clear()
            self._files_cache[key] = data
        return data

    def _registry_auths(self, service_ids: set[str]) -> dict[str, str]:
        """The unsealed credentials of these services (those that have any), for one node's
        assignments only: each node learns the credentials of what it runs."""
        from shoal.manager.registryauth import KIND, unsealed

        found: dict[str, str] = {}
        for obj in self.store.list(KIND):  # one read: few services have credentials
            service_id = obj["id"]
            if service_id not in service_ids or not obj.get("current"):
                continue
            key = (KIND, service_id, int(obj.get("version") or 0))
            data = self._files_cache.get(key)
            if data is None:
                data = unsealed(obj)
                if len(self._files_cache) > 1000:
                    self._files_cache.clear()
                self._files_cache[key] = data
            found[service_id] = data.decode()
        return found

    def assignments(self, node_id: str, session_id: str) -> AssignmentSet | None:
        """What changed for the session since it was last sent anything: a COMPLETE set the
        first time, then an INCREMENTAL one, or None when nothing changed."""
        session = self._session(node_id, session_id)
        with self._lock:
            return self._compute(session)

    def stop_ready(self, session: _Session, task: dict[str, Any]) -> bool:
        """May the node of `session` be told to stop `task`, which its service records listed
        until now? Yes once every other live session was sent records without the task's
        addresses and has applied them (its heartbeat's `applied`), so no node's VIP or
        published port picks a task that is stopping (issue 12); at once when no other node has
        a session (a one-node stop waits for nothing); after STOP_HOLD_MAX whatever the rest say."""
        ips = {a.split("/")[0] for n in task.get("networks") or [] for a in n.get("addresses") or []}
        if not ips:
            return True
        now = self.clock()
        for other in self._sessions.values():
            if other is session or other.closed or other.services is None or other.deadline < now:
                continue  # no records sent to it yet, or overdue (down soon: not waited for)
            if other.applied < other.services_seq or any(ip in r.task_ips for r in other.services for ip in ips):
                since = session.holds.setdefault(task["id"], now)
                if now - since < STOP_HOLD_MAX:
                    return False
                log.warning("task %s stopped before node %s acknowledged records without it (%.1f s)",
                            task["id"], other.node_id, STOP_HOLD_MAX)
                break
        session.holds.pop(task["id"], None)
        return True

    def _compute(self, session: _Session) -> AssignmentSet | None:
        complete = session.sequence == 0
        revision = self.store.revision()
        if not complete and revision == session.revision and not session.holds:
            return None  # nothing was written since: nothing can differ
        session.revision = revision
        raw_node = self.store.get("node", session.node_id)
        if raw_node is None:
            raise NodeRemoved(f"node {session.node_id} is not part of the cluster")
        view = self._current_view(revision)
        tasks = view.tasks_by_node.get(session.node_id, {})
        changed = [t for tid, t in tasks.items() if complete or session.tasks.get(tid) != _task_key(t)]
        if not complete:
            # A running task told to stop (scale down, update, drain) leaves every other node's
            # rotation first: its change waits in the session until stop_ready says so.
            changed = [t for t in changed if not _stopping(session.tasks.get(t["id"]), t) or self.stop_ready(session, t)]
        for tid in list(session.holds):
            if tid not in tasks or session.tasks.get(tid) == _task_key(tasks[tid]):
                session.holds.pop(tid, None)  # gone, or its stop was withdrawn
        removed = [] if complete else [tid for tid in session.tasks if tid not in tasks]
        # Files: what the node's tasks reference, by name (a task's spec names its sources).
        wanted: set[tuple[str, str]] = set()
        for t in tasks.values():
            spec = t.get("spec") or {}
            wanted.update(("secret", r["source"]) for r in spec.get("secrets") or [])
            wanted.update(("config", r["source"]) for r in spec.get("configs") or [])
        files: dict[str, tuple[str, dict[str, Any]]] = {}
        if wanted:
            for kind in ("secret", "config"):
                for obj in self.store.list(kind):
                    if (kind, obj["name"]) in wanted:
                        files[f"{kind}/{obj['id']}"] = (kind, obj)
        new_files = [FileData(kind=kind, id=obj["id"], name=obj["name"], data=self._file(kind, obj),
                              digest=obj.get("digest", ""), template_driver=obj.get("template_driver", ""))
                     for key, (kind, obj) in files.items() if complete or session.files.get(key) != obj.get("version")]
        removed_files = [] if complete else [k for k in session.files if k not in files]
        services = view.services
        services_out = services if complete or services != session.services else None
        own = {a["network"] for a in view.attachments if a.get("node_id") == session.node_id}
        net_names = sorted({a["target"] for t in tasks.values() for a in (t.get("spec") or {}).get("networks") or []}
                           | mesh_networks(services) | own)
        with self._lock:
            node_tunnels = dict(self._tunnels)
        networks = [overlay_record(view, n, session.node_id, node_tunnels) for n in net_names if n in view.networks]
        networks_out = networks if complete or networks != session.networks else None
        # Every container attached on the networks the node has (its own to detach when they
        # stop, all of them for its resolver: names answer cluster-wide, as Docker's).
        attachments = [dict(a) for a in view.attachments if a["network"] in net_names]
        attachments_out = attachments if complete or attachments != session.attachments else None
        node_key = _node_key(raw_node)
        node_out = dict(raw_node) if complete or node_key != session.node_key else None
        auths = self._registry_auths({t["service_id"] for t in tasks.values() if t.get("service_id")})
        auths_out = auths if complete or auths != session.registry_auths else None
        if not complete and not (changed or removed or new_files or removed_files or services_out is not None
                                 or node_out is not None or networks_out is not None or auths_out is not None
                                 or attachments_out is not None):
            return None
        previous = session.sequence
        session.sequence += 1
        for t in changed:
            session.tasks[t["id"]] = _task_key(t)
        for tid in removed:
            session.tasks.pop(tid, None)
        session.files = {k: obj.get("version") for k, (_kind, obj) in files.items()}
        if services_out is not None:
            session.services_seq = session.sequence
        session.services = services
        session.networks = networks
        session.attachments = attachments
        session.node_key = node_key
        session.registry_auths = auths
        return AssignmentSet(type=AssignmentType.COMPLETE if complete else AssignmentType.INCREMENTAL,
                             sequence=session.sequence, applies_to=previous, tasks=[dict(t) for t in changed],
                             removed_tasks=removed, files=new_files, removed_files=removed_files,
                             services=services_out, node=node_out, networks=networks_out,
                             registry_auths=auths_out, attachments=attachments_out)

    # ---- network attachments (swarmkit's ResourceAllocator) ----------------------------------
    def attach_network(self, node_id: str, session_id: str, network: str, container_id: str,
                       name: str = "", aliases: list[str] | None = None) -> dict[str, Any]:
        """A container of the node attaching to an attachable network: its attachment (ID and
        address, allocated in the manager's transaction: controlapi/attachments.py) and the
        network as the node is sent it (with its overlay peers), so it can connect at once."""
        from shoal.manager.controlapi import attachments

        self._session(node_id, session_id)
        record = attachments.attach(self.store, node_id, network, container_id, name, aliases)
        self.on_change()
        self.notify()  # every node with the network: its forwarding entries and names
        view = self._current_view(self.store.revision())
        with self._lock:
            node_tunnels = dict(self._tunnels)
        if record["network"] not in view.networks:
            raise ShoalError(f"network {network} has no allocation yet")
        return {"attachment": dict(record), "network": overlay_record(view, record["network"], node_id, node_tunnels)}

    def detach_network(self, node_id: str, session_id: str, attachment_id: str) -> None:
        """The container stopped or was removed: its address is free again (DetachNetwork)."""
        from shoal.errors import NotFound
        from shoal.manager.controlapi import attachments

        self._session(node_id, session_id)
        try:
            attachments.detach(self.store, node_id, attachment_id)
        except NotFound:
            return  # gone already (a retry after a lost answer)
        self.on_change()
        self.notify()

    # ---- asyncio side ----------------------------------------------------------------------------
    def notify(self) -> None:
        """The store changed: every session's stream looks again. Safe from any thread."""
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            self._wake(s)

    @staticmethod
    def _wake(session: _Session) -> None:
        if session.wake is None or session.loop is None or session.loop.is_closed():
            return
        try:
            session.loop.call_soon_threadsafe(session.wake.set)
        except RuntimeError:
            pass  # its loop is closing

    async def stream(self, node_id: str, session_id: str) -> AsyncIterator[AssignmentSet]:
        """The session's assignment sets, as the store changes; ends with SessionInvalid when
        the session does."""
        session = self._session(node_id, session_id)
        session.loop = asyncio.get_running_loop()
        session.wake = asyncio.Event()
        while True:
            session.wake.clear()
            if session.closed:
                raise SessionInvalid(f"session {session_id} of node {node_id} ended")
            # A control thread: the default executor's may all be held by API requests.
            found = await off_loop(self.assignments, node_id, session_id)
            if found is not None:
                yield found
                continue
            try:
                async with asyncio.timeout(HOLD_POLL if session.holds else RESYNC):
                    await session.wake.wait()
            except TimeoutError:
                pass

    async def run(self) -> None:
        """Mark overdue nodes Down, a few times per heartbeat period."""
        self.start()
        while True:
            await asyncio.sleep(max(0.05, self.heartbeat_period / 4))
            if not self.overdue():
                continue
            try:
                await off_loop(self.expire)
            except ShoalError as exc:
                log.error("heartbeat check failed: %s", exc)
            except Exception:  # noqa: BLE001 - ended silently, no node would ever be marked Down
                log.exception("heartbeat check failed")
