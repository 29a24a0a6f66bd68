"""`shoal images`, `shoal image ls|inspect|rm|tag|prune|history|import`, `shoal rmi`,
`shoal tag`, `shoal import`, `shoal history`: output as docker/cli prints it
(cli/command/image, cli/command/formatter/image.go).

Other modules add to the `image` group with `image_group(subparsers)` (shoal.cli.archive adds
`save` and `load` that way)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from shoal.cli import format as fmt
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.ids import short_id
from shoal.image import reference as refs
from shoal.image.store import Image, ImageStore
from shoal.image.views import (  # noqa: F401 - re-exported for other commands
    go_path_match, history_rows, inspect_object, list_rows, parse_filters,
)

IMAGE_FIELDS = ("Repository", "Tag", "Digest", "ID", "CreatedSince", "CreatedAt", "Size")
IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                 "Containers": "CONTAINERS", "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE",
                 "UniqueSize": "UNIQUE SIZE"}
HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}


def _store() -> ImageStore:
    return ImageStore()


# --- registration -----------------------------------------------------------------------------


def image_group(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `image` group's subparsers (created on first use), for other modules to add to:
    `image_group(subparsers).add_parser("save", ...)`."""
    parser = sub.choices.get("image")
    if parser is None:
        parser = sub.add_parser("image", help="Manage images", description="Manage images")
        parser.set_defaults(func=lambda _args: parser.print_help())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="image_command", metavar="COMMAND")


def register(sub: argparse._SubParsersAction) -> None:
    group = image_group(sub)
    _add_list(sub, "images")
    _add_list(group, "ls", aliases=["list"])
    _add_rm(sub, "rmi")
    _add_rm(group, "rm", aliases=["remove", "rmi"])
    _add_tag(sub)
    _add_tag(group)
    _add_import(sub)
    _add_import(group)
    _add_history(sub)
    _add_history(group)
    _add_inspect(group)
    _add_prune(group)


def _add_list(sub: argparse._SubParsersAction, name: str, aliases: Sequence[str] = ()) -> None:
    p = sub.add_parser(name, aliases=list(aliases), help="List images", description="List images")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="Show all images (default hides intermediate images)")
    p.add_argument("--digests", action="store_true", help="Show digests")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help="Filter output based on conditions provided")
    p.add_argument("--format", metavar="string", help=fmt.FORMAT_HELP)
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.set_defaults(func=cmd_images)


def _add_rm(sub: argparse._SubParsersAction, name: str, aliases: Sequence[str] = ()) -> None:
    p = sub.add_parser(name, aliases=list(aliases), help="Remove one or more images",
                       description="Remove one or more images")
    p.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rmi)


def _add_tag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tag", help="Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
                       description="Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="Import the contents from a tarball to create a filesystem image",
                       description="Import the contents from a tarball to create a filesystem image")
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", default="", help="Set commit message for imported image")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("file", metavar="file|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(func=cmd_import)


def _add_history(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="Show the history of an image", description="Show the history of an image")
    p.add_argument("--format", metavar="string", help=fmt.FORMAT_HELP)
    p.add_argument("-H", "--human", default="true", nargs="?", const="true",
                   help="Print sizes and dates in human readable format (default true)")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_history)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="Display detailed information on one or more images",
                       description="Display detailed information on one or more images")
    p.add_argument("-f", "--format", metavar="string", help=fmt.INSPECT_FORMAT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_inspect)


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="Remove unused images", description="Remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[],
                   help="Provide filter values (e.g. \"until=<timestamp>\", \"label=<key>=<value>\")")
    p.set_defaults(func=cmd_prune)


# --- images -----------------------------------------------------------------------------------


def _created_at(ts: float) -> str:
    """Go's time.Time.String() in local time: `2026-11-26 23:45:08 +0000 UTC`."""
    local = datetime.fromtimestamp(ts, tz=timezone.utc).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z %Z")


def _image_id(image_id: str, trunc: bool) -> str:
    return short_id(image_id) if trunc else image_id


def _on_node(args: argparse.Namespace) -> Any:
    """The cli/remote module when the context names another node (args.node), else None."""
    if getattr(args, "node", None) is None:
        return None
    from shoal.cli import remote

    return remote


