"""`shoal network create|ls|inspect|rm|prune|reconcile`, with docker's flags, columns and words."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from shoal.cli.format import FORMAT_HELP, print_formatted, render_template
from shoal.errors import InvalidArgument, ShoalError
from shoal.ids import short_id
from shoal.network.store import Network, NetworkStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("network", help="Manage networks")
    nsub = parser.add_subparsers(dest="network_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    p = nsub.add_parser("create", help="Create a network")
    p.add_argument("name", metavar="NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help="Driver to manage the Network (bridge, overlay)")
    p.add_argument("--subnet", action="append", default=[], help="Subnet in CIDR format that represents a network segment")
    p.add_argument("--gateway", action="append", default=[], help="IPv4 Gateway for the master subnet")
    p.add_argument("--ip-range", action="append", default=[], help="Allocate container ip from a sub-range")
    p.add_argument("--internal", action="store_true", help="Restrict external access to the network")
    p.add_argument("--attachable", action="store_true", help="Enable manual container attachment")
    p.add_argument("--label", action="append", default=[], help="Set metadata on a network")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("--scope", default="", help="Control the network's scope")
    p.add_argument("--ipv6", action="store_true", help="Enable IPv6 networking")
    p.set_defaults(func=_create)

    p = nsub.add_parser("ls", aliases=["list"], help="List networks")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help='Provide filter values (e.g. "driver=bridge")')
    p.add_argument("--format", default=None, metavar="string", help=FORMAT_HELP)
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate the output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display network IDs")
    p.set_defaults(func=_ls)

    p = nsub.add_parser("inspect", help="Display detailed information on one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.add_argument("-f", "--format", default=None, help="Format the output using the given Go template")
    p.add_argument("-v", "--verbose", action="store_true", help="Verbose output for diagnostics")
    p.set_defaults(func=_inspect)

    p = nsub.add_parser("rm", aliases=["remove"], help="Remove one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.add_argument("-f", "--force", action="store_true", help="Do not error if the network does not exist")
    p.set_defaults(func=_rm)

    p = nsub.add_parser("prune", help="Remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'label=<key>=<value>')")
    p.set_defaults(func=_prune)

    from shoal.cli.netconnect import register_verbs  # connect, disconnect

    register_verbs(nsub)

    p = nsub.add_parser("reconcile", help="Remove shoal network objects the state no longer accounts for (after a crash)")
    p.set_defaults(func=_reconcile)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} {item!r}: want KEY=VALUE")
        out[key] = value if sep else ""
    return out


def _one(values: list[str], flag: str) -> str:
    if len(values) > 1:
        raise InvalidArgument(f"{flag}: shoal networks have one IPv4 subnet (got {len(values)})")
    return values[0] if values else ""


def _in_swarm() -> bool:
    """Swarm mode, where Docker makes an overlay network swarm-scoped: this node has joined a
    swarm (its state file), or the CLI's context is a swarm node over TCP. Outside it, an
    overlay network is this node's own, as before (attachable by `run`)."""
    from shoal import paths
    from shoal.api import contexts

    return contexts.endpoint().is_tcp or (paths.state_root() / "swarm" / "state.json").exists()


def _swarm_scoped(args: argparse.Namespace) -> bool:
    """`--scope swarm`, or `-d overlay` in swarm mode, makes a swarm network: the manager's,
    through its control API, as dockerd hands such a request to swarmkit."""
    return args.scope == "swarm" or (args.driver == "overlay" and _in_swarm())


def _create_swarm(args: argparse.Namespace) -> int:
    from shoal.api.client import connect

    subnet, gateway, ip_range = (_one(args.subnet, "--subnet"), _one(args.gateway, "--gateway"),
                                 _one(args.ip_range, "--ip-range"))
    if (gateway or ip_range) and not subnet:
        # docker/cli's consolidateIpam: a gateway or range needs the subnet it belongs to.
        raise InvalidArgument(f"no matching subnet for gateway {gateway}" if gateway
                              else f"no matching subnet for range {ip_range}")
    spec = {"name": args.name, "driver": args.driver if args.driver != "bridge" else "overlay",
            "driver_opts": _pairs(args.opt, "option"), "internal": args.internal, "attachable": args.attachable,
            "labels": _pairs(args.label, "label"),
            "ipam": {"config": [{"subnet": subnet, "gateway": gateway, "ip_range": ip_range}] if subnet else []}}
    with connect() as client:
        print(client.post("/networks", {"spec": spec})["Id"])
    return 0


