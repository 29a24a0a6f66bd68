"""The routing mesh across nodes: a published port answers on every node and reaches the tasks
of every node, the task sees the client's own address, the reply goes back the way it came.

The entry node DNATs a new connection to a task, local or on another node (nft.py's published
port rules; a remote task is reached over the overlay, network/overlay.py), without SNAT: the
task sees the client. Its reply must return through the entry node, which alone can un-DNAT
it, so on the task's node:

- every node's overlay bridges carry a MAC derived from the node's address (`node_mac`), so a
  frame the entry node routed into the overlay names its entry node;
- the connection's first packet, bridged in from the VXLAN device, has its conntrack entry
  marked with the entry node (`ether saddr` -> `node_mark`, nft chain `mesh`), and the replies
  of a marked connection carry the mark as their packet mark;
- an ip rule per (bridge, other node) sends packets with that mark coming from the bridge to a
  table of their own whose default route is the entry node's address on the bridge (`onlink`):
  every node has a neighbour entry on its VXLAN device for every other node's address with that
  node's MAC (overlay.py), so the reply goes over the overlay to the entry node's bridge, where
  conntrack un-DNATs it and routes it to the client.

No proxy process, no per-task rule: one mark rule per other node and bridge, one ip rule and
one route table per (bridge, other node). `sync` makes the node's rules exactly the wanted ones
(after a crash too) and saves the view nft.py renders from (networks/mesh/bridges.json)."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
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
    """The rules of the nft chain `mesh` (prerouting, before NAT)."""
    rules = []
    for b in bridges:
        for n in b.nodes:
            mark = f"{node_mark(n):#x}"
            rules.append(f'iifname "{b.bridge}" ct state new ether saddr {node_mac(n)} ct mark set {mark}')
            rules.append(f'iifname "{b.bridge}" ct direction reply ct mark {mark} meta mark set {mark}')
    return rules


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


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def _rules() -> list[dict[str, Any]]:
    """This node's mesh ip rules (ours by their priority)."""
    proc = _ip("-j", "-4", "rule", "show", "priority", str(RULE_PRIORITY))
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [r for r in json.loads(proc.stdout) if r.get("priority") == RULE_PRIORITY]


def _set_mac(bridge: str, mac: str) -> None:
    # Asked of the kernel, not /sys: sysfs shows the namespace it was mounted in.
    shown = _ip("-j", "link", "show", "dev", bridge)
    if shown.returncode != 0:
        return  # gone meanwhile
    if json.loads(shown.stdout)[0].get("address") == mac:
        return
    # The tasks already on the bridge know its old MAC as their gateway's: with arp_notify the
    # kernel announces the new one (gratuitous ARP, which updates their existing entries).
    try:
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/arp_notify").write_text("1\n")
    except OSError as exc:
        log.warning("mesh: arp_notify on %s: %s", bridge, exc)
    proc = _ip("link", "set", "dev", bridge, "address", mac)
    if proc.returncode != 0:
        log.warning("mesh: bridge %s MAC %s: %s", bridge, mac, proc.stderr.strip())


def apply_kernel(bridges: list[MeshBridge]) -> None:
    """Bridge MACs, ip rules and their tables made exactly `bridges`' (others of ours removed)."""
    want: dict[tuple[int, str], tuple[int, str]] = {}  # (mark, bridge) -> (table, via)
    for b in bridges:
        if b.nodes:  # alone, the node needs no MAC of its own: nobody routes back to it
            _set_mac(b.bridge, node_mac(b.local))
        for n in b.nodes:
            want[(node_mark(n), b.bridge)] = (table_id(b.bridge, n), n)
    have: dict[tuple[int, str], int] = {}
    for r in _rules():
        mark = int(str(r.get("fwmark", "0")), 0)
        table = int(r["table"]) if str(r.get("table", "")).isdigit() else 0
        key = (mark, str(r.get("iif", "")))
        if key in want and want[key][0] == table and key not in have:
            have[key] = table
            continue
        _ip("rule", "del", "priority", str(RULE_PRIORITY), "fwmark", hex(mark), "iif", key[1], "table", str(table))
        if table:
            _ip("route", "flush", "table", str(table))
    for (mark, bridge_name), (table, via) in want.items():
        route = _ip("route", "replace", "default", "via", via, "dev", bridge_name, "onlink", "table", str(table))
        if route.returncode != 0:
            log.warning("mesh: route via %s on %s: %s", via, bridge_name, route.stderr.strip())
            continue
        if (mark, bridge_name) not in have:
            rule = _ip("rule", "add", "priority", str(RULE_PRIORITY), "fwmark", hex(mark), "iif", bridge_name,
                       "table", str(table))
            if rule.returncode != 0:
                log.warning("mesh: ip rule for %s on %s: %s", via, bridge_name, rule.stderr.strip())


_last: list[MeshBridge] | None = None


def sync(records: dict[str, dict[str, Any]]) -> bool:
    """Make this node's mesh the manager's view; True when something changed (the nft table
    was applied again). Cheap when nothing changed (every agent pass)."""
    global _last
    from shoal.network import nft
    from shoal.network.store import NetworkStore

    bridges = wanted(records)
    if bridges == _last:
        return False
    apply_kernel(bridges)
    store = NetworkStore()
    with store.lock():
        if bridges != load():
            _save(bridges)
            nft.apply(store)
    _last = bridges
    return True


def remove_all() -> None:
    """Every mesh rule and table of this node, and the saved view (cleanup after a crash)."""
    global _last
    apply_kernel([])
    state_path().unlink(missing_ok=True)
    _last = None
