"""The kernel side of an overlay network on one node: a VXLAN device enslaved to the network's
bridge, and its static peers (libnetwork's drivers/overlay: ov_utils.go createVxlan, peerdb.go
peerAdd). For every task of the network on another node, one neighbour entry (its address ->
its MAC, answered to ARP by the device, `proxy`) and one forwarding entry (its MAC -> the
address of the node it runs on). No learning and no default destination: nothing is flooded
to other nodes, a frame for an address the manager did not place is dropped.

Every request is rtnl.py's raw rtnetlink (shoald never loads pyroute2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from shoal.network import rtnl
from shoal.network.store import owner_tag

log = logging.getLogger("shoald.network")

VXLAN_PORT = 4789  # IANA's VXLAN port, Docker's default data path port
PREFIX = "vx-"


def device_name(vni: int, network_id: str) -> str:
    """Docker's `vx-<VNI as 6 hex digits>-<network ID>` cut to IFNAMSIZ (15 characters)."""
    return f"{PREFIX}{vni:06x}-{network_id[:5]}"


@dataclass(frozen=True)
class Peer:
    ip: str  # a task's address on the network
    mac: str  # its MAC, derived from the address (bridge.mac_for): every node knows it
    remote: str  # the address of the node it runs on (the VXLAN tunnel's far end)


def devices() -> dict[str, dict[str, object]]:
    """This state root's VXLAN devices in the calling thread's namespace, by name."""
    tag = owner_tag()
    with rtnl.Rtnl() as nl:
        return {str(link["name"]): link for link in nl.links()
                if link["kind"] == "vxlan" and link["alias"] == tag and str(link["name"]).startswith(PREFIX)}


def ensure_device(name: str, *, vni: int, local: str, bridge: str, mtu: int,
                  known: dict[str, object] | None) -> int:
    """The device, up and enslaved to `bridge`; made again when it lost its bridge (the bridge
    was deleted and made again: its ports were released). Returns its index."""
    br = rtnl.index(bridge)
    if br is None:
        raise OSError(19, f"bridge {bridge} does not exist")
    with rtnl.Rtnl() as nl:
        if known is not None:
            if known["master"] == br and known["up"]:
                return int(str(known["index"]))
            nl.delete(name)
        try:
            nl.add_vxlan(name, vni=vni, local=local, port=VXLAN_PORT, mtu=mtu, master=br)
        except OSError as exc:
            if exc.errno != 17 or known is not None:
                raise
            # EEXIST with no device of this root by that name: one a crash left before its tag
            # was set (the name holds this network's ID): made again.
            nl.delete(name)
            nl.add_vxlan(name, vni=vni, local=local, port=VXLAN_PORT, mtu=mtu, master=br)
        idx = rtnl.index(name)
        if idx is None:
            raise OSError(19, f"vxlan {name} vanished after it was made")
        nl.set_alias(idx, owner_tag())  # not honoured when the link is made
        nl.set_up(idx)
    return idx


def program(link: int, peers: list[Peer]) -> tuple[int, int]:
    """Make the device's neighbour and forwarding entries exactly `peers`: missing ones added,
    changed ones replaced, the others (a task that stopped or moved, a view from before a
    partition) removed. Returns (entries set, entries removed)."""
    want_neigh = {p.ip: p.mac for p in peers}
    want_fdb = {p.mac: p.remote for p in peers}
    added = removed = 0
    with rtnl.Rtnl() as nl:
        have_neigh = nl.neighbours(link)
        have_fdb = nl.fdb(link)
        for ip, mac in have_neigh.items():
            if want_neigh.get(ip) != mac:
                _quiet(nl.delete_neighbour, link, ip)
                removed += 1
        for mac, remote in have_fdb.items():
            if want_fdb.get(mac) != remote:
                _quiet(nl.delete_fdb, link, mac, remote)
                removed += 1
        for mac, remote in want_fdb.items():
            if have_fdb.get(mac) != remote:
                nl.set_fdb(link, mac, remote)
                added += 1
        for ip, mac in want_neigh.items():
            if have_neigh.get(ip) != mac:
                nl.set_neighbour(link, ip, mac)
                added += 1
    return added, removed


def _quiet(call: Callable[..., None], *args: object) -> None:
    """A removal of an entry that is gone already (the kernel flushed it with its link) is done."""
    try:
        call(*args)
    except OSError as exc:
        if exc.errno not in (2, 19):  # ENOENT, ENODEV
            raise


def delete(name: str) -> None:
    """The device and, with it, every entry on it."""
    with rtnl.Rtnl() as nl:
        nl.delete(name)


def remove_all(keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Every VXLAN device of this state root but `keep` (after a crash, at a reset); returns
    the names removed."""
    gone = []
    for name in devices():
        if name not in keep:
            delete(name)
            gone.append(name)
    return gone
