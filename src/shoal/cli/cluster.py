"""`shoal cluster create|ls|start|rm`: a local multi-node cluster (cluster/)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from shoal.errors import InvalidArgument, ShoalError

DEFAULT_NAME = "shoal"


def _create(args: argparse.Namespace) -> int:
    from shoal.cluster import lifecycle, state

    name = args.name or DEFAULT_NAME
    state.validate_name(name)
    if args.nodes < 1:
        raise InvalidArgument(f"--nodes {args.nodes}: at least 1")
    t0 = time.monotonic()
    print(f'Creating cluster "{name}" ...', file=sys.stderr, flush=True)
    record = lifecycle.create(name, args.nodes, args.subnet, swarm=not args.no_swarm,
                              progress=lambda m: print(f" ✓ {m}", file=sys.stderr, flush=True))
    nodes = ", ".join(f"{n.hostname} {n.address}" for n in record.nodes)
    print(f" ✓ nodes {nodes} on {record.subnet} (bridge {record.bridge})", file=sys.stderr)
    print(f'Cluster "{name}" ready in {time.monotonic() - t0:.1f} s; current context is now "{name}".',
          file=sys.stderr)
    print("You can now use your cluster with:\n\nshoal node ls\n", file=sys.stderr)
    print("Go back to this machine's own shoald with: shoal context use default", file=sys.stderr)
    return 0


def _ls(args: argparse.Namespace) -> int:
    from shoal.cli.format import print_table
    from shoal.cluster import lifecycle, state

    rows = []
    for name in state.names():
        try:
            record = state.load(name)
        except ShoalError as exc:
            rows.append([name, "", f"error: {exc}", ""])
            continue
        answering, supervised = lifecycle.status(record)
        total = len(record.nodes)
        if not supervised:
            status = "Stopped" if answering == 0 else f"Unsupervised ({answering}/{total} answering)"
        elif answering == total:
            status = f"Running ({total}/{total})"
        else:
            status = f"Degraded ({answering}/{total})"
        rows.append([name, str(total), status, record.subnet])
    if args.quiet:
        for r in rows:
            print(r[0])
        return 0
    print_table(["NAME", "NODES", "STATUS", "SUBNET"], rows)
    return 0


def _each(names: list[str], action: Callable[[str], None]) -> int:
    """`action` on every cluster named, each name printed once done; the refusals together."""
    errors = []
    for name in names:
        try:
            action(name)
            print(name)
        except ShoalError as exc:
            errors.append(str(exc))
    if errors:
        raise ShoalError("; ".join(errors))
    return 0


def _rm(args: argparse.Namespace) -> int:
    from shoal.cluster import lifecycle

    return _each(args.names, lifecycle.remove)


def _start(args: argparse.Namespace) -> int:
    from shoal.cluster import lifecycle

    return _each(args.names, lifecycle.start)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="Manage local multi-node clusters (nodes as network namespaces)")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND")
    p.set_defaults(func=lambda _a: (p.print_help(), 0)[1])

    c = csub.add_parser("create", help="Create a local cluster of N nodes, each its own shoald")
    c.add_argument("name", nargs="?", metavar="NAME", help=f'Cluster name (default "{DEFAULT_NAME}")')
    c.add_argument("--nodes", type=int, default=3, help="Number of nodes (default 3)")
    c.add_argument("--subnet", help="IPv4 subnet of the nodes (default: a free /24 of 198.18.0.0/15)")
    c.add_argument("--no-swarm", action="store_true",
                   help="Do not form a swarm: each node stays a one-node manager")
    c.set_defaults(func=_create)

    for alias in ("ls", "list"):
        c = csub.add_parser(alias, help="List local clusters")
        c.add_argument("-q", "--quiet", action="store_true", help="Only show names")
        c.set_defaults(func=_ls)

    c = csub.add_parser("start", help="Start the nodes' shoald that are not running (systemctl start)")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(func=_start)

    for alias in ("rm", "delete"):
        c = csub.add_parser(alias, help="Remove local clusters and everything they made")
        c.add_argument("names", nargs="+", metavar="NAME")
        c.set_defaults(func=_rm)
