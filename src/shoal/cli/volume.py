"""`shoal volume create|ls|inspect|rm|prune`, as docker/cli's cli/command/volume prints them, over
the local driver (runtime/volumes.py). Volumes are the node's: for a local context the work is
done in this process; for a context naming another node, through that node's API (the same
functions behind its /node/volumes routes: api/nodeops.py), printed here with the same code.
Refusals read as dockerd's (`Error response from daemon: remove x: volume is in use - [id]`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shoal.errors import InvalidArgument, ShoalError

from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP  # noqa: E402 - docker/cli's texts, shared
PRUNE_WARNING = ("WARNING! This will remove anonymous local volumes not used by at least one container.\n"
                 "Are you sure you want to continue?")
PRUNE_ALL_WARNING = ("WARNING! This will remove all local volumes not used by at least one container.\n"
                     "Are you sure you want to continue?")


class DaemonSide(ShoalError):
    """What dockerd would have refused: printed `Error response from daemon: ...`, exit 1."""

    from_daemon = True


def _containers() -> list[Any]:
    from shoal.runtime.manager import ContainerManager

    return ContainerManager().list(all=True)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    """opts.MapOpts / ListOpts of KEY=VALUE, a bare KEY meaning an empty value."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f'invalid argument "{item}" for "{flag}" flag: invalid key value: empty key')
        out[key] = value if sep else ""
    return out


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f'invalid argument "{item}" for "-f, --filter" flag: bad format of filter '
                                  "(expected name=value)")
        out.setdefault(key.strip().lower(), []).append(value.strip())
    return out


def _node(args: argparse.Namespace) -> Any:
    """The API client of the node a tcp:// context names (cli/main.py sets args.node), else None."""
    if getattr(args, "node", None) is None:
        return None
    from shoal.cli import remote

    return remote.client(args)


def _quoted(name: str) -> str:
    from shoal.api.client import quote_ref  # only for a remote node: a local command loads no HTTP code

    return quote_ref(name)