def _remote_ok(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    func.on_node = True  # type: ignore[attr-defined] # cli/main.py: a tcp:// context reaches it
    return func


@_remote_ok
def cmd_images(args: argparse.Namespace) -> int:
    from shoal.cli.filters import Filters

    # docker's flag parsing and moby's checks first (its words, exit 1), then the store's filter
    checked = Filters.parse(args.filter).validate(("dangling", "label", "label!", "before", "since", "reference",
                                                   "until"))
    dangling = checked.get("dangling")  # images.go: only `true` or `false`, exactly
    if dangling and "true" not in dangling and "false" not in dangling:
        from shoal.cli.filters import invalid_filter

        raise invalid_filter("dangling", list(dangling))
    # `until` as unix seconds (a Go duration or a date is read here, where "now" is the user's)
    filters = parse_filters([f"until={parse_until(v)}" for v in checked.get("until")] +
                            [item for item in args.filter if item.partition("=")[0].strip().lower() != "until"])
    if args.repository:
        filters.setdefault("reference", []).append(args.repository)
    digests = args.digests or bool(args.format and "{{.Digest}}" in args.format.replace(" ", ""))
    remote = _on_node(args)
    if remote is not None:
        records = remote.image_records(args, filters, digests)
    else:
        from shoal.image.views import image_records

        records = image_records(_store(), args.all, filters, digests)
    trunc = not args.no_trunc
    objects = [{
        "Repository": r["Repository"], "Tag": r["Tag"], "Digest": r["Digest"], "ID": _image_id(r["Id"], trunc),
        "CreatedSince": fmt.ago(r["Created"]) if r["Created"] else "N/A",
        "CreatedAt": _created_at(r["Created"]), "Size": fmt.human_size(r["Size"]),
        "VirtualSize": fmt.human_size(r["Size"]), "Containers": "N/A",
        "SharedSize": "N/A", "UniqueSize": "N/A",
    } for r in records]
    if args.quiet and not args.format:
        for obj in objects:
            print(obj["ID"])
        return 0
    if not args.format or args.format == "table":
        fields = ["Repository", "Tag"] + (["Digest"] if args.digests else []) + ["ID", "CreatedSince", "Size"]
        fmt.print_table([IMAGE_HEADERS[f] for f in fields], ([o[f] for f in fields] for o in objects))
        return 0
    template = args.format
    if template.startswith("table") and args.digests and "{{.Digest}}" not in template:
        template += "\\t{{.Digest}}"
    fmt.print_formatted(template, list(IMAGE_HEADERS.values()), list(IMAGE_HEADERS), objects)
    return 0


# --- rmi, tag, import ---------------------------------------------------------------------------


@_remote_ok
def cmd_rmi(args: argparse.Namespace) -> int:
    remote = _on_node(args)
    remove = (lambda name: remote.rmi(args, name)) if remote is not None else \
        (lambda name: _store().remove(name, force=args.force))
    status = 0
    for name in args.images:
        try:
            for line in remove(name):
                print(line)
        except ShoalError as exc:
            where = "Error response from daemon" if getattr(exc, "from_daemon", False) else "Error"
            print(f"{where}: {exc}", file=sys.stderr)
            status = 1
    return status


@_remote_ok
def cmd_tag(args: argparse.Namespace) -> int:
    try:
        refs.parse(args.target)
    except InvalidArgument as exc:
        raise InvalidArgument(f'Error parsing reference: "{args.target}" is not a valid repository/tag: {exc}') from None
    remote = _on_node(args)
    if remote is not None:
        remote.tag(args, args.source, args.target)
        return 0
    _store().tag(args.source, args.target)
    return 0


@_remote_ok
def cmd_import(args: argparse.Namespace) -> int:
    remote = _on_node(args)
    if remote is not None:
        print(remote.import_image(args))
        return 0
    from shoal.image.importer import import_tarball

    image = import_tarball(_store(), args.file, args.reference, changes=args.change, message=args.message,
                           platform_name=args.platform)
    print(image.id)
    return 0


# --- history ------------------------------------------------------------------------------------


def _ellipsis(text: str, width: int) -> str:
    """docker/cli formatter.Ellipsis for single-width text."""
    return text if len(text) <= width else text[: width - 1] + "…"


@_remote_ok
def cmd_history(args: argparse.Namespace) -> int:
    remote = _on_node(args)
    rows = remote.history(args, args.image) if remote is not None else history_rows(_store().resolve(args.image))
    human = str(args.human).lstrip("=").lower() not in ("false", "0")
    trunc = not args.no_trunc
    objects = []
    for row in rows:
        created_at = datetime.fromtimestamp(row["created"], tz=timezone.utc).astimezone().isoformat(timespec="seconds")
        created_at = created_at.replace("+00:00", "Z")
        if human:
            since = fmt.ago(row["created"]) if row["created"] > 946684800 else ""
        else:
            since = created_at
        created_by = row["created_by"].replace("\t", " ")
        objects.append({
            "ID": _image_id(row["id"], trunc) if row["id"] != "<missing>" else "<missing>",
            "CreatedSince": since, "CreatedAt": created_at,
            "CreatedBy": _ellipsis(created_by, 45) if trunc else created_by,
            "Size": fmt.human_size(row["size"]) if human else str(row["size"]),
            "Comment": row["comment"],
        })
    if args.quiet and not args.format:
        for obj in objects:
            print(obj["ID"])
        return 0
    if not args.format or args.format == "table":
        fields = ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
        fmt.print_table([HISTORY_HEADERS[f] for f in fields], ([o[f] for f in fields] for o in objects))
        return 0
    fmt.print_formatted(args.format, list(HISTORY_HEADERS.values()), list(HISTORY_HEADERS), objects)
    return 0


# --- inspect ------------------------------------------------------------------------------------

@_remote_ok
def cmd_inspect(args: argparse.Namespace) -> int:
    remote = _on_node(args)
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in args.images:
        try:
            found.append(remote.image_inspect(args, name) if remote is not None
                         else inspect_object(_store().resolve(name)))
        except NotFound as exc:
            errors.append(str(exc))
    if args.format:
        for obj in found:
            print(fmt.render_template(args.format, obj))
    else:
        print(json.dumps(found, indent=4))
    for message in errors:
        print(f"Error: {message}", file=sys.stderr)
    return 1 if errors else 0


# --- prune --------------------------------------------------------------------------------------

_ALL_WARNING = ("WARNING! This will remove all images without at least one container associated to them.\n"
                "Are you sure you want to continue?")
_DANGLING_WARNING = "WARNING! This will remove all dangling images.\nAre you sure you want to continue?"


def confirm(message: str, read: Callable[[], str] | None = None) -> bool:
    """docker/cli PromptForConfirmation: `[y/N]`, anything but y/Y is no."""
    sys.stdout.write(f"{message} [y/N] ")
    sys.stdout.flush()
    answer = (read or sys.stdin.readline)()
    return answer.strip().lower() == "y"


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_until(value: str, now: float | None = None) -> float:
    """Docker's `until` filter: a Go duration before now (`24h`, `1h30m`), unix seconds, or an
    RFC 3339 time."""
    import time as _time

    from shoal.image.store import parse_time

    text = value.strip()
    if text and _GO_DURATION.sub("", text) == "":
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _GO_DURATION.findall(text))
        return (now if now is not None else _time.time()) - seconds
    try:
        return float(text)
    except ValueError:
        pass
    parsed = parse_time(text) if "T" in text else parse_time(text + "T00:00:00Z")
    if parsed == 0.0:
        raise InvalidArgument(f"invalid filter 'until={value}'")
    return parsed


