"""`shoal service create|update|rollback|ls|ps|inspect|rm|scale|logs`, talking to shoald."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shoal.api.client import Client, connect
from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP, print_formatted
from shoal.errors import InvalidArgument, ShoalError


def node_names(client: Client) -> dict[str, str]:
    return {n["id"]: n["hostname"] for n in client.get("/nodes")}


def filter_tasks(tasks: list[dict[str, Any]], filters: list[str],
                 nodes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """moby's GetTasks filters (cli/filters.py): id and name by prefix, node by ID or name,
    desired-state, every label; values of one key OR'd."""
    from shoal.cli.filters import Filters
    from shoal.model.cluster import TaskState

    f = Filters.parse(filters).validate(("id", "name", "label", "service", "node", "desired-state"))
    wanted_states: set[str] = set()
    for value in f.get("desired-state"):
        # docker/cli documents running, shutdown and accepted; moby's newListTasksFilters takes
        # any task state's name and swarmkit's ListTasks matches it exactly: a running job's
        # task is desired `complete`, a restart waiting out its delay `ready`.
        if value.upper() in TaskState.__members__:
            wanted_states.add(TaskState.parse(value).text)
        elif value:
            raise InvalidArgument(f"Invalid desired-state filter: '{value}'")
    names = nodes or {}
    out = []
    for t in tasks:
        if wanted_states and t["desired_state"] not in wanted_states:
            continue
        if f.contains("id") and not any(t["id"].startswith(v) for v in f.get("id")):
            continue
        task_name = f"{t['service_name']}.{t['slot'] or t['node_id']}"
        if f.contains("name") and not any(task_name.startswith(v) for v in f.get("name")):
            continue
        if f.contains("node") and not any(v in (t["node_id"], names.get(t["node_id"])) for v in f.get("node")):
            continue
        if f.contains("service") and not any(v in (t.get("service_id"), t["service_name"]) for v in f.get("service")):
            continue
        if not f.match_kv_list("label", (t.get("spec") or {}).get("labels") or {}):
            continue
        out.append(t)
    return out


def print_tasks(client: Client, tasks: list[dict[str, Any]], args: argparse.Namespace, quiet_full: bool) -> None:
    from shoal.cli.swarmfmt import TASK_FIELDS, TASK_HEADERS, task_rows

    table = not args.format or args.format.startswith("table")
    resolve = not getattr(args, "no_resolve", False)
    rows = task_rows(tasks, node_names(client) if resolve else {}, no_trunc=args.no_trunc, table=table, resolve=resolve)
    if args.quiet:
        for task in task_rows(tasks, {}, no_trunc=quiet_full or args.no_trunc, table=False):
            print(task["ID"])
        return
    print_formatted(args.format, TASK_HEADERS, TASK_FIELDS, rows)


def filter_services(services: list[dict[str, Any]], items: list[str]) -> list[dict[str, Any]]:
    """moby's GetServices filters: id and name by prefix (swarmkit's IDPrefixes, NamePrefixes),
    every label given (`k` or `k=v`), mode exactly (replicated, global, replicated-job, global-job)."""
    from shoal.cli.filters import Filters

    filters = Filters.parse(items).validate(("id", "name", "label", "mode"))
    out = []
    for svc in services:
        spec = svc.get("spec", {})
        if filters.contains("id") and not any(svc["id"].startswith(v) for v in filters.get("id")):
            continue
        if filters.contains("name") and not any(svc["name"].startswith(v) for v in filters.get("name")):
            continue
        if not filters.match_kv_list("label", spec.get("labels") or {}):
            continue
        if not filters.exact_match("mode", spec.get("mode") or "replicated"):
            continue
        out.append(svc)
    return out


def _ls(args: argparse.Namespace) -> int:
    from shoal.cli.swarmfmt import SERVICE_FIELDS, SERVICE_HEADERS, service_rows

    with connect() as client:
        rows = service_rows(filter_services(client.get("/services"), args.filter))
    print_formatted(args.format, SERVICE_HEADERS, SERVICE_FIELDS, rows, quiet_field="ID", quiet=args.quiet)
    return 0


