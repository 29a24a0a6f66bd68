"""Swarm-scoped networks in the control API (swarmkit manager/controlapi/network.go, with
dockerd's own checks from daemon/cluster/networks.go): `network create -d overlay` and `network
rm` of a network the manager made, list and inspect.

The network's subnet, gateway and VNI are allocated in the store transaction that writes its
record (manager/allocator.py); every node whose tasks attach to it, the manager's own included,
makes its copy from that record (allocator.node_record)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from copy import deepcopy
from typing import Any

from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.ids import new_swarm_id
from shoal.manager.controlapi import rpc
from shoal.manager.controlapi.services import validate_name
from shoal.model.cluster import Task, TaskState
from shoal.model.records import Network
from shoal.model.stack import NetworkSpec
from shoal.store.base import Store

log = logging.getLogger("shoald.controlapi")

# docker's runconfig.IsPreDefinedNetwork, plus swarm's own.
PREDEFINED = ("bridge", "host", "none", "default", "ingress")
PREDEFINED_LABEL = "com.docker.swarm.predefined"  # swarmkit networkallocator.PredefinedLabel


def _validate_ipam(spec: NetworkSpec) -> None:
    """swarmkit validateIPAM / validateIPAMConfiguration, with shoal's one-subnet limit."""
    if spec.ipam.driver not in ("", "default"):
        raise InvalidArgument(f"network {spec.name}: ipam driver {spec.ipam.driver!r} is not supported (only the default)")
    if len(spec.ipam.config) > 1:
        raise InvalidArgument(f"network {spec.name}: shoal networks have one IPv4 subnet, "
                              f"{len(spec.ipam.config)} were given")
    for pool in spec.ipam.config:
        if not pool.subnet:
            raise InvalidArgument(rpc("InvalidArgument", "ipam configuration: cannot be empty"))
        try:
            subnet = ipaddress.ip_network(pool.subnet, strict=False)
        except ValueError:
            raise InvalidArgument(rpc("InvalidArgument", f"ipam configuration: invalid subnet {pool.subnet}")) from None
        if pool.ip_range:
            try:
                ip_range = ipaddress.ip_network(pool.ip_range, strict=False)
            except ValueError:
                raise InvalidArgument(rpc("InvalidArgument", f"ipam configuration: invalid range {pool.ip_range}")) from None
            if ip_range.version != subnet.version or not ip_range.subnet_of(subnet):  # type: ignore[arg-type]
                raise InvalidArgument(rpc("InvalidArgument", f"ipam configuration: subnet {pool.subnet} does not "
                                                             f"contain range {pool.ip_range}"))
        if pool.gateway:
            try:
                gateway = ipaddress.ip_address(pool.gateway)
            except ValueError:
                raise InvalidArgument(rpc("InvalidArgument", f"ipam configuration: invalid gateway {pool.gateway}")) from None
            if gateway not in subnet:
                raise InvalidArgument(rpc("InvalidArgument", f"ipam configuration: subnet {pool.subnet} does not "
                                                             f"contain gateway {pool.gateway}"))


def validate_network_spec(spec: NetworkSpec) -> None:
    if spec.name in PREDEFINED:
        raise InvalidArgument(f"{spec.name} is a pre-defined network and cannot be created")
    validate_name(spec.name)
    if PREDEFINED_LABEL in spec.labels:
        raise InvalidArgument(rpc("PermissionDenied", f"label {PREDEFINED_LABEL} is for internally created "
                                                      "predefined networks and cannot be applied by users"))
    if spec.external:
        raise InvalidArgument("external: a network the manager creates cannot be external")
    _validate_ipam(spec)


def _exists(name: str) -> Conflict:
    return Conflict(f"network with name {name} already exists")  # libnetwork.NetworkNameError


