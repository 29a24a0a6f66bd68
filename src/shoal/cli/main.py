"""The `shoal` command: one argparse tree, each command group registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from shoal import __version__
from shoal.errors import ShoalError

# Each module defines register(subparsers); handlers are set with set_defaults(func=...).
_GROUPS = (
    "shoal.cli.container",
    "shoal.cli.image",
    "shoal.cli.archive",
    "shoal.cli.build",
    "shoal.cli.registry",
    "shoal.cli.system",
    "shoal.cli.network",
    "shoal.cli.service",
    "shoal.cli.stack",
)


# The modules a top-level command needs, so that `shoal ps` does not import the registry client,
# the compose schema and the HTTP stack (CLI start-up time). A command missing here still works:
# every module is loaded for it.
_COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    **{c: ("shoal.cli.container",) for c in (
        "container", "create", "exec", "inspect", "kill", "logs", "ps", "rm", "run", "start", "stats",
        "stop", "wait")},
    **{c: ("shoal.cli.image",) for c in ("history", "images", "import", "rmi", "tag")},
    "image": ("shoal.cli.image", "shoal.cli.archive", "shoal.cli.build", "shoal.cli.registry"),
    "load": ("shoal.cli.image", "shoal.cli.archive"),
    "save": ("shoal.cli.image", "shoal.cli.archive"),
    "build": ("shoal.cli.image", "shoal.cli.build"),
    **{c: ("shoal.cli.image", "shoal.cli.registry") for c in ("login", "logout", "pull", "push")},
    **{c: ("shoal.cli.system",) for c in ("daemon", "events", "version")},
    "network": ("shoal.cli.network",),
    "service": ("shoal.cli.service",),
    "stack": ("shoal.cli.stack",),
}


def _command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
        if arg in ("-h", "--help", "--version"):
            return None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Docker Swarm stacks, re-built in Python, with no Docker daemon.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    args = list(sys.argv[1:] if argv is None else argv)
    command = _command(args)
    groups = () if command is None and "--version" in args else _COMMAND_GROUPS.get(command or "", _GROUPS)
    for name in groups:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency is a real error, not an absent group
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        result = func(args)
    except ShoalError as exc:
        # shoald's answers read as Docker prints its daemon's (api/client.py DaemonError).
        print(f"{'Error response from daemon' if getattr(exc, 'from_daemon', False) else 'Error'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
