"""Kernel links with pyroute2: the per-network bridge, and a veth pair whose container end is
created straight inside the container's namespace as eth0/eth1/..., with address and routes."""

from __future__ import annotations

import hashlib
import os
import ipaddress
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

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


def _index(ipr: IPRoute, name: str) -> int | None:
    # A direct RTM_GETLINK by name: link_lookup() dumps every link, slow with 1,000 veths.
    try:
        return int(ipr.link("get", ifname=name)[0]["index"])
    except NetlinkError as exc:
        if exc.code == 19:  # ENODEV
            return None
        raise


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
    with IPRoute() as ipr:
        idx = _index(ipr, net.bridge)
        if idx is None:
            try:
                ipr.link("add", ifname=net.bridge, kind="bridge", mtu=net.mtu)
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: another shoal process won the race
                    raise
            idx = _index(ipr, net.bridge)
            assert idx is not None
            ipr.link("set", index=idx, ifalias=owner_tag())  # not honoured by "add"
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if net.gateway not in have:
            ipr.addr("add", index=idx, address=net.gateway, prefixlen=prefix)
        ipr.link("set", index=idx, state="up")
    # 127.0.0.1:port DNATed to a task must be routable out of the bridge.
    Path(ROUTE_LOCALNET.format(net.bridge)).write_text("1\n")
    _ensured[net.bridge] = idx


def set_extra_addresses(net: Network, addresses: set[str]) -> None:
    """Make the bridge carry exactly these /32s besides its gateway: service VIPs answer ARP
    there, and the host's prerouting DNAT sends their traffic on to the tasks."""
    with IPRoute() as ipr:
        idx = _index(ipr, net.bridge)
        if idx is None:
            return
        for a in ipr.get_addr(index=idx, family=2):
            addr = a.get_attr("IFA_ADDRESS")
            if addr != net.gateway and addr not in addresses:
                ipr.addr("del", index=idx, address=addr, prefixlen=a["prefixlen"])
            addresses.discard(addr)
        for addr in sorted(addresses):
            ipr.addr("add", index=idx, address=addr, prefixlen=32)


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
        with IPRoute() as ipr:
            return sum(1 for link in ipr.get_links() if str(link.get_attr("IFLA_IFNAME")).startswith("eth"))

    return netns.run_in(ns_path, inside)


def shoal_links(all_roots: bool = False) -> dict[str, str]:
    """Links named shoal* in the host namespace made for this state root (or for any root):
    name -> kind (bridge, veth)."""
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
    with IPRoute() as ipr:
        br = _index(ipr, bridge)
        if br is None:
            return []
        return [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links() if link.get_attr("IFLA_MASTER") == br]