def _swarm_network(ref: str) -> dict[str, Any] | None:
    """The manager's record of the swarm network `ref` names, in swarm mode (outside it a
    network is this node's own, and no daemon is asked; but the ingress network is always the
    manager's: shoald makes it for a service publishing a port, manager/ingress.py)."""
    from shoal.api.client import connect
    from shoal.errors import NotFound

    if not _in_swarm():
        local = NetworkStore().find(ref)
        if local is None or (local.name, local.driver) != ("ingress", "overlay"):
            return None
    with connect() as client:
        try:
            found: dict[str, Any] = client.get(f"/networks/{ref}")
            return found
        except NotFound:
            return None
        except ShoalError as exc:
            from shoal.manager.swarmnode import NOT_A_MANAGER

            if str(exc) != NOT_A_MANAGER:
                raise
            return None  # a worker: as dockerd there, the networks it has a copy of (its containers)


def swarm_inspect_dict(record: dict[str, Any]) -> dict[str, Any]:
    """`docker network inspect` of a swarm network, from the manager's record (what a node
    made of it locally, its containers, is on that node)."""
    spec = record.get("spec") or {}
    config = [{k: v for k, v in (("Subnet", p.get("subnet")), ("Gateway", p.get("gateway")),
                                 ("IPRange", p.get("ip_range"))) if v}
              for p in (spec.get("ipam") or {}).get("config") or ()]
    alloc = record.get("allocation") or {}  # the manager's allocator's (manager/allocator.py)
    if not config and alloc.get("subnet"):
        config = [{"Subnet": alloc["subnet"], "Gateway": alloc["gateway"]}]
    from shoal.cli.dockerjson import go_time  # time.Time's JSON, as moby's network.Inspect has it

    return {
        "Name": record["name"], "Id": record["id"], "Created": go_time(record.get("created_at") or 0),
        "Scope": "swarm", "Driver": spec.get("driver") or "overlay", "EnableIPv6": False,
        "IPAM": {"Driver": (spec.get("ipam") or {}).get("driver") or "default", "Options": None, "Config": config},
        "Internal": bool(spec.get("internal")), "Attachable": bool(spec.get("attachable")), "Ingress": bool(spec.get("ingress")),
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": None,
        "Options": _swarm_options(record), "Labels": dict(spec.get("labels") or {}),
        **({"Peers": record["peers"]} if "peers" in record else {}),
    }


def _swarm_options(record: dict[str, Any]) -> dict[str, str]:
    """The driver's options, with the VNI the manager gave an overlay network (Docker's own)."""
    from shoal.network.overlay import VXLANID_OPTION

    options = dict((record.get("spec") or {}).get("driver_opts") or {})
    if record.get("vni"):
        options[VXLANID_OPTION] = str(record["vni"])
    return options


def _local_only(args: argparse.Namespace, verb: str) -> None:
    """Through a tcp:// context only swarm networks are made and removed (by the manager, as
    `docker network create -d overlay` against one); a node's own networks are not yet."""
    if getattr(args, "node", None) is not None:
        raise ShoalError(f"shoal network {verb} of a local network against a remote node is not supported yet: "
                         "a swarm network (-d overlay) is, through the manager; run it on that node, or go back "
                         "with `shoal context use default`")


def _create(args: argparse.Namespace) -> int:
    if args.ipv6:
        raise InvalidArgument("--ipv6: shoal networks are IPv4 only")
    if _swarm_scoped(args):
        return _create_swarm(args)
    _local_only(args, "create")
    net = NetworkStore().create(
        args.name, driver=args.driver, subnet=_one(args.subnet, "--subnet"), gateway=_one(args.gateway, "--gateway"),
        ip_range=_one(args.ip_range, "--ip-range"), internal=args.internal, attachable=args.attachable,
        labels=_pairs(args.label, "label"), options=_pairs(args.opt, "option"), scope=args.scope)
    print(net.id)
    return 0


