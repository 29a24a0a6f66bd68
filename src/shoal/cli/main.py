"""The `shoal` command: one argparse tree, each command group registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import re
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
    "shoal.cli.swarm",
    "shoal.cli.node",
    "shoal.cli.context",
    "shoal.cli.cluster",
    "shoal.cli.secret",
    "shoal.cli.config",
    "shoal.cli.volume",
    "shoal.cli.completion",
)

# Commands that act on the node the context names (through its shoald's API). The others run
# in this process on this machine, and refuse a remote context rather than act on the wrong node,
# unless their handler is marked `on_node` (cli/remote.py): then, for a tcp:// context, they get
# args.node and do their work through that node's API (build, images, load, save, ps, logs ...).
# (completion is the CLI's own: it prints a script, whatever the context names.)
_REMOTE_OK = frozenset({"stack", "service", "node", "swarm", "events", "info", "context", "cluster", "secret", "config",
                        "version", "daemon", "login", "logout", "completion"})
# Global options that take a value (skipped when finding the command).
_VALUE_OPTIONS = frozenset({"-H", "--host", "-c", "--context"})


# The modules a top-level command needs, so that `shoal ps` does not import the registry client,
# the compose schema and the HTTP stack (CLI start-up time). A command missing here still works:
# every module is loaded for it.
_COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    **{c: ("shoal.cli.container",) for c in (
        "container", "create", "exec", "inspect", "kill", "logs", "ps", "rm", "run", "start", "stats",
        "stop", "wait", "attach", "commit", "cp", "diff", "export", "pause", "port", "rename", "restart",
        "top", "unpause", "update")},
    **{c: ("shoal.cli.image",) for c in ("history", "images", "import", "rmi", "tag")},
    "image": ("shoal.cli.image", "shoal.cli.archive", "shoal.cli.build", "shoal.cli.registry"),
    "load": ("shoal.cli.image", "shoal.cli.archive"),
    "save": ("shoal.cli.image", "shoal.cli.archive"),
    "build": ("shoal.cli.image", "shoal.cli.build"),
    **{c: ("shoal.cli.image", "shoal.cli.registry") for c in ("login", "logout", "pull", "push")},
    **{c: ("shoal.cli.system",) for c in ("daemon", "events", "version", "system", "builder")},
    "network": ("shoal.cli.network",),
    "service": ("shoal.cli.service",),
    "stack": ("shoal.cli.stack",),
    "swarm": ("shoal.cli.swarm",),
    "info": ("shoal.cli.swarm",),
    "node": ("shoal.cli.node",),
    "context": ("shoal.cli.context",),
    "cluster": ("shoal.cli.cluster",),
    "secret": ("shoal.cli.secret",),
    "config": ("shoal.cli.config",),
    "volume": ("shoal.cli.volume",),
}


def _command(argv: Sequence[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _VALUE_OPTIONS:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
        if arg in ("-h", "--help", "--version"):
            return None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    from shoal.cli.helptext import DockerArgumentParser, link_tree

    parser = DockerArgumentParser(
        prog="shoal",
        description="Docker Swarm stacks, re-built in Python, with no Docker daemon.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}",
                        help="Print version information and quit")
    parser.add_argument("-H", "--host", dest="global_host", metavar="HOST",
                        help="Daemon socket to connect to (unix:///PATH or tcp://HOST:PORT)")
    parser.add_argument("-c", "--context", dest="global_context", metavar="NAME",
                        help='Name of the context to use to connect to the daemon (overrides SHOAL_HOST '
                             'and SHOAL_CONTEXT; "shoal context use" sets the default)')
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
    link_tree(parser)  # --help as docker's: each command knows its parent and one-line help
    return parser


def _daemon(_: argparse.Namespace) -> int:
    from shoal.daemon import run

    return run()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser: argparse.ArgumentParser | None = None
    if words == ["daemon"]:
        # shoald's own start (contrib/shoald.service): straight to the daemon, so the process
        # that runs for months holds neither the parser tree nor the CLI modules it would import
        # (cli/system, format, helptext, swarm, api/contexts: 0.36 MiB of shoald's RSS, measured).
        # Nothing else applies to a bare `daemon`: no flag to parse, and -H/--context would not
        # change where it listens (daemon is in _REMOTE_OK).
        args, func = argparse.Namespace(command="daemon"), _daemon
    else:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 0
    try:
        if parser is not None:
            _select_endpoint(args, _command(words))
        result = func(args)
    except ShoalError as exc:
        if _flag_error(exc):
            return 125
        # shoald's answers read as Docker prints its daemon's (api/client.py DaemonError).
        print(f"{'Error response from daemon' if getattr(exc, 'from_daemon', False) else 'Error'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


_FLAG_VALUE = re.compile(r'invalid argument ".*" for "[^"]+" flag', re.S)


def _flag_error(exc: ShoalError) -> bool:
    """A flag's value refused by its handler (`invalid argument "x" for "--replicas" flag: ...`)
    is printed as docker/cli's FlagErrorFunc prints pflag's: no `Error:`, the command's Usage
    line and where its help is, exit 125 (cli/cobra.go)."""
    if getattr(exc, "from_daemon", False) or not _FLAG_VALUE.match(str(exc)):
        return False
    from shoal.cli.helptext import DockerArgumentParser, usage_line

    parser = DockerArgumentParser._active  # the command whose flags were parsed last
    if parser is None:
        return False
    print(f"{exc}\n\nUsage:  {usage_line(parser)}\n\nRun '{parser.prog} --help' for more information",
          file=sys.stderr)
    return True


def _select_endpoint(args: argparse.Namespace, command: str | None) -> None:
    """Apply -H/--context (Docker's rules), and refuse a remote node for the commands that run
    in this process."""
    host, context = getattr(args, "global_host", None), getattr(args, "global_context", None)
    if host is None and context is None and not _may_be_remote():
        return
    from shoal.api import contexts

    if host is not None and context is not None:
        raise ShoalError("conflicting options: either specify --host or --context, not both")
    if host is not None:
        contexts.flag_host = contexts.normalize_host(host)
    if context is not None:
        contexts.flag_context = context
    if command is None or command in _REMOTE_OK:
        return
    endpoint = contexts.endpoint()
    elsewhere = endpoint.is_tcp or contexts.foreign_socket(endpoint)
    if elsewhere and getattr(args.func, "on_node", False):
        args.node = endpoint  # the command does its work through that node's API (cli/remote.py)
        return
    if elsewhere:
        raise ShoalError(
            f"shoal {command} against a remote node is not supported yet: the context "
            f"\"{endpoint.context}\" points at {endpoint.host}, and {command} runs on this machine "
            f"(every Docker command reaches a remote node; shoal's own `container cleanup`, `image bootstrap` "
            f"and `network reconcile` do not); run it on that node, or go back with `shoal context use default`")


def _may_be_remote() -> bool:
    """Cheap: could the endpoint be another node's? (an environment variable, or a current
    context recorded in the config file)."""
    import os

    if os.environ.get("SHOAL_HOST") or os.environ.get("SHOAL_CONTEXT"):
        return True
    from shoal.api import contexts

    try:
        return contexts.current_context_setting() != contexts.DEFAULT
    except ShoalError:
        return True  # a broken config file: let the command report it


if __name__ == "__main__":
    raise SystemExit(main())
