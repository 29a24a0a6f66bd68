"""The allocator: a NEW task gets its address on each of its networks, then becomes PENDING
(swarmkit's `pending task scheduling`).

A service's networks, VIPs and published ports are made in the deploy request (so a clash
fails `stack deploy` itself). A task's addresses are taken here, in the manager's transaction,
so two tasks on two nodes never get the same address on one network: the node is given the
address with the task (`task.networks`) and attaches the container with it
(agent/netglue.py, network/attach.py), as swarmkit's allocator fills a task's network
attachments before the scheduler sees it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import ShoalError
from shoal.model.cluster import Task, TaskState
from shoal.store.base import Transaction


@dataclass
class NetworkSpace:
    """What the allocator needs of one network: its subnet, gateway, range, and the addresses
    taken outside the task records (VIPs, containers that are not tasks)."""

    name: str
    subnet: str
    gateway: str
    ip_range: str = ""
    taken: list[str] = field(default_factory=list)


# network name -> its space; None for a network with no addresses to give (host, none).
Networks = Callable[[str], NetworkSpace | None]


def _held(tx: Transaction) -> tuple[dict[str, set[str]], dict[str, int]]:
    """network name -> addresses held by tasks that are not finished (a finished task's
    address is free again), and network name -> the highest address any task record has
    (finished ones too), where the next search starts."""
    held: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    for raw in tx.list("task"):
        finished = TaskState.parse(raw["status"]["state"]) > TaskState.RUNNING
        for attachment in raw.get("networks") or []:
            for addr in attachment.get("addresses") or []:
                ip = addr.split("/")[0]
                name = attachment["network"]
                last[name] = max(last.get(name, 0), int(ipaddress.IPv4Address(ip)))
                if not finished:
                    held.setdefault(name, set()).add(ip)
    return held, last


def held_addresses(tx: Transaction) -> dict[str, set[str]]:
    """network name -> addresses unfinished tasks hold, on every node (a new VIP avoids them)."""
    return _held(tx)[0]


def _serial(name: str, subnet: ipaddress.IPv4Network, gateway: str, ip_range: ipaddress.IPv4Network | None,
            used: set[str], after: int) -> ipaddress.IPv4Address:
    """The first free address after `after`, wrapping round (libnetwork's serial allocation
    for swarm networks): a just-freed address is the last to be given again, so a finished
    task's container has left its node's network long before another task gets its address."""
    from shoal.network import ipam

    space = ip_range or subnet
    first, last = int(space.network_address), int(space.broadcast_address)
    if space.prefixlen < 31:
        first, last = first + 1, last - 1
    taken = {int(ipaddress.IPv4Address(u)) for u in used}
    taken |= {int(ipaddress.IPv4Address(gateway)), int(subnet.network_address), int(subnet.broadcast_address)}
    start = after + 1 if first <= after < last else first
    for value in (*range(start, last + 1), *range(first, start)):
        if value not in taken:
            return ipaddress.IPv4Address(value)
    return ipam.allocate_ip(name, subnet, ipaddress.IPv4Address(gateway), ip_range, used)  # raises: full


def _allocate(task: Task, networks: Networks, held: dict[str, set[str]], last: dict[str, int]) -> str:
    """Fill task.networks with one address per network; "" or the reason it failed."""
    out: list[dict[str, Any]] = []
    for attachment in task.spec.get("networks") or []:
        name = attachment["target"]
        space = networks(name)
        if space is None or not space.subnet:
            continue
        subnet = ipaddress.IPv4Network(space.subnet)
        used = held.setdefault(name, set())
        rng = ipaddress.IPv4Network(space.ip_range) if space.ip_range else None
        try:
            ip = _serial(name, subnet, space.gateway, rng, used | set(space.taken), last.get(name, 0))
        except ShoalError as exc:
            return str(exc)
        used.add(str(ip))
        last[name] = int(ip)
        out.append({"network": name, "addresses": [f"{ip}/{subnet.prefixlen}"],
                    "aliases": list(attachment.get("aliases") or [])})
    task.networks = out
    return ""


def reconcile(tx: Transaction, now: float, networks: Networks | None = None) -> None:
    found: tuple[dict[str, set[str]], dict[str, int]] | None = None
    for raw in tx.list("task"):
        if raw["status"]["state"] != TaskState.NEW.text:
            continue
        task = Task.from_dict(raw)
        if task.desired_state > TaskState.RUNNING:
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
        else:
            if networks is not None and task.spec.get("networks"):
                if found is None:
                    found = _held(tx)
                failed = _allocate(task, networks, *found)
                if failed:
                    # Stays NEW and is looked at again on the next pass (swarmkit keeps such a
                    # task in its allocator's queue); the reason shows in `service ps`.
                    if task.status.err != failed:
                        task.status.err = failed
                        tx.update("task", task.to_dict())
                    continue
            task.advance(TaskState.PENDING, "pending task scheduling", now=now)
        tx.update("task", task.to_dict())


# ---- VXLAN IDs ------------------------------------------------------------------------------------
# swarmkit's allocator gives each overlay network a VXLAN ID (VNI) from 4096 up (below is left to
# the host's own VXLANs) to 2^24-1, the field's width; the network keeps it in Docker's option.
VNI_FIRST = 4096
VNI_LAST = (1 << 24) - 1


def vnis_in_use(options: list[dict[str, str]]) -> set[int]:
    from shoal.network.overlay import vni_of

    return {v for v in (vni_of(o) for o in options) if v}


def allocate_vni(network: str, used: set[int], first: int | None = None, last: int | None = None) -> int:
    """The lowest VNI no other network holds; a clear error when the pool is exhausted."""
    first, last = first or VNI_FIRST, last or VNI_LAST
    for vni in range(first, last + 1):
        if vni not in used:
            return vni
    raise ShoalError(f"could not allocate a VXLAN ID (VNI) for network {network}: "
                     f"the pool {first}-{last} is exhausted ({len(used)} networks hold one)")


def reserve_vni(network: str, options: dict[str, str], used: set[int],
                first: int | None = None, last: int | None = None) -> dict[str, str]:
    """`options` with the network's VNI: the one given (Docker honours a vxlanid_list opt), checked
    free and in range, else a new one."""
    from shoal.errors import Conflict, InvalidArgument
    from shoal.network.overlay import VXLANID_OPTION, vni_of

    first, last = first or VNI_FIRST, last or VNI_LAST
    given = vni_of(options)
    if given:
        if not first <= given <= last:
            raise InvalidArgument(f"network {network}: VXLAN ID {given} is out of the range {first}-{last}")
        if given in used:
            raise Conflict(f"network {network}: VXLAN ID {given} is in use by another network")
        return dict(options)
    return {**options, VXLANID_OPTION: str(allocate_vni(network, used, first, last))}
