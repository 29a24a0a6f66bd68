"""Container commands as Docker spells them: run, create, start, ps, logs, exec, stop, kill, rm,
inspect, stats, wait, and the `container` group (same verbs plus ls and prune)."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP, bytes_size, container_image, human_duration, human_size, parse_ram_bytes, print_formatted, render_template
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.runtime.spec import ContainerSpec, Mount, PortMapping, Ulimit


def _manager():  # imported lazily: `shoal --help` should not load the runtime
    from shoal.cli.swarmattach import use_manager_addresses
    from shoal.runtime.manager import ContainerManager

    use_manager_addresses()  # in a swarm: attachable swarm networks' addresses from the manager
    return ContainerManager()


# ---- flag parsing ------------------------------------------------------------------------------

def _flag_error(value: str, flag: str, why: str) -> InvalidArgument:
    return InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: {why}')


def parse_memory(value: str, flag: str = "-m, --memory") -> int:
    try:
        return parse_ram_bytes(value)
    except ValueError as exc:
        raise _flag_error(value, flag, str(exc)) from None


def parse_cpus(value: str) -> int:
    try:
        nano = Fraction(value) * 1_000_000_000
    except (ValueError, ZeroDivisionError):
        raise _flag_error(value, "--cpus", f"failed to parse {value} as a rational number") from None
    if nano.denominator != 1 and nano != int(nano):
        raise _flag_error(value, "--cpus", "value is too precise")
    if nano < 0:
        raise _flag_error(value, "--cpus", "invalid value: must be positive")
    return int(nano)


def parse_env_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise InvalidArgument(f"{path}: line {n}: variable '{key}' contains whitespaces")
        if "=" not in line:
            if key in os.environ:
                out.append(f"{key}={os.environ[key]}")
            continue
        out.append(line)
    return out


def parse_env(items: list[str]) -> list[str]:
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def parse_volume(text: str) -> Mount:
    parts = text.split(":")
    if len(parts) == 1:
        return Mount(type="volume", target=parts[0])
    if len(parts) > 3:
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    modes = set(mode.split(",")) if mode else set()
    if modes - {"ro", "rw", "z", "Z", "rprivate", "private", "rshared", "shared", "rslave", "slave", "nocopy"}:
        raise InvalidArgument(f"invalid mode: {mode}")
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{text}': invalid mount config for type \"volume\": invalid mount path: '{target}' mount path must be absolute")
    kind = "bind" if source.startswith("/") else "volume"
    propagation = [m for m in ("rprivate", "private", "rshared", "shared", "rslave", "slave") if m in modes]
    if len(propagation) > 1:
        raise InvalidArgument(f"invalid mode: {mode}")
    if propagation and kind != "bind":  # moby's ParseMountRaw: propagation is for binds only
        raise InvalidArgument(f"invalid volume specification: '{text}': invalid mount config for type \"volume\": "
                              "field BindOptions must not be specified")
    nocopy = ["nocopy"] if "nocopy" in modes and kind == "volume" else []  # no copy-up of the image's files
    return Mount(type=kind, source=source, target=target, read_only="ro" in modes, options=propagation + nocopy)


def parse_tmpfs(text: str) -> Mount:
    target, _, opts = text.partition(":")
    return Mount(type="tmpfs", target=target, options=[o for o in opts.split(",") if o])


def parse_port(text: str) -> PortMapping:
    spec, _, proto = text.partition("/")
    parts = spec.rsplit(":", 2)
    try:
        if len(parts) == 1:
            return PortMapping(target=int(parts[0]), protocol=proto or "tcp")
        if len(parts) == 2:
            return PortMapping(target=int(parts[1]), published=int(parts[0] or 0), protocol=proto or "tcp")
        return PortMapping(target=int(parts[2]), published=int(parts[1] or 0), host_ip=parts[0],
                           protocol=proto or "tcp")
    except ValueError:
        raise InvalidArgument(f"invalid published port: {text}") from None


def parse_ulimit(text: str) -> Ulimit:
    name, _, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise _flag_error(text, "--ulimit", f"invalid ulimit argument: {text}") from None
    if s > h:
        raise _flag_error(text, "--ulimit", f"ulimit soft limit must be less than or equal to hard limit: {s} > {h}")
    return Ulimit(name=name, soft=s, hard=h)


def parse_kv(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if flag == "--sysctl" and not sep:
            raise _flag_error(item, flag, f"sysctl '{item}' is not allowed")
        out[key] = value
    return out


def _security_opts(opts: list[str]) -> list[str]:
    """docker's CLI reads a `seccomp=FILE` profile and sends its JSON (so does this one)."""
    if not opts:
        return []
    from shoal.runtime.seccomp import inline_profile_files

    return inline_profile_files(opts)


