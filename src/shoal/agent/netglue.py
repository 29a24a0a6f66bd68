"""The network side of tasks in shoald: a running task enters its service's nftables rotation
(on every network it is attached to) and gets the embedded resolver in its namespace; a task
about to stop leaves the rotation first. The resolver's tables are derived from the service records of the node's assignments."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from shoal.agent.session import ServiceRecord
from shoal.agent.worker import TaskNetwork
from shoal.errors import NotFound, ShoalError
from shoal.model.cluster import Task

log = logging.getLogger("shoald.network")

JOIN_GATHER = 0.02  # seconds a rotation change waits for others to share its nft transaction
JOIN_WAIT = 30.0  # at most, for a task waiting on another thread's transaction
# How long a task that stopped here still counts as this node's own for the rotation: the
# manager's service records may list it for some milliseconds more (the next assignment set).
RECENTLY_STOPPED = 10.0
# How long a task's prepare waits for this node's copy of a removed network to be left by its
# last containers (being stopped and removed beside it) before the task is rejected.
STALE_COPY_WAIT = 20.0


class _StaleCopyInUse(ShoalError):
    """This node's copy of a network the manager removed still has endpoints."""

    def __init__(self, name: str) -> None:
        super().__init__(f"network {name} is still being removed on this node")


class DaemonTaskNetwork(TaskNetwork):
    def __init__(self, loop: asyncio.AbstractEventLoop, dns: Any) -> None:
        self.loop = loop
        self.dns = dns
        self._lock = threading.Lock()
        self._joining: dict[str, list[Any]] = {}  # service ID -> backends waiting for the rotation
        self._flushing = False
        self._applied = threading.Event()  # set once the batch being gathered is in the kernel

    def _network_ids(self, attachments: list[dict[str, Any]]) -> dict[str, str]:
        from shoal.network.store import NetworkStore

        store = NetworkStore()
        return {store.get(a["network"]).id: a["addresses"][0].split("/")[0] for a in attachments}

    def before_start(self, task: Task, container: Any) -> None:
        """The resolver listens in the task's namespace before its process runs."""
        serve_container_dns(self.loop, self.dns, container.id, container.network)

    def joined(self, task: Task, netns: str, attachments: list[dict[str, Any]]) -> None:
        """Put the task in the rotation and return once its rule is in the kernel: the worker
        reports it RUNNING after this, and the manager may then take a task of another node out
        of this node's rotation (a rolling update's next stop) - had this one not entered it yet,
        a published port with no other task here would have had no backend for those
        milliseconds, and its connections were refused. Tasks that start together enter it in
        one nftables transaction (each re-applies the whole table under the network lock)."""
        from shoal.network import lb

        backend = lb.Backend(task_id=task.id, ips=self._network_ids(attachments))
        with self._lock:
            self._joining.setdefault(task.service_id, []).append(backend)
            done = self._applied
            leader = not self._flushing
            self._flushing = True
        if leader:
            self._flush()
        elif not done.wait(JOIN_WAIT):
            log.warning("task %s: its rotation was not applied within %.0f s", task.id, JOIN_WAIT)

    def _flush(self) -> None:
        """Run by the first thread to queue: it applies what has gathered, again while more
        queued meanwhile; the threads that queued wait for the batch with theirs. A failed
        transaction does not stop the batches behind it (its error is raised at the end)."""
        from shoal.network import lb

        error: Exception | None = None
        while True:
            time.sleep(JOIN_GATHER)
            with self._lock:
                batch, self._joining = self._joining, {}
                done, self._applied = self._applied, threading.Event()
            try:
                if batch:
                    lb.add_backends(batch)  # services removed meanwhile are skipped: their tasks stop
            except Exception as exc:  # noqa: BLE001 - raised below, once the queue is served
                error = error or exc
            finally:
                done.set()
            with self._lock:
                if not self._joining:
                    self._flushing = False
                    break
        if error is not None:
            raise error

    def left(self, task: Task) -> None:
        from shoal.network import lb

        with self._lock:
            queued = self._joining.get(task.service_id, [])
            queued[:] = [b for b in queued if b.task_id != task.id]

        try:
            lb.remove_backend(task.service_id, task.id)
        except (NotFound, ShoalError):
            pass
        if self.dns is not None and task.status.container_id:
            asyncio.run_coroutine_threadsafe(self.dns.unserve(task.status.container_id), self.loop)


