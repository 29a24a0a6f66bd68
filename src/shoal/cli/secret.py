"""`shoal secret create|ls|inspect|rm`, as docker/cli's cli/command/secret; the same code serves
`shoal config` (cli/config.py), as the two groups differ only in a few words, the DRIVER column,
and a config's data shown by `inspect --pretty`. The objects live on the manager the context
names (api/objectsapi.py)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

from shoal.errors import InvalidArgument, ShoalError

# docker/cli cli/flags/options.go
from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP  # noqa: E402 - docker/cli's texts, shared

# secret create reads up to twice Swarm's limit (docker/cli readSecretData), the daemon refuses
# what is over it with swarmkit's words.
MAX_SIZE = {"secret": 500 * 1024, "config": 1000 * 1024}


class DaemonFailure(ShoalError):
    """A daemon's refusal as Docker's CLI ends on it: exit 1 whatever its kind."""

    from_daemon = True


def _client() -> Any:
    from shoal.api.client import connect

    return connect()


def _as_exit_1(exc: ShoalError) -> ShoalError:
    if getattr(exc, "from_daemon", False):
        return DaemonFailure(str(exc))
    return exc


def _go_error(exc: OSError, path: str) -> str:
    """Go's *PathError text: `open x: no such file or directory`."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"open {path}: {reason[:1].lower()}{reason[1:]}"


def read_data(kind: str, name: str) -> bytes:
    """docker/cli readSecretData / readConfigData."""
    limit = 2 * MAX_SIZE[kind]
    if name == "-":
        data = sys.stdin.buffer.read(limit)
        if not data:
            raise ShoalError("error reading from STDIN: data is empty")
        return data
    if name == "":
        raise ShoalError(f"{kind} file is required")
    try:
        with open(name, "rb") as f:
            data = f.read(limit)
    except OSError as exc:
        raise ShoalError(f"error reading from {name}: {_go_error(exc, name)}") from None
    if not data:
        raise ShoalError(f"error reading from {name}: data is empty")
    return data


def parse_labels(items: list[str]) -> dict[str, str]:
    """opts.ValidateLabel then ConvertKVStringsToMap."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise InvalidArgument(f"invalid argument \"{item}\" for \"-l, --label\" flag: invalid label '{item}': empty name")
        out[key] = value if sep else ""
    return out


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    """opts.FilterOpt: `key=value`, repeatable."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"invalid argument \"{item}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)")
        out.setdefault(key.strip().lower(), []).append(value.strip())
    return out


def _create(kind: str, args: argparse.Namespace) -> int:
    if kind == "secret" and getattr(args, "driver", None):
        if args.file:
            raise ShoalError("when using secret driver secret data must be empty")
        data = b""
    elif kind == "config":
        try:
            data = read_data(kind, args.file)
        except ShoalError as exc:
            raise ShoalError(f"error reading content from \"{args.file}\": {exc}") from None
    else:
        data = read_data(kind, args.file or "")
    body: dict[str, Any] = {"Name": args.name, "Labels": parse_labels(args.label),
                            "Data": base64.b64encode(data).decode()}
    if getattr(args, "driver", None):
        body["Driver"] = {"Name": args.driver}
    if args.template_driver:
        body["Templating"] = {"Name": args.template_driver}
    try:
        with _client() as client:
            made = client.post(f"/{kind}s/create", body)
    except ShoalError as exc:
        raise _as_exit_1(exc) from None
    print(made["ID"])
    return 0


def _ago(stamp: str, now: float) -> str:
    from shoal.units import ago

    return ago(parse_go_time(stamp), now)


def parse_go_time(stamp: str) -> float:
    """An RFC3339Nano time (as model.secret.go_time writes it) to a Unix time."""
    if stamp.startswith("0001-01-01"):
        return 0.0
    head, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return whole + (int(frac.ljust(9, "0")[:9]) / 1e9 if frac else 0.0)


def pretty_time(stamp: str) -> str:
    """formatter.PrettyPrint(time.Time): Go's Time.String() with all but the first letter lower
    case (`2026-12-06 23:40:12.5 +0000 utc`)."""
    if stamp.startswith("0001-01-01"):
        return "0001-01-01 00:00:00 +0000 utc"
    head, _, frac = stamp.rstrip("Z").partition(".")
    frac = frac.rstrip("0")
    return head.replace("T", " ") + (f".{frac}" if frac else "") + " +0000 utc"


def natural_key(text: str) -> list[Any]:
    from shoal.cli.swarmfmt import natural_key as key

    return key(text)


def rows(kind: str, objects: list[dict[str, Any]], now: float) -> list[dict[str, str]]:
    """The fields docker/cli's secretContext / configContext give a template."""
    out = []
    for obj in objects:
        labels = obj["Spec"].get("Labels") or {}
        row = {"ID": obj["ID"], "Name": obj["Spec"]["Name"], "CreatedAt": _ago(obj["CreatedAt"], now),
               "UpdatedAt": _ago(obj["UpdatedAt"], now),
               "Labels": ",".join(sorted(f"{k}={v}" for k, v in labels.items()))}
        if kind == "secret":
            row["Driver"] = (obj["Spec"].get("Driver") or {}).get("Name", "")
        out.append({k: row[k] for k in sorted(row)})  # formatter.MarshalJSON: a Go map, keys sorted
    return out