def spec_from_args(args: argparse.Namespace) -> ContainerSpec:
    env: list[str] = []
    for path in args.env_file:
        env += parse_env_file(path)
    env += parse_env(args.env)
    mounts = [parse_volume(v) for v in args.volume] + [parse_tmpfs(t) for t in args.tmpfs]
    labels = parse_kv(args.label, "--label")
    return ContainerSpec(
        image=args.image,
        name=args.name or "",
        entrypoint=None if args.entrypoint is None else ([args.entrypoint] if args.entrypoint else []),
        cmd=list(args.command) or None,
        env=env,
        user=args.user or "",
        workdir=args.workdir or "",
        hostname=args.hostname or "",
        labels=labels,
        mounts=mounts,
        read_only=args.read_only,
        init=args.init,
        nano_cpus=parse_cpus(args.cpus) if args.cpus else 0,
        memory=parse_memory(args.memory) if args.memory else 0,
        pids_limit=args.pids_limit or 0,
        ulimits=[parse_ulimit(u) for u in args.ulimit],
        sysctls=parse_kv(args.sysctl, "--sysctl"),
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=_security_opts(args.security_opt),
        cgroupns=args.cgroupns or "",
        stop_signal=args.stop_signal or "",
        stop_timeout=args.stop_timeout,
        network=args.network or "default",
        ports=[parse_port(p) for p in args.publish],
        extra_hosts=args.add_host,
        dns=args.dns,
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        group_add=args.group_add,
        auto_remove=args.rm,
        tty=args.tty,
        open_stdin=args.interactive,
        # docker/cli's parse: "When allocating stdin in attached mode, close stdin at client
        # disconnect" (StdinOnce), which `run -d` turns off with the Attach* flags
        stdin_once=args.interactive and not getattr(args, "detach", False),
        attached=not getattr(args, "detach", False),
        console_size=_console_size() if args.tty else [],
        shm_size=parse_memory(args.shm_size, "--shm-size") if args.shm_size else 64 * 1024 * 1024,
    )


def _console_size() -> list[int]:
    """The terminal's [rows, cols], as docker/cli sends HostConfig.ConsoleSize with -t."""
    for stream in (sys.stdout, sys.stdin):
        try:
            size = os.get_terminal_size(stream.fileno())
            return [size.lines, size.columns]
        except (OSError, ValueError):
            continue
    return []


