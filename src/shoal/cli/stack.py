"""`shoal stack ...`: the compose side. `stack config` prints docker/cli's typed model of the
merged, interpolated files (shoal.compose.dockermodel) as `docker stack config` prints it;
the daemon-backed verbs (deploy, ls, ps, rm, services) are added to the same group."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("stack", help="Manage Swarm stacks",
                            description="Manage Swarm stacks")
    stack_sub = parser.add_subparsers(dest="stack_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
    # Kept on the parser so that modules adding verbs later can find the group.
    parser.set_defaults(_stack_subparsers=stack_sub)

    p = stack_sub.add_parser(
        "config",
        help="Outputs the final config file, after doing merges and interpolations",
        description="Outputs the final config file, after doing merges and interpolations",
    )
    add_compose_file_options(p)
    p.add_argument("--skip-interpolation", action="store_true",
                   help="Skip interpolation and output only merged config")
    p.set_defaults(func=_config)

    from shoal.cli.stackcmds import register_verbs

    register_verbs(stack_sub)


def add_compose_file_options(p: argparse.ArgumentParser) -> None:
    """-c/--compose-file (repeatable) and --env-file, shared with `stack deploy`."""
    p.add_argument("-c", "--compose-file", action="append", default=[], metavar="FILE",
                   dest="compose_files", help="Path to a Compose file, or \"-\" to read from stdin")
    p.add_argument("--env-file", action="append", default=None, metavar="FILE",
                   dest="env_files",
                   help="Read in a file of environment variables (default: .env beside the "
                        "first Compose file)")


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def _config(args: argparse.Namespace) -> int:
    """docker/cli's typed model printed as its yaml.v3 encoder prints it."""
    files = [Path(f) for f in args.compose_files]
    env_files = [Path(f) for f in args.env_files] if args.env_files is not None else None
    from shoal.compose.api import load_docker_model
    from shoal.compose.goyaml import dump

    model = load_docker_model(files, env_files=env_files, warn=warn,
                              interpolation=not args.skip_interpolation)
    sys.stdout.write(dump(model))
    return 0
