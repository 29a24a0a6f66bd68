"""The nodes' WireGuard tunnel addresses for encrypted overlay networks (network/wireguard.py):
one per node, in wireguard.TUNNEL_NET, given by the manager's dispatcher when the node
registers with a key.

Each node's address is first looked for at a place derived from its node ID, then at the next
free one: a manager that restarts gives every node the address it had (the nodes register again
in any order) unless two IDs met at one place, so a restart does not move the tunnels."""

from __future__ import annotations

import hashlib
import ipaddress

from shoal.errors import ShoalError
from shoal.network.wireguard import TUNNEL_NET


def allocate(node_id: str, taken: set[str]) -> str:
    """`node_id`'s tunnel address, avoiding `taken` (the other nodes')."""
    size = TUNNEL_NET.num_addresses - 2  # no network or broadcast address
    start = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:4], "big") % size
    base = int(TUNNEL_NET.network_address) + 1
    for step in range(size):
        addr = str(ipaddress.IPv4Address(base + (start + step) % size))
        if addr not in taken:
            return addr
    raise ShoalError(f"no tunnel address left in {TUNNEL_NET} for node {node_id}")
