"""Service endpoints in the kernel: the stack's networks, each service's virtual IPs and published
ports (nftables, through shoal.network), made before the service is stored, so a port clash or a
full pool fails the deploy with nothing half-made; and taken down again once nothing uses them."""

from __future__ import annotations

import logging
from typing import Any

from shoal.errors import ShoalError
from shoal.model.stack import NetworkSpec

log = logging.getLogger("shoald.endpoints")


def _network_spec(raw: dict[str, Any]) -> NetworkSpec:
    from shoal.model._serde import from_dict

    return from_dict(NetworkSpec, raw)


def ensure_networks(stack: dict[str, Any]) -> list[str]:
    """Create the stack's networks in the kernel's network store; returns the names created now
    (for undo_networks when a later step fails)."""
    from shoal.network.stack import ensure_network
    from shoal.network.store import NetworkStore

    from shoal.manager.allocator import reserve_vni, vnis_in_use
    from shoal.network.overlay import check_options

    store = NetworkStore()
    created: list[str] = []
    specs = [_network_spec(raw) for raw in stack.get("networks", {}).values()]
    for spec in specs:  # all refused before any is made
        if not spec.external and store.find(spec.name) is None:
            check_options(spec.name, spec.driver or "overlay", dict(spec.driver_opts))
    try:
        with store.lock():  # the VNIs in use are read and one taken in one step
            for spec in specs:
                existed = spec.external or store.find(spec.name) is not None
                if not existed and (spec.driver or "overlay") == "overlay":
                    used = vnis_in_use([n.options for n in store.list() if n.driver == "overlay"])
                    spec.driver_opts = reserve_vni(spec.name, dict(spec.driver_opts), used)
                ensure_network(spec, store)
                if not existed:
                    created.append(spec.name)
    except BaseException:
        undo_networks(created)
        raise
    return created


def undo_networks(names: list[str]) -> None:
    from shoal.network import cleanup

    for name in names:
        try:
            cleanup.remove_network(name)
        except ShoalError as exc:
            log.warning("could not undo network %s: %s", name, exc)


def _ports(spec: dict[str, Any]) -> list[Any]:
    from shoal.network.lb import ServicePort

    endpoint = spec.get("endpoint") or {}
    return [ServicePort(protocol=p.get("protocol", "tcp"), target=int(p["target"]),
                        published=int(p.get("published") or 0), mode=p.get("publish_mode", "ingress"))
            for p in endpoint.get("ports") or []]


def ensure_service(service_id: str, spec: dict[str, Any], held: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """VIPs on every attached network (vip mode) and the published ports; keeps the backends it
    already has. Returns the endpoint as stored on the service record."""
    from shoal.network import lb

    endpoint_mode = (spec.get("endpoint") or {}).get("mode", "vip")
    try:
        current = lb.get_service(service_id)
        backends = current.backends
        vips = dict(current.vips)
    except ShoalError:
        backends, vips = [], {}
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    attached = [store.get(a["target"]) for a in spec.get("networks") or []]
    wanted_networks = {net.id: net.name for net in attached}
    # Only networks with addresses to give have a VIP: a service on the host network (as in
    # swarmkit, whose allocator gives node-local networks no VIP) uses the node's own.
    bridged = {net.id for net in attached if net.has_bridge and net.subnet}
    if endpoint_mode == "vip":
        for net_id, name in wanted_networks.items():
            if net_id in bridged and net_id not in vips:
                # Not an address a task holds on another node (manager/allocator.py).
                vips[net_id] = lb.allocate_vip(name, service_id, store, avoid=(held or {}).get(name, ()))
    vips = {k: v for k, v in vips.items() if k in wanted_networks}
    service = lb.Service(id=service_id, name=spec["name"], vips=vips, ports=_ports(spec),
                         backends=backends, endpoint_mode=endpoint_mode)
    lb.set_service(service, store)
    return {"mode": endpoint_mode, "vips": [{"network": wanted_networks[k], "addr": v} for k, v in vips.items()],
            "ports": [p.__dict__ for p in service.ports]}


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
