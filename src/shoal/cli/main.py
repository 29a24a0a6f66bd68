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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Docker Swarm stacks, re-built in Python, with no Docker daemon.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency is a real error, not an absent group
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        result = func(args)
    except ShoalError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
