"""`shoal daemon`, `shoal version`, `shoal events`, and the `system` group as docker/cli's
(df, prune, info, events) with `builder prune`. df and the prunes read and change this node's
stores in this process (images, containers, volumes, build cache, networks); events and info ask
shoald. The counting is runtime/diskusage.py's."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.gotemplate import GoStruct

from shoal import __version__


def _daemon(_: argparse.Namespace) -> int:
    from shoal.daemon import run

    return run()


def _version(args: argparse.Namespace) -> int:
    fmt = getattr(args, "format", None)
    if not fmt:
        print(f"shoal version {__version__}")
        return 0
    # docker's version context: Client, and Server when a shoald answers (never started for it)
    import platform

    from shoal.api import API_VERSION, contexts
    from shoal.api.client import connect
    from shoal.cli.format import render_template

    server: dict[str, Any] | None = None
    try:
        with connect(autostart=False) as client:
            server = client.get("/version")
    except (ShoalError, OSError):
        server = None
    try:
        context = contexts.current_context_setting()
    except ShoalError:
        context = ""
    obj = {"Client": {"Version": __version__, "ApiVersion": API_VERSION, "Os": "linux", "Arch": platform.machine(),
                      "Context": context}, "Server": server}
    print(render_template("{{json .}}" if fmt == "json" else fmt, obj))
    return 0


# moby daemon/events/filter.go: the keys an events filter may name.
EVENT_FILTERS = ("config", "container", "daemon", "event", "image", "label", "network", "node", "plugin", "scope",
                 "secret", "service", "type", "volume")
_LOCAL_TYPES = ("container", "image", "volume", "network", "plugin", "daemon")


_MESSAGE_FIELDS = {"Status": "status", "ID": "id", "From": "from", "Type": "Type", "Action": "Action",
                   "Actor": "Actor", "Scope": "scope", "Time": "time", "TimeNano": "timeNano"}


def docker_message(event: dict[str, Any]) -> GoStruct:
    """The event as Docker's events.Message: what `--format` templates see by its Go field names
    (`{{.ID}}`, `{{.Status}}`, `{{.Actor.Attributes.name}}`) and `{{json .}}` / `--format json`
    print with its JSON names, the deprecated status/id/from omitted when empty (omitempty).
    shoal's own keys (revision, name, ...) stay readable by templates, never in the JSON."""
    from shoal.gotemplate import GoStruct

    attrs = event.get("attributes")
    if not isinstance(attrs, dict):
        attrs = {"name": event.get("name", "")}
    when = float(event.get("time") or 0)
    kind = str(event.get("type", ""))
    action = str(event.get("action", ""))
    ident = str(event.get("id", ""))
    # moby fills the deprecated fields for container and image events only (events.Events.Log)
    legacy = {"status": action, "id": ident, "from": attrs.get("image", "") if kind == "container" else ""} \
        if kind in ("container", "image") else {}
    data: dict[str, Any] = {k: v for k, v in legacy.items() if v}
    data.update({"Type": kind, "Action": action, "Actor": {"ID": ident, "Attributes": attrs},
                 "scope": "local" if kind in _LOCAL_TYPES else "swarm", "time": int(when),
                 "timeNano": round(when * 1_000_000) * 1000})  # a float holds microseconds, not nanoseconds
    hidden = {k: v for k, v in event.items() if k not in data}
    return GoStruct(data, _MESSAGE_FIELDS, hidden)


def event_matches(msg: GoStruct, filters: dict[str, list[str]]) -> bool:
    """moby's events.Filter: each key given must match one of its values."""
    attrs = msg["Actor"]["Attributes"]
    for key, values in filters.items():
        if key == "type":
            ok = msg["Type"] in values
        elif key == "event":
            ok = msg["Action"] in values
        elif key == "scope":
            ok = msg["scope"] in values
        elif key == "image":
            ok = attrs.get("image", "") in values
        elif key == "label":
            ok = any(k in attrs and (not sep or attrs[k] == v) for k, sep, v in (x.partition("=") for x in values))
        elif key == "daemon":
            ok = False
        else:  # an object kind: its ID or name
            ok = msg["Type"] == key and any(v in (msg["Actor"]["ID"], attrs.get("name"), msg.hidden.get("name"))
                                            for v in values)
        if not ok:
            return False
    return True


def _event_time(value: str) -> float:
    """docker/cli's timestamps for --since/--until: a Go duration before now, unix seconds, or
    an RFC 3339 time."""
    from shoal.cli.image import parse_until

    return parse_until(value)