def _add_create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--help", action="help", help="Print usage")
    # help texts are docker/cli's (cli/command/container/opts.go), metavars its pflag types
    p.add_argument("--name", help="Assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("--env-file", action="append", default=[], help="Read in a file of environment variables")
    p.add_argument("-w", "--workdir", help="Working directory inside the container")
    p.add_argument("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("--cpus", metavar="decimal", help="Number of CPUs")
    p.add_argument("-m", "--memory", metavar="bytes", help="Memory limit")
    p.add_argument("--pids-limit", type=int, help="Tune container pids limit (set -1 for unlimited)")
    p.add_argument("-v", "--volume", action="append", default=[], help="Bind mount a volume")
    p.add_argument("--tmpfs", action="append", default=[], help="Mount a tmpfs directory")
    p.add_argument("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    p.add_argument("--init", action="store_true",
                   help="Run an init inside the container that forwards signals and reaps processes")
    p.add_argument("--entrypoint", help="Overwrite the default ENTRYPOINT of the image")
    p.add_argument("-h", "--hostname", help="Container host name")
    p.add_argument("--network", "--net", metavar="network", help="Connect a container to a network")
    p.add_argument("-p", "--publish", action="append", default=[], help="Publish a container's port(s) to the host")
    p.add_argument("--stop-signal", help="Signal to stop the container")
    p.add_argument("--stop-timeout", type=int, help="Timeout (in seconds) to stop a container")
    p.add_argument("--ulimit", action="append", default=[], metavar="ulimit", help="Ulimit options (default [])")
    p.add_argument("--sysctl", action="append", default=[], metavar="map", help="Sysctl options (default map[])")
    p.add_argument("-l", "--label", action="append", default=[], help="Set meta data on a container")
    p.add_argument("--cap-add", action="append", default=[], help="Add Linux capabilities")
    p.add_argument("--cap-drop", action="append", default=[], help="Drop Linux capabilities")
    p.add_argument("--privileged", action="store_true", help="Give extended privileges to this container")
    p.add_argument("--security-opt", action="append", default=[], help="Security Options")
    p.add_argument("--cgroupns", choices=["host", "private"], metavar="string",
                   help="Cgroup namespace to use (host|private)\n"
                        "'host':    Run the container in the Docker host's cgroup namespace\n"
                        "'private': Run the container in its own private cgroup namespace\n"
                        "'':        Use the cgroup namespace as configured by the\n"
                        "           default-cgroupns-mode option on the daemon (default)")
    p.add_argument("--add-host", action="append", default=[], help="Add a custom host-to-IP mapping (host:ip)")
    p.add_argument("--dns", action="append", default=[], help="Set custom DNS servers")
    p.add_argument("--dns-option", action="append", default=[], help="Set DNS options")
    p.add_argument("--dns-search", action="append", default=[], help="Set custom DNS search domains")
    p.add_argument("--group-add", action="append", default=[], help="Add additional groups to join")
    p.add_argument("--shm-size", metavar="bytes", help="Size of /dev/shm")
    p.add_argument("--rm", action="store_true",
                   help="Automatically remove the container and its associated anonymous volumes when it exits")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


# ---- create / run ------------------------------------------------------------------------------

def _familiar(ref: str) -> str:
    try:
        from shoal.image.reference import parse

        return parse(ref).familiar()
    except ImportError:
        return ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"
    except ShoalError:
        raise


class _RunPullOutput(io.TextIOBase):
    """`docker run` shows the pull's progress but not `docker pull`'s "Using default tag" line."""

    def __init__(self, target) -> None:
        self.target = target

    def write(self, text: str) -> int:
        if not text.startswith("Using default tag"):
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()


def _create(args: argparse.Namespace):
    spec = spec_from_args(args)
    mgr = _manager()
    try:
        return mgr.create(spec)
    except NotFound as exc:
        if not str(exc).startswith("No such image"):
            raise
    # Docker's flow for a missing image: say so, try to pull it, report the pull's error.
    name = _familiar(spec.image)
    print(f"Unable to find image '{name}' locally", file=sys.stderr)
    try:
        from shoal.image import registry

        registry.pull(mgr.images, spec.image, out=_RunPullOutput(sys.stderr))  # type: ignore[arg-type]
    except ImportError:
        repo = name.rsplit(":", 1)[0] if "@" not in name else name.split("@")[0]
        raise InvalidArgument(f"pull access denied for {repo}, repository does not exist or may "
                              "require 'docker login'") from None
    except ShoalError as exc:
        raise InvalidArgument(str(exc)) from None
    return mgr.create(spec)


def cmd_create(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "create")
    c = _create(args)
    print(c.id)
    return 0


def _resolver(c: Any) -> None:
    """On a user-defined network the container's resolv.conf names the embedded resolver at
    127.0.0.11; shoald serves it (started here when it is not running), before the process runs."""
    network = getattr(c, "network", None) or {}
    if "127.0.0.11" not in (c.dir / "resolv.conf").read_text() or not network.get("netns"):
        return
    if c.spec.network.startswith("container:"):
        return  # the other container's namespace: its resolver serves there already
    from shoal.api.client import connect

    with connect() as client:
        client.post(f"/containers/{c.id}/dns", {"netns": network["netns"]})


def _on_node(args: argparse.Namespace, verb: str) -> int:
    """A tcp:// context: the node it names does it, through its API (cli/remote.py)."""
    from shoal.cli import remote

    return remote.command(args, verb)


def _run_failed(exc: ShoalError) -> int:
    """run.go toStatusError: `shoal: <error>` and where run's help is, exit 127 for a command
    that is not there, 126 for one that cannot run, else 125 (a flag's refused value keeps
    FlagErrorFunc's form: main.py)."""
    from shoal.cli.main import _FLAG_VALUE

    if _FLAG_VALUE.match(str(exc)) and not getattr(exc, "from_daemon", False):
        raise exc
    daemon = "Error response from daemon: " if getattr(exc, "from_daemon", False) else ""
    print(f"shoal: {daemon}{exc}\n\nRun 'shoal run --help' for more information", file=sys.stderr)
    return exc.exit_code if exc.exit_code in (126, 127) else 125


def cmd_run(args: argparse.Namespace) -> int:
    keys = b""
    if not args.detach and (args.interactive or args.tty):
        from shoal.cli import interactive

        keys = interactive.check(args)  # docker/cli checks the terminal before creating (its error is bare)
    try:
        return _run(args, keys)
    except ShoalError as exc:
        return _run_failed(exc)


def _run(args: argparse.Namespace, keys: bytes) -> int:
    if _through_api(args):
        return _on_node(args, "run")
    mgr = _manager()
    c = _create(args)
    if args.detach:
        try:
            mgr.start(c.id, before_start=_resolver)
        except ShoalError:
            if args.rm:
                mgr.remove(c.id, force=True)
            raise
        print(c.id)
        return 0
    if args.interactive or args.tty:
        from shoal.cli import interactive

        return interactive.run_local(mgr, c, args, keys, _resolver)
    return _run_attached(mgr, c, args.rm, args.sig_proxy)


def _run_attached(mgr, c, auto_remove: bool, sig_proxy: bool = True) -> int:
    """Foreground run: stream the log until the container exits, forward signals, exit with
    its code; with --rm remove it afterwards (we hold the attach lock, so the exit command
    leaves that to us)."""
    from shoal.runtime import logs

    with mgr.attached(c):
        try:
            mgr.start(c.id, before_start=_resolver)
        except ShoalError:
            if auto_remove:
                mgr.remove(c.id, force=True)
            raise
        c = mgr.get(c.id)
        forwarded: list[int] = []

        def forward(signum: int, _frame: Any) -> None:
            forwarded.append(signum)
            try:
                mgr.kill(c.id, str(signum))
            except ShoalError:
                pass

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
               } if sig_proxy else {}
        try:
            exited: list[bool] = []

            def done() -> bool:
                if not exited:
                    c.refresh()
                    if c.state.status != "running":
                        exited.append(True)
                return bool(exited)

            out, err = sys.stdout.buffer, sys.stderr.buffer
            for line in logs.follow(c.log_path, done):
                stream = out if line.stream == "stdout" else err
                stream.write(line.data)
                stream.flush()
            code = mgr.wait(c.id)
            if auto_remove:
                mgr.remove(c.id, force=True, volumes_too=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    return code


def cmd_start(args: argparse.Namespace) -> int:
    if args.attach or args.interactive:  # docker start -a/-i: one container, attached
        from shoal.cli import interactive
        from shoal.cli.containerops import _daemon

        if _through_api(args):
            return interactive.start_remote(args)
        return interactive.start_local(_manager(), args, _resolver, _daemon)
    if _through_api(args):
        return _on_node(args, "start")
    mgr = _manager()
    failed = False
    for ref in args.containers:
        try:
            mgr.start(ref, before_start=_resolver)
            print(ref)
        except ShoalError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    if failed:
        print("Error: failed to start containers: " + ", ".join(args.containers), file=sys.stderr)
    return 1 if failed else 0


def _each(refs: list[str], action: Callable[[str], None], echo: bool = True) -> int:
    failed = False
    for ref in refs:
        try:
            action(ref)
            if echo:
                print(ref)
        except ShoalError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def cmd_stop(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "stop")
    mgr = _manager()
    return _each(args.containers, lambda r: mgr.stop(r, args.time))


def cmd_kill(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "kill")
    mgr = _manager()
    return _each(args.containers, lambda r: mgr.kill(r, args.signal))


def cmd_rm(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "rm")
    mgr = _manager()
    return _each(args.containers, lambda r: mgr.remove(r, force=args.force, volumes_too=args.volumes))


def cmd_wait(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "wait")
    mgr = _manager()
    failed = False
    for ref in args.containers:
        try:
            print(mgr.wait(ref), flush=True)
        except ShoalError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


# ---- ps ----------------------------------------------------------------------------------------

_PS_HEADERS = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
_PS_FIELDS = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def ps_row(c, trunc: bool, now: float) -> dict[str, Any]:
    from shoal.runtime.inspect import command_text, is_paused, ports_text, rfc3339, status_text

    command = command_text(c)
    return {
        "ID": c.id[:12] if trunc else c.id,
        "Image": container_image(c.image, c.image_id, trunc),
        "Command": json.dumps(_ellipsis(command, 20) if trunc else command, ensure_ascii=False),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c.created)),
        "RunningFor": human_duration(now - c.created) + " ago",
        "Status": status_text(c, now),
        "State": "paused" if is_paused(c) else c.state.status,
        "Ports": ports_text(c),
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(c.config.get("Labels", {}).items())),
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.mounts),
        "LocalVolumes": str(sum(1 for m in c.mounts if m.get("Type") == "volume" and m.get("Name")
                                and (m.get("Driver") or "local") == "local")),
        "Networks": c.spec.network if c.spec.network != "default" else "bridge",
        "Size": "0B",
        "Created": rfc3339(c.created),
    }


