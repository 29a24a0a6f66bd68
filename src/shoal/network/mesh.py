"""The routing mesh across nodes: a published port answers on every node and reaches the tasks
of every node, the task sees the client's own address, the reply goes back the way it came.

The entry node DNATs a new connection to a task, local or on another node (nft.py's published
port rules; a remote task is reached over the overlay, network/overlay.py), without SNAT: the
task sees the client. Its reply must return through the entry node, which alone can un-DNAT
it, so on the task's node:

- every node's overlay bridges carry a MAC derived from the node's address (`node_mac`), so a
  frame the entry node routed into the overlay names its entry node;
- the connection's first packet, bridged in from the VXLAN device, has its conntrack entry
  marked with the entry node (`iifname . ether saddr` -> `node_mark`, one map in nft chain
  `mesh`), and the replies of a marked connection carry the mark as their packet mark;
- an ip rule per (bridge, other node) sends packets with that mark coming from the bridge to a
  table of their own whose default route is the entry node's address on the bridge (`onlink`):
  every node has a neighbour entry on its VXLAN device for every other node's address with that
  node's MAC (overlay.py), so the reply goes over the overlay to the entry node's bridge, where
  conntrack un-DNATs it and routes it to the client.

No proxy process, no per-task rule: two nft rules (a map of (bridge, node MAC) -> mark), one ip
rule and one route table per (bridge, other node). `sync` makes the node's rules exactly the
wanted ones (after a crash too) and saves the view nft.py renders from
(networks/mesh/bridges.json)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal import paths

log = logging.getLogger("shoald.network")

MARK_BASE = 0x4D450000  # "ME": the low 16 bits are the entry node's address's low 16 bits
MARK_MASK = 0xFFFF0000
RULE_PRIORITY = 19781  # 0x4d45, before the main table (32766)
TABLE_BASE = 0x4D000000


def node_mac(address: str) -> str:
    """A node's bridge MAC on its overlay networks: locally administered, 02:5b:<its IPv4>
    (tasks' MACs are 02:5a:<their IPv4>, bridge.mac_for)."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:5b:" + ":".join(f"{b:02x}" for b in octets)


def node_mark(address: str) -> int:
    return MARK_BASE | (int(ipaddress.IPv4Address(address)) & 0xFFFF)


def table_id(bridge: str, address: str) -> int:
    return TABLE_BASE | (zlib.crc32(f"{bridge}/{address}".encode()) & 0xFFFFFF)


@dataclass
class MeshBridge:
    bridge: str
    local: str  # this node's address
    nodes: list[str] = field(default_factory=list)  # the other nodes' addresses
    tasks: dict[str, list[str]] = field(default_factory=dict)  # other node -> its tasks' addresses


def state_path() -> Path:
    # Not beside the networks (networks/*.json are read as networks): a folder of its own.
    return paths.state_root() / "networks" / "mesh" / "bridges.json"


def load() -> list[MeshBridge]:
    p = state_path()
    if not p.is_file():
        return []
    return [MeshBridge(**b) for b in json.loads(p.read_text())]


def _save(bridges: list[MeshBridge]) -> None:
    p = state_path()
    if not bridges:
        p.unlink(missing_ok=True)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    paths.write_file(p, json.dumps([asdict(b) for b in bridges], separators=(",", ":")))


def wanted(records: dict[str, dict[str, Any]]) -> list[MeshBridge]:
    """From the networks the manager sent (by name): each overlay network whose bridge is on
    this node, with this node's address and the other live nodes' addresses."""
    from shoal.network import bridge
    from shoal.network.store import NetworkStore

    out = []
    for net in NetworkStore().list():
        record = records.get(net.name)
        overlay = (record or {}).get("overlay") or {}
        local = overlay.get("local") or ""
        if net.driver != "overlay" or not local or record is None or record.get("id") != net.id \
                or not bridge.link_exists(net.bridge):
            continue
        nodes = sorted({n for n in overlay.get("nodes") or [] if n and n != local},
                       key=lambda a: ipaddress.IPv4Address(a))
        tasks: dict[str, list[str]] = {}
        for p in overlay.get("peers") or []:
            if p.get("ip") and p.get("node") in nodes:
                tasks.setdefault(p["node"], []).append(p["ip"])
        out.append(MeshBridge(net.bridge, local, nodes,
                              {n: sorted(ips, key=lambda a: ipaddress.IPv4Address(a)) for n, ips in sorted(tasks.items())}))
    return sorted(out, key=lambda b: b.bridge)


def render(bridges: list[MeshBridge]) -> list[str]:
    """The rules of the nft chain `mesh` (prerouting, before NAT): two, whatever the number of
    bridges and nodes. Every packet of the node passes this chain (each frame of an overlay
    twice on its way between tasks of two nodes, bridged and as VXLAN), nearly all of them
    established and in the original direction: each rule starts with the conntrack test that
    turns those away. One rule per (bridge, node) and direction, each starting with `iifname`,
    was 4 ifname loads per packet with two other nodes, about a quarter of the node's nft time
    (perf, iperf3 between tasks of two nodes: nft 5.5% -> 4.1% of the path's samples)."""
    pairs = [f'"{b.bridge}" . {node_mac(n)} : {node_mark(n):#x}' for b in bridges for n in b.nodes]
    if not pairs:
        return []
    # A new connection bridged in from another node's MAC is marked with that node; a packet
    # with no link-layer header (a tunnel) or no entry in the map leaves the rule unmatched.
    bridged = ", ".join(f'"{b.bridge}"' for b in bridges if b.nodes)
    return [f"ct state new ct mark set iifname . ether saddr map {{ {', '.join(pairs)} }}",
            # Its replies carry that mark as their packet mark (the ip rules route on it).
            f"ct direction reply ct mark & {MARK_MASK:#x} == {MARK_BASE:#x} iifname {{ {bridged} }} "
            "meta mark set ct mark"]


def render_snat(bridges: list[MeshBridge]) -> list[str]:
    """Postrouting rules of the entry node. A client that is itself node N, sent to a task on
    N: the task's reply would be delivered to N's own address on N (the local table comes
    before any ip rule) instead of going back through this node; such connections take this
    node's address as their source (the task sees the entry node, as under Swarm's mesh).
    Every other client keeps its own address."""
    rules = []
    for b in bridges:
        for n, ips in b.tasks.items():
            rules.append(f'oifname "{b.bridge}" ip saddr {n} ip daddr {{ {", ".join(ips)} }} ct status dnat '
                         f'snat ip to {b.local}')
    return rules


def _set_mac(nl: Any, bridge: str, mac: str) -> None:
    # Asked of the kernel, not /sys: sysfs shows the namespace it was mounted in.
    link = next((k for k in nl.links() if k["name"] == bridge), None)
    if link is None or link["address"] == mac:
        return  # gone meanwhile, or made already
    # The tasks already on the bridge know its old MAC as their gateway's: with arp_notify the
    # kernel announces the new one (gratuitous ARP, which updates their existing entries).
    try:
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/arp_notify").write_text("1\n")
    except OSError as exc:
        log.warning("mesh: arp_notify on %s: %s", bridge, exc)
    try:
        nl.set_address(int(link["index"]), mac)
    except OSError as exc:
        log.warning("mesh: bridge %s MAC %s: %s", bridge, mac, exc)


def apply_kernel(bridges: list[MeshBridge]) -> bool:
    """Bridge MACs, ip rules and their tables made exactly `bridges`' (others of ours removed);
    False when a route or rule could not be made (logged). Raw rtnetlink requests (rtnl.py),
    as `ip` would send them: one `ip` process per rule and route was up to nine per node at
    every deploy."""
    from shoal.network import rtnl

    done = True
    want: dict[tuple[int, str], tuple[int, str]] = {}  # (mark, bridge) -> (table, via)
    with rtnl.Rtnl() as nl:
        for b in bridges:
            if b.nodes:  # alone, the node needs no MAC of its own: nobody routes back to it
                _set_mac(nl, b.bridge, node_mac(b.local))
            for n in b.nodes:
                want[(node_mark(n), b.bridge)] = (table_id(b.bridge, n), n)
        have: dict[tuple[int, str], int] = {}
        for mark, iif, table in nl.rules(RULE_PRIORITY):
            key = (mark, iif)
            if key in want and want[key][0] == table and key not in have:
                have[key] = table
                continue
            with contextlib.suppress(OSError):
                nl.delete_rule(RULE_PRIORITY, mark, iif, table)
            if table:
                with contextlib.suppress(OSError):
                    nl.flush_table(table)
        for (mark, bridge_name), (table, via) in want.items():
            link = rtnl.index(bridge_name)
            try:
                if link is None:
                    raise OSError(19, f"no device {bridge_name}")
                nl.replace_default_route(via, link, table)
            except OSError as exc:
                log.warning("mesh: route via %s on %s: %s", via, bridge_name, exc)
                done = False
                continue
            if (mark, bridge_name) not in have:
                try:
                    nl.add_rule(RULE_PRIORITY, mark, bridge_name, table)
                except OSError as exc:
                    log.warning("mesh: ip rule for %s on %s: %s", via, bridge_name, exc)
                    done = False
    return done


_last: list[MeshBridge] | None = None
# What apply_kernel last made in full: the bridges without their tasks (the other nodes' tasks
# reach only the nft rules).
_kernel_done: list[tuple[str, str, list[str]]] | None = None


def _kernel_view(bridges: list[MeshBridge]) -> list[tuple[str, str, list[str]]]:
    return [(b.bridge, b.local, list(b.nodes)) for b in bridges]


def sync(records: dict[str, dict[str, Any]]) -> bool:
    """Make this node's mesh the manager's view; True when something changed (the nft table
    was applied again). Cheap when nothing changed (every agent pass)."""
    global _last, _kernel_done
    from shoal.network import nft
    from shoal.network.store import NetworkStore

    bridges = wanted(records)
    if bridges == _last:
        return False
    # Each task another node starts changes `tasks` alone: the MACs, ip rules and routes were
    # made again (seven `ip` processes on every node) at every one of them during a deploy.
    view = _kernel_view(bridges)
    if view != _kernel_done:
        _kernel_done = view if apply_kernel(bridges) else None
    store = NetworkStore()
    with store.lock():
        if bridges != load():
            _save(bridges)
            nft.apply(store)
    _last = bridges
    return True


def remove_all() -> None:
    """Every mesh rule and table of this node, and the saved view (cleanup after a crash)."""
    global _last, _kernel_done
    apply_kernel([])
    state_path().unlink(missing_ok=True)
    _last = _kernel_done = None
