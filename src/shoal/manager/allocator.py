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


def _held(tx: Transaction) -> dict[str, set[str]]:
    """network name -> addresses held by tasks that are not finished (a finished task's
    address is free again; its container has left the network by then or does so first)."""
    held: dict[str, set[str]] = {}
    for raw in tx.list("task"):
        if TaskState.parse(raw["status"]["state"]) > TaskState.RUNNING:
            continue
        for attachment in raw.get("networks") or []:
            for addr in attachment.get("addresses") or []:
                held.setdefault(attachment["network"], set()).add(addr.split("/")[0])
    return held


def _allocate(task: Task, networks: Networks, held: dict[str, set[str]]) -> str:
    """Fill task.networks with one address per network; "" or the reason it failed."""
    from shoal.network import ipam

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
            ip = ipam.allocate_ip(name, subnet, ipaddress.IPv4Address(space.gateway), rng, [*used, *space.taken])
        except ShoalError as exc:
            return str(exc)
        used.add(str(ip))
        out.append({"network": name, "addresses": [f"{ip}/{subnet.prefixlen}"],
                    "aliases": list(attachment.get("aliases") or [])})
    task.networks = out
    return ""


def reconcile(tx: Transaction, now: float, networks: Networks | None = None) -> None:
    held: dict[str, set[str]] | None = None
    for raw in tx.list("task"):
        if raw["status"]["state"] != TaskState.NEW.text:
            continue
        task = Task.from_dict(raw)
        if task.desired_state > TaskState.RUNNING:
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
        else:
            if networks is not None and task.spec.get("networks"):
                if held is None:
                    held = _held(tx)
                failed = _allocate(task, networks, held)
                if failed:
                    # Stays NEW and is looked at again on the next pass (swarmkit keeps such a
                    # task in its allocator's queue); the reason shows in `service ps`.
                    if task.status.err != failed:
                        task.status.err = failed
                        tx.update("task", task.to_dict())
                    continue
            task.advance(TaskState.PENDING, "pending task scheduling", now=now)
        tx.update("task", task.to_dict())