def _ps_item(c, network_ids: dict[str, str]):
    """What `ps --filter` looks at in a local container (cli/filters.py PsItem)."""
    from shoal.cli.filters import PsItem
    from shoal.runtime.inspect import is_paused

    names = [c.spec.network if c.spec.network != "default" else "bridge"]
    names += [n for n in c.network.get("networks") or [] if isinstance(n, str) and n not in names]
    ports = c.network.get("ports") or [vars(p) for p in c.spec.ports]
    return PsItem(
        id=c.id, name=c.name, state="paused" if is_paused(c) else c.state.status, image_id=c.image_id,
        labels=dict(c.config.get("Labels") or {}), exit_code=c.state.exit_code,
        started=bool(c.state.started_at), managed=bool(getattr(c.spec, "swarm_task", False)),
        mounts=[(m.get("Name") or m.get("Source", ""), m.get("Destination", "")) for m in c.mounts],
        networks={n: network_ids.get(n, "") for n in names},
        ports=[(int(p["published"] or 0), int(p["target"]), p["protocol"]) for p in ports])


def _ancestors(values: list[str]) -> set[str]:
    """moby's ancestor filter: the images named and every image built on them (by parent)."""
    from shoal.image.store import ImageStore

    store = ImageStore()
    wanted: set[str] = set()
    for value in values:
        try:
            wanted.add(store.resolve(value).id)
        except ShoalError:
            continue  # moby warns in its log and matches nothing for it
    images = store.list() if wanted else []
    grew = True
    while grew:
        grew = False
        for im in images:
            if im.parent and im.parent in wanted and im.id not in wanted:
                wanted.add(im.id)
                grew = True
    return wanted