def _match_services(services: list[dict[str, Any]], refs: list[str]) -> tuple[list[str], list[str]]:
    """ps.go createFilter: each name matched by full ID, then full name, then ID prefix (more
    than one is an error); (the IDs found, `no such service: X` for the others)."""
    found: list[str] = []
    missing: list[str] = []
    for ref in refs:
        exact = [s["id"] for s in services if s["id"] == ref] or [s["id"] for s in services if s["name"] == ref]
        prefixed = [s["id"] for s in services if s["id"].startswith(ref)]
        if exact:
            found.append(exact[0])
        elif len(prefixed) > 1:
            raise ShoalError(f"multiple services found with provided prefix: {ref}")
        elif prefixed:
            found.append(prefixed[0])
        else:
            missing.append(f"no such service: {ref}")
    return found, missing


def _ps(args: argparse.Namespace) -> int:
    """runPS: the tasks of the services found; the names not found are docker's client-side
    `no such service: X` lines (after the table when some were found), exit 1."""
    with connect() as client:
        found, missing = _match_services(client.get("/services"), args.service)
        if found:
            tasks: list[dict[str, Any]] = []
            for service_id in dict.fromkeys(found):
                tasks += client.get("/tasks", service=service_id)
            print_tasks(client, filter_tasks(tasks, args.filter, node_names(client)), args, quiet_full=True)
    if missing:
        sys.stdout.flush()
        print("\n".join(missing), file=sys.stderr)
        return 1
    return 0


def _pretty(svc: dict[str, Any], networks: dict[str, str] | None = None) -> str:
    from shoal.cli.servicepretty import pretty

    return pretty(svc, networks or {})


def _inspect(args: argparse.Namespace) -> int:
    if args.pretty and args.format:
        raise InvalidArgument("--format is incompatible with human friendly format")
    from shoal.errors import NotFound

    found: list[dict[str, Any]] = []
    errors: list[str] = []
    with connect() as client:
        for ref in args.service:
            try:
                found.append(client.get(f"/services/{ref}"))
            except NotFound:  # inspect.go's getRef: docker's own words, not the daemon's
                errors.append(f"no such service: {ref}")
        # JSON and --format see moby's swarm.Service (cli/dockerjson.py); --pretty reads the record.
        shaped = [] if args.pretty or not found else _docker_services(client, found)
    # inspect.Inspect: what was found is printed (`[]` when nothing), then every error, exit 1.
    if args.pretty:
        sys.stdout.write("".join(_pretty(s) for s in found))
    elif args.format:
        print_formatted(args.format, (), (), shaped)
    else:
        from shoal.cli.dockerjson import dumps

        print(dumps(shaped))
    if errors:
        sys.stdout.flush()
        raise ShoalError("\n".join(errors))
    return 0


