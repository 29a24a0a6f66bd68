"""The `ip shoal` nftables table, rendered whole from the state on disk and applied atomically.

One nft transaction per change (through libnftables, in this process: libnft.py): `table; delete
table; table {...}` replaces the table in one step (nft 1.0.6 would otherwise append), so
packets see either the old rules or the new ones.
Established connections keep their conntrack NAT bindings across a replacement.

What the table does:
- load balancing (chain `lb`, from prerouting and output): a service VIP to its tasks (all ports,
  like Swarm's VIP), and published ports on every local address (127.0.0.1 included) or on one
  host IP, DNAT to the backends with `numgen inc` (an even round robin of new connections);
- postrouting: egress masquerade of each non-internal network, a 1:1 source map of 127.0.0.0/8
  clients onto LOOPBACK_CLIENTS (needs route_localnet on the bridge; see below), masquerade of
  a task DNATed to itself (`_self_hits`) and of ports published with keep_client_ip=False;
  otherwise the client's address reaches the backend unchanged, on the client's own network
  too (its reply is bridged and un-DNATed by the bridge's conntrack: bridge_conntrack);
- forward: isolation between shoal networks (only DNATed traffic may cross) and an explicit
  accept so shoal traffic is not left to another table's policy;
- input: nothing from a bridge to the host's 127.0.0.0/8 but replies of DNATed connections.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from shoal.errors import ShoalError
from shoal.network import libnft
from shoal.paths import write_file
from shoal.network.store import Network, NetworkStore

log = logging.getLogger("shoald.network")

FAMILY = "ip"
# Marks connections to ports published with keep_client_ip=False ("SHOL").
SNAT_MARK = 0x53484F4C
# A task cannot answer 127.0.0.1, so a loopback client of a published port needs a source
# address the task routes back to the host. 127.a.b.c appears as 169.254.b.c (nft's netmap:
# `snat ip prefix to`), one address per loopback client and none shared with anything else.
# Masquerading them all to the bridge's gateway (as before, and as Docker does) put every
# loopback client and the host's own direct connections into one (address, port) space at the
# task: under short connections the NAT had to rewrite ports on clashes (nf_conntrack "found"),
# the rewritten SYN met a TIME_WAIT socket of another connection at the task, which refused it
# (TcpExtPAWSTimewait) and the client resent it a second later: 0.07 of a direct connection.
# Replies go to the task's default route, the bridge's gateway, where conntrack un-maps them.
LOOPBACK_CLIENTS = "169.254.0.0/16"


@dataclass
class PortRule:
    protocol: str
    published: int
    backends: list[tuple[str, int]]  # (ip, target port)
    host_ip: str = ""
    keep_client_ip: bool = True
    owner: str = ""


@dataclass
class VipRule:
    vip: str
    backends: list[str]
    owner: str = ""
    remote: list[str] = field(default_factory=list)  # the backends on other nodes (overlay)


def table_name() -> str:
    """`shoal` for the default state root; `shoal-<hash>` for another (a test's) root."""
    from shoal.network.store import root_suffix

    suffix = root_suffix()
    return f"shoal-{suffix}" if suffix else "shoal"


def _map(items: list[str]) -> str:
    return ", ".join(f"{i} : {v}" for i, v in enumerate(items))


def _dnat(backends: list[str], with_port: bool) -> str:
    if len(backends) == 1:
        return f"dnat ip to {backends[0].replace(' . ', ':')}"
    expr = f"numgen inc mod {len(backends)} map {{ {_map(backends)} }}"
    return f"dnat ip to {expr}" if with_port else f"dnat to {expr}"


def render(networks: Iterable[Network], vips: Iterable[VipRule], ports: Iterable[PortRule],
           mesh_rules: Iterable[str] = (), mesh_snat: Iterable[str] = (), bridged: bool = True) -> str:
    """The table's script. `bridged`: bridged frames pass conntrack (bridge_conntrack); without
    it every DNAT within one network is masqueraded (the backend sees the bridge's gateway), as
    an un-DNATed reply would be refused by the client."""
    nets = [n for n in networks if n.has_bridge and n.subnet]
    lb: list[str] = []
    for v in vips:
        if v.backends:
            lb.append(f'ip daddr {v.vip} {_dnat(sorted(v.backends), False)} comment "{v.owner}"')
    for p in ports:
        if not p.backends:
            continue
        where = f"ip daddr {p.host_ip}" if p.host_ip else "fib daddr type local"
        mark = "" if p.keep_client_ip else f"ct mark set {SNAT_MARK:#x} "
        targets = [f"{ip} . {port}" for ip, port in sorted(p.backends)]
        lb.append(f"{where} meta l4proto {p.protocol} th dport {p.published} {mark}{_dnat(targets, True)}"
                  f' comment "{p.owner}"')

    post: list[str] = [
        f'oifname "shoal*" ip saddr 127.0.0.0/8 snat ip prefix to {LOOPBACK_CLIENTS}',
        f"ct mark {SNAT_MARK:#x} ct status dnat masquerade",
        *mesh_snat,
    ]
    fwd: list[str] = []
    all_subnets = ", ".join(n.subnet for n in nets)
    # A task reaching a task of its own network through a VIP or a published port keeps its
    # address, on this node as on another: the backend answers it directly, that reply is
    # bridged (from the backend's port, or in from the overlay) and the bridge's conntrack
    # (br_netfilter) un-DNATs it. Only a task sent to itself is masqueraded: a packet from its
    # own address arriving from outside would be dropped as martian.
    hits = _self_hits(nets, vips, ports)
    if hits and bridged:
        post.append(f"ip saddr . ip daddr {{ {', '.join(f'{ip} . {ip}' for ip in hits)} }} ct status dnat masquerade")
    for n in nets:
        if not bridged:
            post.append(f"ip saddr {n.subnet} ip daddr {n.subnet} ct status dnat masquerade")
        if not n.internal:
            post.append(f'ip saddr {n.subnet} oifname != "shoal*" masquerade')
        fwd.append(f"ip saddr {n.subnet} ip daddr != {n.subnet} ip daddr {{ {all_subnets} }} ct status & dnat == 0 drop")
        if n.internal:
            fwd.append(f"ip saddr {n.subnet} ip daddr != {n.subnet} drop")
            fwd.append(f"ip daddr {n.subnet} ip saddr != {n.subnet} ct status & dnat == 0 drop")
    fwd.append('iifname "shoal*" accept')
    fwd.append('oifname "shoal*" accept')

    def chain(name: str, head: str, rules: list[str]) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return f"\tchain {name} {{\n" + (f"\t\t{head}\n" if head else "") + body + "\t}\n"

    table = table_name()
    return (
        f"table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"
        f"table {FAMILY} {table} {{\n"
        + chain("lb", "", lb)
        + chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", ["jump lb"])
        # nft 1.0.6 refuses `priority dstnat` on the output hook: -100 is its value.
        + chain("output", "type nat hook output priority -100; policy accept;", ["jump lb"])
        + chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post)
        # The routing mesh across nodes (network/mesh.py): connections entering from another
        # node's bridge are marked with it, their replies routed back through it. Before NAT.
        + chain("mesh", "type filter hook prerouting priority mangle; policy accept;", list(mesh_rules))
        + chain("forward", "type filter hook forward priority filter - 5; policy accept;", fwd)
        # route_localnet on the bridges lets 127.0.0.1 be DNATed to a task; it would also let a
        # task reach the host's loopback-only services (CVE-2020-8558): only replies of such
        # DNATed connections may arrive from a bridge addressed to 127.0.0.0/8.
        + chain("input", "type filter hook input priority filter - 5; policy accept;",
                ['iifname "shoal*" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop'])
        + _tunnel_chains(nets, chain)
        + "}\n"
    )