def _events(args: argparse.Namespace) -> int:
    import signal
    import time

    from shoal.api.client import connect
    from shoal.cli.format import render_template
    from shoal.errors import InvalidArgument

    filters: dict[str, list[str]] = {}
    for item in getattr(args, "filter", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f'invalid argument "{item}" for "-f, --filter" flag: bad format of filter '
                                  "(expected name=value)")
        key = key.strip().lower()
        if key not in EVENT_FILTERS:
            err = ShoalError(f"invalid filter '{key}'")
            err.from_daemon = True  # type: ignore[attr-defined]
            raise err
        filters.setdefault(key, []).append(value.strip())
    params = {"follow": "0" if args.no_follow else "1"}
    since_time: float | None = None
    if args.since is not None:
        if args.since.isdigit() and int(args.since) < 1_000_000_000:
            params["since"] = args.since  # a revision of shoald's event log (shoal's resume point)
        else:
            since_time = _event_time(args.since)
            params["since"] = "0"
    until = _event_time(args.until) if getattr(args, "until", None) else None
    if until is not None:
        if until <= time.time():
            params["follow"] = "0"
        else:  # streaming ends at --until, even when nothing happens
            def stop(*_: object) -> None:
                raise KeyboardInterrupt

            signal.signal(signal.SIGALRM, stop)
            signal.setitimer(signal.ITIMER_REAL, until - time.time())
    try:
        with connect() as client:
            for line in client.stream_lines("/events", **params):
                event = json.loads(line)
                when = float(event.get("time") or 0)
                if since_time is not None and when < since_time:
                    continue
                if until is not None and when > until:
                    break
                if filters and not event_matches(docker_message(event), filters):
                    continue
                if args.format == "json":
                    from shoal.gotemplate import go_json

                    print(go_json(docker_message(event)), flush=True)
                elif args.format:
                    print(render_template(args.format, docker_message(event)), flush=True)
                else:
                    print(pretty_event(event), flush=True)
    except KeyboardInterrupt:
        if until is None:
            raise
    return 0


