"""Networks on disk: one JSON file per network under <state_root>/networks, and one file lock.

Every change (create, remove, endpoint and address allocation, published ports) happens inside
`lock()`, an exclusive flock shared by every shoal process on the host; the kernel state is then
re-derived from these files (see nft.py and cleanup.py), so the files are the source of truth.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import ids, paths
from shoal.errors import Conflict, InvalidArgument, NotFound
from shoal.network import ipam

PREDEFINED = ("bridge", "host", "none")
DRIVERS = ("bridge", "overlay")
OVERLAY_MTU = 1450  # room for the 50 bytes of VXLAN encapsulation when the network spans nodes
BRIDGE_MTU = 1500
DEFAULT_BRIDGE_DEVICE = "shoal0"


@dataclass
class PublishedPort:
    """One published port of a container endpoint (`shoal run -p`)."""

    protocol: str  # tcp | udp
    published: int
    target: int
    host_ip: str = ""  # "" = every address of the node, 127.0.0.1 included
    mode: str = "ingress"  # ingress | host
    keep_client_ip: bool = True  # DNAT only; False also masquerades (the backend sees the gateway)


@dataclass
class Endpoint:
    container_id: str
    name: str
    ip: str
    mac: str
    veth: str  # host side of the veth pair, in the bridge
    aliases: list[str] = field(default_factory=list)
    hostname: str = ""
    ports: list[PublishedPort] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        data = dict(data)
        data["aliases"] = list(data.get("aliases", []))
        data["ports"] = [PublishedPort(**p) for p in data.get("ports", [])]
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["aliases"] = list(self.aliases)
        data["ports"] = [dict(p.__dict__) for p in self.ports]
        return data


@dataclass
class Network:
    id: str
    name: str
    driver: str  # bridge | overlay | host | null
    scope: str  # local | swarm
    created: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    mtu: int = BRIDGE_MTU
    bridge: str = ""  # the kernel bridge device; "" for host/none
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    reserved: dict[str, str] = field(default_factory=dict)  # ip -> owner (service VIPs)
    # endpoint (container) name -> the address the swarm manager allocated for it (a task's,
    # manager/allocator.py): taken by that container's attach, kept from everyone else's.
    assigned: dict[str, str] = field(default_factory=dict)
    # A swarm network's copy: the manager's record ID (model/records.py Network.id), the one
    # Docker shows for it on every node. `id` stays the copy's own (allocator.copy_id: a network
    # removed and made again alike is the same copy, whose record ID then changes), naming its
    # file, bridge and VXLAN device; "" for a node's own network.
    swarm_id: str = ""

    @property
    def shown_id(self) -> str:
        """The ID users see and give (`network ls|inspect`, a container's NetworkID)."""
        return self.swarm_id or self.id

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def has_bridge(self) -> bool:
        return self.driver in DRIVERS

    def subnet_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def used_ips(self) -> list[str]:
        return [e.ip for e in self.endpoints.values()] + list(self.reserved) + list(self.assigned.values())

    def to_dict(self) -> dict[str, Any]:
        # asdict() is generic and slow; a network with a few hundred endpoints is saved on every
        # attach and detach.
        data = dict(self.__dict__)
        for key in ("labels", "options", "reserved", "assigned"):
            data[key] = dict(data[key])
        data["endpoints"] = {k: e.to_dict() for k, e in self.endpoints.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        known = cls.__dataclass_fields__
        fields = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if k in known}
        fields["endpoints"] = {k: Endpoint.from_dict(v) for k, v in data.get("endpoints", {}).items()}
        return cls(**fields)


_files: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_files_lock = threading.Lock()


def _read_json(path: str) -> dict[str, Any]:
    """A network file's JSON, decoded again only when the file was replaced: every attach and
    every manager pass reads all networks, each with every endpoint in it."""
    st = os.stat(path)
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _files_lock:
        hit = _files.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    with _files_lock:
        if len(_files) > 4096:  # networks come and go; a long-lived shoald must not grow forever
            _files.clear()
        _files[path] = (key, data)
    return data


def _forget_missing(root: Path, present: set[str]) -> None:
    """Drop the cached JSON of this root's network files that are gone (a stack's network is
    new each deploy, and a CLI `network rm` is not seen by shoald's delete): each held the
    network with all its endpoints until 4,096 had piled up (bench/bench_soak.py)."""
    prefix = os.path.join(str(root), "")
    with _files_lock:
        for path in [p for p in _files if p.startswith(prefix) and p not in present]:
            del _files[path]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def owner_tag() -> str:
    """Written as the alias of every link shoal makes, so that a cleanup only ever touches the
    links of its own state root (tests run beside a real installation)."""
    return f"shoal:{paths.state_root()}"


def root_suffix() -> str:
    """"" for the default state root, else a short hash naming kernel objects of this root."""
    import hashlib

    root = str(paths.state_root())
    return "" if root == "/var/lib/shoal" else hashlib.sha256(root.encode()).hexdigest()[:6]


def default_bridge_device() -> str:
    suffix = root_suffix()
    return f"shoal0-{suffix}" if suffix else DEFAULT_BRIDGE_DEVICE


def bridge_name(network_id: str) -> str:
    return f"shoal-{network_id[:9]}"  # IFNAMSIZ: 15 characters at most


_thread_lock = threading.RLock()
_depth = 0
_lock_fd: int | None = None


class NetworkStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.state_root() / "networks"

    # --- locking and files ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes (flock) and re-entrant within this one."""
        global _depth, _lock_fd
        with _thread_lock:
            if _depth == 0:
                paths.ensure_private_dir(self.root)
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                _lock_fd = fd
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
                if _depth == 0 and _lock_fd is not None:
                    fcntl.flock(_lock_fd, fcntl.LOCK_UN)
                    os.close(_lock_fd)
                    _lock_fd = None

    def _path(self, network_id: str) -> Path:
        return self.root / f"{network_id}.json"

    def save(self, net: Network) -> None:
        paths.ensure_private_dir(self.root)
        tmp = self._path(net.id).with_suffix(".tmp")
        paths.write_file(tmp, json.dumps(net.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, self._path(net.id))

    def _load_all(self) -> list[Network]:
        try:
            entries = sorted((e for e in os.scandir(self.root) if e.name.endswith(".json")), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        nets = []
        for entry in entries:
            try:
                nets.append(Network.from_dict(_read_json(entry.path)))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # removed meanwhile; a torn file cannot happen (rename), but be safe
        _forget_missing(self.root, {e.path for e in entries})
        return nets

    # --- queries -------------------------------------------------------------------------------

    def list(self) -> list[Network]:
        nets = self._load_all()
        if not all(any(n.name == name for n in nets) for name in PREDEFINED):
            self.ensure_predefined()
            nets = self._load_all()
        return sorted(nets, key=lambda n: n.name)

    def get(self, ref: str) -> Network:
        """By exact name, full ID, or unique ID prefix (as docker resolves networks). A swarm
        network's copy answers to its swarm ID (the one shown) and, exactly, to its own."""
        nets = self.list()
        for n in nets:
            if n.name == ref or n.id == ref or (n.swarm_id and n.swarm_id == ref):
                return n
        matches = [n for n in nets if ref and n.shown_id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def find(self, ref: str) -> Network | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def subnets(self, exclude: str = "") -> dict[str, ipaddress.IPv4Network]:
        return {n.name: n.subnet_net() for n in self._load_all() if n.subnet and n.id != exclude}

    # --- changes -------------------------------------------------------------------------------

    def ensure_predefined(self) -> None:
        existing = {n.name for n in self._load_all()}
        if all(name in existing for name in PREDEFINED):
            return
        with self.lock():
            existing = {n.name for n in self._load_all()}
            for name in PREDEFINED:
                if name in existing:
                    continue
                if name == "bridge":
                    subnet = ipam.allocate_subnet(self.subnets(), host_routes())
                    net = Network(id=ids.new_id(), name="bridge", driver="bridge", scope="local", created=_now(),
                                  subnet=str(subnet), gateway=str(ipam.default_gateway(subnet)),
                                  bridge=default_bridge_device(),
                                  options={"com.docker.network.bridge.default_bridge": "true"})
                else:
                    net = Network(id=ids.new_id(), name=name, driver="host" if name == "host" else "null",
                                  scope="local", created=_now())
                self.save(net)

    def create(self, name: str, driver: str = "bridge", subnet: str = "", gateway: str = "", ip_range: str = "",
               internal: bool = False, attachable: bool = False, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, scope: str = "") -> Network:
        """Validate everything first, then write one file: nothing is half-created on error.
        Kernel objects (the bridge) appear on first attach."""
        if driver not in DRIVERS:
            raise InvalidArgument(f"plugin \"{driver}\" not found: shoal networks use the bridge or overlay driver")
        if not name or not _valid_name(name):
            raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if ip_range and not subnet:
            raise InvalidArgument(f"invalid ip-range {ip_range} for network {name}: it needs --subnet")
        if gateway and not subnet:
            raise InvalidArgument(f"invalid gateway {gateway} for network {name}: it needs --subnet")
        options = dict(options or {})
        from shoal.network.overlay import check_options  # overlay.py imports this module

        check_options(name, driver, options)  # `--opt encrypted` never made into a plain network
        mtu = OVERLAY_MTU if driver == "overlay" else BRIDGE_MTU
        if driver == "overlay" and "encrypted" in options:
            from shoal.network.wireguard import ENCRYPTED_MTU

            mtu = ENCRYPTED_MTU  # VXLAN inside WireGuard: 110 bytes of headers, not 50
        if "com.docker.network.driver.mtu" in options:
            try:
                mtu = int(options["com.docker.network.driver.mtu"])
            except ValueError:
                raise InvalidArgument(f"invalid mtu {options['com.docker.network.driver.mtu']!r} for network {name}") from None
        with self.lock():
            self.ensure_predefined()
            if any(n.name == name for n in self._load_all()):
                raise Conflict(f"network with name {name} already exists")
            if subnet:
                net_subnet = ipam.parse_subnet(subnet)
                ipam.check_user_subnet(name, net_subnet, self.subnets())
            else:
                net_subnet = ipam.allocate_subnet(self.subnets(), host_routes())
            gw = ipaddress.IPv4Address(gateway) if gateway else ipam.default_gateway(net_subnet)
            rng = ipam.parse_subnet(ip_range, "ip-range") if ip_range else None
            ipam.check_layout(name, net_subnet, gw, rng)
            network_id = ids.new_id()
            net = Network(id=network_id, name=name, driver=driver, scope=scope or ("swarm" if driver == "overlay" else "local"),
                          created=_now(), subnet=str(net_subnet), gateway=str(gw), ip_range=str(rng) if rng else "",
                          internal=internal, attachable=attachable, labels=dict(labels or {}), options=options,
                          mtu=mtu, bridge=bridge_name(network_id))
            self.save(net)
            return net

    def adopt(self, record: dict[str, Any]) -> Network:
        """A swarm network as its manager made it (same copy ID, swarm ID, name, driver, subnet,
        gateway, labels, options), on a node that runs a task attached to it; the existing one
        when it is here already (given the record's swarm ID). Its kernel objects appear on first attach, as for create()."""
        with self.lock():
            self.ensure_predefined()
            existing = self.find(record["id"])
            if existing is not None:
                if existing.swarm_id != record.get("swarm_id", existing.swarm_id):
                    # The same copy, now of a record made again alike: its ID is the one shown.
                    existing = self.update(existing.id, lambda n: setattr(n, "swarm_id", record["swarm_id"]))
                return existing
            if self.find(record["name"]) is not None:
                raise Conflict(f"network with name {record['name']} already exists")
            net = Network.from_dict({k: v for k, v in record.items() if k not in ("endpoints", "reserved", "assigned")})
            net.bridge = bridge_name(net.id)
            taken = ipam.overlapping(net.subnet_net(), self.subnets())
            if taken:
                raise Conflict(f"network {net.name}: subnet {net.subnet} overlaps with network {taken} on this node")
            self.save(net)
            return net

    def delete(self, net: Network) -> None:
        self._path(net.id).unlink(missing_ok=True)
        with _files_lock:
            _files.pop(str(self._path(net.id)), None)

    def update(self, ref: str, change: Any) -> Network:
        """Load, change (a callable taking the Network), save; all under the lock."""
        with self.lock():
            net = self.get(ref)
            change(net)
            self.save(net)
            return net


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None


def host_routes() -> list[ipaddress.IPv4Network]:
    """Destinations the host already routes (except the default route and shoal's own bridges):
    a pool subnet overlapping one of them would shadow a real network."""
    from shoal.network import rtnl

    routes = []
    with rtnl.Rtnl() as nl:
        for dst, dst_len, oif in nl.routes():
            if dst_len == 0:
                continue
            try:
                if oif and socket.if_indextoname(oif).startswith("shoal"):
                    continue
            except OSError:
                pass  # the link went away meanwhile: count its route all the same
            routes.append(ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False))
    return routes