def _tunnel_chains(nets: list[Network], chain: Any) -> str:
    """The VXLAN packets between nodes (network/vxlan.py) are not tracked: conntrack adds
    nothing to them (the frames they carry are tracked on each side; encapsulation and
    decapsulation reset it), and each would cost a lookup on both nodes. Measured with iperf3
    between tasks on two nodes: 6.2 -> 7.2 Gbit/s in one alternated pair of runs, within the
    noise of this shared machine in others."""
    from shoal.network.overlay import vni_of
    from shoal.network.vxlan import VXLAN_PORT

    if not any(n.driver == "overlay" and vni_of(n.options) for n in nets):
        return ""
    # An encrypted network's VXLAN packets arrive only out of the node's WireGuard interface: one
    # with its VNI from anywhere else (the node link, in clear) is dropped, as Docker drops those
    # outside IPsec (the VNI is the 24 bits at byte 4 of the VXLAN header, after UDP's 8).
    from shoal.network.overlay import encrypted
    from shoal.network.wireguard import interface_name

    guard = [f'udp dport {VXLAN_PORT} @th,96,24 {vni_of(n.options)} iifname != "{interface_name()}" counter drop'
             for n in nets if encrypted(n.driver, n.options) and vni_of(n.options)]
    return (chain("tunnel_in", "type filter hook prerouting priority raw; policy accept;",
                  [*guard, f"udp dport {VXLAN_PORT} fib daddr type local notrack"])
            + chain("tunnel_out", "type filter hook output priority raw; policy accept;",
                    [f"udp dport {VXLAN_PORT} notrack"]))