def filter_networks(nets: list[Network], items: list[str]) -> list[Network]:
    """moby's FilterNetworks (cli/filters.py): driver and scope exactly, name as a regexp, id by
    prefix, every label; then dangling (no container, no service, not predefined) and type
    (custom|builtin)."""
    from shoal.cli.filters import FilterError, Filters

    f = Filters.parse(items).validate(("dangling", "driver", "id", "label", "name", "scope", "type"))
    out = [n for n in nets
           if f.exact_match("driver", n.driver) and f.match("name", n.name) and f.fuzzy_match("id", n.shown_id)
           and f.match_kv_list("label", n.labels) and f.exact_match("scope", n.scope)]
    dangling = f.get("dangling")
    if dangling:
        if len(dangling) > 1:
            raise FilterError('got more than one value for filter key "dangling"')
        if dangling[0] not in ("0", "false", "1", "true"):
            raise FilterError('invalid value for filter \'dangling\', must be "true" (or "1"), or "false" (or "0")')
        only = dangling[0] in ("1", "true")
        out = [n for n in out if only == (not n.predefined and not getattr(n, "endpoints", None)
                                          and not getattr(n, "reserved", None))]
    if f.contains("type"):
        for value in f.get("type"):
            if value not in ("custom", "builtin"):
                raise FilterError(f"invalid filter: 'type'='{value}'")
        out = [n for n in out if ("builtin" if n.predefined else "custom") in f.get("type")]
    return out


def _row(net: Network, no_trunc: bool) -> dict[str, Any]:
    return {
        "ID": net.shown_id if no_trunc else short_id(net.shown_id),
        "Name": net.name,
        "Driver": net.driver,
        "Scope": net.scope,
        "IPv6": "false",
        "Internal": str(net.internal).lower(),
        "CreatedAt": net.created,
        "Labels": ",".join(f"{k}={v}" for k, v in net.labels.items()),
    }


def _with_swarm_networks(local: list[Network]) -> list[Network]:
    """In swarm mode, the swarm's networks as Docker lists them: by the cluster's ID (the one
    `inspect` and `rm` use), scope swarm, also those this node has no copy of yet."""
    from shoal.api.client import connect
    from shoal.runtime.inspect import rfc3339

    from shoal.manager.swarmnode import NOT_A_MANAGER

    with connect() as client:
        try:
            records = {r["name"]: r for r in client.get("/networks")}
        except ShoalError as exc:
            if str(exc) != NOT_A_MANAGER:
                raise
            # A worker: as dockerd there, its own networks and its copies of the swarm's (those
            # its tasks are on), not the cluster's list.
            return sorted(local, key=lambda n: n.name)
    merged = [dataclasses.replace(n, id=records[n.name]["id"], scope="swarm") if n.name in records else n
              for n in local]
    have = {n.name for n in local}
    for name, record in records.items():
        if name in have:
            continue
        spec = record.get("spec") or {}
        merged.append(Network(id=record["id"], name=name, driver=spec.get("driver") or "overlay", scope="swarm",
                              created=rfc3339(record.get("created_at") or 0), internal=bool(spec.get("internal")),
                              attachable=bool(spec.get("attachable")), labels=dict(spec.get("labels") or {})))
    return sorted(merged, key=lambda n: n.name)  # docker/cli sorts the list by name


def _node_networks(args: argparse.Namespace) -> list[Network]:
    """The networks of the node the CLI acts on: this machine's, or those of the node a tcp://
    context names (its own and its copies of the swarm's), as `docker network ls` lists
    dockerd's wherever DOCKER_HOST points."""
    if getattr(args, "node", None) is None:
        return NetworkStore().list()
    from shoal.cli import remote

    return [Network.from_dict(raw) for raw in remote.client(args).get("/node/networks")]


class _Listed:
    """NetworkStore's lookups (by name, ID, unique ID prefix) over a node's list of networks."""

    def __init__(self, nets: list[Network]) -> None:
        self._nets = nets

    def list(self) -> list[Network]:
        return self._nets

    get = NetworkStore.get
    find = NetworkStore.find


def _ls(args: argparse.Namespace) -> int:
    nets = _node_networks(args)
    if _in_swarm():
        nets = _with_swarm_networks(nets)
    nets = filter_networks(nets, args.filter)
    rows = [_row(n, args.no_trunc) for n in nets]
    print_formatted(args.format, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"], ["ID", "Name", "Driver", "Scope"], rows,
                    quiet_field="ID", quiet=args.quiet)
    return 0