def event_time(seconds: float) -> str:
    """docker/cli's rfc3339NanoFixed ("2006-01-02T15:04:05.000000000Z07:00") in local time."""
    nanos = round(seconds * 1e9)
    when = datetime.datetime.fromtimestamp(nanos // 10**9).astimezone()
    zone = when.strftime("%z")
    zone = "Z" if zone in ("+0000", "") else f"{zone[:3]}:{zone[3:]}"
    return f"{when:%Y-%m-%dT%H:%M:%S}.{nanos % 10**9:09d}{zone}"


def pretty_event(event: dict[str, object]) -> str:
    """docker/cli's prettyPrintEvent: time, type, action, actor ID, then the actor's attributes
    sorted by key, `(k=v, k=v)`."""
    attrs = event.get("attributes")
    if not isinstance(attrs, dict):
        attrs = {"name": event.get("name", "")}
    line = f"{event_time(float(event['time']))} {event['type']} {event['action']} {event['id']}"  # type: ignore[arg-type]
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


# ---- system df ---------------------------------------------------------------------------------

from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP  # noqa: E402 - docker/cli's texts, shared


def _human(size: int, precision: int = 4) -> str:
    from shoal.units import human_size

    return human_size(size, precision=precision)


def df_rows(rows: list[Any]) -> list[dict[str, str]]:
    """formatter.diskUsage*Context: `SIZE (PCT%)` reclaimable, the percentage Go's integer one."""
    out = []
    for r in rows:
        reclaimable = _human(r.reclaimable)
        if r.size > 0 and r.type != "Build Cache":
            reclaimable += f" ({r.reclaimable * 100 // r.size}%)"
        out.append({"Active": str(r.active), "Reclaimable": reclaimable, "Size": _human(r.size),
                    "TotalCount": str(r.total), "Type": r.type})  # keys sorted, as formatter.MarshalJSON
    return out


def print_df(rows: list[dict[str, str]], fmt: str | None) -> None:
    """df_rows' rows (made here, or by the node a remote CLI names) as `system df` prints them."""
    from shoal.cli.format import print_formatted

    print_formatted(fmt, ("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"),
                    ("Type", "TotalCount", "Active", "Size", "Reclaimable"), rows)


def disk_usage(verbose: bool) -> dict[str, Any]:
    """`system df` of this node (also GET /node/df for a remote CLI): {"rows"}, or verbose,
    {"text"}: its tables as written."""
    import io
    import time

    from shoal.image.store import ImageStore
    from shoal.runtime import diskusage
    from shoal.runtime.manager import ContainerManager

    rows = diskusage.usage(ImageStore(), ContainerManager().list(all=True))
    if not verbose:
        return {"rows": df_rows(rows)}
    out = io.StringIO()
    print_df_verbose(rows, time.time(), out)
    return {"text": out.getvalue()}


def print_df_verbose(rows: list[Any], now: float, out: Any = None) -> None:
    """DiskUsageContext.verboseWriteTable: one table per kind, build cache last with its total."""
    from shoal.cli.format import container_image, print_table
    from shoal.cli.swarmfmt import ellipsis
    from shoal.gofmt import quote
    from shoal.runtime.inspect import command_text, status_text
    from shoal.units import ago

    import sys

    out = out or sys.stdout
    images, containers, vols, cache = rows
    print("Images space usage:\n", file=out)
    image_rows = []
    for item in images.items:
        im = item["image"]
        repo, tag = "<none>", "<none>"
        if im.repo_tags:
            repo, _, tag = im.repo_tags[0].rpartition(":")
        image_rows.append([repo, tag, im.id.removeprefix("sha256:")[:12], ago(im.created, now) if im.created else "",
                           _human(im.size, 3), _human(item["shared"]), _human(im.size - item["shared"]),
                           str(item["containers"])])
    print_table(("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"),
                image_rows, out)
    print("\nContainers space usage:\n", file=out)
    print_table(("CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"),
                [[i["container"].id[:12], container_image(i["container"].image, i["container"].image_id, True), quote(ellipsis(command_text(i["container"]), 20)),
                  str(sum(1 for m in i["container"].spec.mounts if m.type == "volume")), _human(i["size"], 3),
                  ago(i["container"].created, now), status_text(i["container"], now), i["container"].name]
                 for i in containers.items], out)
    print("\nLocal Volumes space usage:\n", file=out)
    print_table(("VOLUME NAME", "LINKS", "SIZE"),
                [[i["volume"].name, str(i["links"]), _human(i["size"])] for i in vols.items], out)
    print(f"\nBuild cache usage: {_human(cache.size)}\n", file=out)
    print_table(("CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"),
                [[i["image"].id.removeprefix("sha256:")[:12], "regular", _human(i["size"], 3),
                  ago(i["image"].created, now) if i["image"].created else "", "", "0",
                  "true" if i["shared"] else "false"] for i in cache.items], out)


def _node(args: argparse.Namespace) -> Any:
    """The API client of the node a tcp:// context names (cli/main.py sets args.node), else None."""
    if getattr(args, "node", None) is None:
        return None
    from shoal.cli import remote

    return remote.client(args)


def _df(args: argparse.Namespace) -> int:
    verbose = bool(args.verbose and not args.format)
    node = _node(args)
    found = disk_usage(verbose) if node is None else node.get("/node/df", verbose="1" if verbose else None)
    if verbose:
        sys.stdout.write(found["text"])
    else:
        print_df(found["rows"], args.format)
    return 0


# ---- prunes --------------------------------------------------------------------------------------

BUILDER_WARNING = "WARNING! This will remove all dangling build cache. Are you sure you want to continue?"
BUILDER_ALL_WARNING = "WARNING! This will remove all build cache. Are you sure you want to continue?"


def prune_filters(items: list[str], allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """`--filter key=value` (repeatable); keys other than `allowed` are dockerd's invalid filter."""
    from shoal.errors import InvalidArgument, ShoalError

    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f'invalid argument "{item}" for "--filter" flag: bad format of filter '
                                  "(expected name=value)")
        key = key.strip().lower()
        if key not in allowed:
            err = ShoalError(f"invalid filter '{key}'")
            err.from_daemon = True  # type: ignore[attr-defined]
            raise err
        out.setdefault(key, []).append(value.strip())
    return out


def _until(filters: dict[str, list[str]]) -> float | None:
    from shoal.cli.image import parse_until

    values = filters.get("until", [])
    return min(parse_until(v) for v in values) if values else None


def builder_prune(all_: bool, filters: dict[str, list[str]], keep_storage: int | None = None) -> tuple[int, str]:
    from shoal.image.store import ImageStore
    from shoal.runtime import diskusage

    removed, reclaimed = diskusage.prune_build_cache(ImageStore(), all=all_, until=_until(filters),
                                                     keep_storage=keep_storage)
    if not removed:
        return 0, ""
    return reclaimed, "Deleted build cache objects:\n" + "".join(f"{i.removeprefix('sha256:')}\n" for i in removed)


def _builder_prune(args: argparse.Namespace) -> int:
    from shoal.cli.prune import confirm, print_total

    filters = prune_filters(args.filter, ("until", "id", "parent", "type", "description", "inuse", "shared",
                                          "private"))
    keep = None
    if args.keep_storage is not None:
        from shoal.errors import InvalidArgument
        from shoal.units import parse_ram_bytes

        try:
            keep = parse_ram_bytes(args.keep_storage)
        except (InvalidArgument, ValueError):
            raise InvalidArgument(f'invalid argument "{args.keep_storage}" for "--keep-storage" flag: '
                                  f"invalid size: '{args.keep_storage}'") from None
    if not args.force and not confirm(BUILDER_ALL_WARNING if args.all else BUILDER_WARNING):
        return 0
    reclaimed, output = pruned(args, "builder", args.all, filters, keep)
    if output:
        print(output)
    print_total(reclaimed)
    return 0


def container_prune(filters: dict[str, list[str]]) -> tuple[int, str]:
    from shoal.runtime import diskusage
    from shoal.runtime.manager import ContainerManager

    removed, reclaimed = diskusage.prune_containers(ContainerManager(), until=_until(filters),
                                                    labels=filters.get("label", []),
                                                    not_labels=filters.get("label!", []))
    if not removed:
        return 0, ""
    return reclaimed, "Deleted Containers:\n" + "".join(f"{cid}\n" for cid in removed)


def network_prune(filters: dict[str, list[str]]) -> str:
    from shoal.network import cleanup

    from shoal.image.store import parse_time

    until = _until(filters)

    def keep(net: Any) -> bool:
        if until is not None and parse_time(getattr(net, "created", "") or None) >= until:
            return False
        labels = getattr(net, "labels", None) or {}
        for cond in filters.get("label", []):
            key, sep, value = cond.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
        for cond in filters.get("label!", []):
            key, sep, value = cond.partition("=")
            if key in labels and (not sep or labels[key] == value):
                return False
        return True

    removed = cleanup.prune_networks(select=keep)
    return "Deleted Networks:\n" + "".join(f"{n}\n" for n in removed) if removed else ""


def image_prune(all_: bool, filters: dict[str, list[str]]) -> tuple[int, str]:
    from shoal.image.store import ImageStore

    records, reclaimed = ImageStore().prune_records(all=all_, until=_until(filters),
                                                    labels=filters.get("label", []) +
                                                    [c.replace("=", "!=", 1) if "=" in c else f"!{c}"
                                                     for c in filters.get("label!", [])])
    if not records:
        return reclaimed, ""
    return reclaimed, "Deleted Images:\n" + "".join(f"{r}\n" for r in records)


def prune_kind(kind: str, all_: bool, filters: dict[str, list[str]], keep_storage: int | None = None) -> tuple[int, str]:
    """One pruner of this node (also POST /node/prune for a remote CLI): (bytes reclaimed, its
    `Deleted ...:` text). Volumes take prune_filters' label/label! as cli/volume.py does."""
    from shoal.errors import InvalidArgument

    if kind == "containers":
        return container_prune(filters)
    if kind == "networks":
        return 0, network_prune(filters)
    if kind == "volumes":
        from shoal.cli import volume

        return volume.prune(all_, [f"label={v}" for v in filters.get("label", [])] +
                            [f"label!={v}" for v in filters.get("label!", [])])
    if kind == "images":
        return image_prune(all_, filters)
    if kind == "builder":
        return builder_prune(all_, filters, keep_storage)
    raise InvalidArgument(f"no such pruner: {kind[:40]!r}")


def pruned(args: argparse.Namespace, kind: str, all_: bool, filters: dict[str, list[str]],
           keep_storage: int | None = None) -> tuple[int, str]:
    """prune_kind here, or by the node a tcp:// context names."""
    node = _node(args)
    if node is None:
        return prune_kind(kind, all_, filters, keep_storage)
    done = node.request("POST", "/node/prune", None, {"kind": kind, "all": all_, "filters": filters,
                                                      "keep_storage": keep_storage})
    return int(done["reclaimed"]), str(done["output"])


def system_prune_warning(all_: bool, volumes_too: bool, filters: dict[str, list[str]]) -> str:
    """docker/cli system prune's confirmationTemplate, with each pruner's words in pruneOrder."""
    from shoal.cli.swarmfmt import natural_key

    warnings = ["all stopped containers", "all networks not used by at least one container"]
    if volumes_too:
        warnings.append("all anonymous volumes not used by at least one container")
    warnings.append("all images without at least one container associated to them" if all_ else "all dangling images")
    warnings.append("all build cache" if all_ else "unused build cache")
    text = "WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in warnings)
    shown = sorted((f"{name}={v}" for name in ("label", "label!", "until") for v in filters.get(name, [])),
                   key=natural_key)
    if shown:
        text += "\n  Items to be pruned will be filtered with:\n" + "".join(f"  - {f}\n" for f in shown)
    return text + "\nAre you sure you want to continue?"


def _system_prune(args: argparse.Namespace) -> int:
    from shoal.cli.prune import confirm, print_total

    filters = prune_filters(args.filter, ("until", "label", "label!"))
    if args.volumes and "until" in filters:
        raise ShoalError('ERROR: The "until" filter is not supported with "--volumes"')
    if not args.force and not confirm(system_prune_warning(args.all, args.volumes, filters)):
        return 0
    total = 0
    # pruner.pruneOrder: containers release networks and volumes before those are pruned.
    for kind in ("containers", "networks", "volumes", "images", "builder"):
        if kind == "volumes" and not args.volumes:
            continue
        reclaimed, output = pruned(args, kind, args.all and kind != "volumes", filters)
        total += reclaimed
        if output:
            print(output)
    print_total(total)
    return 0


def _system_info(args: argparse.Namespace) -> int:
    from shoal.cli.swarm import _info

    return _info(args)


# `system info` and `system events` ask the node the context names (cli/main.py lets a tcp://
# context through for handlers marked so); df and the prunes work on this machine's stores.
_system_info.on_node = True  # type: ignore[attr-defined]
for _handler in (_df, _system_prune, _builder_prune):
    _handler.on_node = True  # type: ignore[attr-defined] # a tcp:// context: that node's (cli/main.py)
_events.on_node = True  # type: ignore[attr-defined]


def register(sub: argparse._SubParsersAction) -> None:
    system = sub.add_parser("system", help="Manage shoal")
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    system.set_defaults(func=lambda args: system.print_help() or 0)
    p = ssub.add_parser("df", help="Show shoal disk usage")
    p.add_argument("-v", "--verbose", action="store_true", help="Show detailed information on space usage")
    p.add_argument("--format", default=None, help=FORMAT_HELP)
    p.set_defaults(func=_df)
    p = ssub.add_parser("prune", help="Remove unused data")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused images not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="Prune anonymous volumes")
    p.add_argument("--filter", action="append", default=[], help='Provide filter values (e.g. "label=<key>=<value>")')
    p.set_defaults(func=_system_prune)
    p = ssub.add_parser("info", help="Display system-wide information")
    from shoal.cli.swarm import add_info_flags

    add_info_flags(p)
    p.set_defaults(func=_system_info)
    p = ssub.add_parser("events", help="Get real time events from the server")
    _events_flags(p)

    builder = sub.add_parser("builder", help="Manage builds")
    bsub = builder.add_subparsers(dest="builder_command", metavar="COMMAND")
    builder.set_defaults(func=lambda args: builder.print_help() or 0)
    p = bsub.add_parser("prune", help="Remove build cache")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused build cache, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help='Provide filter values (e.g. "until=24h")')
    p.add_argument("--keep-storage", default=None, metavar="bytes", help="Amount of disk space to keep for cache")
    p.set_defaults(func=_builder_prune)

    p = sub.add_parser("daemon", help="Run shoald (the manager and agent) in the foreground")
    p.set_defaults(func=_daemon)
    p = sub.add_parser("version", help="Show the shoal version information")
    p.add_argument("-f", "--format", metavar="string", help=INSPECT_FORMAT_HELP)
    p.set_defaults(func=_version)
    p = sub.add_parser("events", help="Get real time events from shoald")
    _events_flags(p)


def _events_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="Show all events created since timestamp (a Go duration such as 10m, unix "
                                   "seconds or RFC 3339; a number below 1000000000 is a revision of shoald's "
                                   "event log)")
    p.add_argument("--until", help="Stream events until this timestamp")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--no-follow", action="store_true", help="Print past events and exit")
    p.add_argument("--format", help=INSPECT_FORMAT_HELP)
    p.set_defaults(func=_events)


