"""The container verbs beyond run/start/stop/rm: restart, pause, unpause, top, port, rename,
cp, diff, export, commit, attach and update, with docker/cli's flags, output and errors
(cli/command/container/*.go). Registered by cli/container.py at the top level and in the
`container` group, as Docker has them."""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import sys
from collections.abc import Callable
from typing import Any

from shoal.errors import ShoalError


def _manager():  # imported lazily: `shoal --help` should not load the runtime
    from shoal.cli.swarmattach import use_manager_addresses
    from shoal.runtime.manager import ContainerManager

    use_manager_addresses()  # a restart on an attachable swarm network: the manager's address
    return ContainerManager()


def _daemon(exc: ShoalError) -> ShoalError:
    """Print as Docker prints its daemon's answers (`Error response from daemon: ...`)."""
    exc.from_daemon = True  # type: ignore[attr-defined]
    exc.exit_code = 1  # docker/cli exits 1 for any error the daemon answers
    return exc


def _each(refs: list[str], action: Callable[[str], None]) -> int:
    """docker/cli's loop: the name of each container done on stdout, each error on stderr,
    exit 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            action(ref)
            print(ref, flush=True)
        except ShoalError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


# ---- restart / pause / unpause -------------------------------------------------------------------

def _node(args: argparse.Namespace) -> Any:
    """The API client of the node a tcp:// context names (cli/main.py sets args.node), else None:
    that node does the work (api/nodeops.py, with the same runtime functions)."""
    if getattr(args, "node", None) is None:
        return None
    from shoal.cli import remote

    return remote.client(args)


def _on_node(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    func.on_node = True  # type: ignore[attr-defined] # cli/main.py: a tcp:// context reaches it
    return func


@_on_node
def cmd_restart(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is not None:
        from shoal.api.client import quote_ref

        return _each(args.containers, lambda r: node.request(
            "POST", f"/containers/{quote_ref(r)}/restart", {"t": args.time, "signal": args.signal}))
    from shoal.cli.container import _resolver
    from shoal.runtime import control

    mgr = _manager()
    return _each(args.containers, lambda r: control.restart(mgr, r, args.time, args.signal, before_start=_resolver))


def _each_on_node(node: Any, refs: list[str], verb: str, params: dict[str, Any] | None = None,
                  body: Any = None) -> int:
    """_each over the node's POST /containers/{ref}/{verb} (api/nodeops.py)."""
    from shoal.api.client import quote_ref

    return _each(refs, lambda r: node.request("POST", f"/containers/{quote_ref(r)}/{verb}", params, body))


@_on_node
def cmd_pause(args: argparse.Namespace) -> int:
    from shoal.runtime import control

    node = _node(args)
    if node is not None:
        return _each_on_node(node, args.containers, "pause")
    mgr = _manager()
    return _each(args.containers, lambda r: control.pause(mgr, r))


@_on_node
def cmd_unpause(args: argparse.Namespace) -> int:
    from shoal.runtime import control

    node = _node(args)
    if node is not None:
        return _each_on_node(node, args.containers, "unpause")
    mgr = _manager()
    return _each(args.containers, lambda r: control.unpause(mgr, r))


# ---- top / port / rename -------------------------------------------------------------------------