def print_list(kind: str, objects: list[dict[str, Any]], fmt: str | None, quiet: bool, now: float | None = None) -> None:
    """defaultSecretTableFormat / defaultConfigTableFormat, sorted by name in natural order."""
    from shoal.cli.format import print_formatted

    objects = sorted(objects, key=lambda o: natural_key(o["Spec"]["Name"]))
    if kind == "secret":
        headers, fields = ("ID", "NAME", "DRIVER", "CREATED", "UPDATED"), ("ID", "Name", "Driver", "CreatedAt", "UpdatedAt")
    else:
        headers, fields = ("ID", "NAME", "CREATED", "UPDATED"), ("ID", "Name", "CreatedAt", "UpdatedAt")
    print_formatted(fmt, headers, fields, rows(kind, objects, now or time.time()), quiet_field="ID", quiet=quiet)


def _ls(kind: str, args: argparse.Namespace) -> int:
    filters = parse_filters(args.filter)
    try:
        with _client() as client:
            found = client.get(f"/{kind}s", filters=json.dumps(filters)) if filters else client.get(f"/{kind}s")
    except ShoalError as exc:
        raise _as_exit_1(exc) from None
    print_list(kind, found, args.format, args.quiet)
    return 0


def pretty(kind: str, obj: dict[str, Any]) -> str:
    """secretInspectPrettyTemplate / configInspectPrettyTemplate, as text/template renders them."""
    spec = obj["Spec"]
    labels = spec.get("Labels") or {}
    label_lines = "".join(f"\n - {k}{'=' + v if v else ''}" for k, v in sorted(labels.items()))
    if kind == "secret":
        text = f"ID:              {obj['ID']}\nName:              {spec['Name']}"
        if labels:
            text += "\nLabels:" + label_lines
        driver = (spec.get("Driver") or {}).get("Name", "")
        return (text + f"\nDriver:            {driver}\nCreated at:        {pretty_time(obj['CreatedAt'])}"
                       f"\nUpdated at:        {pretty_time(obj['UpdatedAt'])}")
    text = f"ID:\t\t\t{obj['ID']}\nName:\t\t\t{spec['Name']}"
    if labels:
        text += "\nLabels:" + label_lines
    data = base64.b64decode(spec.get("Data") or "").decode(errors="replace")
    return (text + f"\nCreated at:            \t{pretty_time(obj['CreatedAt'])}"
                   f"\nUpdated at:            \t{pretty_time(obj['UpdatedAt'])}\nData:\n{data}")


def _inspect(kind: str, args: argparse.Namespace) -> int:
    from shoal.cli.format import render_template

    fmt = "pretty" if args.pretty else (args.format or "")
    if fmt.startswith("pretty") and fmt != "pretty":
        raise ShoalError("cannot supply extra formatting options to the pretty template")
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    with _client() as client:
        for ref in args.names:
            try:
                found.append(client.get(f"/{kind}s/{ref}"))
            except ShoalError as exc:
                prefix = "Error response from daemon: " if getattr(exc, "from_daemon", False) else "Error: "
                errors.append(prefix + str(exc))
    if fmt == "pretty":
        # formatter.Context.Write: the documents one after another, a blank line between them.
        if found:
            print("\n\n".join(pretty(kind, o) for o in found))
    elif fmt:
        for obj in found:
            print(render_template(fmt, obj))
    else:
        print(json.dumps(found, indent=4))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


def _rm(kind: str, args: argparse.Namespace) -> int:
    """Each name in turn; the ones removed are printed, the errors joined at the end (exit 1)."""
    errors: list[str] = []
    with _client() as client:
        for ref in args.names:
            try:
                client.delete(f"/{kind}s/{ref}")
            except ShoalError as exc:
                prefix = "Error response from daemon: " if getattr(exc, "from_daemon", False) else "Error: "
                errors.append(prefix + str(exc))
                continue
            print(ref)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


def register_kind(sub: argparse._SubParsersAction, kind: str) -> None:  # type: ignore[type-arg]
    title = kind.capitalize()
    upper = kind.upper()
    parser = sub.add_parser(kind, help=f"Manage Swarm {kind}s")
    ksub = parser.add_subparsers(dest=f"{kind}_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    if kind == "secret":
        p = ksub.add_parser("create", help="Create a secret from a file or STDIN as content",
                            usage="shoal secret create [OPTIONS] SECRET [file|-]")
        p.add_argument("name", metavar=upper)
        p.add_argument("file", nargs="?", default="", metavar="file|-")
        p.add_argument("-d", "--driver", default="", help="Secret driver")
    else:
        p = ksub.add_parser("create", help="Create a config from a file or STDIN",
                            usage="shoal config create [OPTIONS] CONFIG file|-")
        p.add_argument("name", metavar=upper)
        p.add_argument("file", metavar="file|-")
    p.add_argument("-l", "--label", action="append", default=[], help=f"{title} labels")
    p.add_argument("--template-driver", default="", help="Template driver")
    p.set_defaults(func=lambda args: _create(kind, args))

    p = ksub.add_parser("inspect", help=f"Display detailed information on one or more {kind}s")
    p.add_argument("names", nargs="+", metavar=upper)
    p.add_argument("-f", "--format", default=None, help=INSPECT_FORMAT_HELP)
    p.add_argument("--pretty", action="store_true", help="Print the information in a human friendly format")
    p.set_defaults(func=lambda args: _inspect(kind, args))

    p = ksub.add_parser("ls", aliases=["list"], help=f"List {kind}s")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", default=None, help=FORMAT_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="Only display IDs")
    p.set_defaults(func=lambda args: _ls(kind, args))

    p = ksub.add_parser("rm", aliases=["remove"], help=f"Remove one or more {kind}s")
    p.add_argument("names", nargs="+", metavar=upper)
    p.set_defaults(func=lambda args: _rm(kind, args))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    register_kind(sub, "secret")
