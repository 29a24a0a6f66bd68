"""swarmkit's filter pipeline (manager/scheduler/filter.go, pipeline.go), in its order, with its
explanations word for word. A filter is enabled per task group (SetTask) and then checks nodes;
the pipeline stops at the first filter a node fails and counts that failure, and forgets the
counts whenever a node passes (as swarmkit's Process does). Explain lists the failing filters,
most failures first, joined by "; ".

PluginFilter is not here: shoal has no volume, network or log plugins, so it would always pass.
VolumesFilter (CSI cluster volumes) likewise. In PluginFilter's place, EncryptionFilter keeps a
task on an encrypted overlay network off nodes that cannot make a WireGuard interface (their
description lists no Encryption plugin): there it would be cut off from its network, never sent
in clear, but never working either."""

from __future__ import annotations

from collections.abc import Callable

from shoal.manager.constraints import compile_all
from shoal.network.wireguard import PLUGIN_TYPE as ENCRYPTION_PLUGIN
from shoal.manager.scheduling.nodeinfo import NodeInfo, TaskInfo
from shoal.model.cluster import Node

Check = Callable[[NodeInfo], bool]


def _per_node(test: Callable[[Node], bool]) -> Check:
    """A test of what a node describes, run once per node per task group: the node records do
    not change during a tick, though the pipeline runs a node again after every assignment."""
    seen: dict[str, bool] = {}

    def check(n: NodeInfo) -> bool:
        hit = seen.get(n.id)
        if hit is None or n.node is not nodes[n.id]:
            hit = seen[n.id] = test(n.node)
            nodes[n.id] = n.node
        return hit

    nodes: dict[str, Node] = {}
    return check


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter:
    name = ""

    def set_task(self, t: TaskInfo) -> Check | None:
        """The check for nodes, or None when the filter does not apply to this task."""
        raise NotImplementedError

    def explain(self, nodes: int) -> str:
        raise NotImplementedError


class ReadyFilter(Filter):
    name = "ready"

    def set_task(self, t: TaskInfo) -> Check | None:
        return _ready

    def explain(self, nodes: int) -> str:
        return f"{_nodes(nodes)} not available for new tasks"


def _ready(n: NodeInfo) -> bool:
    return n.ready


class ResourceFilter(Filter):
    name = "resources"

    def set_task(self, t: TaskInfo) -> Check | None:
        spec = t.spec
        if not spec.reserves:
            return None
        cpu, memory, generic = spec.nano_cpus, spec.memory_bytes, spec.generic
        if not generic:
            return lambda n: cpu <= n.cpu and memory <= n.memory
        return lambda n: cpu <= n.cpu and memory <= n.memory and all(n.generic.get(k, 0) >= v for k, v in generic)

    def explain(self, nodes: int) -> str:
        return f"insufficient resources on {_nodes(nodes)}"


class EncryptionFilter(Filter):
    name = "encryption"

    def set_task(self, t: TaskInfo) -> Check | None:
        return _per_node(can_encrypt) if t.spec.encrypted else None

    def explain(self, nodes: int) -> str:
        # As PluginFilter's "missing plugin on N nodes".
        return f"encrypted networks unsupported on {_nodes(nodes)}"


def can_encrypt(node: Node) -> bool:
    """The node said it can make a WireGuard interface (network/wireguard.py plugins)."""
    return any(p.get("type") == ENCRYPTION_PLUGIN for p in node.engine.plugins)


class ConstraintFilter(Filter):
    name = "constraints"

    def set_task(self, t: TaskInfo) -> Check | None:
        if not t.spec.constraints:
            return None
        return _per_node(compile_all(t.spec.constraints))

    def explain(self, nodes: int) -> str:
        return f"scheduling constraints not satisfied on {_nodes(nodes)}"


_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class PlatformFilter(Filter):
    name = "platform"

    def set_task(self, t: TaskInfo) -> Check | None:
        wanted = [(os_, _ARCH.get(arch, arch)) for os_, arch in t.spec.platforms]
        if not wanted:
            return None

        def check(node: Node) -> bool:
            p = node.platform
            arch = _ARCH.get(p.architecture, p.architecture)
            return any((not a or a == arch) and (not o or o == p.os) for o, a in wanted)

        return _per_node(check)

    def explain(self, nodes: int) -> str:
        return f"unsupported platform on {_nodes(nodes)}"


class HostPortFilter(Filter):
    name = "host ports"

    def set_task(self, t: TaskInfo) -> Check | None:
        ports = t.spec.host_ports
        if not ports:
            return None
        return lambda n: not any(p in n.ports for p in ports)

    def explain(self, nodes: int) -> str:
        return f"host-mode port already in use on {_nodes(nodes)}"


class MaxReplicasFilter(Filter):
    name = "max replicas"

    def set_task(self, t: TaskInfo) -> Check | None:
        limit, service = t.spec.max_replicas, t.service_id
        if limit <= 0:
            return None
        return lambda n: n.by_service.get(service, 0) < limit

    def explain(self, nodes: int) -> str:
        return "max replicas per node limit exceed"


def default_filters() -> list[Filter]:
    # Readiness first, as swarmkit's defaultFilters (encryption where its PluginFilter is).
    return [ReadyFilter(), ResourceFilter(), EncryptionFilter(), ConstraintFilter(), PlatformFilter(), HostPortFilter(),
            MaxReplicasFilter()]


class Pipeline:
    def __init__(self, filters: list[Filter] | None = None) -> None:
        self.filters = filters if filters is not None else default_filters()
        self.failures = [0] * len(self.filters)
        self._checks: list[tuple[int, Check]] = []
        self._counted = False

    def set_task(self, t: TaskInfo) -> None:
        self._checks = [(i, c) for i, f in enumerate(self.filters) if (c := f.set_task(t)) is not None]
        self.failures = [0] * len(self.filters)
        self._counted = False

    def process(self, n: NodeInfo) -> bool:
        for i, check in self._checks:
            if not check(n):
                self.failures[i] += 1
                self._counted = True
                return False
        if self._counted:
            self.failures = [0] * len(self.filters)
            self._counted = False
        return True

    def explain(self) -> str:
        order = sorted(range(len(self.filters)), key=lambda i: -self.failures[i])  # stable: ties in filter order
        return "; ".join(self.filters[i].explain(self.failures[i]) for i in order if self.failures[i])
