"""`shoal node ls|ps|inspect|update|rm|promote|demote`, as docker/cli's cli/command/node prints
them (formatter.go's columns: ID with ` *` for the node the CLI talks to, HOSTNAME, STATUS,
AVAILABILITY, MANAGER STATUS, ENGINE VERSION)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shoal.cli.format import FORMAT_HELP
from shoal.errors import InvalidArgument, ShoalError

NODE_HEADERS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION")
NODE_FIELDS = ("ID", "Hostname", "Status", "Availability", "ManagerStatus", "EngineVersion")


def _client() -> Any:
    from shoal.api.client import connect

    return connect()


def _pretty(word: str) -> str:
    """formatter.PrettyPrint: the first letter upper case."""
    return word[:1].upper() + word[1:]


def node_row(node: dict[str, Any], self_id: str) -> dict[str, str]:
    manager = node.get("manager_status")
    reach = ""
    if node.get("role") == "manager" and manager:
        reach = "Leader" if manager.get("leader") else str(manager.get("reachability", ""))
    status = (node.get("status") or {}).get("state", "") or node.get("state", "")
    return {"ID": f"{node['id']} {'*' if node['id'] == self_id else ' '}",
            "Self": "true" if node["id"] == self_id else "false",
            "Hostname": node.get("hostname", ""), "Status": _pretty(status),
            "Availability": _pretty(node.get("availability", "")), "ManagerStatus": _pretty(reach),
            "EngineVersion": (node.get("engine") or {}).get("engine_version", "") or node.get("engine_version", "")}


def _self_id(client: Any) -> str:
    """This node's ID, as docker/cli reads it (Info's Swarm.NodeID). On a worker the request
    that follows is refused by the daemon, in its words ("Error response from daemon: This node
    is not a swarm manager...")."""
    return str(client.get("/swarm/info")["NodeID"])


def _label_match(labels: dict[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def filter_nodes(nodes: list[dict[str, Any]], filters: list[str]) -> list[dict[str, Any]]:
    """`node ls -f`: id, name (hostname), role, membership, node.label and label (engine labels);
    several values of one key match any of them, as Docker's filters."""
    from shoal.cli.filters import FilterError, Filters

    # docker's flag parsing, then moby's checks (the daemon's errors: exit 1)
    by_key = Filters.parse(filters).validate(("id", "name", "role", "membership", "node.label", "label")).fields
    for value in by_key.get("role", []):
        if value not in ("manager", "worker"):
            raise FilterError(f"Invalid role filter value: {value}")
    for value in by_key.get("membership", []):
        if value not in ("accepted", "pending"):
            raise FilterError(f"Invalid membership filter value: {value}")

    def keep(node: dict[str, Any]) -> bool:
        checks = {
            "id": lambda v: node["id"].startswith(v),
            "name": lambda v: node.get("hostname", "").startswith(v),
            "role": lambda v: node.get("role") == v,
            "membership": lambda v: v == "accepted",
            "node.label": lambda v: _label_match(node.get("labels") or {}, v),
            "label": lambda v: _label_match((node.get("engine") or {}).get("labels") or {}, v),
        }
        return all(any(checks[k](v) for v in values) for k, values in by_key.items())

    return [n for n in nodes if keep(n)]


def _ls(args: argparse.Namespace) -> int:
    from shoal.cli.format import print_formatted
    from shoal.cli.swarmfmt import natural_key

    with _client() as client:
        nodes = filter_nodes(client.get("/nodes"), args.filter)  # first, as docker/cli's NodeList
        self_id = _self_id(client)
    nodes.sort(key=lambda n: natural_key(n.get("hostname", "")))
    rows = [node_row(n, self_id) for n in nodes]
    if args.quiet:
        for node in nodes:
            print(node["id"])
        return 0
    print_formatted(args.format, NODE_HEADERS, NODE_FIELDS, rows)
    return 0


def _resolve_all(client: Any, refs: list[str]) -> list[dict[str, Any]]:
    return [client.get(f"/nodes/{ref}") for ref in refs]


def _ps(args: argparse.Namespace) -> int:
    from shoal.cli.service import filter_tasks, node_names, print_tasks

    with _client() as client:
        self_id = _self_id(client)
        wanted = {n["id"] for n in _resolve_all(client, args.nodes or [self_id])}
        tasks = [t for t in client.get("/tasks") if t.get("node_id") in wanted]
        print_tasks(client, filter_tasks(tasks, args.filter, node_names(client)), args, quiet_full=True)
    return 0


def _bytes_size(size: float) -> str:
    from shoal.cli.format import bytes_size

    return bytes_size(size)


def pretty(node: dict[str, Any]) -> str:
    """nodeInspectPrettyTemplate, for the fields shoal has."""
    import datetime

    status = node.get("status") or {}
    lines = [f"ID:\t\t\t{node['id']}"]
    if node.get("labels"):
        lines.append("Labels:")
        lines += [f" - {k}{'=' + v if v else ''}" for k, v in sorted(node["labels"].items())]
    created = datetime.datetime.fromtimestamp(node.get("created_at", 0), datetime.timezone.utc)
    fraction = f"{created.microsecond:06d}".rstrip("0")  # Go's time.Time String()
    joined = created.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "") + " +0000 UTC"
    lines += [f"Hostname:              \t{node.get('hostname', '')}",
              f"Joined at:             \t{joined}",
              "Status:", f" State:\t\t\t{_pretty(status.get('state', ''))}"]
    if status.get("message"):
        lines.append(f" Message:              \t{_pretty(status['message'])}")
    lines.append(f" Availability:         \t{_pretty(node.get('availability', ''))}")
    if status.get("addr"):
        lines.append(f" Address:\t\t{status['addr']}")
    manager = node.get("manager_status")
    if manager:
        lines += ["Manager Status:", f" Address:\t\t{manager.get('addr', '')}",
                  f" Raft Status:\t\t{_pretty(manager.get('reachability', ''))}",
                  f" Leader:\t\t{'Yes' if manager.get('leader') else 'No'}"]
    platform = node.get("platform") or {}
    resources = node.get("resources") or {}
    engine = node.get("engine") or {}
    lines += ["Platform:", f" Operating System:\t{platform.get('os', '')}",
              f" Architecture:\t\t{platform.get('architecture', '')}",
              "Resources:", f" CPUs:\t\t\t{int(resources.get('nano_cpus', 0)) // 1_000_000_000}",
              f" Memory:\t\t{_bytes_size(resources['memory_bytes']) if resources.get('memory_bytes') else ''}"]
    if engine.get("plugins"):
        by_type: dict[str, list[str]] = {}
        for plugin in engine["plugins"]:
            by_type.setdefault(plugin.get("type", ""), []).append(plugin.get("name", ""))
        lines.append("Plugins:")
        lines += [f" {k}:\t\t{', '.join(v)}" for k, v in sorted(by_type.items())]
    lines.append(f"Engine Version:\t\t{engine.get('engine_version', '')}")
    if engine.get("labels"):
        lines.append("Engine Labels:")
        lines += [f" - {k}{'=' + v if v else ''}" for k, v in sorted(engine["labels"].items())]
    tls = node.get("tls_info") or {}
    if any(tls.values()):
        lines += ["TLS Info:", " TrustRoot:", tls.get("trust_root", ""),
                  f" Issuer Subject:\t{tls.get('cert_issuer_subject', '')}",
                  f" Issuer Public Key:\t{tls.get('cert_issuer_public_key', '')}"]
    # docker/cli writes the pretty template as it is, tabs and all (no tabwriter: not a table).
    return "\n".join(lines) + "\n"


def _inspect(args: argparse.Namespace) -> int:
    with _client() as client:
        nodes = []
        errors: list[ShoalError] = []
        for ref in args.nodes:
            try:
                nodes.append(client.get(f"/nodes/{ref}"))
            except ShoalError as exc:
                errors.append(exc)
    if args.pretty:
        sys.stdout.write("\n\n".join(pretty(n).rstrip("\n") for n in nodes) + ("\n" if nodes else ""))
    elif args.format:
        from shoal.cli.dockerjson import node as docker_node
        from shoal.cli.format import render_template

        for node in nodes:
            print(render_template(args.format, docker_node(node)))
    else:
        from shoal.cli.dockerjson import dumps, node as docker_node

        # moby's swarm.Node, as `docker node inspect` prints it; --pretty reads the record.
        print(dumps([docker_node(n) for n in nodes]))
    if len(errors) == 1:
        raise errors[0]  # "Error response from daemon: node x not found", as docker prints it
    if errors:
        raise ShoalError("\n".join(str(e) for e in errors))
    return 0


def _label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise InvalidArgument(f"invalid label {text!r}: key=value is expected")
    return key, value


def _update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"LabelAdd": dict(_label(t) for t in args.label_add), "LabelRm": list(args.label_rm)}
    if args.availability is not None:
        body["Availability"] = args.availability
    if args.role is not None:
        body["Role"] = args.role
    with _client() as client:
        labels = client.get(f"/nodes/{args.node}").get("labels") or {}
        for key in args.label_rm:  # docker/cli checks this itself, before asking the daemon
            if key not in labels and key not in body["LabelAdd"]:
                raise ShoalError(f"key {key} doesn't exist in node's labels")
        client.post(f"/nodes/{args.node}/update", body)
    print(args.node)
    return 0


def _role(role: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with _client() as client:
            for ref in args.nodes:
                node = client.get(f"/nodes/{ref}")
                if node.get("role") == role:  # docker/cli names the node by its ID here
                    print(f"Node {node.get('id', ref)} is already a {role}.")
                    continue
                client.post(f"/nodes/{ref}/update", {"Role": role})
                print(f"Node {ref} promoted to a manager in the swarm." if role == "manager"
                      else f"Manager {ref} demoted in the swarm.")
        return 0
    return run


def _rm(args: argparse.Namespace) -> int:
    errors: list[ShoalError] = []
    with _client() as client:
        for ref in args.nodes:
            try:
                client.delete(f"/nodes/{ref}", force="1" if args.force else None)
                print(ref)
            except ShoalError as exc:
                errors.append(exc)
    if errors:
        raise _joined(errors)
    return 0


def _joined(errors: list[ShoalError]) -> ShoalError:
    """docker/cli's errors.Join of each node's error: one line each, the daemon's as the client
    words them (`Error response from daemon: rpc error: code = FailedPrecondition desc = ...`);
    the first line's prefix is main's."""
    def line(exc: ShoalError) -> str:
        return f"{'Error response from daemon' if getattr(exc, 'from_daemon', False) else 'Error'}: {exc}"

    first = errors[0]
    joined = type(first)("\n".join([str(first), *map(line, errors[1:])]))
    return joined


def register(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="Manage Swarm nodes")
    ns = node.add_subparsers(dest="node_command", metavar="COMMAND")
    node.set_defaults(func=lambda _: (node.print_help(), 0)[1])

    p = ns.add_parser("ls", aliases=["list"], help="List nodes in the swarm")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help="Filter output based on conditions provided")
    p.add_argument("--format", metavar="string", help=FORMAT_HELP)
    p.set_defaults(func=_ls)

    p = ns.add_parser("ps", help="List tasks running on one or more nodes, defaults to current node")
    p.add_argument("nodes", nargs="*", metavar="NODE")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", help="Pretty-print tasks using a Go template")
    p.add_argument("--no-resolve", action="store_true", help="Do not map IDs to Names")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display task IDs")
    p.set_defaults(func=_ps)

    p = ns.add_parser("inspect", help="Display detailed information on one or more nodes")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.add_argument("--pretty", action="store_true", help="Print the information in a human friendly format")
    p.add_argument("-f", "--format", help="Format output using a custom template")
    p.set_defaults(func=_inspect)

    p = ns.add_parser("update", help="Update a node")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--availability", help='Availability of the node ("active", "pause", "drain")')
    p.add_argument("--label-add", action="append", default=[], help="Add or update a node label (key=value)")
    p.add_argument("--label-rm", action="append", default=[], help="Remove a node label if exists")
    p.add_argument("--role", help='Role of the node ("worker", "manager")')
    p.set_defaults(func=_update)

    p = ns.add_parser("rm", aliases=["remove"], help="Remove one or more nodes from the swarm")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.add_argument("-f", "--force", action="store_true", help="Force remove a node from the swarm")
    p.set_defaults(func=_rm)

    p = ns.add_parser("promote", help="Promote one or more nodes to manager in the swarm")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.set_defaults(func=_role("manager"))
    p = ns.add_parser("demote", help="Demote one or more nodes from manager in the swarm")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p.set_defaults(func=_role("worker"))
