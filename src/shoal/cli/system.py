"""`shoal daemon`, `shoal version`, `shoal events`."""

from __future__ import annotations

import argparse
import datetime
import json

from shoal import __version__


def _daemon(_: argparse.Namespace) -> int:
    from shoal.daemon import run

    return run()


def _version(_: argparse.Namespace) -> int:
    print(f"shoal version {__version__}")
    return 0


def _events(args: argparse.Namespace) -> int:
    from shoal.api.client import connect

    with connect() as client:
        params = {"follow": "0" if args.no_follow else "1"}
        if args.since is not None:
            params["since"] = str(args.since)
        for line in client.stream_lines("/events", **params):
            event = json.loads(line)
            if args.format == "json":
                print(line, flush=True)
                continue
            print(pretty_event(event), flush=True)
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="Run shoald (the manager and agent) in the foreground")
    p.set_defaults(func=_daemon)
    p = sub.add_parser("version", help="Show the shoal version information")
    p.set_defaults(func=_version)
    p = sub.add_parser("events", help="Get real time events from shoald")
    p.add_argument("--since", type=int, help="Show events after this store revision")
    p.add_argument("--no-follow", action="store_true", help="Print past events and exit")
    p.add_argument("--format", help="Format the output ('json')")
    p.set_defaults(func=_events)


