"""The manager node's own copy of the swarm's networks and service endpoints, in its kernel:
made from what the allocator stored (manager/allocator.py: subnets, VNIs, VIPs, ports), inside
the transaction that writes them, so a port clash on this node (another service's, a host
process's) or a network of that name here fails the request with nothing stored; taken down
again once nothing uses them. Nothing here allocates: a node's network files are node-local
state, derived from the records, as on every worker (agent/netglue.py)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from shoal.errors import ShoalError
from shoal.store.base import Store

log = logging.getLogger("shoald.endpoints")


def local_subnets(skip: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, ipaddress.IPv4Network],
                                                                          list[ipaddress.IPv4Network]]:
    """The subnets of this node's own networks (not its copies of the swarm's, named in
    `skip`) and its host routes: a new swarm network avoids them, or this node could not make
    its copy (allocator.allocate_network's hint)."""
    from shoal.network.store import NetworkStore, host_routes

    store = NetworkStore()
    return ({n.name: n.subnet_net() for n in store.list() if n.subnet and n.name not in skip},
            list(host_routes()))


def _swarm_names(tx: Any) -> set[str]:
    return {raw["name"] for raw in tx.list("network")}


def allocate_network(tx: Any, spec: Any, pending: dict[str, Any] | None = None) -> Any:
    """allocator.allocate_network with this node's own networks and routes as the hint."""
    from shoal.manager import allocator

    # A copy of a network of this name (the swarm removed it just now) is not in the way: it is
    # this one again (allocator.copy_id) or replaced by it.
    avoid, routes = local_subnets(_swarm_names(tx) | {spec.name})
    return allocator.allocate_network(tx, spec, avoid, routes, pending)


class StaleCopy(ShoalError):
    """This node's copy of a network the swarm removed is still in use (its last tasks stop):
    the request waits for it (wait_for_stale_copies), outside the store transaction, and is
    made again."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"network {', '.join(names)} is still being removed on this node "
                         "(its last tasks are stopping): try again in a moment")
        self.names = names


def adopt_networks(records: list[dict[str, Any]]) -> list[str]:
    """This node's copy of each network (allocator.node_record), unless it has it already;
    returns the names made now (for undo_networks). A copy of a network of that name that the
    swarm removed (a `stack rm` and deploy again) is replaced once nothing uses it; while its
    last tasks stop, the request is refused, as on a worker."""
    from shoal.network import cleanup
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    created: list[str] = []
    try:
        with store.lock():
            for record in records:
                local = store.find(record["name"])
                if local is not None and local.id == record["id"]:
                    if local.swarm_id != record.get("swarm_id", local.swarm_id):
                        store.adopt(record)  # the same copy, of a record made again alike: its new ID
                    continue
                if local is not None:
                    if local.scope != "swarm" and "com.docker.stack.namespace" not in local.labels:
                        from shoal.errors import Conflict

                        raise Conflict(f"network with name {record['name']} already exists")
                    if local.endpoints or local.reserved:
                        raise StaleCopy([record["name"]])
                    cleanup.remove_network(local.id, store)
                store.adopt(record)
                created.append(record["name"])
    except BaseException:
        undo_networks(created)
        raise
    return created


def wait_for_stale_copies(names: list[str], timeout: float = 30.0) -> None:
    """This node's copies of swarm networks of these names that the swarm removed (a `stack rm`
    and deploy again: the new records get new IDs): waited for until their last task has left
    them (its stop grace period), then removed, so the request that makes the new ones does not
    fail; called outside any store transaction. One still in use after `timeout` is left, and
    adopt_networks says so."""
    import time

    from shoal.errors import NotFound
    from shoal.network import cleanup
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            local = store.find(name)
            if local is None or (local.scope != "swarm" and "com.docker.stack.namespace" not in local.labels):
                break
            if not local.endpoints and not local.reserved:
                try:
                    cleanup.remove_network(local.id, store)
                except (NotFound, ShoalError) as exc:
                    log.info("network %s: old copy not removed yet: %s", name, exc)
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)


def undo_networks(names: list[str]) -> None:
    from shoal.network import cleanup

    for name in names:
        try:
            cleanup.remove_network(name)
        except ShoalError as exc:
            log.warning("could not undo network %s: %s", name, exc)


def apply_service(service_id: str, spec: dict[str, Any], endpoint: dict[str, Any],
                  records: dict[str, dict[str, Any]]) -> None:
    """The service's VIPs (the allocator's, on this node's copy of each network, made from
    `records` if missing) and its published ports (a port held here fails: lb.claim_ports),
    keeping the backends this node has in its rotation."""
    from shoal.network import lb
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    wanted = [records[v["network"]] for v in endpoint.get("vips") or () if v["network"] in records]
    adopt_networks(wanted)
    try:
        current = lb.get_service(service_id)
    except ShoalError:
        current = None
    vips: dict[str, str] = {}
    with store.lock():
        for vip in endpoint.get("vips") or ():
            net = store.get(vip["network"])
            vips[net.id] = vip["addr"]
            mine = f"vip:{service_id}"
            if net.reserved.get(vip["addr"]) != mine or list(net.reserved.values()).count(mine) != 1:
                def reserve(n: Any, ip: str = vip["addr"]) -> None:
                    for k in [k for k, o in n.reserved.items() if o == mine]:
                        del n.reserved[k]
                    n.reserved[ip] = mine
                lb.sync_vip_addresses(store.update(net.id, reserve))
        # A network the service left: its VIP there is free again.
        for net in store.list():
            if net.id not in vips and any(o == f"vip:{service_id}" for o in net.reserved.values()):
                lb.sync_vip_addresses(store.update(net.id, lambda n: [n.reserved.pop(k) for k, o in
                                                                     list(n.reserved.items()) if o == f"vip:{service_id}"]))
        ports = [lb.ServicePort(**p) for p in endpoint.get("ports") or ()]
        lb.set_service(lb.Service(id=service_id, name=spec["name"], vips=vips, ports=ports,
                                  backends=current.backends if current is not None else [],
                                  endpoint_mode=endpoint.get("mode", "vip"),
                                  remote=current.remote if current is not None else {}), store)


def migrate_networks(store: Store) -> list[str]:
    """Once, at the manager's start: the records an older shoald wrote have no allocation (it
    lived in that manager's network files): it is taken from this node's copy, same ID, subnet
    and VNI, so nothing running changes; a record with no copy here is allocated afresh.
    Returns the names moved."""
    from shoal.manager import allocator
    from shoal.model.records import Network, NetworkAllocation
    from shoal.network.store import NetworkStore

    if all(raw.get("allocation") for raw in store.list("network")):
        return []
    local = {n.name: n for n in NetworkStore().list()}
    moved: list[str] = []
    with store.transaction() as tx:
        for raw in tx.list("network"):
            if raw.get("allocation"):
                continue
            record = Network.from_dict(raw)
            copy = local.get(record.name)
            if copy is not None and copy.has_bridge and copy.subnet:
                record.allocation = NetworkAllocation(network_id=copy.id, subnet=copy.subnet, gateway=copy.gateway,
                                                      ip_range=copy.ip_range, options=dict(copy.options),
                                                      mtu=copy.mtu, created=copy.created)
            else:
                try:
                    record.allocation = allocate_network(tx, record.spec)
                except ShoalError as exc:
                    # Not a reason for shoald not to start: the network stays unusable (no node
                    # is sent it) and says why; `network rm` and create again mends it.
                    log.warning("network %s has no allocation and none can be made: %s", record.name, exc)
                    continue
            tx.update("network", record.to_dict())
            moved.append(record.name)
    if moved:
        log.info("moved the allocation of networks %s from this node's network files into the store",
                 ", ".join(sorted(moved)))
    return moved


def remove_service(service_id: str) -> None:
    """Free the service's VIPs and published ports; its tasks leave the rotation as they stop."""
    from shoal.network import lb

    lb.remove_service(service_id)


