"""Kernel links: the per-network bridge, and a veth pair whose container end is created straight
inside the container's namespace as eth0/eth1/..., with address and routes (rtnl.py's requests;
pyroute2 only to list every link, for cleanup)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from shoal.network import netns, rtnl
from shoal.network.store import Network, owner_tag

ROUTE_LOCALNET = "/proc/sys/net/ipv4/conf/{}/route_localnet"


def veth_name(container_id: str, network_id: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{network_id}".encode()).hexdigest()
    return f"shoal{digest[:10]}"


def mac_for(ip: str) -> str:
    # Docker derives the MAC from the IPv4 address (02:42:ac:11:00:02); keep the locally
    # administered bit and a shoal-specific second octet.
    octets = ipaddress.IPv4Address(ip).packed
    return "02:5a:" + ":".join(f"{b:02x}" for b in octets)


def link_exists(name: str) -> bool:
    return rtnl.index(name) is not None


# Bridges this process made or repaired, by name -> ifindex: every attach ensures its bridge, and
# one that still has the index it had then is the same device, already addressed and up.
_ensured: dict[str, int] = {}


def ensure_bridge(net: Network) -> None:
    """Create (or repair) the network's bridge with its gateway address; idempotent."""
    known = _ensured.get(net.bridge)
    if known is not None and rtnl.index(net.bridge) == known:
        return
    prefix = net.subnet_net().prefixlen
    with rtnl.Rtnl() as nl:
        idx = rtnl.index(net.bridge)
        if idx is None:
            try:
                nl.add_bridge(net.bridge, net.mtu)
            except OSError as exc:
                if exc.errno != 17:  # EEXIST: another shoal process won the race
                    raise
            idx = rtnl.index(net.bridge)
            if idx is None:
                raise OSError(19, f"bridge {net.bridge} vanished after it was made")
            nl.set_alias(idx, owner_tag())  # not honoured when the link is made
        try:
            nl.add_address(idx, net.gateway, prefix)
        except OSError as exc:
            if exc.errno != 17:  # EEXIST: addressed already
                raise
        nl.set_up(idx)
    # 127.0.0.1:port DNATed to a task must be routable out of the bridge.
    Path(ROUTE_LOCALNET.format(net.bridge)).write_text("1\n")
    _ensured[net.bridge] = idx


def set_extra_addresses(net: Network, addresses: set[str]) -> None:
    """Make the bridge carry exactly these /32s besides its gateway: service VIPs answer ARP
    there, and the host's prerouting DNAT sends their traffic on to the tasks."""
    idx = rtnl.index(net.bridge)
    if idx is None:
        return
    with rtnl.Rtnl() as nl:
        for addr, prefixlen in nl.addresses(idx):
            if addr != net.gateway and addr not in addresses:
                nl.delete_address(idx, addr, prefixlen)
            addresses.discard(addr)
        for addr in sorted(addresses):
            nl.add_address(idx, addr, 32)


def delete_link(name: str) -> None:
    """Delete a link by name; one that is gone already is fine."""
    with rtnl.Rtnl() as nl:
        nl.delete(name)


def add_interface(net: Network, ns_path: Path, host_veth: str, ifname: str, ip: str, mac: str,
                  default_route: bool) -> None:
    """veth from the bridge into the namespace, addressed, up, with the default route."""
    prefix = net.subnet_net().prefixlen
    br = rtnl.index(net.bridge)
    if br is None:
        raise OSError(19, f"bridge {net.bridge} of network {net.name} does not exist")
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        with rtnl.Rtnl() as nl:
            nl.add_veth(host_veth, ifname, peer_netns_fd=fd, peer_mac=mac, mtu=net.mtu, master=br)
            idx = rtnl.index(host_veth)
            if idx is None:
                raise OSError(19, f"veth {host_veth} vanished after it was made")
            nl.set_alias(idx, owner_tag())  # not honoured when the link is made
        # A task reaching its own service through the VIP is hairpinned by the bridge when
        # br_netfilter is on: the frame must be allowed back out of the port it came in by.
        Path(f"/sys/class/net/{host_veth}/brport/hairpin_mode").write_text("1\n")
    finally:
        os.close(fd)

    def inside() -> None:
        idx = rtnl.index(ifname)
        if idx is None:
            raise OSError(19, f"{ifname} is missing in {ns_path}")
        with rtnl.Rtnl() as nl:
            nl.add_address(idx, ip, prefix)
            nl.set_up(idx)
            if default_route:
                nl.add_default_route(net.gateway, idx)

    netns.run_in(ns_path, inside)


def interface_count(ns_path: Path) -> int:
    """How many eth* interfaces the namespace already has (the next is eth<count>)."""

    def inside() -> int:
        return sum(1 for _, name in socket.if_nameindex() if name.startswith("eth"))

    return netns.run_in(ns_path, inside)


def shoal_links(all_roots: bool = False) -> dict[str, str]:
    """Links named shoal* in the host namespace made for this state root (or for any root):
    name -> kind (bridge, veth)."""
    from pyroute2 import IPRoute  # a CLI's cleanup only: shoald never loads pyroute2

    out = {}
    tag = owner_tag()
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            if not name.startswith("shoal"):
                continue
            if not all_roots and link.get_attr("IFLA_IFALIAS") != tag:
                continue
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
            out[name] = kind or ""
    return out


def bridge_ports(bridge: str) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        br = rtnl.index(bridge)
        if br is None:
            return []
        return [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links() if link.get_attr("IFLA_MASTER") == br]