def _self_hits(nets: list[Network], vips: Iterable[VipRule], ports: Iterable[PortRule]) -> list[str]:
    """The backends of VIPs and published ports on this node's shoal networks: the tasks that
    may be DNATed to themselves here. (A task of another node among them never is: its own
    connections are DNATed on its own node, and leave it masqueraded to the node's address.)"""
    import ipaddress

    subnets = [n.subnet_net() for n in nets]
    ips = {ip for v in vips for ip in v.backends if ip not in v.remote}
    ips.update(ip for p in ports for ip, _ in p.backends)
    return sorted((ip for ip in ips if any(ipaddress.IPv4Address(ip) in s for s in subnets)),
                  key=ipaddress.IPv4Address)


def run_nft(script: str) -> None:
    rc, _out, err = libnft.run(script)
    if rc != 0:
        raise ShoalError(f"nft rejected the shoal rule set: {err.strip()}")


def delete_table() -> None:
    table = table_name()
    run_nft(f"table {FAMILY} {table}\ndelete table {FAMILY} {table}\n")


def table_exists() -> bool:
    return libnft.run(f"list table {FAMILY} {table_name()}")[0] == 0


def collect(store: NetworkStore) -> tuple[list[Network], list[VipRule], list[PortRule]]:
    from shoal.network import lb

    networks = store.list()
    vips: list[VipRule] = []
    ports: list[PortRule] = []
    by_id = {n.id: n for n in networks}
    for svc in lb.load_services():
        if svc.endpoint_mode == "vip":
            for net_id, vip in svc.vips.items():
                if net_id in by_id:
                    remote = list(svc.remote.get(net_id, []))
                    vips.append(VipRule(vip, [b.ips[net_id] for b in svc.backends if net_id in b.ips] + remote,
                                        f"service {svc.name}", remote))
        # The tasks of other nodes on the network the published port reaches (the routing mesh,
        # network/mesh.py): the first of the service's networks, as for its local tasks.
        mesh_net = next(iter(svc.vips), next(iter(svc.remote), ""))
        for p in svc.ports:
            if not p.published:
                continue
            backends = []
            for b in svc.backends:
                ip = next(iter(b.ips.values()), None)
                if ip:
                    backends.append((ip, p.target))
            if p.mode == "ingress":  # `mode: host` publishes only where a task runs
                backends += [(ip, p.target) for ip in svc.remote.get(mesh_net, []) if (ip, p.target) not in backends]
            ports.append(PortRule(p.protocol, p.published, backends, "", p.keep_client_ip, f"service {svc.name}"))
    for n in networks:
        for ep in n.endpoints.values():
            for pp in ep.ports:
                ports.append(PortRule(pp.protocol, pp.published, [(ep.ip, pp.target)], pp.host_ip, pp.keep_client_ip,
                                      f"container {ep.container_id[:12]}"))
    return networks, vips, ports


def last_applied_path() -> Path:
    from shoal import paths

    return paths.run_root() / "nft-applied.txt"


