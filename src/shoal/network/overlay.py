"""Overlay networks across nodes: what a node's VXLAN devices and their peers should be, from
the networks the manager sent it, made so in the kernel (vxlan.py).

The manager allocates each overlay network a VNI (manager/allocator.py, kept in the network's
options under Docker's `com.docker.network.driver.overlay.vxlanid_list`) and sends every node,
with each network its tasks use, the node's own address and the peers: every task of the
network on other nodes, with the address of its node (manager/dispatcher.py). `sync` makes the
node's devices and entries exactly that, removing whatever else it finds (a view from before a
partition, a device left by a crash).

An encrypted network (`--opt encrypted`) is the same VXLAN device sending from this node's
tunnel address to the peers' tunnel addresses, inside the node's WireGuard interface
(wireguard.py): the manager sends, with each encrypted network, this node's tunnel address and
the peers' keys. A peer node without a key (no WireGuard there) gets no forwarding entry:
nothing of an encrypted network is ever sent in clear."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading
import time
from typing import Any

from shoal.errors import InvalidArgument
from shoal.network import rtnl, vxlan, wireguard

log = logging.getLogger("shoald.network")

VXLANID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"  # Docker's option: the VNI(s)
ENCRYPTED_OPTION = "encrypted"
NO_ENCRYPTION = "cannot encrypt an overlay network on this node"


def encrypted(driver: str, options: dict[str, str]) -> bool:
    return driver == "overlay" and ENCRYPTED_OPTION in options


def vni_of(options: dict[str, str]) -> int:
    """The network's VNI (0: none allocated). Docker's option is a comma-separated list, one
    VNI per subnet; shoal networks have one subnet."""
    raw = (options.get(VXLANID_OPTION) or "").split(",")[0].strip()
    return int(raw) if raw.isdigit() else 0


def check_options(name: str, driver: str, options: dict[str, str]) -> None:
    """Refuse what an overlay network cannot honour before anything is made: an encrypted
    network must never run in clear, and a VNI given by hand must be one."""
    if driver != "overlay":
        return
    if ENCRYPTED_OPTION in options:
        # No WireGuard here (neither the kernel's nor wireguard-go on a TUN device): refused,
        # never made plain instead.
        why = wireguard.unavailable()
        if why:
            raise InvalidArgument(f"network {name}: {NO_ENCRYPTION}: {why}")
    raw = options.get(VXLANID_OPTION)
    if raw is not None and not raw.strip().isdigit():
        raise InvalidArgument(f"network {name}: invalid {VXLANID_OPTION} {raw!r}: want one VXLAN ID")


def node_address(addr: str) -> str:
    """A node's address as the dispatcher has it (`host` or `host:port`) -> the IPv4 address
    its VXLAN traffic uses; "" when it has none."""
    host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return ""


def tunnel_of(record: dict[str, Any]) -> wireguard.Tunnel | None:
    """An encrypted network's WireGuard side as the manager sent it: this node's tunnel
    address and the peers (None: the manager gave this node no tunnel)."""
    wg = (record.get("overlay") or {}).get("wireguard") or {}
    if not wg.get("address"):
        return None
    peers = tuple(sorted(wireguard.Peer(key=p["key"], endpoint=p["endpoint"], tunnel=p["tunnel"])
                         for p in wg.get("peers") or []
                         if p.get("key") and p.get("endpoint") and p.get("tunnel") and wireguard.valid_key(p["key"])))
    return wireguard.Tunnel(address=str(wg["address"]), peers=peers)


def peers_of(record: dict[str, Any]) -> list[vxlan.Peer]:
    from shoal.network.bridge import mac_for
    from shoal.network.mesh import node_mac

    overlay = record.get("overlay") or {}
    remote: dict[str, str] = {}  # node address -> where its VXLAN packets go
    if encrypted(record.get("driver") or "", record.get("options") or {}):
        # Only to nodes with a tunnel: their tunnel address, inside WireGuard.
        remote = {p["node"]: p["tunnel"] for p in (overlay.get("wireguard") or {}).get("peers") or []
                  if p.get("node") and p.get("tunnel")}
    else:
        remote = {p["node"]: p["node"] for p in overlay.get("peers") or [] if p.get("node")}
        remote.update({n: n for n in overlay.get("nodes") or [] if n})
    tasks = [vxlan.Peer(ip=p["ip"], mac=mac_for(p["ip"]), remote=remote[p["node"]])
             for p in overlay.get("peers") or [] if p.get("ip") and p.get("node") in remote]
    # Every other node's bridge (its address -> its bridge's MAC, network/mesh.py): the next hop
    # of the replies of connections that node brought in through its published ports.
    nodes = [vxlan.Peer(ip=n, mac=node_mac(n), remote=remote[n]) for n in overlay.get("nodes") or []
             if n and n != overlay.get("local") and n in remote]
    return tasks + nodes


_lock = threading.Lock()
_applied: dict[str, tuple[Any, ...]] = {}  # device name -> what was last made of it
_failed: dict[str, tuple[tuple[Any, ...], float]] = {}  # device name -> (what failed, when)
RETRY = 5.0  # seconds before a device that could not be made is tried again (unless its view changed)
_swept = False  # the first sync of this process looks at every device (a crash may have left some)


_tunnel_failed: tuple[Any, float] | None = None  # (what failed, when): tried again after RETRY


def _sync_tunnel(tunnels: list[wireguard.Tunnel]) -> bool:
    """The node's WireGuard interface for its encrypted networks (one for all of them: the
    manager sends each the same tunnel address and the peers that network needs; their union
    is the interface's peers). Returns whether it is there."""
    global _tunnel_failed
    want = None
    if tunnels:
        peers = {p.key: p for t in tunnels for p in t.peers}
        want = wireguard.Tunnel(address=tunnels[0].address, peers=tuple(sorted(peers.values())))
    now = time.monotonic()
    if _tunnel_failed is not None and _tunnel_failed[0] == want and now - _tunnel_failed[1] < RETRY:
        return False
    try:
        made = wireguard.sync(want)
    except (OSError, subprocess.SubprocessError) as exc:
        _tunnel_failed = (want, now)
        log.warning("WireGuard: %s (tried again in %.0f s)", exc, RETRY)
        return False
    _tunnel_failed = None
    return made