@_remote_ok
def cmd_prune(args: argparse.Namespace) -> int:
    from shoal.cli.filters import Filters, invalid_filter

    # FilterOpt's parsing (a flag error), then moby's ImagesPrune checks (the daemon's words, exit 1)
    filters = Filters.parse(args.filter, "--filter").validate(("dangling", "label", "until"))
    dangling = filters.get("dangling")
    if dangling:  # prune.go: false/0 prunes every unused image, as -a; true/1 only dangling ones
        if {"false", "0"} & set(dangling):
            args.all = True
        elif not {"true", "1"} & set(dangling):
            raise invalid_filter("dangling", list(dangling))
    until = None
    for value in filters.get("until"):
        until = parse_until(value)
    labels = list(filters.get("label"))
    if not args.force and not confirm(_ALL_WARNING if args.all else _DANGLING_WARNING):
        return 0
    if getattr(args, "node", None) is not None:  # the node's store (cli/system.py image_prune there)
        from shoal.cli.system import pruned

        reclaimed, output = pruned(args, "images", args.all, {"label": labels, "until": list(filters.get("until"))})
        if output:
            print(output)
        print(f"Total reclaimed space: {fmt.human_size(reclaimed, precision=4)}")
        return 0
    records, reclaimed = _store().prune_records(all=args.all, until=until, labels=labels)
    if records:
        print("Deleted Images:")
        for line in records:
            print(line)
        print()
    print(f"Total reclaimed space: {fmt.human_size(reclaimed, precision=4)}")
    return 0
