"""The allocator: everything a swarm network hands out, taken inside the manager's store
transactions from what the store holds, never from a node's network files (the store may be
another machine's, etcd's, next):

- a swarm network's subnet, gateway and VNI (allocate_network), in the transaction that writes
  the network's record (`network create`, a stack's, ingress);
- a service's VIPs (allocate_endpoint), in the transaction that writes the service (a clash
  fails `stack deploy` itself, nothing stored);
- a NEW task's address on each of its networks (reconcile), after which it becomes PENDING
  (swarmkit's `pending task scheduling`), so two tasks on two nodes never get the same address
  on one network: the node is given the address with the task (`task.networks`) and attaches
  the container with it (agent/netglue.py, network/attach.py), as swarmkit's allocator fills a
  task's network attachments before the scheduler sees it.

Every node, the manager's own included, makes its copy of a network from the record
(node_records, sent in its assignments; network/store.py adopt)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import ShoalError
from shoal.model.cluster import Task, TaskState
from shoal.store.base import Transaction


@dataclass
class NetworkSpace:
    """What the allocator needs of one network: its subnet, gateway, range, and the addresses
    taken outside the task records (VIPs, containers that are not tasks)."""

    name: str
    subnet: str
    gateway: str
    ip_range: str = ""
    taken: list[str] = field(default_factory=list)


# network name -> its space; None for a network with no addresses to give (host, none).
Networks = Callable[[str], NetworkSpace | None]


def service_vips(tx: Transaction, skip: str = "") -> dict[str, set[str]]:
    """network name -> the VIPs the stored services hold on it (but service `skip`'s)."""
    out: dict[str, set[str]] = {}
    for svc in tx.list("service"):
        if svc["id"] == skip:
            continue
        for vip in (svc.get("endpoint") or {}).get("vips") or ():
            if vip.get("addr"):
                out.setdefault(vip["network"], set()).add(vip["addr"].split("/")[0])
    return out


def _space(raw: dict[str, Any], vips: dict[str, set[str]]) -> NetworkSpace | None:
    alloc = raw.get("allocation") or {}
    if not alloc.get("subnet"):
        return None
    return NetworkSpace(name=raw["name"], subnet=alloc["subnet"], gateway=alloc["gateway"],
                        ip_range=alloc.get("ip_range") or "", taken=sorted(vips.get(raw["name"], ())))


def store_networks(tx: Transaction) -> Networks:
    """The store's networks as reconcile needs them; read on the first look only (a pass with
    no NEW task on a network reads nothing)."""
    spaces: dict[str, NetworkSpace | None] | None = None

    def lookup(name: str) -> NetworkSpace | None:
        nonlocal spaces
        if spaces is None:
            vips = service_vips(tx)
            spaces = {raw["name"]: _space(raw, vips) for raw in tx.list("network")}
        return spaces.get(name)

    return lookup


def _held(tx: Transaction) -> tuple[dict[str, set[str]], dict[str, int]]:
    """network name -> addresses held by tasks that are not finished (a finished task's
    address is free again), and network name -> the highest address any task record has
    (finished ones too), where the next search starts."""
    held: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    for raw in tx.list("task"):
        finished = TaskState.parse(raw["status"]["state"]) > TaskState.RUNNING
        for attachment in raw.get("networks") or []:
            for addr in attachment.get("addresses") or []:
                ip = addr.split("/")[0]
                name = attachment["network"]
                last[name] = max(last.get(name, 0), int(ipaddress.IPv4Address(ip)))
                if not finished:
                    held.setdefault(name, set()).add(ip)
    # Containers `run --network` attached to an attachable network (controlapi/attachments.py)
    # hold their address until they are detached: same pool, same serial order.
    for raw in tx.list("attachment"):
        for addr in raw.get("addresses") or []:
            ip = addr.split("/")[0]
            name = raw["network"]
            last[name] = max(last.get(name, 0), int(ipaddress.IPv4Address(ip)))
            held.setdefault(name, set()).add(ip)
    # An attachment's record goes when it is detached; where the serial order had got to stays.
    for raw in tx.list(CURSOR_KIND):
        last[raw["network"]] = max(last.get(raw["network"], 0), int(raw.get("last") or 0))
    return held, last


# The serial order's place per network as the attachments left it: network record ID -> {network
# (name), last (the highest address given, as an integer)}.
CURSOR_KIND = "address_cursor"


def held_addresses(tx: Transaction) -> dict[str, set[str]]:
    """network name -> addresses unfinished tasks hold, on every node (a new VIP avoids them)."""
    return _held(tx)[0]


def _serial(name: str, subnet: ipaddress.IPv4Network, gateway: str, ip_range: ipaddress.IPv4Network | None,
            used: set[str], after: int) -> ipaddress.IPv4Address:
    """The first free address after `after`, wrapping round (libnetwork's serial allocation
    for swarm networks): a just-freed address is the last to be given again, so a finished
    task's container has left its node's network long before another task gets its address."""
    from shoal.network import ipam

    space = ip_range or subnet
    first, last = int(space.network_address), int(space.broadcast_address)
    if space.prefixlen < 31:
        first, last = first + 1, last - 1
    taken = {int(ipaddress.IPv4Address(u)) for u in used}
    taken |= {int(ipaddress.IPv4Address(gateway)), int(subnet.network_address), int(subnet.broadcast_address)}
    start = after + 1 if first <= after < last else first
    for value in (*range(start, last + 1), *range(first, start)):
        if value not in taken:
            return ipaddress.IPv4Address(value)
    return ipam.allocate_ip(name, subnet, ipaddress.IPv4Address(gateway), ip_range, used)  # raises: full


def _allocate(task: Task, networks: Networks, held: dict[str, set[str]], last: dict[str, int]) -> str:
    """Fill task.networks with one address per network; "" or the reason it failed."""
    out: list[dict[str, Any]] = []
    for attachment in task.spec.get("networks") or []:
        name = attachment["target"]
        space = networks(name)
        if space is None or not space.subnet:
            continue
        subnet = ipaddress.IPv4Network(space.subnet)
        used = held.setdefault(name, set())
        rng = ipaddress.IPv4Network(space.ip_range) if space.ip_range else None
        try:
            ip = _serial(name, subnet, space.gateway, rng, used | set(space.taken), last.get(name, 0))
        except ShoalError as exc:
            return str(exc)
        used.add(str(ip))
        last[name] = int(ip)
        out.append({"network": name, "addresses": [f"{ip}/{subnet.prefixlen}"],
                    "aliases": list(attachment.get("aliases") or [])})
    task.networks = out
    return ""


def allocate_attachment(tx: Transaction, raw: dict[str, Any]) -> str:
    """The address (`ip/prefix`) of a container attaching to the network `raw` (its store record):
    the next free one in the serial order tasks take theirs in, none that a task, another
    attachment or a service's VIP holds, in the caller's transaction."""
    space = _space(raw, service_vips(tx))
    if space is None:
        raise ShoalError(f"network {raw['name']} has no addresses to give")
    held, last = _held(tx)
    subnet = ipaddress.IPv4Network(space.subnet)
    rng = ipaddress.IPv4Network(space.ip_range) if space.ip_range else None
    ip = _serial(space.name, subnet, space.gateway, rng, held.get(space.name, set()) | set(space.taken),
                 last.get(space.name, 0))
    cursor = {"id": raw["id"], "network": space.name, "last": int(ip)}
    if tx.get(CURSOR_KIND, raw["id"]) is None:
        tx.create(CURSOR_KIND, cursor)
    else:
        tx.update(CURSOR_KIND, cursor, expect_version=None)
    return f"{ip}/{subnet.prefixlen}"


def collect_attachments(tx: Transaction) -> None:
    """Attachments of nodes the store no longer has (`node rm`) are freed: nothing of that node
    will ever detach them; the serial places of removed networks go."""
    cursors = tx.list(CURSOR_KIND)
    if cursors:  # a removed network's serial place goes with it
        networks = {raw["id"] for raw in tx.list("network")}
        for raw in cursors:
            if raw["id"] not in networks:
                tx.delete(CURSOR_KIND, raw["id"])
    found = tx.list("attachment")
    if not found:
        return
    nodes = {raw["id"] for raw in tx.list("node")}
    for raw in found:
        if raw.get("node_id") not in nodes:
            tx.delete("attachment", raw["id"])


def reconcile(tx: Transaction, now: float, networks: Networks | None = None) -> None:
    collect_attachments(tx)
    found: tuple[dict[str, set[str]], dict[str, int]] | None = None
    for raw in tx.list("task"):
        if raw["status"]["state"] != TaskState.NEW.text:
            continue
        task = Task.from_dict(raw)
        if task.desired_state > TaskState.COMPLETE:  # a job's task is desired COMPLETE from the start
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
        else:
            if networks is not None and task.spec.get("networks"):
                if found is None:
                    found = _held(tx)
                failed = _allocate(task, networks, *found)
                if failed:
                    # Stays NEW and is looked at again on the next pass (swarmkit keeps such a
                    # task in its allocator's queue); the reason shows in `service ps`.
                    if task.status.err != failed:
                        task.status.err = failed
                        tx.update("task", task.to_dict())
                    continue
            task.advance(TaskState.PENDING, "pending task scheduling", now=now)
        tx.update("task", task.to_dict())


# ---- VXLAN IDs ------------------------------------------------------------------------------------
# swarmkit's allocator gives each overlay network a VXLAN ID (VNI) from 4096 up (below is left to
# the host's own VXLANs) to 2^24-1, the field's width; the network keeps it in Docker's option.
VNI_FIRST = 4096
VNI_LAST = (1 << 24) - 1


def vnis_in_use(options: list[dict[str, str]]) -> set[int]:
    from shoal.network.overlay import vni_of

    return {v for v in (vni_of(o) for o in options) if v}


def allocate_vni(network: str, used: set[int], first: int | None = None, last: int | None = None) -> int:
    """The lowest VNI no other network holds; a clear error when the pool is exhausted."""
    first, last = first or VNI_FIRST, last or VNI_LAST
    for vni in range(first, last + 1):
        if vni not in used:
            return vni
    raise ShoalError(f"could not allocate a VXLAN ID (VNI) for network {network}: "
                     f"the pool {first}-{last} is exhausted ({len(used)} networks hold one)")


def reserve_vni(network: str, options: dict[str, str], used: set[int],
                first: int | None = None, last: int | None = None) -> dict[str, str]:
    """`options` with the network's VNI: the one given (Docker honours a vxlanid_list opt), checked
    free and in range, else a new one."""
    from shoal.errors import Conflict, InvalidArgument
    from shoal.network.overlay import VXLANID_OPTION, vni_of

    first, last = first or VNI_FIRST, last or VNI_LAST
    given = vni_of(options)
    if given:
        if not first <= given <= last:
            raise InvalidArgument(f"network {network}: VXLAN ID {given} is out of the range {first}-{last}")
        if given in used:
            raise Conflict(f"network {network}: VXLAN ID {given} is in use by another network")
        return dict(options)
    return {**options, VXLANID_OPTION: str(allocate_vni(network, used, first, last))}


# ---- networks -------------------------------------------------------------------------------------

def network_subnets(tx: Transaction) -> dict[str, ipaddress.IPv4Network]:
    """network name -> the subnet the store's networks hold."""
    return {raw["name"]: ipaddress.IPv4Network(raw["allocation"]["subnet"])
            for raw in tx.list("network") if (raw.get("allocation") or {}).get("subnet")}


def network_vnis(tx: Transaction) -> set[int]:
    return vnis_in_use([(raw.get("allocation") or {}).get("options") or {} for raw in tx.list("network")])


def allocate_network(tx: Transaction, spec: Any, avoid: dict[str, ipaddress.IPv4Network] | None = None,
                     routes: list[ipaddress.IPv4Network] | None = None,
                     pending: dict[str, Any] | None = None) -> Any:
    """A new swarm network's allocation (model/records.py NetworkAllocation): its subnet (the
    one given, refused when it overlaps another; else the default pools' first free one), its
    gateway and its VNI (overlay), from the store's networks. `avoid`: the subnets the manager's
    own node uses for networks of its own, and `routes` its host routes: a subnet there could
    not be made on that node (a hint from the node, not allocation state). `pending`: name ->
    the allocations made earlier in this request, not written yet."""
    from shoal.errors import InvalidArgument
    from shoal.model.records import NetworkAllocation
    from shoal.network import ipam
    from shoal.network.overlay import check_options
    from shoal.network.store import BRIDGE_MTU, DRIVERS, OVERLAY_MTU, _now, _valid_name

    name = spec.name
    label = spec.compose_name or name
    driver = spec.driver or "overlay"
    if driver not in DRIVERS:
        raise InvalidArgument(f"plugin \"{driver}\" not found: shoal networks use the bridge or overlay driver")
    if not _valid_name(name):
        raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if spec.ipam.driver not in ("", "default"):
        raise InvalidArgument(f"network {label}: ipam driver {spec.ipam.driver!r} is not supported (only the default)")
    if len(spec.ipam.config) > 1:
        raise InvalidArgument(f"network {label}: shoal networks have one IPv4 subnet, ipam.config lists {len(spec.ipam.config)}")
    pool = spec.ipam.config[0] if spec.ipam.config else None
    options = dict(spec.driver_opts)
    check_options(name, driver, options)  # `--opt encrypted` never made into a plain network
    mtu = OVERLAY_MTU if driver == "overlay" else BRIDGE_MTU
    if driver == "overlay" and "encrypted" in options:
        try:  # VXLAN inside WireGuard (network/wireguard.py, where this kernel can have it)
            from shoal.network.wireguard import ENCRYPTED_MTU  # type: ignore[import-not-found, unused-ignore]

            mtu = ENCRYPTED_MTU
        except ImportError:
            pass  # no encrypted data path: check_options above has refused the network
    if "com.docker.network.driver.mtu" in options:
        try:
            mtu = int(options["com.docker.network.driver.mtu"])
        except ValueError:
            raise InvalidArgument(f"invalid mtu {options['com.docker.network.driver.mtu']!r} for network {name}") from None
    if pool is not None and (pool.ip_range or pool.gateway) and not pool.subnet:
        raise InvalidArgument(f"invalid {'ip-range' if pool.ip_range else 'gateway'} for network {name}: it needs --subnet")
    pending = pending or {}
    taken = {**(avoid or {}), **network_subnets(tx),
             **{n: ipaddress.IPv4Network(a.subnet) for n, a in pending.items()}}
    if pool is not None and pool.subnet:
        subnet = ipam.parse_subnet(pool.subnet)
        ipam.check_user_subnet(name, subnet, taken)
    else:
        subnet = ipam.allocate_subnet(taken, routes or ())
    gateway = ipaddress.IPv4Address(pool.gateway) if pool is not None and pool.gateway else ipam.default_gateway(subnet)
    rng = ipam.parse_subnet(pool.ip_range, "ip-range") if pool is not None and pool.ip_range else None
    ipam.check_layout(name, subnet, gateway, rng)
    if driver == "overlay":
        options = reserve_vni(name, options, network_vnis(tx) | vnis_in_use([a.options for a in pending.values()]))
    alloc = NetworkAllocation(network_id="", subnet=str(subnet), gateway=str(gateway),
                              ip_range=str(rng) if rng else "", options=options, mtu=mtu, created=_now())
    alloc.network_id = copy_id(spec, alloc)
    return alloc


def copy_id(spec: Any, alloc: Any) -> str:
    """The ID of every node's copy of the network: derived from what the network is (name,
    driver, flags, labels and its allocation), so a network removed and made again alike (a
    `stack rm` and deploy at once: the same lowest free subnet and VNI) is the same copy on a
    node whose old tasks still hold it, as when the manager's copy was reused by name, and
    not a second one that must wait for the first to go."""
    import hashlib
    import json

    what = {"name": spec.name, "driver": spec.driver or "overlay", "internal": bool(spec.internal),
            "attachable": bool(spec.attachable), "labels": dict(spec.labels), "subnet": alloc.subnet,
            "gateway": alloc.gateway, "ip_range": alloc.ip_range, "options": alloc.options, "mtu": alloc.mtu}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def node_record(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The network as a node makes its copy of it (network/store.py Network's fields): the
    record's spec and allocation, `id` the copy's (copy_id) and `swarm_id` the record's, the one
    every node shows; None for a record with no allocation yet."""
    alloc = raw.get("allocation")
    if not alloc:
        return None
    spec = raw.get("spec") or {}
    driver = spec.get("driver") or "overlay"
    return {"id": alloc["network_id"], "swarm_id": raw["id"], "name": raw["name"], "driver": driver,
            "scope": "swarm" if driver == "overlay" else "local", "created": alloc.get("created") or "",
            "subnet": alloc["subnet"], "gateway": alloc["gateway"], "ip_range": alloc.get("ip_range") or "",
            "internal": bool(spec.get("internal")), "attachable": bool(spec.get("attachable")),
            "labels": dict(spec.get("labels") or {}), "options": dict(alloc.get("options") or {}),
            "mtu": int(alloc.get("mtu") or 1500)}


def node_records(networks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> node_record of each stored network (the dispatcher's, for the nodes' copies)."""
    out = {}
    for raw in networks:
        record = node_record(raw)
        if record is not None:
            out[raw["name"]] = record
    return out


# ---- service endpoints ----------------------------------------------------------------------------

def allocate_endpoint(tx: Transaction, service_id: str, spec: dict[str, Any],
                      current: dict[str, Any] | None = None,
                      new_networks: dict[str, dict[str, Any]] | None = None,
                      given: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """The service's endpoint as stored on its record: one VIP on each attached network with
    addresses (vip mode; a VIP it has already is kept), and its ports as the spec publishes
    them. A new VIP is no address a live task, another service or `given` (VIPs this same
    request gave first) holds. `new_networks`: records being written in this transaction."""
    mode = (spec.get("endpoint") or {}).get("mode", "vip")
    records = {raw["name"]: raw for raw in tx.list("network")}
    records.update(new_networks or {})
    had = {v["network"]: v["addr"] for v in (current or {}).get("vips") or () if v.get("addr")}
    vips: list[dict[str, str]] = []
    if mode == "vip":
        held: dict[str, set[str]] | None = None
        others: dict[str, set[str]] | None = None
        for attachment in spec.get("networks") or ():
            raw = records.get(attachment["target"])
            space = _space(raw, {}) if raw is not None else None
            if space is None:
                continue  # host, none: a service there uses its node's own network (no VIP)
            if space.name in had:
                vips.append({"network": space.name, "addr": had[space.name]})
                continue
            if held is None or others is None:
                held, others = held_addresses(tx), service_vips(tx, skip=service_id)
            from shoal.network import ipam

            used = held.get(space.name, set()) | others.get(space.name, set()) | (given or {}).get(space.name, set())
            ip = ipam.allocate_ip(space.name, ipaddress.IPv4Network(space.subnet),
                                  ipaddress.IPv4Address(space.gateway),
                                  ipaddress.IPv4Network(space.ip_range) if space.ip_range else None, used)
            if given is not None:
                given.setdefault(space.name, set()).add(str(ip))
            vips.append({"network": space.name, "addr": str(ip)})
    ports = [{"protocol": p.get("protocol", "tcp"), "target": int(p["target"]),
              "published": int(p.get("published") or 0), "mode": p.get("publish_mode", "ingress"),
              "keep_client_ip": True}
             for p in (spec.get("endpoint") or {}).get("ports") or ()]
    _dynamic_ports(tx, service_id, ports, current, given)
    return {"mode": mode, "vips": vips, "ports": ports}


# swarmkit's portallocator: an ingress port published as 0 (`ports: ["6379"]`, `-p 6379`) gets
# one of these, as Docker's routing mesh does; a host-mode 0 stays 0 (the node picks at start).
DYNAMIC_PORTS = range(30000, 32768)


def _dynamic_ports(tx: Transaction, service_id: str, ports: list[dict[str, Any]],
                   current: dict[str, Any] | None, given: dict[str, set[str]] | None) -> None:
    """Fill in the ingress ports published as 0: the port the service had for the same target
    and protocol is kept (swarmkit reconcilePortConfigs: an update or a redeploy does not move
    it), else the first of 30000-32767 no service holds (`given`: ports this request gave)."""
    wanted = [p for p in ports if p["mode"] == "ingress" and not p["published"]]
    if not wanted:
        return
    used: set[tuple[str, int]] = {(p["protocol"], p["published"]) for p in ports if p["published"]}
    for svc in tx.list("service"):
        if svc["id"] == service_id:
            continue
        for p in ((svc.get("endpoint") or {}).get("ports") or ()):
            if p.get("published"):
                used.add((p.get("protocol", "tcp"), int(p["published"])))
        for p in ((svc.get("spec") or {}).get("endpoint") or {}).get("ports") or ():
            if p.get("published"):
                used.add((p.get("protocol", "tcp"), int(p["published"])))
    for key in (given or {}).get(_PORTS_GIVEN, ()):
        protocol, _, port = key.partition("/")
        used.add((protocol, int(port)))
    # What this service had: ports the spec leaves to the manager, by (protocol, target).
    had: dict[tuple[str, int], list[int]] = {}
    for p in (current or {}).get("ports") or ():
        if p.get("mode", "ingress") == "ingress" and p.get("published") in DYNAMIC_PORTS:
            had.setdefault((p.get("protocol", "tcp"), int(p["target"])), []).append(int(p["published"]))
    for p in wanted:
        keep = [n for n in had.get((p["protocol"], p["target"]), []) if (p["protocol"], n) not in used]
        if keep:
            p["published"] = keep[0]
            had[(p["protocol"], p["target"])].remove(keep[0])
        else:
            free = next((n for n in DYNAMIC_PORTS if (p["protocol"], n) not in used), None)
            if free is None:  # idm's ErrNoBitAvailable as swarmkit's allocator words it
                raise ShoalError(f"could not allocate a {p['protocol']} port for target port {p['target']}: "
                                 f"all ports from {DYNAMIC_PORTS.start} to {DYNAMIC_PORTS.stop - 1} are in use")
            p["published"] = free
        used.add((p["protocol"], p["published"]))
        if given is not None:
            given.setdefault(_PORTS_GIVEN, set()).add(f"{p['protocol']}/{p['published']}")


_PORTS_GIVEN = "\0ports"  # `given`'s entry for published ports (its other keys are network names)
