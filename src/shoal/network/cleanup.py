"""Removing networks, and finding shoal's kernel objects again after a crash.

reconcile() compares the kernel (pinned namespaces, shoal* links, the `ip shoal` table) with the
state on disk and removes whatever no live endpoint or network accounts for, then re-applies the
rule set from the state. It is safe to run at any time: it holds the store lock.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.errors import Conflict, InvalidArgument
from shoal.network import bridge, lb, netns, nft, overlay, vxlan, wireguard
from shoal.network.store import Network, NetworkStore


def remove_network(ref: str, store: NetworkStore | None = None) -> Network:
    """`network rm`: refuses predefined networks and networks with endpoints or VIPs."""
    store = store or NetworkStore()
    with store.lock():
        net = store.get(ref)
        if net.predefined:
            raise InvalidArgument(f"{net.name} is a pre-defined network and cannot be removed")
        if net.endpoints:
            raise Conflict(f"error while removing network: network {net.name} id {net.id} has active endpoints")
        if net.reserved:
            owners = ", ".join(sorted(set(net.reserved.values())))
            raise Conflict(f"error while removing network: network {net.name} id {net.id} is in use by {owners}")
        store.delete(net)
        bridge.delete_link(net.bridge)
        _delete_vxlan(net)
        nft.apply(store)
    return net


def _delete_vxlan(net: Network) -> None:
    """An overlay network's VXLAN device (enslaved to the bridge, it outlives it otherwise)."""
    vni = overlay.vni_of(net.options) if net.driver == "overlay" else 0
    if vni:
        vxlan.delete(vxlan.device_name(vni, net.id))


def prune_networks(store: NetworkStore | None = None, select: Callable[[Network], bool] | None = None) -> list[str]:
    """`network prune`: every unused, user-defined network; returns their names."""
    store = store or NetworkStore()
    removed = []
    with store.lock():
        for net in store.list():
            if net.predefined or net.endpoints or net.reserved:
                continue
            if (net.name, net.driver) == ("ingress", "overlay"):
                continue  # moby's prune: the routing-mesh network goes only by an explicit rm
            if select is not None and not select(net):
                continue
            store.delete(net)
            bridge.delete_link(net.bridge)
            _delete_vxlan(net)
            removed.append(net.name)
        nft.apply(store)
    return removed


def reconcile(store: NetworkStore | None = None) -> list[str]:
    """Bring the kernel back in line with the state; returns what was done, one line each."""
    store = store or NetworkStore()
    done: list[str] = []
    with store.lock():
        networks = store.list()
        # Endpoints whose namespace is gone (crash, reboot) no longer exist.
        for net in networks:
            stale = [cid for cid in net.endpoints if not netns.is_mounted(netns.netns_path(cid))]
            for cid in stale:
                ep = net.endpoints.pop(cid)
                bridge.delete_link(ep.veth)
                done.append(f"removed stale endpoint {cid[:12]} ({ep.ip}) from network {net.name}")
            if stale:
                store.save(net)
        live = {cid for net in networks for cid in net.endpoints}
        for path in netns.list_pinned():
            if path.name not in live:
                netns.remove(path)
                done.append(f"removed namespace {path}")
        bridges = {n.bridge for n in networks if n.has_bridge}
        veths = {ep.veth for n in networks for ep in n.endpoints.values()}
        for name, kind in bridge.shoal_links().items():
            if kind == "bridge" and name not in bridges:
                bridge.delete_link(name)
                done.append(f"removed bridge {name}")
            elif kind == "veth" and name not in veths:
                bridge.delete_link(name)
                done.append(f"removed veth {name}")
        for net in networks:
            if net.has_bridge and not net.endpoints and not net.reserved and bridge.link_exists(net.bridge):
                bridge.delete_link(net.bridge)
                done.append(f"removed unused bridge {net.bridge} of network {net.name}")
            if net.endpoints and net.has_bridge and not bridge.link_exists(net.bridge):
                bridge.ensure_bridge(net)
                done.append(f"re-created bridge {net.bridge} of network {net.name}")
        # A VXLAN device whose network is gone, or whose bridge is (a crash between the two).
        keep = {vxlan.device_name(overlay.vni_of(n.options), n.id) for n in networks
                if n.driver == "overlay" and overlay.vni_of(n.options) and bridge.link_exists(n.bridge)}
        for name in vxlan.remove_all(keep):
            done.append(f"removed vxlan {name}")
        # The WireGuard interface (and its wireguard-go) once no encrypted network is left here.
        if not any(overlay.encrypted(n.driver, n.options) and bridge.link_exists(n.bridge) for n in networks) \
                and wireguard.remove():
            done.append(f"removed WireGuard interface {wireguard.interface_name()}")
        known = {s.id for s in lb.load_services()}
        for net in networks:
            orphans = [ip for ip, owner in net.reserved.items() if owner.startswith("vip:") and owner[4:] not in known]
            for ip in orphans:
                del net.reserved[ip]
                done.append(f"released virtual IP {ip} of network {net.name}")
            if orphans:
                store.save(net)
            if net.has_bridge and bridge.link_exists(net.bridge):
                lb.sync_vip_addresses(net)
        had_table = nft.table_exists()
        script = nft.apply(store, force=True)
        if had_table and not script:
            done.append(f"removed nftables table ip {nft.table_name()}")
    return done


def remove_everything(store: NetworkStore | None = None) -> None:
    """Tear down every kernel object shoal made (used by tests and `system` resets): namespaces,
    links, the table and the DOCKER-USER exceptions. The state files stay."""
    store = store or NetworkStore()
    with store.lock():
        for path in netns.list_pinned():
            netns.remove(path)
        for name in bridge.shoal_links():
            bridge.delete_link(name)
        vxlan.remove_all()
        wireguard.remove()
        if nft.table_exists():
            nft.delete_table()
        nft.last_applied_path().unlink(missing_ok=True)
        if not nft.any_shoal_table():
            nft.docker_user_accept(False)