def find(networks: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """dockerd's lookup: full ID, full name, then a unique ID prefix; `network x not found`."""
    for key in ("id", "name"):
        for net in networks:
            if net[key] == ref:
                return net
    prefixed = [n for n in networks if ref and n["id"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise InvalidArgument(f"network {ref} is ambiguous ({len(prefixed)} matches found based on ID prefix)")
    raise NotFound(f"network {ref} not found")


def create_network(store: Store, spec: NetworkSpec) -> str:
    """`network create -d overlay NAME`: returns the new network's ID. Its subnet, gateway and
    VNI are allocated in the transaction that writes its record; this node's copy is made in it
    too, so a local network of that name refuses it with nothing stored."""
    from shoal.manager import allocator, endpoints

    spec = deepcopy(spec)
    spec.driver = spec.driver or "overlay"
    spec.compose_name = spec.compose_name or spec.name
    validate_network_spec(spec)
    network_id = new_swarm_id()
    for attempt in (1, 2):
        created: list[str] = []
        try:
            with store.transaction() as tx:
                if any(n["name"] == spec.name for n in tx.list("network")):
                    raise _exists(spec.name)
                network = Network(id=network_id, name=spec.name, spec=spec, created_at=time.time(),
                                  allocation=endpoints.allocate_network(tx, spec))
                raw = tx.create("network", network.to_dict())
                created = endpoints.adopt_networks([allocator.node_record(raw) or {}])
            break
        except endpoints.StaleCopy as exc:
            # This node's copy of a network of that name removed just now, still in use.
            if attempt == 2:
                raise
            endpoints.wait_for_stale_copies(exc.names)
        except BaseException:
            endpoints.undo_networks(created)
            raise
    return network_id


def _in_use(tx: Any, net: dict[str, Any]) -> str | None:
    """swarmkit removeNetwork's refusals: a service that names the network, or a task on it
    that is not yet past running."""
    for svc in tx.list("service"):
        for attachment in (svc.get("spec") or {}).get("networks") or ():
            if attachment.get("target") in (net["name"], net["id"]):
                return f"network {net['id']} is in use by service {svc['id']}"
    for raw in tx.list("task"):
        if not any(a.get("network") in (net["name"], net["id"]) for a in raw.get("networks") or ()):
            continue
        task = Task.from_dict(raw)
        if task.desired_state <= TaskState.COMPLETE and task.status.state <= TaskState.RUNNING:
            return f"network {net['id']} is in use by task {task.id}"
    from shoal.manager.controlapi import attachments

    return attachments.in_use(tx, net)  # a container `run --network` attached


def remove_network(store: Store, ref: str) -> Network:
    """`network rm` of a swarm network: refused while a service or a live task uses it."""
    from shoal.network import cleanup

    with store.transaction() as tx:
        raw = find(tx.list("network"), ref)
        if (raw.get("spec") or {}).get("labels", {}).get(PREDEFINED_LABEL) == "true":
            raise InvalidArgument(rpc("FailedPrecondition", f"network {raw['id']} ({raw['name']}) is a swarm "
                                                            "predefined network and cannot be removed"))
        if (raw.get("spec") or {}).get("ingress"):
            from shoal.manager import ingress

            ingress.check_removable(tx, raw)  # swarmkit removeIngressNetwork: services, not tasks
            why = None
        else:
            why = _in_use(tx, raw)
        if why:
            raise InvalidArgument(rpc("FailedPrecondition", why))
        tx.delete("network", raw["id"])
    network = Network.from_dict(raw)
    try:
        cleanup.remove_network(network.name)
    except NotFound:
        pass  # never made on this node (or removed already)
    except ShoalError as exc:
        # A task of a removed service still stopping holds an endpoint: the swarm's network is
        # gone (swarmkit counts only tasks not yet told to stop), this node's copy follows.
        log.info("network %s: removed from the swarm, from this node once its tasks stop: %s", network.name, exc)
        threading.Thread(target=_remove_when_free, args=(store, network.name), daemon=True,
                         name=f"netrm-{network.name}").start()
    return network


def _remove_when_free(store: Store, name: str, timeout: float = 120.0) -> None:
    """This node's copy of a removed swarm network, once its last endpoint is gone; given up
    if a network of that name is created again meanwhile (that one is the copy then)."""
    from shoal.network import cleanup

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if any(n["name"] == name for n in store.list("network")):
            return
        try:
            cleanup.remove_network(name)
            return
        except NotFound:
            return
        except ShoalError:
            continue
    log.warning("network %s: removed from the swarm, but this node's copy is still in use after %.0f s",
                name, timeout)


def inspect_network(store: Store, ref: str) -> Network:
    return Network.from_dict(find(store.list("network"), ref))


def list_networks(store: Store) -> list[dict[str, Any]]:
    return store.list("network")
