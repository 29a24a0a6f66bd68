"""What the scheduler knows of tasks and nodes (swarmkit manager/scheduler/nodeinfo.go).

A task is reduced to what the filters read (TaskSpecInfo, shared by the tasks of one service
version); a node carries its tasks, the count of its active tasks (desired state at most
COMPLETE) in all and per service, what is left of its resources after its tasks' reservations,
the host-mode ports its tasks publish, and recent task failures per service version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.manager.constraints import Constraint, parse_all
from shoal.model.cluster import Node, TaskState

COMPLETE = int(TaskState.COMPLETE)
MONITOR_FAILURES = 300.0  # swarmkit monitorFailures: 5 minutes of failures are remembered
MAX_FAILURES = 5  # this many recent failures of a service version push a node to the back


@dataclass(frozen=True, slots=True)
class TaskSpecInfo:
    """The parts of a task spec the filters and the decision tree read."""

    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: tuple[tuple[str, int], ...] = ()  # discrete generic resources reserved
    constraints: tuple[Constraint, ...] = ()  # empty: no constraint filter (or unparsable)
    platforms: tuple[tuple[str, str], ...] = ()  # (os, architecture) the image runs on
    host_ports: tuple[tuple[str, int], ...] = ()  # (protocol, published) in host mode
    max_replicas: int = 0
    preferences: tuple[str, ...] = ()  # spread descriptors, outermost first
    encrypted: bool = False  # attached to an encrypted overlay network: needs a WireGuard node

    @property
    def reserves(self) -> bool:
        return bool(self.nano_cpus or self.memory_bytes or self.generic)


_constraint_cache: dict[tuple[str, ...], tuple[Constraint, ...]] = {}


def _constraints(texts: tuple[str, ...]) -> tuple[Constraint, ...]:
    hit = _constraint_cache.get(texts)
    if hit is None:
        try:
            hit = tuple(parse_all(texts))
        except Exception:
            # Validated when the service was created; swarmkit's ConstraintFilter disables
            # itself rather than fail a task whose constraints do not parse.
            hit = ()
        if len(_constraint_cache) > 4096:
            _constraint_cache.clear()
        _constraint_cache[texts] = hit
    return hit


def _platform(item: Any) -> tuple[str, str]:
    if isinstance(item, str):  # "linux/amd64"
        os_, _, arch = item.partition("/")
        return os_, arch.partition("/")[0]
    return str(item.get("os") or ""), str(item.get("architecture") or "")


def describe_spec(spec: dict[str, Any], encrypted_networks: frozenset[str] = frozenset()) -> TaskSpecInfo:
    """A stored task spec (model.service.ServiceSpec as a dict) reduced for the filters;
    `encrypted_networks`: the names of the store's encrypted overlay networks."""
    placement = spec.get("placement") or {}
    reservations = (spec.get("resources") or {}).get("reservations") or {}
    generic = tuple(
        (str(g["kind"]), int(g["value"])) for g in reservations.get("generic_resources") or () if int(g.get("value") or 0)
    )
    prefs = []
    for p in placement.get("preferences") or ():
        prefs.append(p.get("spread", "") if isinstance(p, dict) else str(p))
    ports = tuple(
        (str(p.get("protocol") or "tcp"), int(p["published"]))
        for p in (spec.get("endpoint") or {}).get("ports") or ()
        if p.get("publish_mode") == "host" and int(p.get("published") or 0)
    )
    return TaskSpecInfo(
        nano_cpus=int(reservations.get("nano_cpus") or 0),
        memory_bytes=int(reservations.get("memory_bytes") or 0),
        generic=generic,
        constraints=_constraints(tuple(placement.get("constraints") or ())),
        platforms=tuple(_platform(p) for p in placement.get("platforms") or ()),
        host_ports=ports,
        max_replicas=int(placement.get("max_replicas_per_node") or 0),
        preferences=tuple(prefs),
        encrypted=any(str(n.get("target") or "") in encrypted_networks for n in spec.get("networks") or ()
                      if isinstance(n, dict)) if encrypted_networks else False,
    )


