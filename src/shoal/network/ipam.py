"""Address management: subnets from a configurable default pool, addresses within a subnet.

Pure functions over plain data; the store calls them while holding its lock, so two shoal
processes never hand out the same subnet or address.

The default pool is 10.128.0.0/12 cut into /20s (4,094 addresses: a network holds well over
1,000 tasks; 256 networks). It avoids Docker's own pools (172.17-31/16, 192.168/16) so shoal and a
Docker Engine can share a host. Configure it as Docker's daemon.json does, in
<state_root>/daemon.json: {"default-address-pools": [{"base": "10.213.0.0/16", "size": 24}]}, or
with SHOAL_DEFAULT_ADDRESS_POOLS="10.213.0.0/16:24,10.214.0.0/16:20".
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shoal import paths
from shoal.errors import Conflict, InvalidArgument, ShoalError

DEFAULT_POOLS = (("10.128.0.0/12", 20),)


@dataclass(frozen=True)
class Pool:
    base: ipaddress.IPv4Network
    size: int

    def subnets(self) -> Iterator[ipaddress.IPv4Network]:
        return self.base.subnets(new_prefix=self.size)


def _pool(base: str, size: int, where: str) -> Pool:
    try:
        net = ipaddress.IPv4Network(base, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid default address pool {base!r} in {where}: {exc}") from None
    if not net.prefixlen <= size <= 30:
        raise InvalidArgument(f"invalid default address pool {base}/{size} in {where}: size must be between {net.prefixlen} and 30")
    return Pool(net, size)


def default_pools() -> list[Pool]:
    env = os.environ.get("SHOAL_DEFAULT_ADDRESS_POOLS")
    if env:
        pools = []
        for item in env.split(","):
            base, _, size = item.strip().rpartition(":")
            if not base or not size.isdigit():
                raise InvalidArgument(f"invalid SHOAL_DEFAULT_ADDRESS_POOLS entry {item!r}: want BASE/PREFIX:SIZE")
            pools.append(_pool(base, int(size), "SHOAL_DEFAULT_ADDRESS_POOLS"))
        return pools
    config = paths.state_root() / "daemon.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text())
            entries = data.get("default-address-pools")
        except (ValueError, AttributeError) as exc:
            raise InvalidArgument(f"invalid {config}: {exc}") from None
        if entries:
            return [_pool(str(e["base"]), int(e["size"]), str(config)) for e in entries]
    return [Pool(ipaddress.IPv4Network(b), s) for b, s in DEFAULT_POOLS]


def parse_subnet(text: str, what: str = "subnet") -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid {what} {text!r}: want an IPv4 CIDR such as 10.213.0.0/20") from None
        raise InvalidArgument(f"invalid {what} {text}: host bits are set (did you mean {loose}?)") from None
    if net.prefixlen > 30:
        raise InvalidArgument(f"invalid {what} {text}: a /{net.prefixlen} has no room for a gateway and a container")
    return net


def overlapping(subnet: ipaddress.IPv4Network, taken: dict[str, ipaddress.IPv4Network]) -> str | None:
    """The name of the network whose subnet overlaps `subnet`, if any."""
    for name, other in taken.items():
        if subnet.overlaps(other):
            return name
    return None


def allocate_subnet(taken: dict[str, ipaddress.IPv4Network], avoid: Iterable[ipaddress.IPv4Network] = ()) -> ipaddress.IPv4Network:
    """The first pool subnet that overlaps neither a shoal network nor a host route."""
    avoid = list(avoid)
    for pool in default_pools():
        for candidate in pool.subnets():
            if overlapping(candidate, taken) is None and not any(candidate.overlaps(a) for a in avoid):
                return candidate
    pools = ", ".join(f"{p.base}:{p.size}" for p in default_pools())
    raise ShoalError(f"could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network ({pools} are all in use)")


def check_user_subnet(name: str, subnet: ipaddress.IPv4Network, taken: dict[str, ipaddress.IPv4Network]) -> None:
    other = overlapping(subnet, taken)
    if other is not None:
        raise Conflict(f"invalid pool request for network {name}: subnet {subnet} overlaps with network {other} ({taken[other]})")


def default_gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    # Docker takes the first address of the subnet, even when an ip_range is given.
    return subnet.network_address + 1


def check_layout(name: str, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                 ip_range: ipaddress.IPv4Network | None) -> None:
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"invalid gateway {gateway} for network {name}: not a host address of subnet {subnet}")
    if ip_range is not None and not ip_range.subnet_of(subnet):
        raise InvalidArgument(f"invalid ip-range {ip_range} for network {name}: not inside subnet {subnet}")


def _int(addr: str) -> int:
    return int.from_bytes(socket.inet_aton(addr), "big")


def allocate_ip(name: str, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                ip_range: ipaddress.IPv4Network | None, used: Iterable[str]) -> ipaddress.IPv4Address:
    """The lowest free host address of ip_range (or the subnet), never the gateway.
    Plain integers: a network of 4,000 tasks is scanned in a millisecond or two."""
    taken = {_int(u) for u in used}
    taken.add(int(gateway))
    taken.add(int(subnet.network_address))
    taken.add(int(subnet.broadcast_address))
    space = ip_range or subnet
    first, last = int(space.network_address), int(space.broadcast_address)
    if space.prefixlen < 31:  # like hosts(): not a range's own .0/.255-style ends either
        first, last = first + 1, last - 1
    for value in range(first, last + 1):
        if value not in taken:
            return ipaddress.IPv4Address(value)
    raise ShoalError(f"no available IPv4 addresses on network {name} ({space} is full)")