def _docker_services(client: Client, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as `docker service inspect` prints them, with the IDs of the networks,
    secrets and configs they name (Docker keeps IDs where shoal's spec keeps names)."""
    from shoal.cli.dockerjson import service

    ids: dict[str, str] = {n["name"]: n["id"] for n in client.get("/networks")}
    if any(r["spec"].get("secrets") or r["spec"].get("configs") for r in records):
        for path in ("/secrets", "/configs"):
            for obj in client.get(path):
                name = obj.get("name") or (obj.get("Spec") or {}).get("Name")
                if name:
                    ids[name] = obj.get("ID") or obj.get("id") or ""
    return [service(r, ids) for r in records]


def _lookups(client: Client) -> Any:
    """The manager's secret, config and network names, fetched only when a flag names one."""
    from shoal.cli.servicespec import Lookups

    def names(path: str) -> Any:
        return lambda: [o.get("name") or (o.get("Spec") or {}).get("Name") for o in client.get(path)]

    def networks() -> dict[str, str]:
        found = client.get("/networks")
        return {**{n["id"]: n["name"] for n in found}, **{n["name"]: n["name"] for n in found}}

    return Lookups(secrets=names("/secrets"), configs=names("/configs"), networks=networks)


def _inspect_service(client: Client, ref: str) -> dict[str, Any]:
    """The service (ServiceInspectWithRaw: a missing one is the daemon's `service x not found`)."""
    svc: dict[str, Any] = client.get(f"/services/{ref}")
    return svc


def _warnings(result: dict[str, Any] | None) -> None:
    for warning in (result or {}).get("Warnings") or []:
        print(warning, file=sys.stderr)


def _wait(client: Client, ref: str, args: argparse.Namespace) -> int:
    if args.detach:
        return 0
    from shoal.cli.serviceprogress import wait_on_service

    return wait_on_service(client, ref, quiet=bool(args.quiet))


def _create(args: argparse.Namespace) -> int:
    """runCreate: the spec from the flags, the ID on stdout, then the progress unless -d."""
    from shoal.cli.servicespec import registry_auth, spec_from_create
    from shoal.ids import random_name

    with connect() as client:
        spec = spec_from_create(args, _lookups(client))
        if not spec.name:  # the daemon names it, as moby does (namesgenerator)
            spec.name = spec.compose_name = random_name()
        body: dict[str, Any] = {"spec": spec.to_dict()}
        if args.no_resolve_image:  # docker/cli: QueryRegistry false; the image stays unpinned
            body["resolve_image"] = "never"
        if (auth := registry_auth(args, spec.image)) is not None:
            body["registry_auth"] = auth
        result = client.post("/services", body)
        _warnings(result)
        print(result["ID"])
        sys.stdout.flush()
        return _wait(client, result["ID"], args)


def _update(args: argparse.Namespace) -> int:
    """runUpdate: the current spec with the flags applied, sent with the version it was read
    at (a concurrent change is refused, `update out of sequence`)."""
    from shoal.cli.servicespec import apply_update, registry_auth

    with connect() as client:
        svc = _inspect_service(client, args.service)
        spec = apply_update(svc["spec"], args, _lookups(client))
        body = {"version": svc["spec_version"], "spec": spec, "rollback": "previous" if args.rollback else None}
        if args.no_resolve_image:
            body["resolve_image"] = "never"
        if (auth := registry_auth(args, spec["image"])) is not None:
            body["registry_auth"] = auth  # without the flag the service keeps its credentials
        result = client.post(f"/services/{svc['id']}/update", body)
        _warnings(result)
        print(args.service)
        sys.stdout.flush()
        return _wait(client, args.service, args)


def _rollback(args: argparse.Namespace) -> int:
    """runRollback: the manager swaps the spec and the previous one."""
    with connect() as client:
        svc = _inspect_service(client, args.service)
        result = client.post(f"/services/{svc['id']}/update",
                             {"version": svc["spec_version"], "spec": svc["spec"], "rollback": "previous"})
        _warnings(result)
        print(args.service)
        sys.stdout.flush()
        return _wait(client, args.service, args)


def _rm(args: argparse.Namespace) -> int:
    errors = []
    with connect() as client:
        for ref in args.service:
            try:
                client.delete(f"/services/{ref}")
                print(ref)
            except ShoalError as exc:
                errors.append(_shown(exc))
    if errors:  # remove.go: every refusal as the client returned it, joined, exit 1
        sys.stdout.flush()
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


_UINT64_MAX = 2**64 - 1


def _scale_pairs(pairs: list[str]) -> list[tuple[str, str]]:
    """scaleArgs: every argument SERVICE=REPLICAS with both sides, before anything is asked."""
    out = []
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            print(f"invalid scale specifier '{item}'.\nSee 'shoal service scale --help'.\n\n"
                  "Usage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]\n\n"
                  "Scale one or multiple replicated services", file=sys.stderr)
            raise SystemExit(1)
        out.append((name, value))
    return out


def _scale(args: argparse.Namespace) -> int:
    """runScale: each service read, its replicas (or a replicated job's completions) set, `X
    scaled to N`; then the progress of each unless -d. A failure is `SERVICE: error` and the
    others go on; all of them on stderr at the end, exit 1 (errors.Join)."""
    errors: list[str] = []
    scaled: list[str] = []
    pairs = _scale_pairs(args.pairs)
    with connect() as client:
        for name, value in pairs:
            if not value.isdigit() or int(value) > _UINT64_MAX:  # strconv.ParseUint(value, 10, 64)
                why = "value out of range" if value.isdigit() else "invalid syntax"
                errors.append(f'{name}: invalid replicas value {value}: strconv.ParseUint: parsing "{value}": {why}')
                continue
            try:
                svc = client.get(f"/services/{name}")
                if (svc.get("spec") or {}).get("mode", "replicated") not in ("replicated", "replicated-job"):
                    errors.append(f"{name}: scale can only be used with replicated or replicated-job mode")
                    continue
                client.post(f"/services/{svc['id']}/scale", {"replicas": int(value)})
            except ShoalError as exc:
                errors.append(f"{name}: {_shown(exc)}")
                continue
            print(f"{name} scaled to {int(value)}")
            scaled.append(name)
        if not args.detach:  # scale.go: then each service's progress, as update shows it
            from shoal.cli.serviceprogress import wait_on_service

            for name in scaled:
                try:
                    wait_on_service(client, name)
                except ShoalError as exc:
                    errors.append(f"{name}: {_shown(exc)}")
    if errors:
        sys.stdout.flush()
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


def _shown(exc: ShoalError) -> str:
    """An error as docker's client shows it inside another message."""
    return f"Error response from daemon: {exc}" if getattr(exc, "from_daemon", False) else str(exc)


def _logs(args: argparse.Namespace) -> int:
    """`<service>.<slot>.<task id>@<node>    | <line>`, stdout and stderr kept apart (2.7); a
    task's ID (or name) instead of a service's: that task's lines only, as docker/cli's logs.go
    (ServiceInspect, then TaskInspect, then TaskLogs)."""
    if args.tail != "all" and not (args.tail.isdigit()):
        raise InvalidArgument(f'invalid value for --tail: "{args.tail}" (a number of lines, or "all")')
    from shoal.errors import NotFound
    from shoal.image.store import parse_time

    since = _since(args.since) if args.since else None
    with connect() as client:
        try:
            svc = client.get(f"/services/{args.service}")
            path, service_id = f"/services/{args.service}/logs", svc["id"]
            width = len(str(int(svc.get("spec", {}).get("replicas") or 1)))
        except NotFound:
            from shoal.manager.controlapi import resolve_task

            try:
                task = resolve_task(client.get("/tasks"), args.service)
            except NotFound:  # logs.go: neither a service nor a task of that name (printed bare)
                print(f"no such task or service: {args.service}", file=sys.stderr)
                return 1
            path, service_id = f"/tasks/{task['id']}/logs", task["service_id"]
            width = len(str(task.get("slot") or 0))  # getMaxLength(task.Slot)
        params = {"tail": args.tail, "follow": "1" if args.follow else "0"}
        for raw in client.stream_lines(path, **params):
            rec = json.loads(raw)
            if "warning" in rec:  # a node whose logs could not be had
                print(rec["warning"], file=sys.stderr, flush=True)
                continue
            if since is not None and parse_time(rec["time"]) < since:
                continue  # the daemon's Since: lines before it are left out (after --tail)
            out = sys.stderr if rec["stream"] == "stderr" else sys.stdout
            line = rec["line"].rstrip("\n")
            stamp = rec["time"] + " " if args.timestamps else ""
            if args.raw:
                # The daemon's stream as it is (WriteLogStream): with --details, the line's
                # attributes first, swarmkit's three context ones among them.
                details = ""
                if args.details:
                    details = _details({**(rec.get("attrs") or {}), "com.docker.swarm.node.id": rec.get("node_id", ""),
                                        "com.docker.swarm.service.id": service_id,
                                        "com.docker.swarm.task.id": rec["task_id"]}) + " "
                out.write(f"{stamp}{details}{line}\n")
                out.flush()
                continue
            slot = str(rec["slot"]) if rec["slot"] else ""
            task_part = "" if args.no_task_ids else "." + (rec["task_id"] if args.no_trunc else rec["task_id"][:12])
            context = f"{rec['service']}.{slot}{task_part}@{rec['node']}" + " " * (width - len(slot))
            # logs.go's logWriter: the details left once the context's are taken out (the log
            # driver's, none unless its options ask for labels or env), then a space.
            details = ",".join(sorted(f"{k}={v}" for k, v in (rec.get("attrs") or {}).items())) + " " \
                if args.details else ""
            out.write(f"{stamp}{context}    | {details}{line}\n")
            out.flush()
    return 0


def _details(attrs: dict[str, str]) -> str:
    """moby's attrsByteSlice: key=value pairs by key, each part query-escaped, comma-joined."""
    from urllib.parse import quote_plus

    return ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(attrs.items()))


def _since(value: str) -> float:
    """timetypes.GetTimestamp as the client's ServiceLogs reads --since: a Go duration before
    now, unix seconds, or an RFC 3339 time."""
    from shoal.cli.image import parse_until

    try:
        return parse_until(value)
    except InvalidArgument:
        raise ShoalError(f'invalid value for "since": failed to parse value as time or duration: "{value}"') from None


def add_task_list_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("--no-resolve", action="store_true", help="Do not map IDs to Names")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display task IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help="Filter output based on conditions provided")
    p.add_argument("--format", metavar="string", help="Pretty-print tasks using a Go template")