def cmd_ps(args: argparse.Namespace) -> int:
    from shoal.cli.filters import Filters, PsItem, ps_filter

    filters = Filters.parse(args.filter)
    limit = 1 if getattr(args, "latest", False) else (args.last if args.last is not None else -1)
    if getattr(args, "node", None) is not None:  # a tcp:// context: that node's containers
        from shoal.cli import remote

        rows = remote.ps_rows(argparse.Namespace(**{**vars(args), "all": True}))  # ps_filter decides
        items = [PsItem(id=r["ID"], name=r["Names"], state=r["State"], row=r,
                        labels=dict(kv.split("=", 1) for kv in r["Labels"].split(",") if "=" in kv),
                        mounts=[(m, "") for m in r["Mounts"].split(",") if m], networks={r["Networks"]: ""})
                 for r in rows]
    else:
        now = time.time()
        network_ids: dict[str, str] = {}
        if filters.contains("network"):
            from shoal.network.store import NetworkStore

            network_ids = {n.name: n.shown_id for n in NetworkStore().list()}
        # every container: -n/-l and the status filter show stopped ones too, as moby does
        containers = _manager().list(all=True)
        items = [_ps_item(c, network_ids) for c in containers]
        for item, c in zip(items, containers):
            item.row = c
    ancestors = _ancestors(filters.get("ancestor")) if filters.contains("ancestor") else None
    shown = ps_filter(items, filters, show_all=args.all, limit=limit, ancestors=ancestors)
    # docker/cli computes sizes for -s, or when the template reads .Size
    sized = bool(getattr(args, "size", False) or ".Size" in (args.format or ""))
    if getattr(args, "node", None) is None:
        rows = [ps_row(i.row, not args.no_trunc, now) for i in shown]
        if sized:
            _add_sizes(rows, [i.row for i in shown])
    else:
        rows = [i.row for i in shown]
    headers, fields = _PS_HEADERS, _PS_FIELDS
    if sized and getattr(args, "node", None) is None:
        headers, fields = [*headers, "SIZE"], [*fields, "Size"]
    print_formatted(args.format, headers, fields, rows, quiet_field="ID", quiet=args.quiet)
    return 0


def _add_sizes(rows: list[dict[str, Any]], containers: list[Any]) -> None:
    """docker's Size column: the writable layer, and `(virtual ...)` with the image under it."""
    from shoal.image.store import ImageStore
    from shoal.runtime.diskusage import container_size

    store = ImageStore()
    image_sizes: dict[str, int] = {}
    for row, c in zip(rows, containers):
        rw = container_size(c)
        if c.image_id not in image_sizes:
            try:
                image_sizes[c.image_id] = int(store.get(c.image_id).size)
            except ShoalError:
                image_sizes[c.image_id] = 0
        virtual = rw + image_sizes[c.image_id]
        row["Size"] = f"{human_size(rw)} (virtual {human_size(virtual)})" if virtual > 0 else human_size(rw)


# ---- logs ------------------------------------------------------------------------------------

def _daemon_get(mgr, ref: str):
    """The container, or docker's `Error response from daemon: No such container: X` (the CLI
    asks the daemon's ContainerInspect, whose 404 it prints as such)."""
    try:
        return mgr.get(ref)
    except NotFound as exc:
        exc.from_daemon = True  # type: ignore[attr-defined]
        raise


def _log_time(value: str | None, name: str) -> float | None:
    """timetypes.GetTimestamp as the client reads --since/--until: an RFC 3339 time, unix
    seconds, or a duration before now."""
    if not value:
        return None
    from shoal.cli.image import parse_until

    try:
        return parse_until(value)
    except InvalidArgument:
        raise ShoalError(f'invalid value for "{name}": failed to parse value as time or duration: "{value}"') from None


# `logs --details`: moby's WriteLogStream puts the log driver's attributes (what its labels,
# env, labels-regex and env-regex options pick from the container's labels and environment)
# and a space before each line. A shoal container has no log options, so the attributes are
# always none and the space alone is printed, as dockerd prints it for a container without them.
DETAILS = b" "