def apply(store: NetworkStore | None = None, force: bool = False) -> str:
    """Render the table from the state and replace it in the kernel (call under store.lock()).
    With no bridge network in use and nothing published, the table is removed. A rule set equal
    to the last one applied is skipped (most attaches change no rule) unless `force`."""
    from shoal.network import mesh

    store = store or NetworkStore()
    networks, vips, ports = collect(store)
    in_use = [n for n in networks if n.has_bridge and (n.endpoints or n.reserved)]
    last = last_applied_path()
    if not in_use and not any(p.backends for p in ports):
        last.unlink(missing_ok=True)
        if table_exists():
            delete_table()
        if not any_shoal_table():
            docker_user_accept(False)
        return ""
    bridges = mesh.load()
    script = render(in_use, vips, ports, mesh.render(bridges), mesh.render_snat(bridges), bridge_conntrack())
    if not force and last.is_file() and last.read_text() == script:
        return script
    enable_forwarding()
    last.unlink(missing_ok=True)  # a crash mid-apply must not leave a stale "applied" record
    run_nft(script)
    docker_user_accept(True)
    last.parent.mkdir(parents=True, exist_ok=True)
    write_file(last, script)
    return script


BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
_modprobed = False
_warned = False


def bridge_conntrack() -> bool:
    """Frames bridged between two tasks, or between the VXLAN device and a task, pass the
    node's conntrack and nft's ip hooks (br_netfilter, per network namespace; Docker needs it
    too): a backend's reply to a client of its own network that reached it through a VIP or a
    published port is un-DNATed there, so the backend sees the client's own address. Returns
    whether it is on."""
    global _modprobed, _warned
    if not BRIDGE_NF.exists() and not _modprobed and shutil.which("modprobe"):
        _modprobed = True  # tried once per process: no module there is not going to change
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    try:
        if BRIDGE_NF.read_text().strip() != "1":
            BRIDGE_NF.write_text("1\n")
        return True
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning("br_netfilter is not available (%s): a task reaching its own network's VIP or published "
                        "port shows as the bridge's gateway; VIPs will not reach tasks on other nodes", exc)
        return False


def enable_forwarding() -> None:
    p = Path("/proc/sys/net/ipv4/ip_forward")
    if p.read_text().strip() != "1":
        p.write_text("1\n")


# --- coexistence with a Docker Engine ---------------------------------------------------------

_DOCKER_USER_RULES = (["-i", "shoal+"], ["-o", "shoal+"])


def any_shoal_table() -> bool:
    out = libnft.run("list tables")[1]
    return any(line.split()[-1].startswith("shoal") for line in out.splitlines() if line.strip())


def _docker_user_iptables() -> str | None:
    """The iptables flavour whose filter table has Docker's DOCKER-USER chain, if any. Looked
    up without side effects: `iptables-nft -L` would create an empty `ip filter` table."""
    if libnft.run("list chain ip filter DOCKER-USER")[0] == 0:
        return shutil.which("iptables-nft") or shutil.which("iptables")
    names = Path("/proc/net/ip_tables_names")  # present once the legacy x_tables are in use
    legacy = shutil.which("iptables-legacy")
    if legacy and names.is_file() and "filter" in names.read_text().split():
        if subprocess.run([legacy, "-w", "-n", "-L", "DOCKER-USER"], capture_output=True).returncode == 0:
            return legacy
    return None


def docker_user_accept(present: bool) -> None:
    """Docker sets the iptables FORWARD policy to DROP; its DOCKER-USER chain is the place for
    exceptions. A drop in any table wins over our accept, so shoal's bridges get one there."""
    tool = _docker_user_iptables()
    if tool is None:
        return
    for match in _DOCKER_USER_RULES:
        rule = ["DOCKER-USER", *match, "-m", "comment", "--comment", "shoal", "-j", "ACCEPT"]
        exists = subprocess.run([tool, "-w", "-C", *rule], capture_output=True).returncode == 0
        if present and not exists:
            subprocess.run([tool, "-w", "-I", *rule], capture_output=True, check=False)
        elif not present and exists:
            subprocess.run([tool, "-w", "-D", *rule], capture_output=True, check=False)