def register(sub: argparse._SubParsersAction) -> None:
    service = sub.add_parser("service", help="Manage swarm services")
    ssub = service.add_subparsers(dest="service_command", metavar="COMMAND")
    service.set_defaults(func=lambda _: (service.print_help(), 0)[1])

    from shoal.cli.serviceflags import add_create_flags, add_update_flags

    p = ssub.add_parser("create", help="Create a new service", usage="shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]")
    add_create_flags(p)
    p.set_defaults(func=_create)

    p = ssub.add_parser("update", help="Update a service", usage="shoal service update [OPTIONS] SERVICE")
    add_update_flags(p)
    p.set_defaults(func=_update)

    p = ssub.add_parser("rollback", help="Revert changes to a service's configuration",
                        usage="shoal service rollback [OPTIONS] SERVICE")
    p.add_argument("-d", "--detach", action="store_true",
                   help="Exit immediately instead of waiting for the service to converge")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress progress output")
    p.add_argument("service", metavar="SERVICE")
    p.set_defaults(func=_rollback)

    for name in ("ls", "list"):
        p = ssub.add_parser(name, help="List services")
        p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                       help="Filter output based on conditions provided")
        p.add_argument("--format", metavar="string", help=FORMAT_HELP)
        p.add_argument("-q", "--quiet", action="store_true", help="Only display IDs")
        p.set_defaults(func=_ls)

    p = ssub.add_parser("ps", help="List the tasks of one or more services")
    p.add_argument("service", nargs="+")
    add_task_list_flags(p)
    p.set_defaults(func=_ps)

    p = ssub.add_parser("inspect", help="Display detailed information on one or more services")
    p.add_argument("service", nargs="+")
    p.add_argument("--pretty", action="store_true", help="Print the information in a human friendly format")
    p.add_argument("-f", "--format", metavar="string", help=INSPECT_FORMAT_HELP)
    p.set_defaults(func=_inspect)

    for name in ("rm", "remove"):
        p = ssub.add_parser(name, help="Remove one or more services")
        p.add_argument("service", nargs="+")
        p.set_defaults(func=_rm)

    p = ssub.add_parser("logs", help="Fetch the logs of a service or task", usage="shoal service logs [OPTIONS] SERVICE|TASK")
    p.add_argument("service", metavar="SERVICE|TASK")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-n", "--tail", default="all", help='Number of lines to show from the end of the logs (default "all")')
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("--no-task-ids", action="store_true", help="Do not include task IDs in output")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("--raw", action="store_true", help="Do not neatly format logs")
    p.add_argument("--details", action="store_true", help="Show extra details provided to logs")
    p.add_argument("--since", metavar="string", help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or '
                                                     'relative (e.g. "42m" for 42 minutes)')
    p.set_defaults(func=_logs)

    p = ssub.add_parser("scale", help="Scale one or multiple replicated services",
                        usage="%(prog)s SERVICE=REPLICAS [SERVICE=REPLICAS...]")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")
    p.add_argument("-d", "--detach", action="store_true",
                   help="Exit immediately instead of waiting for the service to converge")
    p.set_defaults(func=_scale)