def container_networks(container_id: str) -> list[str]:
    """IDs of the networks a container has an endpoint on."""
    from shoal.network.store import NetworkStore

    return [n.id for n in NetworkStore().list() if container_id in n.endpoints]


def container_upstreams(container_id: str) -> list[str]:
    """The servers a container asked for (`--dns`, a service's `dns:`), from its record: the
    runtime keeps the embedded resolver as its nameserver (runtime/manager.py). Not from its
    resolv.conf, which the container can write: shoald forwards from the host's namespace."""
    import json

    from shoal.ids import is_full_id
    from shoal.network.dns import LISTEN_ADDR
    from shoal.paths import state_root

    if not is_full_id(container_id):  # a path component: only an ID
        return []
    try:
        record = json.loads((state_root() / "containers" / container_id / "container.json").read_text())
        servers = record["spec"]["dns"] or []
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(s) for s in servers if s != LISTEN_ADDR]


def serve_container_dns(loop: asyncio.AbstractEventLoop, dns: Any, container_id: str,
                        network: dict[str, Any]) -> None:
    """From a worker thread: open the resolver in the container's namespace and wait for it."""
    netns = network.get("netns") or ""
    if dns is None or not netns:
        return
    future = asyncio.run_coroutine_threadsafe(
        dns.serve(container_id, netns, container_networks(container_id), container_upstreams(container_id)), loop)
    try:
        future.result(timeout=10)
    except Exception as exc:  # noqa: BLE001 - a resolver failure must not fail the container
        log.warning("embedded DNS for container %s: %s", container_id[:12], exc)


def dns_tables(services: list[ServiceRecord],
               attachments: list[dict[str, Any]] | None = None) -> dict[str, dict[str, list[str]]]:
    """Per network ID: each service by full name, compose name and aliases (its VIP, or its task
    IPs for dnsrr), `tasks.<name>` (from the service records the manager sends in the node's
    assignments), every endpoint on the network by name and hostname (from the node's network
    state), and the containers of every node attached to it (`run --network`, the manager's
    attachments: by name, aliases and short ID, as Docker's resolver answers them swarm-wide)."""
    from shoal.network import dns
    from shoal.network.store import NetworkStore

    nets = {n.name: n for n in NetworkStore().list()}
    endpoints = {n.id: dns.endpoint_records(n) for n in nets.values()}
    for a in attachments or ():
        net = nets.get(a.get("network", ""))
        if net is None or not a.get("addresses"):
            continue
        names = [n for n in (a.get("container_name"), *(a.get("aliases") or ()), str(a.get("container_id", ""))[:12]) if n]
        ip = str(a["addresses"][0]).split("/")[0]
        endpoints[net.id] = dns.merge(endpoints[net.id], dns.container_records(ip, names))
    by_net: dict[str, list[dict[str, list[str]]]] = {n.id: [] for n in nets.values()}
    for record in services:
        net = nets.get(record.network)
        if net is None:
            continue
        by_net[net.id].append(dns.service_records(record.service_name, record.vip, list(record.task_ips),
                                                  list(record.aliases), record.mode))
    # A service's names mean its VIP (or its tasks), never one task that carries the alias too.
    return {net_id: {**endpoints[net_id], **dns.merge(*by_net[net_id])} for net_id in endpoints}