class TaskInfo:
    """A task as the scheduler tracks it. Replaced, never changed, when its state moves."""

    __slots__ = ("id", "service_id", "spec_version", "node_id", "state", "desired", "spec", "order", "err")

    def __init__(self, id: str, service_id: str, spec_version: int, node_id: str, state: int, desired: int,
                 spec: TaskSpecInfo, order: tuple[Any, ...] = (), err: str = "") -> None:
        self.id = id
        self.service_id = service_id
        self.spec_version = spec_version
        self.node_id = node_id
        self.state = state
        self.desired = desired
        self.spec = spec
        self.order = order or (id,)
        self.err = err

    def moved(self, node_id: str, state: int, err: str = "") -> TaskInfo:
        return TaskInfo(self.id, self.service_id, self.spec_version, node_id, state, self.desired, self.spec,
                        self.order, err)

    def __repr__(self) -> str:
        return f"TaskInfo({self.id!r}, node={self.node_id!r}, state={TaskState(self.state).text})"


class NodeInfo:
    __slots__ = ("id", "node", "ready", "tasks", "active", "by_service", "cpu", "memory", "generic",
                 "ports", "failures", "last_cleanup")

    def __init__(self, node: Node, now: float = 0.0) -> None:
        self.id = node.id
        self.tasks: dict[str, TaskInfo] = {}
        self.active = 0  # ActiveTasksCount
        self.by_service: dict[str, int] = {}  # ActiveTasksCountByService
        self.ports: set[tuple[str, int]] = set()  # usedHostPorts
        self.failures: dict[tuple[str, int], list[float]] = {}  # recentFailures
        self.last_cleanup = now
        self.set_node(node)

    def set_node(self, node: Node) -> None:
        """createOrUpdateNode: the new description, less what the node's tasks reserve."""
        self.node = node
        self.ready = node.status.state == "ready" and node.availability == "active"
        self.cpu = node.resources.nano_cpus
        self.memory = node.resources.memory_bytes
        self.generic = dict(node.resources.generic)
        for t in self.tasks.values():
            self._reserve(t.spec, -1)

    def _reserve(self, spec: TaskSpecInfo, sign: int) -> None:
        self.cpu += sign * spec.nano_cpus
        self.memory += sign * spec.memory_bytes
        for kind, value in spec.generic:
            self.generic[kind] = self.generic.get(kind, 0) + sign * value

    def add_task(self, t: TaskInfo) -> bool:
        """addTask: a new task takes its reservations and host ports; a known one only moves
        between active and not by its desired state."""
        old = self.tasks.get(t.id)
        if old is not None:
            if t.desired <= COMPLETE < old.desired:
                self.tasks[t.id] = t
                self.active += 1
                self.by_service[t.service_id] = self.by_service.get(t.service_id, 0) + 1
                return True
            if old.desired <= COMPLETE < t.desired:
                self.tasks[t.id] = t
                self.active -= 1
                self.by_service[t.service_id] -= 1
                return True
            return False
        self.tasks[t.id] = t
        spec = t.spec
        if spec.reserves:
            self._reserve(spec, -1)
        if spec.host_ports:
            self.ports.update(spec.host_ports)
        if t.desired <= COMPLETE:
            self.active += 1
            self.by_service[t.service_id] = self.by_service.get(t.service_id, 0) + 1
        return True

    def remove_task(self, t: TaskInfo) -> bool:
        """removeTask: a finished or deleted task gives its reservations and ports back."""
        old = self.tasks.pop(t.id, None)
        if old is None:
            return False
        if old.desired <= COMPLETE:
            self.active -= 1
            self.by_service[old.service_id] -= 1
        spec = old.spec
        if spec.host_ports:
            self.ports.difference_update(spec.host_ports)
        if spec.reserves:
            self._reserve(spec, +1)
        return True

    def task_failed(self, t: TaskInfo, now: float) -> None:
        if now - self.last_cleanup >= MONITOR_FAILURES:
            self.failures = {k: v for k, v in self.failures.items() if any(now - ts < MONITOR_FAILURES for ts in v)}
            self.last_cleanup = now
        key = (t.service_id, t.spec_version)
        recent = [ts for ts in self.failures.get(key, ()) if now - ts < MONITOR_FAILURES]
        recent.append(now)
        self.failures[key] = recent

    def recent_failures(self, service_id: str, spec_version: int, now: float) -> int:
        return sum(1 for ts in self.failures.get((service_id, spec_version), ()) if now - ts <= MONITOR_FAILURES)

    def __repr__(self) -> str:
        return f"NodeInfo({self.id!r}, active={self.active}, cpu={self.cpu}, memory={self.memory})"