def cmd_logs(args: argparse.Namespace) -> int:
    if getattr(args, "node", None) is not None:  # a tcp:// context: that node's container
        from shoal.cli import remote

        if args.since or args.until:
            raise InvalidArgument("logs --since/--until against a remote node is not supported yet")
        return remote.logs(args)
    from shoal.image.store import parse_time
    from shoal.runtime import logs

    since, until = _log_time(args.since, "since"), _log_time(args.until, "until")
    c = _daemon_get(_manager(), args.container)
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(line) -> None:
        if since is not None or until is not None:  # the daemon's Since/Until, after --tail
            at = parse_time(line.docker_time())
            if (since is not None and at < since) or (until is not None and at > until):
                return
        stream = out if line.stream == "stdout" else err
        if args.timestamps:
            stream.write(line.docker_time().encode() + b" ")
        if args.details:
            stream.write(DETAILS)
        stream.write(line.data)
        stream.flush()

    tail = args.tail
    if tail in (None, "all"):
        n = -1
    else:
        try:
            n = int(tail)
        except ValueError:
            raise InvalidArgument(f'invalid value for "tail": "{tail}"') from None
    if not args.follow:
        lines = logs.read_lines(c.log_path)
        for line in lines if n < 0 else (lines[-n:] if n else []):
            emit(line)
        return 0
    # follow: print the tail, then new lines until the container stops.
    existing = logs.read_lines(c.log_path)
    for line in existing if n < 0 else (existing[-n:] if n else []):
        emit(line)
    mgr = _manager()

    def done() -> bool:
        if until is not None and time.time() > until:
            return True  # --until ends a follow too
        try:
            return mgr.get(c.id).state.status != "running"
        except NotFound:
            return True

    for line in logs.follow(c.log_path, done, skip_existing=True):
        emit(line)
    return 0


# ---- exec ------------------------------------------------------------------------------------

def _daemon_elsewhere() -> Any:
    """The unix endpoint of a shoald that runs in another mount namespace than this CLI (a node
    of a local cluster reached from the host through its socket, `cluster create`'s nodes each
    having their own): its containers' root filesystems are mounted there only, so the runtime
    cannot be driven from here; its API does it. None when it shares ours (any real machine).
    (A socket other than this CLI's own is sent to its API by cli/main.py already.)"""
    from shoal.api import contexts

    ep = contexts.endpoint()
    if ep.is_tcp:
        return None
    sock = Path(ep.host.removeprefix("unix://"))
    try:
        pid = int((sock.parent / "shoald.lock").read_text().split()[0])
        if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return None
    except (OSError, ValueError, IndexError):
        return None
    return ep


def _through_api(args: argparse.Namespace) -> bool:
    """Whether a command that drives the runtime (run, create, start, stop, kill, rm, wait,
    exec, attach) must leave it to a shoald's API: a tcp:// context's node, or a shoald whose
    mounts this process cannot see (its containers made here would have their root filesystem,
    network and DNS in the host's namespaces, where that shoald never finds them)."""
    if getattr(args, "node", None) is None:
        args.node = _daemon_elsewhere()
    return args.node is not None


def cmd_exec(args: argparse.Namespace) -> int:
    if _through_api(args):
        return _on_node(args, "exec")
    if not args.command:
        raise InvalidArgument('"exec" requires at least 2 arguments.')
    if not args.detach:
        from shoal.cli.hijack import check_tty

        check_tty(args.interactive, args.tty)
    mgr = _manager()
    from shoal.errors import Conflict

    _daemon_get(mgr, args.container)  # exec.go: ContainerInspect first, its refusal the daemon's
    try:
        argv = mgr.exec_argv(args.container, args.command, tty=args.tty, detach=args.detach,
                             env=parse_env(args.env), user=args.user or "", workdir=args.workdir or "")
    except Conflict as exc:  # not running, paused: the daemon's words, as docker prints them
        exc.from_daemon = True  # type: ignore[attr-defined]
        raise
    if args.tty and not args.detach:
        from shoal.cli import interactive

        return interactive.exec_local(argv, args)
    stdin = None if args.interactive else subprocess.DEVNULL
    # The runtime becomes the foreground process: signals go straight to it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.run(argv, stdin=stdin)
    finally:
        signal.signal(signal.SIGINT, old)
    return proc.returncode


# ---- inspect -----------------------------------------------------------------------------------

def cmd_inspect(args: argparse.Namespace) -> int:
    node = getattr(args, "node", None)  # a tcp:// context: that node's objects
    if not args.container_only:  # `shoal inspect`: any kind of object, as docker's (cli/inspectobj.py)
        from shoal.cli.inspectobj import inspect_objects, print_objects

        mgr = _manager() if node is None else None
        return print_objects(*inspect_objects(mgr, args.containers, args.type, node), args.format)
    if node is not None:
        from shoal.cli import remote

        return remote.inspect(args)
    from shoal.runtime.inspect import inspect

    mgr = _manager()
    docs = []
    failed = False
    for ref in args.containers:
        try:
            from shoal.network.endpointinfo import with_networks

            found = mgr.get(ref)
            docs.append(with_networks(inspect(found), found))
            continue
        except NotFound:
            pass
        if not args.container_only:  # `shoal inspect` covers images too, as `docker inspect` does
            try:
                from shoal.cli.image import inspect_object

                docs.append(inspect_object(mgr.images.resolve(ref)))  # type: ignore[arg-type]
                continue
            except (ImportError, NotFound):
                pass
        # system inspect's own words for any object; container inspect prints the daemon's 404
        print(f"Error response from daemon: No such container: {ref}" if args.container_only
              else f"Error: No such object: {ref}", file=sys.stderr)
        failed = True
    if args.format:
        for d in docs:
            print(render_template(args.format, d))
    else:
        print(json.dumps(docs, indent=4))
    return 1 if failed else 0


