"""What a local cluster is made of, written down before anything is made, so that `cluster rm`
(or a create that failed half-way) can find and remove every piece: one JSON file per cluster.

    <state root>/clusters/NAME/cluster.json     this record
    <state root>/clusters/NAME/K/               node K's SHOAL_ROOT (its store, images, certs)
    <state root>/clusters/NAME/K/shoald.log     node K's shoald output
    <run root>/clusters/NAME/K/                 node K's SHOAL_RUN (its socket, task netns)
    /run/netns/NAME-K                           node K's network namespace
    cgroup /shoal-NAME-K/ in every hierarchy    node K's containers (SHOAL_CGROUP_PARENT)
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.errors import InvalidArgument, NotFound, ShoalError

# RFC 2544's benchmarking range: no real network uses it, so nodes never shadow a real route.
DEFAULT_POOL = ipaddress.ip_network("198.18.0.0/15")
DEFAULT_PREFIX = 24
MAX_NODES = 64
# A cluster name becomes netns names NAME-K and a cgroup shoal-NAME-K: keep it plain.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


@dataclass
class NodeRecord:
    index: int
    hostname: str  # also the netns name, NAME-K
    address: str
    root: str
    run: str
    cgroup_parent: str
    host_veth: str

    @property
    def netns(self) -> str:
        return self.hostname

    @property
    def socket(self) -> Path:
        return Path(self.run) / "shoal.sock"

    @property
    def log(self) -> Path:
        return Path(self.root) / "shoald.log"

    @property
    def pid_file(self) -> Path:
        return Path(self.run).parent / f"{self.index}.pid"


@dataclass
class ClusterRecord:
    name: str
    subnet: str
    bridge: str
    bridge_address: str
    created: float
    nodes: list[NodeRecord] = field(default_factory=list)
    supervisor_pid: int = 0

    @property
    def dir(self) -> Path:
        return clusters_dir() / self.name

    @property
    def run_dir(self) -> Path:
        return run_dir() / self.name

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterRecord:
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        return cls(**{**data, "nodes": nodes})


def clusters_dir() -> Path:
    return paths.state_root() / "clusters"


def run_dir() -> Path:
    return paths.run_root() / "clusters"


def validate_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f'invalid cluster name "{name}": use 1 to 31 lower-case letters, digits and "-", '
                              f"starting with a letter or digit")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:9]


def bridge_name(name: str) -> str:
    return f"shoalc{_short(name)}"  # 15 characters: IFNAMSIZ


def veth_name(name: str, index: int) -> str:
    return f"shoalv{_short(f'{name}-{index}')}"


def record_path(name: str) -> Path:
    # Every command naming a cluster (rm, start, stop) comes here: a name such as
    # ../../../tmp/x would read a record from outside the state root and act on what it says
    # (its processes killed, its directories removed).
    validate_name(name)
    return clusters_dir() / name / "cluster.json"


def save(record: ClusterRecord) -> None:
    paths.ensure_private_dir(record.dir)
    paths.write_file(record_path(record.name), json.dumps(record.to_dict(), indent=2) + "\n")


def load(name: str) -> ClusterRecord:
    path = record_path(name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f'no cluster named "{name}" (no {path})') from None
    except ValueError as exc:
        raise ShoalError(f"{path}: {exc}") from exc
    return ClusterRecord.from_dict(data)


def names() -> list[str]:
    try:
        return sorted(d.name for d in clusters_dir().iterdir() if (d / "cluster.json").is_file())
    except FileNotFoundError:
        return []


def _routes_in_use() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (and so its addresses' subnets), from /proc/net/route."""
    out = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(parts[7], 16).to_bytes(4, "little"))
        if int(mask) == 0:
            continue  # the default route overlaps everything; it is not a conflict
        out.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    return out


def choose_subnet(wanted: str | None, nodes: int) -> ipaddress.IPv4Network:
    """`wanted` checked, or the first /24 of 198.18.0.0/15 no cluster and no host route uses.
    Node K gets host address K, the bridge the last host address."""
    taken: list[Any] = _routes_in_use()
    for other in names():
        try:
            taken.append(ipaddress.ip_network(load(other).subnet))
        except ShoalError:
            continue
    if wanted:
        try:
            net = ipaddress.ip_network(wanted, strict=True)
        except ValueError as exc:
            raise InvalidArgument(f"--subnet {wanted}: {exc}") from exc
        if not isinstance(net, ipaddress.IPv4Network):
            raise InvalidArgument(f"--subnet {wanted}: an IPv4 subnet is needed")
        if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified or net.is_reserved:
            raise InvalidArgument(f"--subnet {wanted}: not usable for nodes (loopback, link-local, multicast "
                                  f"or reserved)")
        if net.num_addresses - 2 < nodes + 1:
            raise InvalidArgument(f"--subnet {wanted}: too small for {nodes} nodes and the bridge")
        clash = next((t for t in taken if t.overlaps(net)), None)
        if clash is not None:
            raise InvalidArgument(f"--subnet {wanted} overlaps {clash}, already in use on this host")
        return net
    for net in DEFAULT_POOL.subnets(new_prefix=DEFAULT_PREFIX):
        if not any(t.overlaps(net) for t in taken):
            return net
    raise ShoalError(f"no free /{DEFAULT_PREFIX} left in {DEFAULT_POOL}: give one with --subnet")


def new_record(name: str, nodes: int, subnet: ipaddress.IPv4Network, now: float) -> ClusterRecord:
    hosts = list(subnet.hosts())
    record = ClusterRecord(name=name, subnet=str(subnet), bridge=bridge_name(name),
                           bridge_address=str(hosts[-1]), created=now)
    for k in range(1, nodes + 1):
        record.nodes.append(NodeRecord(
            index=k, hostname=f"{name}-{k}", address=str(hosts[k - 1]),
            root=str(clusters_dir() / name / str(k)), run=str(run_dir() / name / str(k)),
            cgroup_parent=f"shoal-{name}-{k}", host_veth=veth_name(name, k)))
    return record