def create(name: str, driver: str, opts: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    """`volume create` on this node (also POST /node/volumes): the volume's inspect document."""
    from shoal.runtime import volumes

    try:
        return volumes.create(name, driver, opts, labels).to_api()
    except ShoalError as exc:
        raise DaemonSide(str(exc)) from None


def _create(args: argparse.Namespace) -> int:
    if args.name_flag and args.name:
        raise ShoalError("conflicting options: cannot specify a volume-name through both --name and as a positional arg")
    body = {"name": args.name or args.name_flag or "", "driver": args.driver,
            "opts": _pairs(args.opt, "-o, --opt"), "labels": _pairs(args.label, "--label")}
    node = _node(args)
    vol = create(**body) if node is None else node.request("POST", "/node/volumes", None, body)
    print(vol["Name"])
    return 0


def filter_volumes(vols: list[Any], filters: dict[str, list[str]], containers: list[Any]) -> list[Any]:
    """moby volume service filters: name (substring), driver, label (key or key=value, all must
    hold), dangling (true/false/1/0: used by no container)."""
    from shoal.runtime import volumes

    for key in filters:
        if key not in ("dangling", "name", "driver", "label"):
            raise DaemonSide(f"invalid filter '{key}'")
    dangling: bool | None = None
    values = filters.get("dangling", [])
    if values:  # volume service convert.go: true/1, else false/0 exactly, else invalidFilter
        dangling = bool({"true", "1"} & set(values))
        if not dangling and not {"false", "0"} & set(values):
            raise DaemonSide(f"invalid filter 'dangling=[{' '.join(values)}]'")

    def keep(vol: Any) -> bool:
        if filters.get("name") and not any(n in vol.name for n in filters["name"]):
            return False
        if filters.get("driver") and "local" not in filters["driver"]:
            return False
        labels = vol.labels or {}
        for cond in filters.get("label", []):
            key, sep, value = cond.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
        if dangling is not None and bool(volumes.users(vol.name, containers)) == dangling:
            return False
        return True

    return [v for v in vols if keep(v)]


def listed(filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    """`volume ls` on this node (also GET /node/volumes): the inspect documents of the volumes
    the filters keep."""
    from shoal.runtime import volumes

    found = volumes.list_volumes()
    if filters:
        found = filter_volumes(found, filters, _containers())
    return [v.to_api() for v in found]


class _Listed:
    """A volume as `rows` reads it, from its inspect document (here or from a node)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.name, self.labels, self.mountpoint = doc["Name"], doc.get("Labels"), doc["Mountpoint"]


def rows(vols: list[Any]) -> list[dict[str, str]]:
    """formatter.volumeContext's fields."""
    out = []
    for v in vols:
        labels = v.labels or {}
        # Keys sorted, as formatter.MarshalJSON writes them; the cluster-volume fields are N/A.
        out.append({"Availability": "N/A", "Driver": "local", "Group": "N/A",
                    "Labels": ",".join(f"{k}={labels[k]}" for k in sorted(labels)), "Links": "N/A",
                    "Mountpoint": str(v.mountpoint), "Name": v.name, "Scope": "local", "Size": "N/A",
                    "Status": "N/A"})
    return out


def print_list(vols: list[Any], fmt: str | None, quiet: bool) -> None:
    from shoal.cli.format import print_formatted
    from shoal.cli.swarmfmt import natural_key

    vols = sorted(vols, key=lambda v: natural_key(v.name))
    print_formatted(fmt, ("DRIVER", "VOLUME NAME"), ("Driver", "Name"), rows(vols), quiet_field="Name", quiet=quiet)


def _ls(args: argparse.Namespace) -> int:
    filters = parse_filters(args.filter)
    node = _node(args)
    docs = listed(filters) if node is None else node.get(
        "/node/volumes", filters=json.dumps(filters) if filters else None)
    print_list([_Listed(d) for d in docs], args.format, args.quiet)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from shoal.cli.format import render_template
    from shoal.runtime import volumes

    node = _node(args)
    found, errors = [], []
    for name in args.volumes:
        try:
            found.append(volumes.get(name).to_api() if node is None else node.get(f"/node/volumes/{_quoted(name)}"))
        except ShoalError as exc:
            errors.append(f"Error response from daemon: {exc}")
    if args.format:
        for doc in found:
            print(render_template(args.format, doc))
    else:
        print(json.dumps(found, indent=4))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


def _rm(args: argparse.Namespace) -> int:
    from shoal.runtime import volumes

    node = _node(args)
    containers = _containers() if node is None else []
    errors = []
    for name in args.volumes:
        try:
            if node is None:
                volumes.remove_checked(name, containers, force=args.force)
            else:
                node.delete(f"/node/volumes/{_quoted(name)}", force="1" if args.force else None)
        except ShoalError as exc:
            errors.append(f"Error response from daemon: {exc}")
            continue
        print(name)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


def prune_filters(items: list[str]) -> tuple[bool, list[str], list[str]]:
    """`volume prune --filter`: label, label!, all (moby's volume prune filters)."""
    filters = parse_filters(items)
    for key in filters:
        if key not in ("label", "label!", "all"):
            raise DaemonSide(f"invalid filter '{key}'")
    values = filters.get("all", [])
    all_ = bool({"true", "1"} & set(values))
    if values and all_ == bool({"false", "0"} & set(values)):  # GetBoolOrDefault
        raise DaemonSide(f"invalid filter 'all=[{' '.join(values)}]'")
    return all_, filters.get("label", []), filters.get("label!", [])


def prune(all_: bool, filters: list[str]) -> tuple[int, str]:
    """What `volume prune` does once confirmed: (bytes reclaimed, its `Deleted Volumes:` text)."""
    from shoal.runtime import volumes

    also_all, labels, not_labels = prune_filters(filters)
    removed, reclaimed = volumes.prune(_containers(), all=all_ or also_all, labels=labels, not_labels=not_labels)
    if not removed:
        return 0, ""
    return reclaimed, "Deleted Volumes:\n" + "".join(f"{name}\n" for name in removed)


def _prune(args: argparse.Namespace) -> int:
    from shoal.cli.prune import confirm, print_total

    also_all, _, _ = prune_filters(args.filter)  # validated before the question, as dockerd would
    if args.all and also_all:
        raise ShoalError("conflicting options: cannot specify both --all and --filter all=1")  # RunE's error: exit 1
    if not args.force and not confirm(PRUNE_ALL_WARNING if args.all else PRUNE_WARNING):
        return 0
    node = _node(args)
    if node is None:
        reclaimed, output = prune(args.all, args.filter)
    else:
        done = node.request("POST", "/node/volumes/prune", {"all": "1" if args.all else None,
                                                            "filters": json.dumps(args.filter)})
        reclaimed, output = done["reclaimed"], done["output"]
    if output:
        print(output)
    print_total(reclaimed)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("volume", help="Manage volumes")
    vsub = parser.add_subparsers(dest="volume_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    p = vsub.add_parser("create", help="Create a volume")
    p.add_argument("name", nargs="?", default="", metavar="VOLUME")
    p.add_argument("-d", "--driver", default="local", help='Specify volume driver name (default "local")')
    p.add_argument("--name", dest="name_flag", default="", help=argparse.SUPPRESS)
    p.add_argument("-o", "--opt", action="append", default=[], metavar="map", help="Set driver specific options")
    p.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    p.set_defaults(func=_create)

    p = vsub.add_parser("ls", aliases=["list"], help="List volumes")
    p.add_argument("-f", "--filter", action="append", default=[], help='Provide filter values (e.g. "dangling=true")')
    p.add_argument("--format", default=None, help=FORMAT_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    p.set_defaults(func=_ls)

    p = vsub.add_parser("inspect", help="Display detailed information on one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.add_argument("-f", "--format", default=None, help=INSPECT_FORMAT_HELP)
    p.set_defaults(func=_inspect)

    p = vsub.add_parser("rm", aliases=["remove"], help="Remove one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    p.set_defaults(func=_rm)

    p = vsub.add_parser("prune", help="Remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help='Provide filter values (e.g. "label=<label>")')
    p.set_defaults(func=_prune)


for _handler in (_create, _ls, _inspect, _rm, _prune):
    _handler.on_node = True  # type: ignore[attr-defined] # a tcp:// context: that node's volumes (cli/main.py)
