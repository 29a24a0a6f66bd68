"""Network attachments: a container that `run --network X` (or `create`/`start`) connects to an
attachable swarm network gets its address from the manager, as swarmkit's
manager/resourceapi/allocator.go AttachNetwork/DetachNetwork does for dockerd
(daemon/cluster/networks.go): the node asks over its session, the allocator gives the address
in the manager's transaction (manager/allocator.py, the same serial order and the same pool as
tasks and VIPs), and the record (kind `attachment`, swarmkit's task of runtime "attachment")
holds it until the node detaches it (the container stopped or was removed), the node is
removed, or it is found stale after a manager restart. The dispatcher sends each node the
attachments on its networks (forwarding entries and DNS on every node, as for tasks).

A record: id, node_id, container_id, container_name, aliases, network (name), network_id (the
record's ID), addresses (["ip/prefix"]), created_at. (No `name`: the store keeps names unique
per kind, and two nodes may each have a container of one name.)"""

from __future__ import annotations

import time
from typing import Any

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.ids import new_swarm_id
from shoal.manager.controlapi import rpc
from shoal.store.base import Store

KIND = "attachment"


class PermissionDenied(ShoalError):
    """swarmkit's codes.PermissionDenied: a network not manually attachable, or another node's
    attachment."""


def _network(networks: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """swarmkit's lookup: the network's ID, else the one network of that name."""
    for net in networks:
        if net["id"] == ref:
            return net
    named = [n for n in networks if n["name"] == ref]
    if len(named) == 1:
        return named[0]
    # dockerd looks the name up before it asks the manager: its own words.
    raise NotFound(f"network {ref} not found")


def attach(store: Store, node_id: str, ref: str, container_id: str, name: str = "",
           aliases: list[str] | None = None) -> dict[str, Any]:
    """The attachment of `container_id` on node `node_id` to the network `ref`: the one it has
    already (a restart of the same container asks again), else a new one with a new address."""
    if not container_id or not isinstance(container_id, str):
        raise InvalidArgument("attach: a container ID is required")
    with store.transaction() as tx:
        net = _network(tx.list("network"), ref)
        spec = net.get("spec") or {}
        if not spec.get("attachable"):
            raise PermissionDenied(f"Could not attach to network {ref}: "
                                   + rpc("PermissionDenied", f"network {ref} not manually attachable"))
        if not (net.get("allocation") or {}).get("subnet"):
            raise ShoalError(f"Could not attach to network {ref}: the network has no addresses to give")
        for raw in tx.list(KIND):
            if raw["container_id"] == container_id and raw["network_id"] == net["id"] and raw["node_id"] == node_id:
                return raw
        from shoal.manager import allocator

        record = {"id": new_swarm_id(), "node_id": node_id, "container_id": container_id, "container_name": name,
                  "aliases": [str(a) for a in aliases or []], "network": net["name"], "network_id": net["id"],
                  "addresses": [allocator.allocate_attachment(tx, net)], "created_at": time.time()}
        return tx.create(KIND, record)


def detach(store: Store, node_id: str, attachment_id: str) -> None:
    """swarmkit's DetachNetwork: the record goes, its address is free again. Only the node that
    holds it may detach it."""
    with store.transaction() as tx:
        raw = tx.get(KIND, attachment_id)
        if raw is None:
            raise NotFound(f"attachment {attachment_id} not found")
        if raw["node_id"] != node_id:
            raise PermissionDenied(rpc("PermissionDenied", f"attachment {attachment_id} doesn't belong to this node"))
        tx.delete(KIND, attachment_id)


def in_use(tx: Any, net: dict[str, Any]) -> str | None:
    """`network rm` refused while a container is attached (swarmkit: the attachment is a task)."""
    for raw in tx.list(KIND):
        if raw.get("network_id") == net["id"] or raw.get("network") == net["name"]:
            return f"network {net['id']} is in use by task {raw['id']}"
    return None