def sync(records: dict[str, dict[str, Any]]) -> None:
    """Bring this node's VXLAN devices and their entries to the manager's view: `records` are
    the networks the manager sent (by name). A network whose bridge is not there (no task of
    this node attached yet, or it was removed) has no device."""
    global _swept
    from shoal.network.store import NetworkStore

    wanted: dict[str, tuple[Any, ...]] = {}
    tunnels: list[wireguard.Tunnel] = []
    for net in NetworkStore().list():
        vni = vni_of(net.options) if net.driver == "overlay" else 0
        record = records.get(net.name)
        if not vni or record is None or record.get("id") != net.id:
            continue
        local = (record.get("overlay") or {}).get("local") or ""
        bridge = rtnl.index(net.bridge)
        if not local or bridge is None:
            continue
        if encrypted(net.driver, net.options):
            tunnel = tunnel_of(record)
            if tunnel is None:
                continue  # no tunnel for this node (no key at the manager): no device, never plain
            tunnels.append(tunnel)
            local = tunnel.address
        peers = tuple(sorted(peers_of(record), key=lambda p: p.ip))
        wanted[vxlan.device_name(vni, net.id)] = (vni, local, net.bridge, bridge, net.mtu, peers)
    with _lock:
        if not _sync_tunnel(tunnels):
            # No interface to carry them: the encrypted networks' devices are not made (nor
            # kept), so their frames go nowhere rather than in clear.
            for name in [n for n, spec in wanted.items() if ipaddress.IPv4Address(spec[1]) in wireguard.TUNNEL_NET]:
                del wanted[name]
        fresh = {name: rtnl.index(name) for name in wanted}
        if _swept and wanted.keys() == _applied.keys() and \
                all(_applied[n] == (*spec, fresh[n]) for n, spec in wanted.items()):
            return  # nothing changed since the last sync (entries change only through here)
        existing = vxlan.devices()
        for name in existing.keys() - wanted.keys():
            vxlan.delete(name)
            _applied.pop(name, None)
            log.info("removed vxlan %s", name)
        for name in _applied.keys() - wanted.keys():
            _applied.pop(name, None)
        _swept = True
        now = time.monotonic()
        for name, spec in wanted.items():
            vni, local, bridge_name, _bridge, mtu, peers = spec
            failed = _failed.get(name)
            if failed is not None and failed[0] == spec and now - failed[1] < RETRY:
                continue  # not again at every agent pass (and its warning with it)
            try:
                if name in existing and name in _applied and _applied[name][1] != local:
                    vxlan.delete(name)  # its local end moved (a new tunnel address): made again
                    del existing[name]
                link = vxlan.ensure_device(name, vni=vni, local=local, bridge=bridge_name, mtu=mtu,
                                           known=existing.get(name))
                added, removed = vxlan.program(link, list(peers))
            except OSError as exc:
                _applied.pop(name, None)
                _failed[name] = (spec, now)
                log.warning("vxlan %s: %s (tried again in %.0f s)", name, exc, RETRY)
                continue
            _failed.pop(name, None)
            if added or removed:
                log.info("vxlan %s: %d entries set, %d removed (%d peers)", name, added, removed, len(peers))
            _applied[name] = (*spec, link)