def inspect_dict(net: Network) -> dict[str, Any]:
    """The shape of `docker network inspect`."""
    config: list[dict[str, str]] = []
    if net.subnet:
        entry = {"Subnet": net.subnet, "Gateway": net.gateway}
        if net.ip_range:
            entry["IPRange"] = net.ip_range
        config.append(entry)
    prefix = net.subnet.split("/")[1] if net.subnet else "32"
    containers = {
        cid: {"Name": ep.name, "EndpointID": "", "MacAddress": ep.mac, "IPv4Address": f"{ep.ip}/{prefix}", "IPv6Address": ""}
        for cid, ep in net.endpoints.items()
    }
    options = dict(net.options)
    if net.has_bridge:
        options.setdefault("com.docker.network.bridge.name", net.bridge)
        options.setdefault("com.docker.network.driver.mtu", str(net.mtu))
    return {
        "Name": net.name, "Id": net.shown_id, "Created": net.created, "Scope": net.scope, "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None if net.predefined else {}, "Config": config},
        "Internal": net.internal, "Attachable": net.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": containers, "Options": options, "Labels": dict(net.labels),
    }


def _inspect(args: argparse.Namespace) -> int:
    store: Any = NetworkStore() if getattr(args, "node", None) is None else _Listed(_node_networks(args))
    found, status = [], 0
    for ref in args.networks:
        try:
            record = _swarm_network(ref)
            if record is None:
                found.append(inspect_dict(store.get(ref)))
                continue
            obj = swarm_inspect_dict(record)
            local = store.find(record["name"])
            if local is not None and local.id == (record.get("allocation") or {}).get("network_id", local.id):
                # As dockerd: the containers (tasks, `run --network` ones) on this node's copy.
                obj["Containers"] = inspect_dict(local)["Containers"]
            found.append(obj)
        except ShoalError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    if args.format:
        for obj in found:
            print(render_template(args.format, obj))
    elif found or status == 0:
        print(json.dumps(found, indent=4))
    return status


_INGRESS_WARNING = (
    "WARNING! Before removing the routing-mesh network, make sure all the nodes in your swarm run the same docker "
    "engine version. Otherwise, removal may not be effective and functionality of newly create ingress networks will "
    "be impaired.\nAre you sure you want to continue?")


def _rm(args: argparse.Namespace) -> int:
    from shoal.network import cleanup  # imports pyroute2 (a quarter second): only when needed

    status = 0
    for ref in args.networks:
        try:
            record = _swarm_network(ref)
            if record is not None and (record.get("spec") or {}).get("ingress"):
                from shoal.cli.prune import confirm

                if not confirm(_INGRESS_WARNING):  # docker/cli network rm's ingressWarning
                    continue
            if record is not None:
                from shoal.api.client import connect

                with connect() as client:
                    client.delete(f"/networks/{ref}")
            else:
                _local_only(args, "rm")
                cleanup.remove_network(ref)
            print(ref)
        except ShoalError as exc:
            if args.force and "not found" in str(exc):
                continue
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    return status


def _prune(args: argparse.Namespace) -> int:
    """docker/cli network prune: its question, `Deleted Networks:` (no reclaimed-space line, as
    Docker's); filters until, label, label! (cli/system.py network_prune, shared with
    `system prune`)."""
    from shoal.cli.prune import confirm
    from shoal.cli.system import pruned, prune_filters

    filters = prune_filters(args.filter, ("until", "label", "label!"))
    if not args.force and not confirm("WARNING! This will remove all custom networks not used by at least one "
                                      "container.\nAre you sure you want to continue?"):
        return 0
    _, output = pruned(args, "networks", False, filters)  # here, or by the node a context names
    if output:
        print(output)  # Fprintln of a text ending in a newline: a blank line after, as Docker's
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from shoal.network import cleanup

    for line in cleanup.reconcile():
        print(line)
    return 0


for _handler in (_ls, _inspect, _create, _rm, _prune):
    _handler.on_node = True  # type: ignore[attr-defined] # a tcp:// context: that node's networks (cli/main.py)