for _handler in (cmd_ps, cmd_logs, cmd_inspect, cmd_run, cmd_create, cmd_start, cmd_stop, cmd_kill, cmd_rm, cmd_wait,
                 cmd_exec):
    _handler.on_node = True  # type: ignore[attr-defined] # cli/main.py lets a tcp:// context reach them


# ---- stats -----------------------------------------------------------------------------------

_STATS_HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
_STATS_FIELDS = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"]


def stats_rows(mgr, refs: list[str], interval: float, previous: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from shoal.runtime import stats

    containers = [mgr.get(r) for r in refs] if refs else mgr.list()
    before = previous if previous is not None else {}
    for c in containers:
        if c.id not in before and c.state.status == "running":
            before[c.id] = stats.sample(c)
    if previous is None or any(c.id not in previous for c in containers):
        time.sleep(interval)
    rows = []
    for c in containers:
        if c.state.status != "running":
            rows.append({"ID": c.id[:12], "Name": c.name, "CPUPerc": "0.00%", "MemUsage": "0B / 0B",
                         "MemPerc": "0.00%", "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": "0"})
            continue
        after = stats.sample(c)
        f = stats.figures(before[c.id], after)
        before[c.id] = after
        rows.append({
            "ID": c.id[:12], "Name": c.name, "Container": c.id[:12],
            "CPUPerc": f"{f.cpu_percent:.2f}%",
            "MemUsage": f"{bytes_size(f.memory)} / {bytes_size(f.memory_limit)}",
            "MemPerc": f"{f.memory_percent:.2f}%",
            "NetIO": f"{human_size(f.net_rx)} / {human_size(f.net_tx)}",
            "BlockIO": f"{human_size(f.blk_read)} / {human_size(f.blk_write)}",
            "PIDs": str(f.pids),
        })
    return rows


def cmd_stats(args: argparse.Namespace) -> int:
    if getattr(args, "node", None) is not None:
        return _stats_on_node(args)
    mgr = _manager()
    for ref in args.containers:  # docker's stats: the daemon's words for a missing container
        try:
            mgr.get(ref)
        except NotFound as exc:
            exc.from_daemon = True  # type: ignore[attr-defined]
            raise
    if args.no_stream:
        print_formatted(args.format, _STATS_HEADERS, _STATS_FIELDS, stats_rows(mgr, args.containers, 1.0))
        return 0
    previous: dict[str, Any] = {}
    while True:
        rows = stats_rows(mgr, args.containers, 1.0, previous)
        sys.stdout.write("\033[2J\033[H")
        print_formatted(args.format, _STATS_HEADERS, _STATS_FIELDS, rows)
        sys.stdout.flush()
        time.sleep(1.0)


def _stats_on_node(args: argparse.Namespace) -> int:
    """`stats` of the node a tcp:// context names: its rows (GET /node/stats, which samples over
    a second, as stats_rows here), printed as above; streaming asks again each time."""
    from shoal.cli import remote

    node = remote.client(args)
    while True:
        rows = node.get("/node/stats", containers=list(args.containers) or None)
        if args.no_stream:
            print_formatted(args.format, _STATS_HEADERS, _STATS_FIELDS, rows)
            return 0
        sys.stdout.write("\033[2J\033[H")
        print_formatted(args.format, _STATS_HEADERS, _STATS_FIELDS, rows)
        sys.stdout.flush()


cmd_stats.on_node = True  # type: ignore[attr-defined] # cli/main.py lets a tcp:// context reach it


# ---- prune / cleanup -------------------------------------------------------------------------

def cmd_prune(args: argparse.Namespace) -> int:
    """docker/cli container prune: the question, `Deleted Containers:`, the writable layers'
    bytes reclaimed (cli/system.py container_prune, shared with `system prune`)."""
    from shoal.cli.prune import confirm, print_total
    from shoal.cli.system import pruned, prune_filters

    filters = prune_filters(args.filter, ("until", "label", "label!"))
    if not args.force and not confirm("WARNING! This will remove all stopped containers.\n"
                                      "Are you sure you want to continue?"):
        return 0
    reclaimed, output = pruned(args, "containers", False, filters)  # here, or by the node a context names
    if output:
        print(output)
    print_total(reclaimed)
    return 0


cmd_prune.on_node = True  # type: ignore[attr-defined] # cli/main.py lets a tcp:// context reach it


def cmd_cleanup(args: argparse.Namespace) -> int:
    _manager().cleanup(args.container)
    return 0


# ---- registration ------------------------------------------------------------------------------

def _register_verbs(sub: argparse._SubParsersAction, in_group: bool) -> None:
    from shoal.cli.containerops import _truthy  # --sig-proxy's boolean, as attach's

    p = sub.add_parser("run", help="Create and run a new container from an image", add_help=False)
    _add_create_flags(p)
    p.add_argument("-d", "--detach", action="store_true", help="Run container in background and print container ID")
    p.add_argument("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
    p.add_argument("--sig-proxy", type=_truthy, nargs="?", const=True, default=True,
                   help="Proxy received signals to the process (default true)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("create", help="Create a new container", add_help=False)
    _add_create_flags(p)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("start", help="Start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="Attach STDOUT/STDERR and forward signals")
    p.add_argument("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
    p.add_argument("-i", "--interactive", action="store_true", help="Attach container's STDIN")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_start)

    names = ["ls", "list", "ps"] if in_group else ["ps"]
    p = sub.add_parser(names[0], aliases=names[1:], help="List containers")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="filter",
                   help="Filter output based on conditions provided")
    p.add_argument("--format", metavar="string", help=FORMAT_HELP)
    p.add_argument("-n", "--last", type=int, metavar="int",
                   help="Show n last created containers (includes all states) (default -1)")
    p.add_argument("-l", "--latest", action="store_true",
                   help="Show the latest created container (includes all states)")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display container IDs")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-n", "--tail", help='Number of lines to show from the end of the logs (default "all")')
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("--details", action="store_true", help="Show extra details provided to logs")
    p.add_argument("--since", metavar="string", help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or '
                                                     'relative (e.g. "42m" for 42 minutes)')
    p.add_argument("--until", metavar="string", help='Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or '
                                                     'relative (e.g. "42m" for 42 minutes)')
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("exec", help="Execute a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("-d", "--detach", action="store_true", help="Detached mode: run command in the background")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("-u", "--user", help='Username or UID (format: "<name|uid>[:<group|gid>]")')
    p.add_argument("-w", "--workdir", help="Working directory inside the container")
    p.add_argument("--detach-keys", metavar="string", help="Override the key sequence for detaching a container")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("stop", help="Stop one or more running containers")
    p.add_argument("-s", "--signal", help="Signal to send to the container")
    p.add_argument("-t", "--timeout", "--time", dest="time", type=int, metavar="int",
                   help="Seconds to wait before killing the container")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("kill", help="Kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", help="Signal to send to the container")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("rm", aliases=["remove"] if in_group else [], help="Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of a running container (uses SIGKILL)")
    p.add_argument("-v", "--volumes", action="store_true", help="Remove anonymous volumes associated with the container")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)

    if in_group:
        p = sub.add_parser("inspect", help="Display detailed information on one or more containers")
    else:  # docker/cli's system inspect: any object (cli/inspectobj.py)
        p = sub.add_parser("inspect", help="Return low-level information on Docker objects",
                           usage="shoal inspect [OPTIONS] NAME|ID [NAME|ID...]")
    p.add_argument("-f", "--format", metavar="string", help=INSPECT_FORMAT_HELP)
    if not in_group:
        p.add_argument("--type", metavar="string", default=None, help="Only inspect objects of the given type")
    p.add_argument("containers", nargs="+", metavar="CONTAINER" if in_group else "NAME|ID")
    p.set_defaults(func=cmd_inspect, container_only=in_group)

    p = sub.add_parser("stats", help="Display a live stream of container(s) resource usage statistics")
    p.add_argument("--no-stream", action="store_true", help="Disable streaming stats and only pull the first result")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("--format", metavar="string", help=FORMAT_HELP)
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("wait", help="Block until one or more containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_wait)

    from shoal.cli.containerops import register_verbs  # restart, pause, top, cp, commit, ...

    register_verbs(sub)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_verbs(subparsers, in_group=False)
    group = subparsers.add_parser("container", help="Manage containers")
    sub = group.add_subparsers(dest="container_command", metavar="COMMAND")
    _register_verbs(sub, in_group=True)
    p = sub.add_parser("prune", help="Remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help='Provide filter values (e.g. "until=<timestamp>")')
    p.set_defaults(func=cmd_prune)
    # conmon's exit command as a CLI verb too (the exit command itself uses shoal.runtime.reaper)
    p = sub.add_parser("cleanup")
    p.add_argument("container")
    p.set_defaults(func=cmd_cleanup)
    group.set_defaults(func=lambda _a: group.print_help() or 0)