def _go_tabwriter(rows: list[list[str]]) -> str:
    """docker top's tabwriter.NewWriter(out, 20, 1, 3, ' ', 0): cells padded to max(20, width+3),
    the last cell of each line as it is."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    out = []
    for row in rows:
        out.append("".join(cell.ljust(max(20, widths[i] + 3)) if i < len(row) - 1 else cell
                           for i, cell in enumerate(row)))
    return "\n".join(out) + "\n"


@_on_node
def cmd_top(args: argparse.Namespace) -> int:
    from shoal.runtime import control

    node = _node(args)
    try:
        if node is None:
            titles, rows = control.top(_manager(), args.container, " ".join(args.ps_args))
        else:
            from shoal.api.client import quote_ref

            found = node.get(f"/containers/{quote_ref(args.container)}/top", ps_args=" ".join(args.ps_args))
            titles, rows = found["Titles"], found["Processes"]
    except ShoalError as exc:
        raise _daemon(exc) from None
    sys.stdout.write(_go_tabwriter([titles, *rows]))
    return 0


def port_lines(ref: str, private: str | None) -> dict[str, Any]:
    """`port` on this node (also GET /containers/{id}/port): {"lines": [...]}, or {"error": ...}
    for what docker/cli itself refuses (printed bare); a missing container raises."""
    from shoal.runtime import control
    from shoal.runtime.manager import ContainerManager

    c = ContainerManager().get(ref)
    try:
        return {"lines": control.port_lines(c, private, ref)}
    except ShoalError as exc:
        return {"error": str(exc)}


@_on_node
def cmd_port(args: argparse.Namespace) -> int:
    node = _node(args)
    try:
        if node is None:
            found = port_lines(args.container, args.private_port)
        else:
            from shoal.api.client import quote_ref

            found = node.get(f"/containers/{quote_ref(args.container)}/port", private=args.private_port)
    except ShoalError as exc:
        raise _daemon(exc) from None
    if "error" in found:  # docker/cli's own error: printed as it is, exit 1
        print(found["error"], file=sys.stderr)
        return 1
    lines = found["lines"]
    if lines:
        print("\n".join(lines))
    return 0


def _rename_endpoints(container_id: str, name: str) -> bool:
    """The container's endpoints carry its name for the embedded DNS: follow the rename.
    True when one of them is on a user-defined network (whose resolver serves names)."""
    from shoal.network.store import NetworkStore

    store = NetworkStore()
    named = False
    with store.lock():
        for net in store.list():
            ep = net.endpoints.get(container_id)
            if ep is not None and ep.name != name:
                ep.name = name
                store.save(net)
                named = named or not net.predefined
    return named


def rename(ref: str, new_name: str) -> None:
    """`rename` on this node (in the CLI's process, or in shoald for a remote CLI)."""
    from shoal.runtime import control

    mgr = _manager()
    control.rename(mgr, ref, new_name)
    c = mgr.get(new_name)
    if _rename_endpoints(c.id, new_name.lstrip("/")) and c.state.status == "running":
        from shoal.cli.netconnect import refresh_dns

        with contextlib.suppress(ShoalError):
            refresh_dns(c)  # shoald's resolver answers the new name, not the old one


@_on_node
def cmd_rename(args: argparse.Namespace) -> int:
    node = _node(args)
    try:
        if node is None:
            rename(args.container, args.new_name)
        else:
            from shoal.api.client import quote_ref

            node.request("POST", f"/containers/{quote_ref(args.container)}/rename", {"name": args.new_name})
    except ShoalError as exc:
        print(f"failed to rename container: Error response from daemon: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- update --------------------------------------------------------------------------------------

_UPDATE_FLAGS = ("cpus", "memory", "memory_swap", "memory_reservation", "cpu_shares", "pids_limit")


@_on_node
def cmd_update(args: argparse.Namespace) -> int:
    from shoal.cli.container import parse_cpus, parse_memory
    from shoal.runtime import control

    if args.restart is not None:  # honest: a plain container here has no restart policy to change
        raise ShoalError("--restart: shoal's containers have no restart policy (a service's tasks do: "
                         "shoal service update --restart-condition)")
    if all(getattr(args, f) is None for f in _UPDATE_FLAGS):
        raise ShoalError("you must provide one or more flags when using this command")  # a RunE error: exit 1
    swap = 0
    if args.memory_swap is not None:
        swap = -1 if args.memory_swap.strip() == "-1" else parse_memory(args.memory_swap, "--memory-swap")
    res = control.Resources(
        nano_cpus=parse_cpus(args.cpus) if args.cpus is not None else 0,
        memory=parse_memory(args.memory) if args.memory is not None else 0,
        memory_swap=swap,
        memory_reservation=parse_memory(args.memory_reservation, "--memory-reservation")
        if args.memory_reservation is not None else 0,
        cpu_shares=args.cpu_shares or 0,
        pids_limit=args.pids_limit or 0,
    )
    node = _node(args)
    if node is not None:
        return _each_on_node(node, args.containers, "update", None, vars(res))
    mgr = _manager()
    return _each(args.containers, lambda r: control.update(mgr, r, res))


# ---- diff / export / commit ----------------------------------------------------------------------

@_on_node
def cmd_diff(args: argparse.Namespace) -> int:
    from shoal.runtime import rootfs

    node = _node(args)
    try:
        if node is None:
            found = rootfs.changes(_manager().get(args.container))
        else:
            from shoal.api.client import quote_ref

            found = node.get(f"/containers/{quote_ref(args.container)}/changes")
    except ShoalError as exc:
        raise _daemon(exc) from None
    for kind, path in found:
        print(f"{kind} {path}")
    return 0


@_on_node
def cmd_export(args: argparse.Namespace) -> int:
    from shoal.runtime import rootfs

    if not args.output and sys.stdout.isatty():
        raise ShoalError("cowardly refusing to save to a terminal. Use the -o flag or redirect")  # a RunE error: exit 1
    node = _node(args)
    try:
        if node is None:
            c = _manager().get(args.container)
            produce: Callable[[Any], None] = lambda out: rootfs.export(c, out)  # noqa: E731
        else:
            from shoal.api.client import quote_ref

            response = node.stream("GET", f"/containers/{quote_ref(args.container)}/export", timeout=None)
            produce = lambda out: _copy_response(response, out)  # noqa: E731
    except ShoalError as exc:
        raise _daemon(exc) from None
    if not args.output:
        produce(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    # docker's atomicwriter: a temporary file beside the target, renamed over it when complete
    target = os.path.abspath(args.output)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise ShoalError(f"failed to export container: invalid output path: stat {directory}: no such file or directory")
    tmp = os.path.join(directory, f".tmp-{os.path.basename(target)}{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            produce(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return 0


def _copy_response(response: Any, out: Any) -> None:
    """A node's streamed archive to `out`; a cut stream is an error, not a short archive."""
    try:
        for chunk in response.chunks():
            out.write(chunk)
    except ShoalError as exc:
        raise ShoalError(f"failed to export container: the archive was cut: {exc}") from None
    finally:
        response.close()


VALID_CHANGES = ("cmd", "entrypoint", "healthcheck", "env", "expose", "label", "onbuild", "stopsignal",
                 "user", "volume", "workdir")


def apply_changes(config: dict[str, Any], changes_: list[str]) -> dict[str, Any]:
    """`docker commit --change`: Dockerfile instructions applied to the container's config."""
    from shoal.build import dockerfile as df
    from shoal.errors import InvalidArgument

    cfg = dict(config)
    for text in changes_:
        word = text.strip().split(None, 1)[0] if text.strip() else ""
        if word.lower() not in VALID_CHANGES:
            raise InvalidArgument(f"{word} is not a valid change command")
        try:
            cmd = df.parse_onbuild_trigger(text, "--change")
        except ShoalError as exc:
            raise InvalidArgument(str(exc)) from None
        shell = list(cfg.get("Shell") or ["/bin/sh", "-c"])
        if isinstance(cmd, df.KeyValueCommand) and cmd.name == "env":
            env = list(cfg.get("Env") or [])
            for k, v in cmd.pairs:
                env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif isinstance(cmd, df.KeyValueCommand):
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(cmd.pairs)}
        elif isinstance(cmd, df.ShellFormCommand):
            argv = None if cmd.cmdline is None else (
                shell + [" ".join(cmd.cmdline)] if cmd.prepend_shell else list(cmd.cmdline))
            cfg["Cmd" if cmd.name == "cmd" else "Entrypoint"] = argv
        elif isinstance(cmd, df.WordCommand):
            key = {"user": "User", "stopsignal": "StopSignal", "workdir": "WorkingDir"}[cmd.name]
            value = cmd.value
            if cmd.name == "workdir" and not value.startswith("/"):
                value = posixpath.join(cfg.get("WorkingDir") or "/", value)
            cfg[key] = value
        elif isinstance(cmd, df.ListCommand) and cmd.name == "expose":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in cmd.values:
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif isinstance(cmd, df.ListCommand) and cmd.name == "volume":
            cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{v: {} for v in cmd.values}}
        elif isinstance(cmd, df.HealthcheckCommand):
            hc: dict[str, Any] = {"Test": cmd.test}
            for key, value in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                               ("StartPeriod", cmd.start_period), ("Retries", cmd.retries)):
                if value:
                    hc[key] = value
            cfg["Healthcheck"] = hc
        elif isinstance(cmd, df.OnbuildCommand):
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [cmd.expression]
    return cfg


def commit(container: str, reference: str, message: str, author: str, changes: list[str], pause: bool) -> str:
    """`commit` on this node (in the CLI's process, or in shoald for a remote CLI): the image ID."""
    from shoal.runtime import rootfs

    mgr = _manager()
    c = mgr.get(container)
    config = apply_changes(rootfs.base_config(c), changes)
    return rootfs.commit(c, mgr.images, reference, message=message, author=author, run_config=config,
                         pause=pause).id


@_on_node
def cmd_commit(args: argparse.Namespace) -> int:
    body = {"reference": args.reference or "", "message": args.message or "", "author": args.author or "",
            "changes": list(args.change), "pause": bool(args.pause)}
    node = _node(args)
    try:
        if node is None:
            image_id = commit(args.container, **body)
        else:
            from shoal.api.client import quote_ref

            image_id = node.request("POST", f"/containers/{quote_ref(args.container)}/commit", None, body)["Id"]
    except ShoalError as exc:
        raise _daemon(exc) from None
    print(image_id)
    return 0


# ---- cp ------------------------------------------------------------------------------------------

def _split_cp_arg(arg: str) -> tuple[str, str]:
    """docker/cli splitCpArg: `CONTAINER:PATH`, unless the path is absolute or starts with `.`
    (a local file with a colon in its name)."""
    if os.path.isabs(arg) or arg.startswith("."):
        return "", arg
    container, sep, path = arg.partition(":")
    return (container, path) if sep else ("", arg)


@_on_node
def cmd_cp(args: argparse.Namespace) -> int:
    from shoal.cli import containercp as rootfs

    if not args.src:
        raise ShoalError("source can not be empty")  # a RunE error: exit 1
    if not args.dest:
        raise ShoalError("destination can not be empty")  # a RunE error: exit 1
    src_ctr, src_path = _split_cp_arg(args.src)
    dst_ctr, dst_path = _split_cp_arg(args.dest)
    if src_ctr and dst_ctr:
        raise ShoalError("copying between containers is not supported")  # a RunE error: exit 1
    if not src_ctr and not dst_ctr:
        raise ShoalError("must specify at least one container source")  # a RunE error: exit 1
    # docker prints the summary only when its stdout is a terminal, unless -q (cp.go: quiet
    # defaults to !Out().IsTerminal()), and never for a tar on stdout
    summary = not args.quiet and sys.stdout.isatty()
    node = _node(args)
    if node is not None:
        from shoal.cli import remotecp

        try:
            if src_ctr:
                size = remotecp.copy_from(node, args, src_ctr, src_path, dst_path, summary)
                if dst_path == "-":
                    return 0
                where = _abs_keeping_trailer(dst_path)
            else:
                size = remotecp.copy_to(node, args, src_path, dst_ctr, dst_path, summary)
                where = f"{dst_ctr}:{dst_path}"
        except ShoalError as exc:
            raise _daemon(exc) from None
        if summary:
            _copied(size, where)
        return 0
    mgr = _manager()
    try:
        if src_ctr:
            c = mgr.get(src_ctr)
            if dst_path == "-":
                rootfs.copy_out(c, src_ctr, src_path, follow_link=args.follow_link, tar_out=sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return 0
            size = rootfs.copy_out(c, src_ctr, src_path, follow_link=args.follow_link,
                                   host_dest=dst_path, archive=args.archive)
            where = _abs_keeping_trailer(dst_path)
        else:
            c = mgr.get(dst_ctr)
            if src_path == "-":
                rootfs.copy_in(c, dst_ctr, dst_path, tar_in=sys.stdin.buffer)
                size = 0  # docker counts only what it tars itself
            else:
                size = rootfs.host_tar_size(src_path) if summary and os.path.lexists(src_path) else 0
                rootfs.copy_in(c, dst_ctr, dst_path, host_src=src_path, archive=args.archive)
            where = f"{dst_ctr}:{dst_path}"
    except ShoalError as exc:
        raise _daemon(exc) from None
    if summary:
        _copied(size, where)
    return 0


def _copied(size: int, where: str) -> None:
    from shoal.units import human_size

    print("Successfully copied", human_size(size), "to", where, file=sys.stderr)


def _abs_keeping_trailer(path: str) -> str:
    """go-archive PreserveTrailingDotOrSeparator over filepath.Abs, as docker/cli's
    resolveLocalPath: `dir/` and `dir/.` keep their ending."""
    absolute = os.path.abspath(path)
    if path.endswith("/.") or path == ".":
        return absolute if absolute.endswith("/.") else absolute.rstrip("/") + "/."
    if path.endswith("/") and not absolute.endswith("/"):
        return absolute + "/"
    return absolute


# ---- attach --------------------------------------------------------------------------------------

def cmd_attach(args: argparse.Namespace) -> int:
    """Attach to the container's stdio through conmon's attach socket (its live output, stdin
    when it was run with -i unless --no-stdin, its terminal with -t: cli/interactive.py), or
    through a remote node's API on a tcp:// context; exit with the container's code."""
    from shoal.cli import interactive

    from shoal.cli.container import _through_api

    if _through_api(args):
        return interactive.attach_remote(args)
    return interactive.attach_local(_manager(), args, _daemon)


cmd_attach.on_node = True  # type: ignore[attr-defined] # cli/main.py lets a tcp:// context reach it


# ---- registration --------------------------------------------------------------------------------

def _truthy(text: str) -> bool:
    if text.lower() in ("true", "1", "t"):
        return True
    if text.lower() in ("false", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def register_verbs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("restart", help="Restart one or more containers")
    p.add_argument("-s", "--signal", help="Signal to send to the container")
    p.add_argument("-t", "--timeout", "--time", dest="time", type=int, metavar="int",
                   help="Seconds to wait before killing the container")  # --time: docker's deprecated spelling
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("pause", help="Pause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_pause)

    p = sub.add_parser("unpause", help="Unpause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_unpause)

    p = sub.add_parser("top", help="Display the running processes of a container",
                       usage="%(prog)s CONTAINER [ps OPTIONS]")  # docker's Use line
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("port", help="List port mappings or a specific mapping for the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=cmd_port)

    p = sub.add_parser("rename", help="Rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("update", help="Update configuration of one or more containers")
    p.add_argument("--cpus", metavar="decimal", help="Number of CPUs")
    p.add_argument("-m", "--memory", metavar="bytes", help="Memory limit")
    p.add_argument("--memory-swap", metavar="bytes", help="Swap limit equal to memory plus swap: -1 to enable unlimited swap")
    p.add_argument("--memory-reservation", metavar="bytes", help="Memory soft limit")
    p.add_argument("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    p.add_argument("--pids-limit", type=int, help="Tune container pids limit (set -1 for unlimited)")
    p.add_argument("--restart", help="Restart policy to apply when a container exits (not supported: no policies)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("diff", help="Inspect changes to files or directories on a container's filesystem")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("export", help="Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("commit", help="Create a new image from a container's changes",
                       usage="%(prog)s [OPTIONS] CONTAINER [REPOSITORY[:TAG]]")
    p.add_argument("-a", "--author", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", help="Commit message")
    p.add_argument("-p", "--pause", type=_truthy, nargs="?", const=True, default=True,
                   help="Pause container during commit (default true)")
    p.add_argument("--no-pause", dest="pause", action="store_false", help=argparse.SUPPRESS)  # shoal's; docker: -p=false
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", metavar="[REPOSITORY[:TAG]]")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("cp", help="Copy files/folders between a container and the local filesystem",
                       usage="%(prog)s [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\t%(prog)s [OPTIONS] SRC_PATH|- "
                             "CONTAINER:DEST_PATH")  # docker's two Use lines
    p.add_argument("-a", "--archive", action="store_true", help="Archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="Always follow symbol link in SRC_PATH")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="Suppress progress output during copy. Progress output is automatically suppressed if "
                        "no terminal is attached")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("attach", help="Attach local standard input, output, and error streams to a running container")
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument("--sig-proxy", type=_truthy, nargs="?", const=True, default=True,
                   help="Proxy all received signals to the process (default true)")
    p.add_argument("--detach-keys", help="Override the key sequence for detaching a container")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_attach)
