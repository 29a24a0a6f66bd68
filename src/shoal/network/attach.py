"""Giving a container its network: a pinned namespace, one veth per network, NAT and published
ports. The runtime calls attach() before it creates the container and detach() after it is gone.

Everything is created under the network store's lock and rolled back on failure, so a bad port
or a full network leaves neither a namespace nor a link nor a state entry behind.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import InvalidArgument, ShoalError
from shoal.network import bridge, ipam, lb, netns, nft
from shoal.network.store import Endpoint, Network, NetworkStore, PublishedPort
from shoal.runtime.spec import ContainerSpec

FALLBACK_DNS = ["8.8.8.8", "8.8.4.4"]  # what Docker uses when the host only has local resolvers
EMBEDDED_DNS = "127.0.0.11"


@dataclass
class NetworkAttachment:
    netns_path: Path
    ip_addresses: list[str]  # one per attached network, in interface order (eth0 first)
    hosts_entries: list[str]  # "IP\tHOSTNAME" lines for the container's /etc/hosts
    networks: list[str] = field(default_factory=list)  # network names, eth0 first
    gateway: str = ""
    mac_addresses: list[str] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)  # for resolv.conf (spec.dns wins)
    ports: list[PublishedPort] = field(default_factory=list)  # with chosen host ports filled in


# The swarm's side of an attachable network (moby's clusterProvider.AttachNetwork): given the
# network's name, the container's ID, name and aliases, it has the manager allocate the
# container's address, makes sure this node has its copy of the network (and its VXLAN device),
# and returns the address; None when the manager has no such network (a network of this node's
# own). Set by shoald (agent/attachments.py) and by the CLI in swarm mode (cli/container.py);
# None: no swarm here, every network is the node's own.
ClusterAttach = Callable[[str, str, str, list[str]], "str | None"]
_cluster: ClusterAttach | None = None


def set_cluster(provider: ClusterAttach | None) -> None:
    global _cluster
    _cluster = provider


def has_cluster() -> bool:
    """Is there a swarm to ask (a network this node has no copy of may be the swarm's)?"""
    return _cluster is not None


def _from_cluster(store: NetworkStore, ref: str, container_id: str, name: str, aliases: list[str]) -> str:
    """The manager's address for the container on the network `ref` when it is a swarm network
    (no copy here yet, or an overlay copy); "" for a network of the node's own (a local bridge
    network is never the manager's business). Called without the network lock: the provider
    makes the node's copy of the network under it."""
    if _cluster is None:
        return ""
    local = store.find(ref)
    if local is not None and (local.driver != "overlay" or local.predefined):
        return ""
    return _cluster(local.name if local is not None else ref, container_id, name, aliases) or ""


def network_ref(spec_network: str) -> str | None:
    if spec_network in ("none", "host", ""):
        return None
    return "bridge" if spec_network == "default" else spec_network


def attach(container_id: str, spec: ContainerSpec, *, for_task: bool = False,
           store: NetworkStore | None = None) -> NetworkAttachment | None:
    """Make the container's namespace and connect it to spec.network (None for none/host).
    Overlay networks need --attachable unless the caller is the swarm agent (for_task)."""
    ref = network_ref(spec.network)
    if ref is None:
        return None
    store = store or NetworkStore()
    ports = [PublishedPort(protocol=p.protocol, published=p.published, target=p.target, host_ip=p.host_ip)
             for p in spec.ports]
    hostname = spec.hostname or container_id[:12]
    path = netns.netns_path(container_id)
    given = "" if for_task else _from_cluster(store, ref, container_id, spec.name, list(spec.network_aliases))
    with store.lock():
        net = store.get(ref)
        _check_attachable(net, for_task)
        if given and given in net.used_ips():
            raise ShoalError(f"address {given} the manager gave on network {net.name} is still in use on this node")
        if net.internal and ports:
            raise InvalidArgument(f"cannot publish ports on internal network {net.name}")
        if netns.is_mounted(path):
            raise ShoalError(f"container {container_id[:12]} already has a network namespace at {path}")
        path.unlink(missing_ok=True)  # an unmounted leftover of a crash between create and mount
        try:
            netns.create(path)
        except OSError as exc:
            raise ShoalError(f"network namespace for container {container_id[:12]}: {exc}") from exc
        try:
            ep = _connect(store, net, container_id, path, "eth0", spec.name, hostname, spec.network_aliases, ports,
                          wanted=given)
        except BaseException:
            netns.remove(path)
            raise
    return NetworkAttachment(
        netns_path=path,
        ip_addresses=[ep.ip],
        hosts_entries=[f"{ep.ip}\t{hostname}"],
        networks=[net.name],
        gateway="" if net.internal else net.gateway,
        mac_addresses=[ep.mac],
        # As Docker: the embedded resolver on user-defined networks (shoald serves it; the
        # caller starts shoald), the host's resolvers on the default bridge.
        dns_servers=host_resolvers() if net.predefined else [EMBEDDED_DNS],
        ports=ep.ports,
    )


def connect(container_id: str, network: str, aliases: list[str] | None = None, name: str = "",
            hostname: str = "", *, for_task: bool = False, store: NetworkStore | None = None,
            ip: str = "") -> Endpoint:
    """Add one more network (eth1, eth2...) to a container attached before; `ip`: the address
    it asks for (`network connect --ip`), else the next free one."""
    store = store or NetworkStore()
    path = netns.netns_path(container_id)
    if not netns.is_mounted(path):
        raise ShoalError(f"container {container_id[:12]} has no network namespace")
    given = "" if for_task or ip else _from_cluster(store, network, container_id, name, list(aliases or []))
    with store.lock():
        net = store.get(network)
        _check_attachable(net, for_task)
        if container_id in net.endpoints:
            raise ShoalError(f"endpoint with name {name or container_id[:12]} already exists in network {net.name}")
        if given and given in net.used_ips():
            raise ShoalError(f"address {given} the manager gave on network {net.name} is still in use on this node")
        ifname = f"eth{bridge.interface_count(path)}"
        return _connect(store, net, container_id, path, ifname, name, hostname or container_id[:12], aliases or [], [],
                        wanted=wanted_ip(net, ip) if ip else given)


def wanted_ip(net: Network, ip: str) -> str:
    """moby's checks of a user-specified address (container_operations.go, endpoint.go)."""
    if net.predefined:
        raise InvalidArgument("user-specified IP address is supported on user-defined networks only")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address: {ip}") from None
    if addr not in net.subnet_net() or str(addr) == net.gateway:
        raise InvalidArgument(f"invalid address {ip}: It does not belong to any of this network's subnets")
    if str(addr) in net.used_ips():
        raise ShoalError("Address already in use")
    return str(addr)


def disconnect(container_id: str, network: str, *, store: NetworkStore | None = None) -> Endpoint:
    """Take a running container off one network (`network disconnect`): its endpoint, its
    ports' rules and its veth go; the namespace and its other networks stay."""
    store = store or NetworkStore()
    with store.lock():
        net = store.get(network)
        ep = net.endpoints.pop(container_id, None)
        if ep is None:
            raise ShoalError(f"container {container_id} is not connected to network {net.name}")
        store.save(net)
        nft.apply(store)  # its ports leave the rules before the link goes
        bridge.delete_link(ep.veth)
        if not net.endpoints and not net.reserved:
            bridge.delete_link(net.bridge)
    return ep


def _check_attachable(net: Network, for_task: bool) -> None:
    if not net.has_bridge:
        raise InvalidArgument(f"network {net.name} (driver {net.driver}) has no interfaces to attach to")
    if net.driver == "overlay" and not net.attachable and not for_task:
        raise InvalidArgument(f"Could not attach to network {net.name}: network {net.name} not manually attachable")


def _connect(store: NetworkStore, net: Network, container_id: str, path: Path, ifname: str, name: str,
             hostname: str, aliases: list[str], ports: list[PublishedPort], wanted: str = "") -> Endpoint:
    """Under the lock: allocate, wire, record, apply; undo the wiring if any step fails."""
    given = net.assigned.pop(name, "") if name and not wanted else ""
    if wanted:
        ip = wanted  # checked free under this same lock
    elif given:
        # The swarm manager's allocation for this task (manager/allocator.py): unique in the
        # cluster, so tasks on different nodes never share an address on one network.
        if given in net.used_ips():
            raise ShoalError(f"address {given} on network {net.name} is still in use on this node")
        ip = given
    else:
        rng = ipaddress.IPv4Network(net.ip_range) if net.ip_range else None
        ip = str(ipam.allocate_ip(net.name, net.subnet_net(), ipaddress.IPv4Address(net.gateway), rng, net.used_ips()))
    lb.claim_ports(store, container_id, ports)
    veth = bridge.veth_name(container_id, net.id)
    ep = Endpoint(container_id=container_id, name=name, ip=ip, mac=bridge.mac_for(ip), veth=veth,
                  aliases=list(aliases), hostname=hostname, ports=ports)
    first = ifname == "eth0"
    try:
        bridge.ensure_bridge(net)
        bridge.add_interface(net, path, veth, ifname, ip, ep.mac, default_route=first and not net.internal)
        net.endpoints[container_id] = ep
        store.save(net)
        nft.apply(store)
    except BaseException as exc:
        bridge.delete_link(veth)
        fresh = store.find(net.id)
        if fresh is not None and container_id in fresh.endpoints:
            del fresh.endpoints[container_id]
            store.save(fresh)
        if fresh is not None and not fresh.endpoints and not fresh.reserved:
            bridge.delete_link(fresh.bridge)
        if isinstance(exc, OSError):  # the kernel refused: a clear error, not a traceback
            raise ShoalError(f"connecting to network {net.name}: {exc}") from exc
        raise
    return ep


def detach(container_id: str, store: NetworkStore | None = None) -> None:
    """Remove every endpoint, veth, published port and the namespace of the container."""
    store = store or NetworkStore()
    veths = []
    with store.lock():
        left = []
        for net in store.list():
            ep = net.endpoints.pop(container_id, None)
            if ep is not None:
                store.save(net)
                left.append(net)
                veths.append(ep.veth)
        if left:
            nft.apply(store)  # ports leave the rotation before the links disappear
        for net in left:
            if not net.endpoints and not net.reserved:
                # A bridge exists only while something uses it (re-made in ~10 ms), so that
                # nothing of shoal's stays in the kernel once its containers are gone.
                bridge.delete_link(net.bridge)
    # Outside the lock: the namespace's end is unpinned, and the kernel destroys the namespace
    # with both ends of its veths, batched with other namespaces. Deleting each veth ourselves
    # took ~20 ms of kernel time apiece (one RCU grace period per device), serialised.
    netns.remove(netns.netns_path(container_id))
    _wait_links_gone(veths)


VETH_GONE_WAIT = 0.3  # seconds the kernel gets to destroy an unpinned namespace's veths


def _wait_links_gone(names: list[str]) -> None:
    """Until the host ends of a removed namespace's veths are gone; one kept alive (something
    else still holds the namespace) is deleted by name."""
    deadline = time.monotonic() + VETH_GONE_WAIT
    pending = [n for n in names if bridge.link_exists(n)]
    while pending and time.monotonic() < deadline:
        time.sleep(0.01)
        pending = [n for n in pending if bridge.link_exists(n)]
    for name in pending:
        bridge.delete_link(name)


def host_gateway_ip(store: NetworkStore | None = None) -> str:
    """moby's default HostGatewayIP, the default bridge's address: what `host-gateway` stands
    for in the hosts file of a container with no gateway of its own (host, none, an internal
    network). Its bridge is not made for it: shoal's bridges exist while containers are on
    them, and this address is reachable from no such container anyway."""
    store = store or NetworkStore()
    store.ensure_predefined()
    return store.get("bridge").gateway


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's nameservers a container can reach: loopback ones are not (Docker's rule)."""
    servers = []
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    addr = ipaddress.ip_address(parts[1].split("%")[0])
                except ValueError:
                    continue
                if addr.version == 4 and not addr.is_loopback:
                    servers.append(str(addr))
    except OSError:
        pass
    return servers or list(FALLBACK_DNS)
