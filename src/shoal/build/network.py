"""The network of a build's RUN steps, as Docker's default build network: each step gets a
network namespace of its own on a bridge of the builder's (`shoalbuild0`), with outbound NAT,
so a step reaches the outside but never the host's loopback services (which listen on the
host's 127.0.0.1, a different loopback from the step's). `--network host` shares the host's
namespace, `--network none` gives a namespace with only loopback.

The pieces are shoal's own (rtnl.py for links, addresses and routes, netns.py for pinned
namespaces, nft.py to load a table); the state is a directory under the run root:

    build-net/lock           flock held while allocating, releasing and tearing down
    build-net/ip-<addr>      an address in use: `<owner pid>-<start time> <step>`
    build-net/use-<owner>    a build in progress (keeps the bridge between its steps)
    build-net/ns/<step>      the step's pinned namespace

The bridge and its nftables table exist while some build uses them: the last one to leave
removes them, and a step whose build was killed is collected by the next step or build.
Nothing is tagged with the network store's owner alias: `shoal network` reconciliation must
not take a running build's bridge for a leftover of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

from shoal import paths
from shoal.errors import InvalidArgument, ShoalError

MODES = ("default", "host", "none")
POOL = ipaddress.IPv4Network("10.127.0.0/16")   # next to shoal's default pool (10.128.0.0/12)
SUBNET_SIZE = 24
MTU = 1500


def check_mode(mode: str) -> str:
    """`--network` of `shoal build` (and compose build.network): default (or bridge), host, none."""
    if mode in ("", "default", "bridge"):
        return "default"
    if mode in MODES:
        return mode
    raise InvalidArgument(f"network mode {mode!r} is not supported by shoal build: use default, host or none")


def _suffix() -> str:
    from shoal.network.store import root_suffix

    return root_suffix()


def bridge_name() -> str:
    suffix = _suffix()
    return f"shoalbuild{suffix[:5]}" if suffix else "shoalbuild0"   # IFNAMSIZ: 15 at most


def table_name() -> str:
    suffix = _suffix()
    return f"shoalbuild-{suffix}" if suffix else "shoalbuild"


def state_dir() -> Path:
    return paths.run_root() / "build-net"


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    d = state_dir()
    (d / "ns").mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d
    finally:
        os.close(fd)


def _subnet() -> ipaddress.IPv4Network:
    """The bridge's subnet: kept while the bridge exists; else the first /24 of POOL that
    neither a host route nor a shoal network uses (SHOAL_BUILD_SUBNET overrides)."""
    from shoal.network import ipam, rtnl
    from shoal.network.store import NetworkStore, host_routes

    idx = rtnl.index(bridge_name())
    if idx is not None:
        with rtnl.Rtnl() as nl:
            for addr, prefixlen in nl.addresses(idx):
                return ipaddress.IPv4Network(f"{addr}/{prefixlen}", strict=False)
    wanted = os.environ.get("SHOAL_BUILD_SUBNET")
    if wanted:
        return ipam.parse_subnet(wanted, "SHOAL_BUILD_SUBNET")
    taken = list(NetworkStore().subnets().values()) + host_routes()
    for candidate in POOL.subnets(new_prefix=SUBNET_SIZE):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise ShoalError(f"no free subnet for the build network in {POOL}: set SHOAL_BUILD_SUBNET")


def _nft_script(subnet: ipaddress.IPv4Network) -> str:
    table, br = table_name(), bridge_name()
    return (
        f"table ip {table}\ndelete table ip {table}\n"
        f"table ip {table} {{\n"
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f'\t\tip saddr {subnet} oifname != "{br}" masquerade\n\t}}\n'
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 5; policy accept;\n"
        f'\t\tiifname "{br}" accept\n'
        f'\t\toifname "{br}" ct state established,related accept\n'
        f'\t\toifname "{br}" drop\n\t}}\n'
        "}\n"
    )


# Bridges this process has set up (name -> ifindex): later steps of the build find them
# as they were, and skip the nft runs (three processes a step otherwise).
_ready: dict[str, int] = {}


def _ensure_bridge(subnet: ipaddress.IPv4Network) -> int:
    from shoal.network import nft, rtnl

    name = bridge_name()
    idx = rtnl.index(name)
    if idx is not None and _ready.get(name) == idx:
        return idx
    with rtnl.Rtnl() as nl:
        if idx is None:
            nl.add_bridge(name, MTU)
            idx = rtnl.index(name)
            if idx is None:
                raise ShoalError(f"bridge {name} vanished after it was made")
            nl.add_address(idx, str(subnet.network_address + 1), subnet.prefixlen)
        nl.set_up(idx)
    nft.enable_forwarding()
    nft.run_nft(_nft_script(subnet))
    nft.docker_user_accept(True)   # Docker's FORWARD drop policy: shoal* interfaces excepted
    _ready[name] = idx
    return idx


def _unused(d: Path) -> bool:
    return not any(d.glob("ip-*")) and not any(d.glob("use-*"))


def _teardown() -> None:
    from shoal.network import nft, rtnl

    _ready.pop(bridge_name(), None)

    with rtnl.Rtnl() as nl:
        nl.delete(bridge_name())
    table = table_name()
    with contextlib.suppress(ShoalError):
        nft.run_nft(f"table ip {table}\ndelete table ip {table}\n")


def _owner_alive(text: str) -> bool:
    from shoal.runtime.build_step import owner_alive

    return owner_alive(text.split(" ", 1)[0])


def _collect(d: Path) -> None:
    """Addresses and namespaces of steps whose build is gone (killed)."""
    from shoal.network import netns

    for f in d.glob("use-*"):
        if not _owner_alive(f.name[4:]):
            f.unlink(missing_ok=True)
    live_steps = set()
    for f in d.glob("ip-*"):
        try:
            text = f.read_text()
        except FileNotFoundError:
            continue
        if _owner_alive(text):
            live_steps.add(text.split(" ", 1)[-1].strip())
        else:
            f.unlink(missing_ok=True)
    for pin in (d / "ns").iterdir():
        if pin.name not in live_steps:
            netns.remove(pin)   # the namespace goes, and its veth pair with it


def collect_leftovers() -> None:
    """What killed builds left: their steps' namespaces and addresses, and the bridge and
    table once nothing uses them."""
    if not state_dir().is_dir():
        return
    with _locked() as d:
        _collect(d)
        if _unused(d):
            _teardown()


def _veth(step: str) -> str:
    return "shoalb" + hashlib.sha256(step.encode()).hexdigest()[:9]


@contextlib.contextmanager
def step_netns(mode: str, step: str) -> Iterator[str | None]:
    """The namespace a RUN step joins: None to share the host's (`host`), "" for a fresh one
    with only loopback (`none`), or the path of one on the build bridge (`default`)."""
    from shoal.network import netns, rtnl
    from shoal.runtime.build_step import owner_tag

    if mode == "host":
        yield None
        return
    if mode == "none":
        yield ""
        return
    pin = ip_file = None
    try:
        with _locked() as d:
            _collect(d)
            subnet = _subnet()
            br = _ensure_bridge(subnet)
            gateway = subnet.network_address + 1
            used = {f.name[3:] for f in d.glob("ip-*")}
            for host in subnet.hosts():
                if host != gateway and str(host) not in used:
                    ip_file = d / f"ip-{host}"
                    ip_file.write_text(f"{owner_tag()} {step}\n")
                    break
            else:
                raise ShoalError(f"the build network {subnet} is full")
            pin = netns.create(d / "ns" / step)
            veth = _veth(step)
            fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with rtnl.Rtnl() as nl:
                    mac = "02:5b:" + ":".join(f"{b:02x}" for b in host.packed)
                    nl.add_veth(veth, "eth0", peer_netns_fd=fd, peer_mac=mac, mtu=MTU, master=br)
            finally:
                os.close(fd)

            def inside() -> None:
                idx = rtnl.index("eth0")
                if idx is None:
                    raise ShoalError(f"eth0 is missing in {pin}")
                with rtnl.Rtnl() as nl:
                    nl.add_address(idx, str(host), subnet.prefixlen)
                    nl.set_up(idx)
                    nl.add_default_route(str(gateway), idx)

            netns.run_in(pin, inside)
        yield str(pin)
    finally:
        with _locked() as d:
            if pin is not None:
                netns.remove(pin)
            if ip_file is not None:
                ip_file.unlink(missing_ok=True)
            if _unused(d):
                _teardown()


@contextlib.contextmanager
def build_in_use(mode: str) -> Iterator[None]:
    """Keeps the bridge and its table from one RUN step to the next for the whole build
    (`use-<owner>`); the last user to leave removes them."""
    from shoal.runtime.build_step import owner_tag

    if mode != "default":
        yield
        return
    with _locked() as d:
        marker = d / f"use-{owner_tag()}"
        marker.touch()
    try:
        yield
    finally:
        with _locked() as d:
            marker.unlink(missing_ok=True)
            if _unused(d):
                _teardown()
