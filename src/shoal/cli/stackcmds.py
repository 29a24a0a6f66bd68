"""`shoal stack deploy|ls|services|ps|rm`: the CLI half of a deploy (load, build what is missing,
send, then wait and report), and the listings, with docker/cli's wording (swarm-inventory 1.10,
2.3)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from shoal.api.client import Client, connect
from shoal.cli.format import FORMAT_HELP, print_formatted
from shoal.cli.stack import add_compose_file_options
from shoal.cli.service import add_task_list_flags
from shoal.errors import InvalidArgument, ShoalError

# deploy.go (Docker >= 26): printed to stderr when -d/--detach was left out, before anything is made.
DETACH_NOTICE = ("Since --detach=false was not specified, tasks will be created in the background.\n"
                 "In a future release, --detach=false will become the default.")


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def load(args: argparse.Namespace) -> dict[str, Any]:
    """The stack as a dict (StackSpec.to_dict()), loaded here on the client: the manager may be
    another machine and never reads this one's files or environment (the deploy goes one way)."""
    from shoal.compose import load_stack

    files = [Path(f) for f in args.compose_files]
    env_files = [Path(f) for f in (args.env_files or [])]
    return load_stack(files, args.stack, env_files=env_files or None, warn=_warn).to_dict()


def build_missing(stack: dict[str, Any], node: Client | None = None) -> None:
    """`build:` honoured: a service whose image is not in the store of the node the context
    names is built first, on that node, and tagged with its `image:` name (docker compose's
    `<stack>-<service>` when it has none). Here when the context is local; for a remote node
    (`node`), its context is sent there (POST /build) and its output printed as it comes."""
    to_build = [svc for svc in stack["services"].values() if svc.get("build")]
    if not to_build:
        return  # the builder and the image store are not even imported (~60 ms of a deploy)
    if node is not None and node.remote:
        return _build_on_node(node, to_build)
    from shoal.build.builder import BuildOptions, Builder
    from shoal.errors import NotFound
    from shoal.image.store import ImageStore

    store = ImageStore()
    for svc in to_build:
        try:
            store.resolve(svc["image"])
            continue
        except NotFound:
            pass
        build = svc["build"]
        print(f"Building {svc['compose_name']} ({svc['image']})", file=sys.stderr)
        context = Path(build["context"])
        Builder(store, sys.stderr.buffer).build(BuildOptions(
            context_dir=context,
            dockerfile=context / build["dockerfile"] if build.get("dockerfile") else None,
            tags=[svc["image"], *build.get("tags", [])],
            build_args=dict(build.get("args") or {}),
            target=build.get("target", ""),
            no_cache=bool(build.get("no_cache")),
            pull=bool(build.get("pull")),
            network=build.get("network") or "default",   # RUN steps: host only when asked
        ))


def _build_on_node(node: Client, to_build: list[dict[str, Any]]) -> None:
    from shoal.cli import remote

    for svc in to_build:
        if remote.image_exists(node, svc["image"]):
            continue
        build = svc["build"]
        print(f"Building {svc['compose_name']} ({svc['image']}) on {node.where}", file=sys.stderr)
        context = Path(build["context"])
        try:
            remote.build(node, context_dir=context,
                         dockerfile=context / build["dockerfile"] if build.get("dockerfile") else None,
                         tags=[svc["image"], *build.get("tags", [])], build_args=dict(build.get("args") or {}),
                         target=build.get("target", ""), no_cache=bool(build.get("no_cache")),
                         pull=bool(build.get("pull")), network=build.get("network") or "default",
                         out=sys.stderr.buffer)
        except remote.BuildError as exc:
            raise ShoalError(f"failed to build {svc['compose_name']}: {exc}") from None


