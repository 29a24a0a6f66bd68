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
            stamp = datetime.datetime.fromtimestamp(event["time"]).astimezone().isoformat(timespec="microseconds")
            print(f"{stamp} {event['type']} {event['action']} {event['id']} (name={event['name']})", flush=True)
    return 0


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


