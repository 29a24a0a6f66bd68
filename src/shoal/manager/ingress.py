"""Swarm's `ingress` network: the network a service publishing a port in ingress mode is
attached to (swarmkit manager/allocator/network.go IsIngressNetworkNeeded and the task's
ingress attachment; moby daemon/cluster's default ingress: driver overlay, scope swarm,
`Ingress: true`, 10.0.0.0/24 unless that is in use).

shoal makes it lazily, when the first service that needs it is created or updated, not when
the manager role starts: every shoald is a one-node manager from its first `service` or `stack`
command, and a bridge, a VNI and nftables rules on every such machine, for users who never
publish a port, would be kernel state nobody asked for. Once made it stays, as Docker's does,
until `network rm ingress` (refused while a service needs it).

Where shoal differs: a service with networks of its own publishes through them (the mesh,
network/mesh.py, on its first network), as before this module; only a service with no network
of its own (`service create -p 8080:80 nginx`) is given the ingress attachment, first, as
swarmkit's taskCreateNetworkAttachments puts it. The attachment is never written into the
service's spec (`service inspect` shows the spec as given, as Docker's); it is added to the
task's copy of the spec (orchestrator.task_spec), to the spec the endpoint is made from (the VIP
on ingress, in Endpoint.vips) and to the dispatcher's service records."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from shoal.store.base import Store

log = logging.getLogger("shoald.ingress")

NAME = "ingress"
DEFAULT_SUBNET = "10.0.0.0/24"  # moby daemon/cluster/executor's default ingress pool


def needed(spec: dict[str, Any]) -> bool:
    """swarmkit IsIngressNetworkNeeded: any port published in ingress mode."""
    return any((p.get("publish_mode") or "ingress") == "ingress"
               for p in (spec.get("endpoint") or {}).get("ports") or ())


def attaches(spec: dict[str, Any]) -> bool:
    """The service's tasks get the ingress attachment (see the module's note)."""
    return needed(spec) and not spec.get("networks")


def effective(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with the ingress attachment its tasks get, a copy; the spec itself if none."""
    if not attaches(spec):
        return spec
    return dict(spec, networks=[{"target": NAME, "aliases": []}])


def _subnet(tx: Any) -> str:
    """10.0.0.0/24 unless a swarm network, a network of this node or a host route holds part of
    it: then the default pools' next free subnet, as any network without --subnet."""
    from shoal.manager import allocator, endpoints

    wanted = ipaddress.IPv4Network(DEFAULT_SUBNET)
    avoid, routes = endpoints.local_subnets({raw["name"] for raw in tx.list("network")})
    taken = [*allocator.network_subnets(tx).values(), *avoid.values(), *routes]
    return "" if any(wanted.overlaps(t) for t in taken) else DEFAULT_SUBNET


def ensure(store: Store) -> None:
    """The ingress network, allocated and recorded, and this node's copy of it, unless it
    exists already."""
    from shoal.ids import new_swarm_id
    from shoal.manager import allocator, endpoints
    from shoal.model.records import Network
    from shoal.model.stack import IPAM, IPAMPool, NetworkSpec

    recorded = next((n for n in store.list("network") if n["name"] == NAME), None)
    if recorded is not None:
        # This node's copy again if it went (removed by hand, a wiped network store): the
        # manager's record says what it is.
        record = allocator.node_record(recorded)
        if record is not None:
            endpoints.adopt_networks([record])
        return
    created: list[str] = []
    try:
        with store.transaction() as tx:
            if any(n["name"] == NAME for n in tx.list("network")):
                return  # another request made it meanwhile: that one is kept
            subnet = _subnet(tx)
            spec = NetworkSpec(name=NAME, compose_name=NAME, driver="overlay", ingress=True,
                               ipam=IPAM(config=[IPAMPool(subnet=subnet)] if subnet else []))
            net = Network(id=new_swarm_id(), name=NAME, spec=spec, created_at=time.time(),
                          allocation=endpoints.allocate_network(tx, spec))
            raw = tx.create("network", net.to_dict())
            created = endpoints.adopt_networks([allocator.node_record(raw) or {}])
    except BaseException:
        endpoints.undo_networks(created)
        raise
    log.info("created the ingress network (%s)", subnet or "a default pool's subnet")


def check_removable(tx: Any, net: dict[str, Any]) -> None:
    """swarmkit removeIngressNetwork: refused while any service needs ingress."""
    from shoal.errors import InvalidArgument
    from shoal.manager.controlapi import rpc

    for svc in tx.list("service"):
        if needed(svc.get("spec") or {}):
            raise InvalidArgument(rpc("FailedPrecondition", f"ingress network cannot be removed because service "
                                                            f"{svc['id']} depends on it"))