def read_files(stack: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Secrets' and configs' content, read here on the client as docker does (base64)."""
    import base64

    out: dict[str, dict[str, str]] = {"secret": {}, "config": {}}
    for kind, objects in (("secret", stack.get("secrets") or {}), ("config", stack.get("configs") or {})):
        for obj in objects.values():
            if obj.get("external") or not obj.get("file"):
                continue
            try:
                out[kind][obj["name"]] = base64.b64encode(Path(obj["file"]).read_bytes()).decode()
            except OSError as exc:
                raise ShoalError(f"{kind} {obj['compose_name']}: open {obj['file']}: {exc.strerror}") from None
    return out


def deploy(args: argparse.Namespace) -> int:
    """deploy.go and deploy_composefile.go: the objects made by the manager, Docker's lines
    printed; then, only with --detach=false, each service waited on in turn with `service
    update`'s progress (waitOnServices)."""
    if not args.compose_files:
        raise InvalidArgument("Please specify a Compose file (with --compose-file)")
    if args.resolve_image not in ("always", "changed", "never"):  # docker/cli's check, before loading
        raise InvalidArgument(f"Invalid option {args.resolve_image} for flag --resolve-image")
    stack = load(args)
    detach = True if args.detach is None else args.detach
    if args.detach is None:  # `opts.detach && !flags.Changed("detach")`: an explicit -d says nothing
        print(DETACH_NOTICE, file=sys.stderr)
    files = read_files(stack)  # before anything is built or sent: a missing file stops here
    node = Client()
    build_missing(stack, node)
    # A remote node is sent the request at once: its failure says why the node cannot be reached
    # as connect()'s ping would, which cost one more TCP and TLS handshake and round trip (20-45
    # ms of every deploy). A local shoald may need starting first: connect() does that.
    with (node if node.remote else connect()) as client:
        body = {"stack": stack, "prune": args.prune, "files": files, "resolve_image": args.resolve_image}
        if args.with_registry_auth:  # docker/cli: each service's image's registry credentials
            from shoal.image.registryauth import for_image

            body["registry_auth"] = {svc["name"]: for_image(svc.get("image") or "")
                                     for svc in stack.get("services", {}).values()}
        result = client.post(f"/stacks/{args.stack}", body)
        for line in result["lines"]:
            print(line)
        for warning in result.get("warnings") or []:  # the manager's, as docker/cli prints them
            print(warning, end="" if warning.endswith("\n") else "\n", file=sys.stderr)
        sys.stdout.flush()
        if detach:
            return 0
        return _wait_on_services(client, args.stack, result["lines"], quiet=args.quiet)


def _wait_on_services(client: Client, stack: str, lines: list[str], quiet: bool) -> int:
    """waitOnServices: WaitOnService for each service deployed, in the order they were created
    or updated; the errors of all of them, each after its service's ID (errors.Join)."""
    from shoal.cli.serviceprogress import wait_on_service

    ids = {s["name"]: s["id"] for s in client.get("/services", stack=stack)}
    deployed = [line.split()[2] for line in lines
                if line.startswith(("Creating service ", "Updating service "))]
    errors = []
    for name in deployed:
        try:
            wait_on_service(client, ids[name], quiet=quiet)
        except ShoalError as exc:
            errors.append(f"{ids[name]}: {exc}")
    if errors:
        raise ShoalError("\n".join(errors))
    return 0


def ls(args: argparse.Namespace) -> int:
    with connect() as client:
        stacks = client.get("/stacks")
    rows = [{"Name": s["Name"], "Services": str(s["Services"]), "Orchestrator": "Swarm"} for s in stacks]
    print_formatted(args.format, ("NAME", "SERVICES", "ORCHESTRATOR"), ("Name", "Services", "Orchestrator"), rows)
    return 0


def services(args: argparse.Namespace) -> int:
    from shoal.cli.swarmfmt import SERVICE_FIELDS, SERVICE_HEADERS, service_rows

    from shoal.cli.service import filter_services

    with connect() as client:
        # docker/cli's getStackFilterFromOpt: the stack's label beside the user's filters
        found = filter_services(client.get("/services", stack=args.stack), args.filter)
    if not found:
        print(f"Nothing found in stack: {args.stack}", file=sys.stderr)
        return 0
    print_formatted(args.format, SERVICE_HEADERS, SERVICE_FIELDS, service_rows(found),
                    quiet_field="ID", quiet=args.quiet)
    return 0


def ps(args: argparse.Namespace) -> int:
    from shoal.cli.service import filter_tasks, node_names, print_tasks

    with connect() as client:
        tasks = client.get("/tasks", stack=args.stack)
        if not tasks:
            raise ShoalError(f"nothing found in stack: {args.stack}")
        print_tasks(client, filter_tasks(tasks, args.filter, node_names(client)), args, quiet_full=False)
    return 0


def rm(args: argparse.Namespace) -> int:
    with connect() as client:
        for name in args.stacks:
            services = set() if args.detach is not False else {s["id"] for s in client.get("/services", stack=name)}
            lines = client.delete(f"/stacks/{name}")["lines"]
            if not lines:
                print(f"Nothing found in stack: {name}", file=sys.stderr)
                continue
            for line in lines:
                print(line)
            if args.detach is False:
                _wait_removed(client, services)
    return 0


def _wait_removed(client: Client, services: set[str], poll: float = 0.2) -> None:
    """remove.go waitOnTasks (--detach=false): until every task of the stack's services (kept,
    desired REMOVE, until their containers stopped) reached a terminal state or is gone."""
    from shoal.model.cluster import Task, TaskState

    def active() -> bool:
        return any(Task.from_dict(t).status.state <= TaskState.RUNNING
                   for t in client.get("/tasks") if t["service_id"] in services)

    while services and active():
        time.sleep(poll)


# strconv.ParseBool's spellings, which pflag accepts after `=`.
_PARSE_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
               "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def _detach_flag(p: argparse.ArgumentParser, help: str) -> None:
    """pflag's bool `-d, --detach`: bare, or `--detach=false` / `-d=false` (any ParseBool
    spelling). A bare `-d` takes no value, so `-d STACK` keeps STACK as the positional; the
    valued forms are option strings of their own (argparse looks an argument up whole before
    splitting it at `=`), hidden from the help. Left out it is None: not "changed"."""
    p.add_argument("-d", "--detach", action="store_true", default=None, help=help)
    for text, value in _PARSE_BOOL.items():
        p.add_argument(f"-d={text}", f"--detach={text}", dest="detach", action="store_const", const=value,
                       help=argparse.SUPPRESS)


def register_verbs(ssub: argparse._SubParsersAction) -> None:
    for name in ("deploy", "up"):
        p = ssub.add_parser(name, help="Deploy a new stack or update an existing stack")
        add_compose_file_options(p)
        p.add_argument("--prune", action="store_true", help="Prune services that are no longer referenced")
        p.add_argument("--resolve-image", default="always",
                       help='Query the registry to resolve image digest and supported platforms ("always", "changed", "never") (default "always")')
        p.add_argument("--with-registry-auth", action="store_true",
                       help="Send registry authentication details to Swarm agents")
        _detach_flag(p, "Exit immediately instead of waiting for the stack services to converge (default true)")
        p.add_argument("-q", "--quiet", action="store_true", help="Suppress progress output")
        p.add_argument("stack")
        p.set_defaults(func=deploy)
    for name in ("ls", "list"):
        p = ssub.add_parser(name, help="List stacks")
        p.add_argument("--format", metavar="string", help=FORMAT_HELP)
        p.set_defaults(func=ls)
    p = ssub.add_parser("services", help="List the services in the stack")
    p.add_argument("stack")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display IDs")
    p.add_argument("--format", metavar="string", help=FORMAT_HELP)
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help="Filter output based on conditions provided")
    p.set_defaults(func=services)
    p = ssub.add_parser("ps", help="List the tasks in the stack")
    p.add_argument("stack")
    add_task_list_flags(p)
    p.set_defaults(func=ps)
    for name in ("rm", "remove", "down"):
        p = ssub.add_parser(name, help="Remove one or more stacks")
        _detach_flag(p, "Do not wait for stack removal (default true)")
        p.add_argument("stacks", nargs="+", metavar="STACK")
        p.set_defaults(func=rm)