def collect_networks(live_names: set[str]) -> list[str]:
    """Remove stack networks (labelled com.docker.stack.namespace) that no stack lists any more,
    once their last endpoint is gone. Returns the names removed."""
    from shoal.network import cleanup
    from shoal.network.store import NetworkStore

    removed = []
    for net in NetworkStore().list():
        if "com.docker.stack.namespace" not in net.labels or net.name in live_names:
            continue
        if net.endpoints or net.reserved:
            continue
        try:
            cleanup.remove_network(net.name)
            removed.append(net.name)
        except ShoalError as exc:
            log.info("network %s not removed yet: %s", net.name, exc)
    return removed


def reconcile(live_service_ids: set[str]) -> list[str]:
    """Take down the endpoints of services the store does not hold: VIPs and published ports
    are made before a deploy commits its services (a clash must fail with nothing stored), so
    shoald killed in between left them behind, and the port refused every later deploy as
    "already published by service X". Run at start, before the API listens (no deploy is
    under way then). Stack networks left without services go with the manager's next
    collect_networks. Returns the service IDs whose endpoints were removed."""
    from shoal.network import lb
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    with store.lock():
        owners = {svc.id for svc in lb.load_services()}
        for net in store.list():
            owners.update(owner[4:] for owner in net.reserved.values() if owner.startswith("vip:"))
        orphans = sorted(owners - live_service_ids)
        for service_id in orphans:
            log.warning("removing the endpoints of service %s: it is not in the store (shoald "
                        "stopped during a deploy or removal)", service_id)
            lb.remove_service(service_id, store)
    return orphans
