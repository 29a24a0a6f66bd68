"""The wire between local nodes: a bridge in the host's namespace, and per node a network
namespace NAME-K whose eth0 is one end of a veth on that bridge. No default route in a node:
nothing a node does can leave the machine; nodes reach each other (and the host, at the
bridge's address) on the cluster's subnet. Done with iproute2's batch mode (one process for
the host side, one per node), the same commands an operator would type."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shoal.cluster.state import ClusterRecord
from shoal.errors import ShoalError

NETNS_DIR = Path("/run/netns")


def _ip(args: list[str], batch: str) -> None:
    proc = subprocess.run(["ip", *args, "-batch", "-"], input=batch, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ShoalError(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'}")


def _no_ipv6(ifname: str) -> None:
    """No IPv6 on the cluster's host-side links: no router solicitations or DAD on them."""
    try:
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")
    except OSError:
        pass


def create(record: ClusterRecord) -> None:
    alias = f"shoal-cluster:{record.name}"
    lines = [f"link add {record.bridge} type bridge",
             f"link set {record.bridge} alias {alias}",
             f"addr add {record.bridge_address}/{record.prefixlen} dev {record.bridge}",
             f"link set {record.bridge} up"]
    for node in record.nodes:
        lines += [f"netns add {node.netns}",
                  f"link add {node.host_veth} type veth peer name eth0 netns {node.netns}",
                  f"link set {node.host_veth} alias {alias}",
                  f"link set {node.host_veth} master {record.bridge} up"]
    _ip([], "\n".join(lines) + "\n")
    _no_ipv6(record.bridge)
    for node in record.nodes:
        _no_ipv6(node.host_veth)
        _ip(["-n", node.netns], f"addr add {node.address}/{record.prefixlen} dev eth0\n"
                                "link set lo up\nlink set eth0 up\n")


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def remove(record: ClusterRecord) -> list[str]:
    """Every namespace and link of the cluster, whatever is left of them; returns what could
    not be removed (with the reason)."""
    errors = []
    for node in record.nodes:
        if (NETNS_DIR / node.netns).exists():
            proc = subprocess.run(["ip", "netns", "del", node.netns], capture_output=True, text=True)
            if proc.returncode != 0:
                errors.append(f"netns {node.netns}: {proc.stderr.strip()}")
        if link_exists(node.host_veth):  # normally gone with its peer's namespace
            subprocess.run(["ip", "link", "del", node.host_veth], capture_output=True)
    if link_exists(record.bridge):
        proc = subprocess.run(["ip", "link", "del", record.bridge], capture_output=True, text=True)
        if proc.returncode != 0:
            errors.append(f"bridge {record.bridge}: {proc.stderr.strip()}")
    return errors
