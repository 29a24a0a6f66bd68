"""`shoal service ls|ps|inspect|rm|scale|logs`, talking to shoald."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from shoal.api.client import Client, connect
from shoal.cli.format import ago, bytes_size, print_formatted
from shoal.errors import InvalidArgument, ShoalError


def node_names(client: Client) -> dict[str, str]:
    return {n["id"]: n["hostname"] for n in client.get("/nodes")}


def filter_tasks(tasks: list[dict[str, Any]], filters: list[str]) -> list[dict[str, Any]]:
    """`-f desired-state=running|shutdown|accepted`, `-f id=`, `-f name=`, `-f node=`."""
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item}")
        if key == "desired-state":
            if value not in ("running", "shutdown", "accepted"):
                raise InvalidArgument(f"Invalid desired-state filter value: {value}")
            wanted = {"running": {"running", "ready"}, "shutdown": {"shutdown", "remove"},
                      "accepted": {"accepted"}}[value]
            tasks = [t for t in tasks if t["desired_state"] in wanted]
        elif key == "id":
            tasks = [t for t in tasks if t["id"].startswith(value)]
        elif key == "name":
            tasks = [t for t in tasks if f"{t['service_name']}.{t['slot'] or t['node_id']}".startswith(value)]
        elif key == "node":
            tasks = [t for t in tasks if t["node_id"] == value]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return tasks


def print_tasks(client: Client, tasks: list[dict[str, Any]], args: argparse.Namespace, quiet_full: bool) -> None:
    from shoal.cli.swarmfmt import TASK_FIELDS, TASK_HEADERS, task_rows

    table = not args.format or args.format.startswith("table")
    rows = task_rows(tasks, node_names(client), no_trunc=args.no_trunc, table=table)
    if args.quiet:
        for task in task_rows(tasks, {}, no_trunc=quiet_full or args.no_trunc, table=False):
            print(task["ID"])
        return
    print_formatted(args.format, TASK_HEADERS, TASK_FIELDS, rows)


def _ls(args: argparse.Namespace) -> int:
    from shoal.cli.swarmfmt import SERVICE_FIELDS, SERVICE_HEADERS, service_rows

    with connect() as client:
        rows = service_rows(client.get("/services"))
    print_formatted(args.format, SERVICE_HEADERS, SERVICE_FIELDS, rows, quiet_field="ID", quiet=args.quiet)
    return 0


def _ps(args: argparse.Namespace) -> int:
    with connect() as client:
        tasks: list[dict[str, Any]] = []
        for ref in args.service:
            tasks += client.get("/tasks", service=ref)
        print_tasks(client, filter_tasks(tasks, args.filter), args, quiet_full=True)
    return 0


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "0s"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds}s"
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _pretty(svc: dict[str, Any]) -> str:
    """docker service inspect --pretty, for the fields shoal has (swarm-inventory 2.6)."""
    spec = svc.get("spec", {})
    lines = ["", f"ID:\t\t{svc['id']}", f"Name:\t\t{svc['name']}"]
    labels = spec.get("labels") or {}
    if labels:
        lines.append("Labels:")
        lines += [f" {k}={v}" for k, v in sorted(labels.items())]
    if spec.get("mode") == "global":
        lines.append("Service Mode:\tGlobal")
    else:
        lines += ["Service Mode:\tReplicated", f" Replicas:\t{spec.get('replicas', 1)}"]
    update = svc.get("update_status") or {}
    if update.get("state"):
        lines += ["UpdateStatus:", f" State:\t\t{update['state']}"]
        if update.get("started_at"):
            lines.append(f" Started:\t{ago(update['started_at'])}")
        if update.get("completed_at"):
            lines.append(f" Completed:\t{ago(update['completed_at'])}")
        lines.append(f" Message:\t{update.get('message', '')}")
    placement = spec.get("placement") or {}
    if placement.get("constraints"):
        lines += ["Placement:", f" Constraints:\t{placement['constraints']}"]
    restart = spec.get("restart_policy") or {}
    lines += ["UpdateConfig:", f" Parallelism:\t{(spec.get('update_config') or {}).get('parallelism', 1)}",
              f" On failure:\t{(spec.get('update_config') or {}).get('failure_action', 'pause')}",
              f" Monitoring Period: {_duration((spec.get('update_config') or {}).get('monitor', 5))}",
              f" Max failure ratio: {(spec.get('update_config') or {}).get('max_failure_ratio', 0)}",
              f" Update order:      {(spec.get('update_config') or {}).get('order', 'stop-first')}"]
    lines += ["ContainerSpec:", f" Image:\t\t{spec.get('image', '')}"]
    if spec.get("cmd"):
        lines.append(f" Args:\t\t{' '.join(spec['cmd'])}")
    if spec.get("env"):
        lines.append(f" Env:\t\t{' '.join(spec['env'])}")
    resources = spec.get("resources") or {}
    limits = resources.get("limits") or {}
    if limits:
        lines += ["Resources:", " Limits:"]
        if limits.get("nano_cpus"):
            lines.append(f"  CPU:\t\t{limits['nano_cpus'] / 1e9:g}")
        if limits.get("memory_bytes"):
            lines.append(f"  Memory:\t{bytes_size(limits['memory_bytes'])}")
    if restart:
        lines += ["RestartPolicy:", f" Condition:\t{restart.get('condition', 'any')}",
                  f" Delay:\t\t{_duration(restart.get('delay', 5))}"]
    return "\n".join(lines) + "\n"


def _inspect(args: argparse.Namespace) -> int:
    if args.pretty and args.format:
        raise InvalidArgument("--format is incompatible with human friendly format")
    with connect() as client:
        found = [client.get(f"/services/{ref}") for ref in args.service]
    if args.pretty:
        sys.stdout.write("\n".join(_pretty(s) for s in found))
    elif args.format:
        print_formatted(args.format, (), (), found)
    else:
        print(json.dumps(found, indent=4))
    return 0


def _rm(args: argparse.Namespace) -> int:
    errors = []
    with connect() as client:
        for ref in args.service:
            try:
                client.delete(f"/services/{ref}")
                print(ref)
            except ShoalError as exc:
                errors.append(str(exc))
    if errors:
        raise ShoalError("\n".join(errors))
    return 0


_SCALE = re.compile(r"^([^=]+)=(\d+)$")


def _scale(args: argparse.Namespace) -> int:
    errors = []
    with connect() as client:
        for item in args.pairs:
            m = _SCALE.match(item)
            if not m:
                errors.append(f"invalid scale specifier '{item}'.\nSee 'shoal service scale --help'.")
                continue
            try:
                client.post(f"/services/{m.group(1)}/scale", {"replicas": int(m.group(2))})
                print(f"{m.group(1)} scaled to {m.group(2)}")
            except ShoalError as exc:
                errors.append(str(exc))
    if errors:
        raise ShoalError("\n".join(errors))
    return 0


def _logs(args: argparse.Namespace) -> int:
    """`<service>.<slot>.<task id>@<node>    | <line>`, stdout and stderr kept apart (2.7)."""
    if args.tail != "all" and not (args.tail.isdigit()):
        raise InvalidArgument(f'invalid value for --tail: "{args.tail}" (a number of lines, or "all")')
    with connect() as client:
        svc = client.get(f"/services/{args.service}")
        replicas = int(svc.get("spec", {}).get("replicas") or 1)
        width = len(str(replicas))
        params = {"tail": args.tail, "follow": "1" if args.follow else "0"}
        for raw in client.stream_lines(f"/services/{args.service}/logs", **params):
            rec = json.loads(raw)
            if "warning" in rec:  # a node whose logs could not be had
                print(rec["warning"], file=sys.stderr, flush=True)
                continue
            out = sys.stderr if rec["stream"] == "stderr" else sys.stdout
            line = rec["line"].rstrip("\n")
            if args.raw:
                out.write(line + "\n")
                out.flush()
                continue
            slot = str(rec["slot"]) if rec["slot"] else ""
            task = "" if args.no_task_ids else "." + (rec["task_id"] if args.no_trunc else rec["task_id"][:12])
            context = f"{rec['service']}.{slot}{task}@{rec['node']}" + " " * (width - len(slot))
            stamp = rec["time"] + " " if args.timestamps else ""
            out.write(f"{stamp}{context}    | {line}\n")
            out.flush()
    return 0


def add_task_list_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display task IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", help="Pretty-print tasks using a Go template")


def register(sub: argparse._SubParsersAction) -> None:
    service = sub.add_parser("service", help="Manage swarm services")
    ssub = service.add_subparsers(dest="service_command", metavar="COMMAND")
    service.set_defaults(func=lambda _: (service.print_help(), 0)[1])

    for name in ("ls", "list"):
        p = ssub.add_parser(name, help="List services")
        p.add_argument("-q", "--quiet", action="store_true", help="Only display IDs")
        p.add_argument("--format", help="Format output using a custom template")
        p.set_defaults(func=_ls)

    p = ssub.add_parser("ps", help="List the tasks of one or more services")
    p.add_argument("service", nargs="+")
    add_task_list_flags(p)
    p.set_defaults(func=_ps)

    p = ssub.add_parser("inspect", help="Display detailed information on one or more services")
    p.add_argument("service", nargs="+")
    p.add_argument("--pretty", action="store_true", help="Print the information in a human friendly format")
    p.add_argument("-f", "--format", help="Format output using a custom template")
    p.set_defaults(func=_inspect)

    for name in ("rm", "remove"):
        p = ssub.add_parser(name, help="Remove one or more services")
        p.add_argument("service", nargs="+")
        p.set_defaults(func=_rm)

    p = ssub.add_parser("logs", help="Fetch the logs of a service")
    p.add_argument("service")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-n", "--tail", default="all", help='Number of lines to show from the end of the logs (default "all")')
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("--no-task-ids", action="store_true", help="Do not include task IDs in output")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("--raw", action="store_true", help="Do not neatly format logs")
    p.set_defaults(func=_logs)

    p = ssub.add_parser("scale", help="Scale one or multiple replicated services")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")
    p.add_argument("-d", "--detach", action="store_true", help="Exit immediately")
    p.set_defaults(func=_scale)