class NodeNetworks:
    """A node renders the networks its manager made and allocated (issue 11's seam 2): before a
    task is prepared, each of its networks exists here (the manager's record, same ID and
    subnet: network/store.py adopt), the address the manager allocated for the task is set
    aside for its container (manager/allocator.py), and on a worker the task's service has its
    VIPs and published ports here, so the node's published port answers from its own tasks.
    On a worker, a network no task here uses any more is removed again (collect).

    The manager node made its networks and service endpoints itself at deploy; there, only the
    task's address is set aside."""

    def __init__(self, agent: Any, manager: bool, attached: Any = None) -> None:
        self.agent = agent
        self.manager = manager
        # Names of the networks this node's `run --network` containers are attached to
        # (agent/attachments.py): kept, and their services' VIPs reachable, as a task's.
        self.attached: Any = attached or (lambda: set())
        self._lock = threading.Lock()
        self._vips_key: tuple[int, int] | None = None
        self._vips_due = 0.0

    def setup(self, task: Task) -> None:
        """A copy of a removed network still in use (a `stack rm` and a deploy right after: the
        old stack's containers are stopping, or a completed job's are removed at the next
        orphan scan) is waited for, as swarmkit's agent retries a temporary error, rather than
        the task REJECTED at once and again while parked for its restart delay."""
        deadline = time.monotonic() + STALE_COPY_WAIT
        while True:
            try:
                self._setup(task)
                return
            except _StaleCopyInUse:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _setup(self, task: Task) -> None:
        from shoal.agent.taskspec import container_name
        from shoal.network.store import NetworkStore

        store = NetworkStore()
        given = {a["network"]: a["addresses"][0].split("/")[0] for a in task.networks or [] if a.get("addresses")}
        endpoint = container_name(task)
        with self._lock:
            if not self.manager:
                self._drop_removed_services(store)
            for attachment in task.spec.get("networks") or []:
                name = attachment["target"]
                local = store.find(name)
                record = self.agent.networks.get(name)
                if local is not None and record is not None and local.id != record["id"] and not self.manager:
                    # This node's copy of a network of that name that the manager removed (a
                    # `stack rm` and deploy again): gone once its last task has left it.
                    if local.endpoints:
                        raise _StaleCopyInUse(name)
                    self._remove_network(store, local)
                    local = None
                if local is None:
                    if record is None:
                        raise NotFound(f"network {name} not found")
                    if not self.manager:
                        self._drop_overlapped(store, record)
                    store.adopt(record)
                elif record is not None and local.id == record["id"] \
                        and local.swarm_id != record.get("swarm_id", local.swarm_id):
                    store.adopt(record)  # the same copy, of a record made again alike: its new ID
                ip = given.get(name)
                if ip:
                    store.update(name, lambda n, ip=ip: n.assigned.__setitem__(endpoint, ip))
            if not self.manager:
                self._ensure_service(store, task.service_id)
        self._join_overlays(store, [a["target"] for a in task.spec.get("networks") or []])

    def _join_overlays(self, store: Any, names: list[str]) -> None:
        """An overlay network's bridge and VXLAN device, with its peers, and the VIPs on it,
        before the task's container is attached: it reaches the tasks of other nodes and their
        services from its first packet. The node's routing mesh (its published ports' rules,
        the networks it has no task on) is not the task's to wait for: the agent pass makes it
        on every set (sync_overlays), and no other node sends the task mesh traffic before the
        manager has its RUNNING. Run here too, it doubled that pass's work at the same moment
        on a node's busiest moment (a deploy's prepare: 110-200 ms of every task's prepare,
        bench/bench_cluster_deploy.py)."""
        from shoal.network import bridge, overlay

        nets = [n for n in (store.find(name) for name in names)
                if n is not None and n.driver == "overlay" and overlay.vni_of(n.options)]
        if not nets:
            return
        with store.lock():
            for net in nets:
                bridge.ensure_bridge(net)
        if getattr(self.agent, "_sequence", 1):  # else no set yet: devices stay (sync_overlays)
            overlay.sync(self.agent.networks)
            self._sync_vips()

    def sync_overlays(self) -> None:
        """This node's VXLAN devices and their neighbour and forwarding entries made the
        manager's view (network/overlay.py), and the VIPs on its overlay networks made to
        reach the tasks of every node; cheap when nothing changed (every agent pass)."""
        from shoal.network import overlay

        if not getattr(self.agent, "_sequence", 1):
            # No set from the manager yet in this session (shoald restarted, or the session
            # reopens): the devices stay as they are until the complete set says what is wanted.
            return
        # Read before the records: an ack never claims a set newer than what was applied.
        info = getattr(self.agent, "info", None)
        session_id, sequence = (info.session_id if info is not None else None), self.agent._sequence
        overlay.sync(self.agent.networks)
        key = (self.agent.services_version, self.agent.store.revision())
        if key != self._vips_key or time.monotonic() >= self._vips_due:
            self._ensure_mesh()
            self._sync_vips()
            self._sync_mesh()
            self._vips_key, self._vips_due = key, time.monotonic() + 1.0  # endpoints come and go too
        acked = getattr(self.agent, "rotation_applied", None)
        if acked is not None:
            acked(session_id, sequence)  # the manager may now stop tasks these records dropped

    def _mesh_services(self, networks: dict[str, dict[str, Any]] | None = None) -> dict[str, set[str]]:
        """Overlay network name -> the services publishing a port in ingress mode on it: every
        node publishes it, reaching the tasks of every node (the routing mesh, network/mesh.py)."""
        networks = self.agent.networks if networks is None else networks
        out: dict[str, set[str]] = {}
        for r in self.agent.services:
            record = networks.get(r.network)
            if record is not None and record.get("driver") == "overlay" and any(
                    p.get("published") and p.get("mode", "ingress") == "ingress" for p in r.ports):
                out.setdefault(r.network, set()).add(r.service_id)
        return out

    def _ensure_mesh(self) -> None:
        """The networks of the node's mesh (with no task of them here too): adopted, their bridge
        made (overlay.sync then adds the VXLAN device), their services' published ports here."""
        from shoal.network import bridge
        from shoal.network.store import NetworkStore

        # One view of the networks: an assignment set applied meanwhile (another thread) replaces
        # the agent's dict, and a network a `stack rm` dropped was a KeyError here, which ended
        # the agent loop before 16b4880 (issue 11).
        networks = self.agent.networks
        wanted = self._mesh_services(networks)
        if not wanted:
            return
        store = NetworkStore()
        with self._lock:
            for name in sorted(wanted):
                record = networks[name]
                net = store.find(name)
                try:
                    if net is None or (net.id == record["id"] and net.swarm_id != record.get("swarm_id", net.swarm_id)):
                        net = store.adopt(record)  # new, or the same copy of a record made again alike
                    if net.id != record["id"]:
                        continue  # this node's old copy, removed once its last task left it
                    if not bridge.link_exists(net.bridge):
                        with store.lock():
                            bridge.ensure_bridge(net)
                    if not self.manager:
                        for service_id in sorted(wanted[name]):
                            self._ensure_service(store, service_id)
                except (ShoalError, OSError) as exc:
                    log.warning("routing mesh on network %s: %s", name, exc)

    def _sync_mesh(self) -> None:
        from shoal.network import mesh

        try:
            mesh.sync(self.agent.networks)
        except (ShoalError, OSError) as exc:
            log.warning("routing mesh: %s", exc)

    def _live_networks(self) -> set[str]:
        """Names of the networks the node's live tasks use."""
        from shoal.model.cluster import TaskState

        tasks = [Task.from_dict(raw) for raw in self.agent.store.list("task")]
        return {a["target"] for t in tasks
                if not t.status.state.terminal and t.desired_state <= TaskState.COMPLETE
                or t.status.state in (TaskState.STARTING, TaskState.RUNNING)
                for a in t.spec.get("networks") or []}

    def _vip_services(self, networks: set[str]) -> set[str]:
        """Services with a VIP on one of these overlay networks: every node with a task on the
        network answers their VIP, as in Swarm, whether or not one of their tasks runs there."""
        from shoal.network.store import NetworkStore

        overlays = {n.name for n in NetworkStore().list() if n.driver == "overlay"}
        return {r.service_id for r in self.agent.services
                if r.network in networks and r.network in overlays and r.mode == "vip" and r.vip}

    def _sync_vips(self) -> None:
        """Each VIP on this node's overlay networks: its service's endpoint here (a worker makes
        it for services with no task here too) and, in its rotation, the service's running
        tasks on other nodes (the manager's service records), reached over the overlay."""
        from shoal.network import lb
        from shoal.network.store import NetworkStore

        store = NetworkStore()
        live = self._live_networks() | set(self._mesh_services()) | self.attached()
        nets = {n.name: n for n in store.list() if n.driver == "overlay" and n.name in live}
        if not nets:
            return
        with self._lock:
            if not self.manager:
                for service_id in sorted(self._vip_services(set(nets))):
                    self._ensure_service(store, service_id)
        remote: dict[str, dict[str, list[str]]] = {}
        own = self._own_task_addresses()
        for record in self.agent.services:
            net = nets.get(record.network)
            if net is None:
                continue
            local = {e.ip for e in net.endpoints.values()} | set(net.assigned.values()) | own
            remote.setdefault(record.service_id, {})[net.id] = sorted(ip for ip in record.task_ips if ip not in local)
        lb.set_remote(remote, store)

    def _own_task_addresses(self) -> set[str]:
        """Addresses of this node's tasks, running or stopped moments ago. A task that stopped
        here leaves its network's endpoints at its teardown, while the manager's records may
        still list it until the next assignment set: counted as a remote task then, it came
        back into this node's rotation after it had left it, and new connections through the
        published port were refused for those milliseconds."""
        now = time.time()
        out: set[str] = set()
        for raw in self.agent.store.list("task"):
            task = Task.from_dict(raw)
            if task.status.state.terminal and now - task.status.timestamp > RECENTLY_STOPPED:
                continue
            out.update(a.split("/")[0] for n in task.networks for a in n.get("addresses") or [])
        return out

    def _drop_removed_services(self, store: Any) -> None:
        """Service endpoints the manager no longer lists (the service was removed, its last
        tasks may still be stopping here): their ports and VIPs are free again at once, as on
        the manager, so a service deployed again can publish the same port."""
        from shoal.network import lb

        listed = {r.service_id for r in self.agent.services}
        for svc in lb.load_services():
            if svc.id not in listed:
                lb.remove_service(svc.id, store)

    def _drop_overlapped(self, store: Any, record: dict[str, Any]) -> None:
        """This node's copy of a network the manager removed whose subnet it has given again
        (`stack rm`, then a deploy: the freed subnet is the first free one) goes before the new
        one is adopted, not at the next collect: else the task was REJECTED for the overlap, and
        again while parked, until the agent pass got to it (Swarm's overlays never clash)."""
        import ipaddress

        if not record.get("subnet"):
            return
        subnet = ipaddress.IPv4Network(record["subnet"])
        keep = set(self._mesh_services()) | self.attached()
        for net in store.list():
            if net.predefined or not net.subnet or net.name in keep or not subnet.overlaps(net.subnet_net()):
                continue
            if net.scope != "swarm" and "com.docker.stack.namespace" not in net.labels:
                continue  # the node's own networks (`network create` here) are its user's
            listed = self.agent.networks.get(net.name)
            if listed is not None and listed["id"] == net.id:
                continue  # still the manager's: adopt reports the clash
            if net.endpoints:
                raise _StaleCopyInUse(net.name)
            self._remove_network(store, net)

    @staticmethod
    def _remove_network(store: Any, net: Any) -> None:
        from shoal.network import cleanup

        if net.assigned:
            store.update(net.id, lambda n: n.assigned.clear())
        cleanup.remove_network(net.id, store)

    def _ensure_service(self, store: Any, service_id: str) -> None:
        """The service's VIPs (reserved on this node's copy of each network) and published
        ports, keeping the backends the node has put in rotation."""
        from shoal.network import lb

        records = [r for r in self.agent.services if r.service_id == service_id]
        if not records:
            return
        vips: dict[str, str] = {}
        for record in records:
            net = store.find(record.network)
            if net is None or not record.vip or record.mode != "vip":
                continue
            vips[net.id] = record.vip
            if net.reserved.get(record.vip) != f"vip:{service_id}":
                net = store.update(net.id, lambda n, r=record: n.reserved.__setitem__(r.vip, f"vip:{service_id}"))
                lb.sync_vip_addresses(net)
        ports = [lb.ServicePort(protocol=p.get("protocol", "tcp"), target=int(p["target"]),
                                published=int(p.get("published") or 0), mode=p.get("mode", "ingress"))
                 for p in records[0].ports]
        try:
            current = lb.get_service(service_id)
        except ShoalError:
            current = None
        if current is not None and current.vips == vips and current.ports == ports:
            return
        lb.set_service(lb.Service(id=service_id, name=records[0].service_name, vips=vips, ports=ports,
                                  backends=current.backends if current is not None else [],
                                  endpoint_mode=records[0].mode,
                                  remote=current.remote if current is not None else {}), store)

    def collect(self) -> list[str]:
        """On a worker: the networks (and the service endpoints on them) that no task of this
        node uses any more are removed. Returns the names removed."""
        from shoal.agent.taskspec import container_name
        from shoal.model.cluster import TaskState
        from shoal.network import cleanup, lb
        from shoal.network.store import NetworkStore

        store = NetworkStore()
        nets = store.list()
        if not any(n.assigned for n in nets) and (self.manager or not (
                any(not n.predefined for n in nets) or lb.load_services())):
            return []  # nothing to look at: no task list read (this runs every second when idle)
        tasks = [Task.from_dict(raw) for raw in self.agent.store.list("task")]
        live = [t for t in tasks if not t.status.state.terminal and t.desired_state <= TaskState.COMPLETE
                or t.status.state in (TaskState.STARTING, TaskState.RUNNING)]
        wanted = {a["target"] for t in live for a in t.spec.get("networks") or []}
        services = {t.service_id for t in live}
        removed: list[str] = []
        with self._lock:
            # An address set aside for a task whose container never attached (its prepare
            # failed, it was removed first) is given back.
            names = {container_name(t) for t in live}
            for net in store.list():
                if any(n not in names for n in net.assigned):
                    store.update(net.id, lambda n: [n.assigned.pop(k) for k in list(n.assigned) if k not in names])
            if self.manager:
                return removed
            listed = {r.service_id for r in self.agent.services}
            mesh = self._mesh_services()
            wanted |= set(mesh) | self.attached()
            services |= self._vip_services(wanted) | {s for ids in mesh.values() for s in ids}
            for svc in lb.load_services():
                if svc.id not in services or svc.id not in listed:
                    lb.remove_service(svc.id, store)
            for net in store.list():
                record = self.agent.networks.get(net.name)
                current = record is None or record["id"] == net.id
                if net.predefined or (net.name in wanted and current) or net.endpoints:
                    continue
                if net.scope != "swarm" and "com.docker.stack.namespace" not in net.labels:
                    continue  # the node's own networks (`network create` here) are its user's
                try:
                    self._remove_network(store, net)
                    removed.append(net.name)
                except ShoalError as exc:
                    log.info("network %s not removed yet: %s", net.name, exc)
        return removed
