"""ContainerManager: create, start, stop, kill, remove, list and wait for containers. All state is
on disk under state_root()/containers/<id>/; conmon supervises each running container, so any
shoal process may die at any time and a later one picks the containers up from disk."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import posixpath
import re
import select
import shutil
import signal as signals
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from shoal import ids
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.paths import ensure_private_dir, remove_tree, state_root, write_file
from shoal.runtime import cgroups, conmon, engine, files, mounts, oci, seccomp, volumes
from shoal.runtime.layers import LayeredView, find_executable
from shoal.runtime.spec import ContainerSpec, Mount
from shoal.runtime.state import Container, ContainerState, proc_start_time
from shoal.runtime.users import additional_groups, resolve_user

EMBEDDED_DNS = "127.0.0.11"  # network/attach.py's; importing it here would load the network stack
HOST_GATEWAY = "host-gateway"  # moby's special --add-host address: network/attach.py host_gateway_ip

INIT_BINARY = "/usr/bin/tini-static"
DEFAULT_STOP_TIMEOUT = 10
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class CommandNotFound(ShoalError):
    exit_code = 127


class CommandNotExecutable(ShoalError):
    exit_code = 126


class ImageLike(Protocol):
    id: str
    config: dict[str, Any]

    def rootfs_dirs(self) -> list[Path]: ...


class ImageSource(Protocol):
    def resolve(self, ref_or_id: str) -> ImageLike: ...


class _Overlapped:
    """`fn(arg)` in a thread of its own, while the caller goes on (a container's create through
    conmon, ~60 ms of waiting on crun, and a task's before_start hook, ~10-25 ms of waiting on
    shoald's event loop, were done one after the other). join() waits and raises its error."""

    def __init__(self, fn: Callable[[Any], None], arg: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, arg), name="before-start", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join()
            self._error = exc

    def join(self, raise_error: bool = True) -> None:
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


def parse_signal(name: str | int) -> int:
    text = str(name).upper().strip()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signals.Signals[text])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {name}") from None


class ContainerManager:
    def __init__(self, root: Path | None = None, images: ImageSource | None = None) -> None:
        self.root = (root or state_root()) / "containers"
        self._images = images
        self._static_of: dict[str, tuple[str, dict[str, str]]] = {}  # see _static()

    def warm(self) -> None:
        """The runtime's once-per-process work done now rather than in the first start (host
        facts, the default seccomp filter compiled: oci.warm); shoald calls it at its start."""
        oci.warm()

    # ---- lookup ----------------------------------------------------------------------------
    @property
    def images(self) -> ImageSource:
        if self._images is None:
            from shoal.image.store import ImageStore

            self._images = ImageStore()
        return self._images

    def _all(self) -> list[Container]:
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            try:
                out.append(Container.load(d))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being created or removed right now
        return out

    def _static(self) -> dict[str, tuple[str, dict[str, str]]]:
        """(name, labels) of every container by ID. Neither ever changes, so each record is read
        once per process: create() checks names under the names lock (reading every record
        there made N starts cost N² reads), and shoald looks for orphaned tasks every second."""
        try:
            ids_now = [e.name for e in os.scandir(self.root) if e.is_dir()]
        except FileNotFoundError:
            return {}
        known = self._static_of
        for cid in ids_now:
            if cid not in known:
                try:
                    c = Container.load(self.root / cid)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being created or removed right now
                known[cid] = (c.name, dict(c.spec.labels))
        live = set(ids_now)
        for cid in [c for c in known if c not in live]:
            del known[cid]
        return {cid: known[cid] for cid in ids_now if cid in known}

    def _names(self) -> dict[str, str]:
        """name -> container ID of every container."""
        return {name: cid for cid, (name, _) in self._static().items()}

    def label_values(self, label: str) -> dict[str, str]:
        """container ID -> the value of `label`, for every container that has it."""
        return {cid: labels[label] for cid, (_, labels) in self._static().items() if label in labels}

    def get(self, ref: str) -> Container:
        ref = ref.strip()
        if not ref:
            raise NotFound("No such container: ")
        # Only a full ID names a directory: any other 64 characters ("../../tmp/x/...") must
        # not pick a container.json outside the store.
        if ids.is_full_id(ref) and (self.root / ref / "container.json").exists():
            c = Container.load(self.root / ref)
            c.refresh()
            return c
        containers = self._all()
        name = ref.lstrip("/")
        for c in containers:
            if c.name == name:
                c.refresh()
                return c
        matches = [c for c in containers if c.id.startswith(ref)]
        if len(matches) == 1:
            matches[0].refresh()
            return matches[0]
        if len(matches) > 1:
            raise ShoalError(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def list(self, all: bool = False) -> list[Container]:
        out = []
        for c in self._all():
            c.refresh()
            if all or c.state.status == "running":
                out.append(c)
        return sorted(out, key=lambda c: c.created, reverse=True)

    @contextlib.contextmanager
    def _names_lock(self) -> Iterator[None]:
        ensure_private_dir(self.root)
        fd = os.open(self.root.parent / "containers.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- create ----------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> Container:
        validate_resources(spec)
        if spec.network.startswith("container:"):  # moby's runconfig checks
            if spec.hostname:
                raise InvalidArgument("conflicting options: hostname and the network mode")
            if spec.ports:
                raise InvalidArgument("conflicting options: port publishing and the container type network mode")
        spec.security_opt = seccomp.inline_profile_files(spec.security_opt)
        oci.validate_security(spec)
        image = self.images.resolve(spec.image)
        container_id = ids.new_id()
        plan = oci.plan_process(spec, image.config, container_id, socket.gethostname())
        lowerdirs = [Path(p) for p in image.rootfs_dirs()]
        view = LayeredView(lowerdirs)
        resolve_user(plan.user, view.read_text("/etc/passwd"), view.read_text("/etc/group"))
        additional_groups(spec.group_add, view.read_text("/etc/group"))  # refused at create
        check_command(view, plan.argv[0], plan.env, plan.workdir)
        if spec.init and not Path(INIT_BINARY).exists():
            raise ShoalError(f"--init: {INIT_BINARY} not found (install Debian's tini package)")
        mount_specs = [normalize_mount(m) for m in spec.mounts]
        with self._names_lock():
            name = spec.name.lstrip("/") if spec.name else self._free_name()
            if not _NAME.fullmatch(name):
                raise InvalidArgument(
                    f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            other = self._names().get(name)
            if other is not None:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other}". You have to remove (or rename) that container to be able '
                    "to reuse that name.")
            directory = self.root / container_id
            directory.mkdir(mode=0o700)  # config.json, logs: root's alone
            try:
                spec.image_id = image.id
                spec.name = name
                c = Container(
                    id=container_id, name=name, created=time.time(), image=spec.image,
                    image_id=image.id, spec=spec, path=(oci.INIT_PATH if spec.init else plan.argv[0]),
                    args=(["--"] + plan.argv if spec.init else plan.argv[1:]),
                    config=_docker_config(spec, plan, image.config),
                    runtime=engine.select().name, dir=directory,
                    lowerdirs=[str(p) for p in lowerdirs],
                )
                mount_specs += _image_volumes(image.config, mount_specs)
                for m in mount_specs:
                    if m.type == "volume" and not m.source:
                        m.source = ids.new_id()
                        c.anonymous_volumes.append(m.source)
                c.spec.mounts = mount_specs
                for sub in ("upper", "work", "rootfs"):  # upper's mode is the container's /
                    ensure_private_dir(directory / sub, 0o755 if sub == "upper" else 0o700)
                c.save()
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
        return c

    def _free_name(self) -> str:
        taken = set(self._names())
        while True:
            name = ids.random_name()
            if name not in taken:
                return name

    # ---- start -----------------------------------------------------------------------------
    def start(self, ref: str, before_start: Callable[[Container], None] | None = None) -> None:
        """Start a created (or exited) container. `before_start` runs once the container exists
        with its namespaces and network, before its process runs (the daemon opens the
        embedded DNS resolver there)."""
        c = self.get(ref)
        if c.state.status == "running":
            return
        _wait_gone(c.state.conmon_pid, 5.0)  # the last run's exit command must be done first
        with c.locked():
            c = Container.load(c.dir)
            st = c.refresh()
            if st.status == "running":
                return
            # A restart: clear what the last run left (cleanup may not have run yet). A fresh
            # container has nothing to clear (and its teardown would take the network lock).
            if st.started_at or st.status != "created":
                self._teardown(c)
            for path in (c.exit_file(), c.persist_dir / "exit", c.persist_dir / "oom"):
                path.unlink(missing_ok=True)
            runtime = engine.by_name(c.runtime)
            try:
                pid = self._launch(c, runtime, before_start)
                started = time.time()  # before `start`: a short process may be done when it returns
                runtime.start(c.id)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    runtime.run("delete", "--force", c.id, check=False)
                # conmon sees the failed start and exits; our teardown makes sure of the rest.
                _wait_gone(c.state.conmon_pid, 5.0)
                self._teardown(c)
                c.state = ContainerState(status="exited" if st.started_at else "created",
                                         exit_code=_classify_start_error(exc).exit_code
                                         if isinstance(exc, ShoalError) else 255,
                                         error=str(exc), started_at=st.started_at,
                                         finished_at=st.finished_at)
                c.save()
                if isinstance(exc, ShoalError):
                    raise _classify_start_error(exc) from None
                raise
            c.state = ContainerState(status="running", pid=pid, pid_start=proc_start_time(pid),
                                     conmon_pid=_read_int(c.dir / "conmon.pid"),
                                     started_at=started)
            c.save()

    def _launch(self, c: Container, runtime: engine.Runtime,
                before_start: Callable[[Container], None] | None = None) -> int:
        """The bundle made (rootfs, network, config.json) and the container created through
        conmon; `before_start` run meanwhile when the network namespace exists already (made
        by the network, or a donor's: the hook needs only that namespace, the resolver listens
        in it), else after the create. The create's error, else the hook's, is raised once both
        are done."""
        spec = c.spec
        mounts.mount_overlay([Path(p) for p in c.lowerdirs], c.dir / "upper", c.dir / "work", c.rootfs)
        view = LayeredView([c.rootfs])
        plan = _plan_from(c)
        user = resolve_user(plan.user, view.read_text("/etc/passwd"), view.read_text("/etc/group"))
        # moby's getUser: the user's own supplementary groups, then --group-add's.
        user.additional_gids += [g for g in additional_groups(spec.group_add, view.read_text("/etc/group"))
                                 if g not in user.additional_gids]
        # Docker's SetupWorkingDirectory: made inside the root (the image's symlinks followed
        # there, never on the host), 0755.
        mounts.mkdirs_in_root(c.rootfs, plan.workdir)
        netns, attachment = self._network(c)
        addresses = list(getattr(attachment, "ip_addresses", []) or [])
        host_net = spec.network == "host"
        entries = list(getattr(attachment, "hosts_entries", []) or [])
        own = [] if entries else [a.split("/")[0] for a in addresses]  # the network lists them itself
        donor = self._network_donor(c)
        if donor is not None:  # --network container:NAME: its hosts and resolver too, as Docker
            # moby's initializeNetworking: the joined container's hostname becomes this one's
            plan.hostname = c.config["Hostname"] = _plan_from(donor).hostname
            for n in ("hosts", "resolv.conf"):
                write_file(c.dir / n, (donor.dir / n).read_text(), 0o644)
        else:
            extra_hosts = list(spec.extra_hosts)
            if any(h.partition(":")[2] == HOST_GATEWAY for h in extra_hosts):
                # The host's address on the container's own network (its default gateway, on
                # this node's bridge): moby gives docker0's, which shoal has only while
                # containers are on it; either reaches this node's host.
                gateway = (getattr(attachment, "gateway", "")
                           or importlib.import_module("shoal.network.attach").host_gateway_ip())
                extra_hosts = [f"{h.partition(':')[0]}:{gateway}" if h.partition(":")[2] == HOST_GATEWAY else h
                               for h in extra_hosts]
            write_file(c.dir / "hosts", files.hosts(plan.hostname, own, extra_hosts, entries, host_net), 0o644)
            served = list(getattr(attachment, "dns_servers", []) or [])
            dns, upstream = spec.dns or served, [d for d in spec.dns if d != EMBEDDED_DNS]
            if served == [EMBEDDED_DNS] and upstream:
                # libnetwork: on a user-defined network the embedded resolver stays the
                # nameserver (service and container names keep resolving); the servers asked
                # for are where it forwards the rest.
                dns = served
            else:
                upstream = []
            text = files.resolv_conf(dns, spec.dns_search, host_net, spec.dns_options,
                                     internal=dns == [EMBEDDED_DNS])
            write_file(c.dir / "resolv.conf", text + (files.ext_servers_line(upstream) if upstream else ""), 0o644)
        write_file(c.dir / "hostname", plan.hostname + "\n", 0o644)  # read by the container's uid
        config = oci.build_config(
            spec=spec, plan=plan, user=user, rootfs=str(c.rootfs),
            extra_mounts=self._user_mounts(c),
            netns=netns, cgroups_path=cgroups.cgroups_path(c.id),
            init_binary=INIT_BINARY,
        )
        rootfs_propagation = _rootfs_propagation(config.get("mounts") or [])
        if rootfs_propagation:
            config.setdefault("linux", {})["rootfsPropagation"] = rootfs_propagation
        write_file(c.dir / "config.json", json.dumps(config))  # 0600: the environment is in it
        c.network = {"netns": netns or "", "addresses": addresses,
                     "networks": list(getattr(attachment, "networks", []) or []),
                     "ports": [{"target": p.target, "published": p.published, "protocol": p.protocol,
                                "host_ip": p.host_ip} for p in getattr(attachment, "ports", []) or []]}
        c.save()
        hook = _Overlapped(before_start, c) if before_start is not None and netns else None
        try:
            pid = self._conmon_launch(c, runtime)
        except BaseException:
            if hook is not None:
                hook.join(raise_error=False)  # the create's error is the one to tell
            raise
        if hook is not None:
            hook.join()
        elif before_start is not None:
            before_start(c)  # a namespace crun makes (or the host's): it exists only now
        return pid

    def _conmon_launch(self, c: Container, runtime: engine.Runtime) -> int:
        spec = c.spec
        return conmon.launch(runtime, c.id, c.dir, log_path=c.log_path, exit_dir=c.exit_dir,
                             persist_dir=c.persist_dir, pidfile=c.dir / "pidfile",
                             conmon_pidfile=c.dir / "conmon.pid", tty=spec.tty,
                             stdin=spec.open_stdin, stdin_once=spec.stdin_once,
                             # A swarm task is cleaned up by shoald's agent when it sees the exit
                             # (a Python reaper per exit is what made `stack rm` slow).
                             with_exit_command=not spec.swarm_task, log_size_max=spec.log_size_max)

    def _network(self, c: Container) -> tuple[str | None, Any]:
        """(netns for config.json, attachment). None = host's; "" = a fresh private one."""
        network = c.spec.network
        if network == "host":
            return None, None
        if network == "none":
            return "", None
        donor = self._network_donor(c)
        if donor is not None:  # shares the other container's namespace; owns nothing of it
            if donor.spec.network == "host":
                return None, None
            return donor.network.get("netns") or f"/proc/{donor.state.pid}/ns/net", None
        try:
            attach_mod = importlib.import_module("shoal.network.attach")
        except ImportError:
            if network == "default":
                return "", None  # until bridge networks exist, the default is an isolated netns
            raise NotFound(f"network {network} not found") from None
        attachment = attach_mod.attach(c.id, c.spec, for_task=c.spec.swarm_task)
        if attachment is None:
            return "", None
        for extra in c.spec.extra_networks:  # eth1, eth2, ... in the order the spec lists them
            ep = attach_mod.connect(c.id, extra["network"], aliases=extra.get("aliases") or [],
                                    name=c.name, hostname=c.spec.hostname or c.id[:12], for_task=c.spec.swarm_task,
                                    ip=extra.get("ip") or "")  # `network connect --ip`
            attachment.ip_addresses.append(ep.ip)
            attachment.networks.append(extra["network"])
            attachment.hosts_entries.append(f"{ep.ip}\t{c.spec.hostname or c.id[:12]}")
        return str(attachment.netns_path), attachment

    def _network_donor(self, c: Container) -> Container | None:
        """The running container whose network namespace `--network container:NAME` joins."""
        if not c.spec.network.startswith("container:"):
            return None
        donor = self.get(c.spec.network.partition(":")[2])
        if donor.id == c.id:
            raise ShoalError("cannot join own network namespace")
        if donor.refresh().status != "running":
            raise Conflict("cannot join network namespace of a non running container: "
                           f"container {donor.name} is {donor.state.status}")
        return donor

    def _user_mounts(self, c: Container) -> list[dict[str, Any]]:
        ro_etc = ["rbind", "rprivate", "ro"] if c.spec.read_only else ["rbind", "rprivate"]
        out: list[dict[str, Any]] = [
            {"destination": f"/etc/{n}", "type": "bind", "source": str(c.dir / n), "options": ro_etc}
            for n in ("hosts", "resolv.conf", "hostname")
        ]
        user: list[dict[str, Any]] = []
        inspect_mounts = []
        for m in c.spec.mounts:
            opts = ["ro" if m.read_only else "rw"]
            if m.type == "tmpfs":
                mounts.mount_point_in_root(c.rootfs, m.target, is_dir=True)
                user.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                             "options": ["noexec", "nosuid", "nodev", *m.options]})
                continue
            propagation = "rprivate"  # moby's default for a bind (volume.DefaultPropagationMode)
            if m.type == "bind":
                propagation = next((o for o in m.options if o in PROPAGATIONS), propagation)
                source = Path(m.source)
                if not source.exists():
                    source.mkdir(parents=True)  # docker -v creates a missing host dir
                mounts.mount_point_in_root(c.rootfs, m.target, is_dir=source.is_dir())
                inspect_mounts.append({"Type": "bind", "Source": str(source), "Destination": m.target,
                                       "Mode": "ro" if m.read_only else "", "RW": not m.read_only,
                                       "Propagation": propagation})
            else:
                source = volumes.ensure(m.source, m.options)
                subpath = volumes.subpath_option(m.options)
                # As moby at a container's creation, not at its restarts; never with
                # volume-nocopy (compose's volume.nocopy, `-v NAME:PATH:nocopy`).
                copy = "nocopy" not in m.options and not c.state.started_at
                if subpath is not None:
                    # Only the subpath, resolved beneath the volume's data, is bound (it was
                    # ignored: the whole volume was mounted); the image's files are copied into
                    # it when it is empty, as moby populates it.
                    source = c.dir / "subpaths" / str(len(user))
                    is_dir = volumes.bind_subpath(m.source, subpath, source)
                    if is_dir and copy:
                        volumes.copy_up_into_empty(c.rootfs, m.target, source)
                    mounts.mount_point_in_root(c.rootfs, m.target, is_dir=is_dir)
                else:
                    if copy:
                        volumes.copy_up_into_empty(c.rootfs, m.target, source)
                    mounts.mount_point_in_root(c.rootfs, m.target, is_dir=True)
                inspect_mounts.append({"Type": "volume", "Name": m.source, "Source": str(source),
                                       "Destination": m.target, "Driver": "local", "Mode": "z",
                                       "RW": not m.read_only, "Propagation": ""})
            user.append({"destination": m.target, "type": "bind", "source": str(source),
                         "options": ["rbind", propagation, *opts]})
        c.mounts = inspect_mounts
        user.sort(key=lambda m: len(Path(m["destination"]).parts))  # parents before children
        return out + user

    # ---- stop / kill / wait ------------------------------------------------------------------
    def kill(self, ref: str, signal: str = "KILL") -> None:
        c = self.get(ref)
        signum = parse_signal(signal)
        if c.state.status != "running":
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        self._signal(c, signum)

    def _signal(self, c: Container, signum: int) -> None:
        """`crun kill <id> <signal>` without a crun per signal: the signal goes to the
        container's first process through a pidfd opened once it is known to be that process
        (its start time), so a recycled pid is never hit. A stack rm sent 100 of them."""
        try:
            fd = os.pidfd_open(c.state.pid) if c.state.pid > 0 else -1
        except OSError:
            fd = -1
        if fd < 0:
            if c.process_alive():  # no pidfd for it (out of descriptors, say): ask the runtime
                proc = engine.by_name(c.runtime).run("kill", c.id, str(signum), check=False)
                if proc.returncode != 0 and c.process_alive():
                    raise ShoalError(f"Cannot kill container: {c.id}: {proc.stderr.strip()}")
            return
        try:
            if c.process_alive():
                signals.pidfd_send_signal(fd, signum)
        except ProcessLookupError:
            pass  # it exited meanwhile
        finally:
            os.close(fd)
        if cgroups.frozen(c.id):  # paused: the signal is delivered once thawed (as moby does)
            engine.by_name(c.runtime).run("resume", c.id, check=False)

    def stop(self, ref: str, timeout: int | None = None) -> None:
        c = self.get(ref)
        if c.state.status != "running":
            return
        grace = timeout if timeout is not None else (
            c.spec.stop_timeout if c.spec.stop_timeout is not None else DEFAULT_STOP_TIMEOUT)
        stop_signal = parse_signal(c.config.get("StopSignal") or "SIGTERM")
        if grace != 0:
            self._signal(c, stop_signal)
            if grace < 0 or self._wait_exit(c, grace) is not None:
                return
        self._signal(c, signals.SIGKILL)
        self._wait_exit(c, 30)

    def _wait_exit(self, c: Container, timeout: float | None) -> int | None:
        """Wait until conmon recorded the exit; returns the code or None on timeout. While the
        process runs this blocks on its pidfd (a `stack rm` waits out 50 grace periods at
        once: polling each record every 20 ms was most of shoald's CPU then); once it is gone,
        conmon's exit file follows within milliseconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pidfd = -1
        with contextlib.suppress(OSError):
            if c.process_alive():
                pidfd = os.pidfd_open(c.state.pid)
        try:
            while True:
                if pidfd >= 0:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not select.select([pidfd], [], [], left)[0]:
                        return None
                    os.close(pidfd)
                    pidfd = -1
                try:
                    c.state = Container.load(c.dir).state
                except (OSError, ValueError):
                    return c.state.exit_code if c.state.status == "exited" else None
                st = c.refresh()
                if st.status != "running":
                    return st.exit_code
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                time.sleep(0.005)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def wait(self, ref: str) -> int:
        c = self.get(ref)
        if c.state.status == "created":
            # docker wait blocks until the container has run and exited
            while True:
                time.sleep(0.05)
                c = self.get(ref)
                if c.state.status != "created":
                    break
        code = self._wait_exit(c, None)
        return 0 if code is None else code

    # ---- remove / cleanup ------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False, volumes_too: bool = False) -> None:
        c = self.get(ref)
        if c.state.status == "running":
            if not force and cgroups.frozen(c.id):
                raise Conflict("container is paused and must be unpaused first")  # moby's delete.go
            if not force:
                raise Conflict(f"You cannot remove a running container {c.id}. Stop the container "
                               "before attempting removal or force remove")
            self._signal(c, signals.SIGKILL)
            self._wait_exit(c, 30)
        # No need to wait for conmon's exit command: it takes the same lock and does nothing
        # once the container's directory is gone.
        with c.locked():
            self._teardown(c)
            self._delete(c, volumes_too)

    def _delete(self, c: Container, volumes_too: bool) -> None:
        _remove_dir(c)
        if volumes_too or c.spec.auto_remove:
            for name in c.anonymous_volumes:
                volumes.remove(name)

    def _teardown(self, c: Container) -> None:
        """Everything a run leaves in the kernel: runtime state, cgroups, mounts, network.
        Idempotent; called by the exit command, by start (restart) and by remove."""
        if cgroups.oom_killed(c.id):
            (c.persist_dir).mkdir(exist_ok=True)
            (c.persist_dir / "oom").touch()
        runtime = engine.by_name(c.runtime)
        if (runtime.root / c.id).exists():
            runtime.run("delete", "--force", c.id, check=False)
        cgroups.remove(c.id)
        for target in reversed(mounts.mounts_under(c.rootfs)):
            mounts.unmount(Path(target))
        mounts.unmount(c.rootfs)
        for target in reversed(mounts.mounts_under(c.dir / "subpaths")):  # volume subpaths' binds
            mounts.unmount(Path(target))
        if c.spec.network not in ("host", "none") and not c.spec.network.startswith("container:"):
            with contextlib.suppress(ImportError):
                importlib.import_module("shoal.network.attach").detach(c.id)

    def cleanup(self, container_id: str) -> None:
        """The exit command: record the exit, tear everything down, honour --rm."""
        directory = self.root / container_id
        if not (directory / "container.json").exists():
            return
        c = Container.load(directory)
        with c.locked():
            if not (directory / "container.json").exists():
                return
            c = Container.load(directory)
            if c.state.status == "running" and c.process_alive() and not c.read_exit():
                return  # started again since this exit (a restart): this run's teardown is done
            oom = cgroups.oom_killed(c.id)
            self._teardown(c)
            st = c.refresh()
            if st.status == "running" and not c.process_alive():
                st.status, st.finished_at = "exited", time.time()
            st.oom_killed = st.oom_killed or oom
            c.save()
            if c.spec.auto_remove and not _attached(c):
                self._delete_from_reaper(c)

    def _delete_from_reaper(self, c: Container) -> None:
        remove_tree(c.dir)
        for name in c.anonymous_volumes:
            volumes.remove(name)

    @contextlib.contextmanager
    def attached(self, c: Container) -> Iterator[None]:
        """Held by a foreground `run`: with --rm, it (not the exit command) removes the
        container, after reading the exit code."""
        fd = os.open(c.dir / "shoal-attached.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def prune(self) -> list[str]:
        removed = []
        for c in self.list(all=True):
            if c.state.status != "running":
                self.remove(c.id)
                removed.append(c.id)
        return removed

    # ---- exec --------------------------------------------------------------------------------
    def exec_argv(self, ref: str, argv: list[str], *, tty: bool = False, detach: bool = False,
                  env: list[str] | None = None, user: str = "", workdir: str = "") -> list[str]:
        """The runtime command line for `exec` (run by the caller with its own stdio)."""
        c = self.get(ref)
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        if cgroups.frozen(c.id):
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        view = LayeredView([c.rootfs])
        cmd = ["exec"]
        if tty:
            cmd.append("--tty")
            if not any(e.startswith("TERM=") for e in env or []):
                env = [*(env or []), "TERM=xterm"]
        if detach:
            cmd.append("--detach")
        # crun replaces the environment with the --env list: give it the whole process env.
        try:
            process = json.loads((c.dir / "config.json").read_text())["process"]
            base_env = process["env"]
        except (OSError, ValueError, KeyError, TypeError):
            process, base_env = {}, list(c.config.get("Env") or [])
        for item in oci.merge_env(base_env, env or []):
            cmd += ["--env", item]
        exec_user = c.config.get("User", "") if not user else user
        u = resolve_user(exec_user, view.read_text("/etc/passwd"), view.read_text("/etc/group"))
        cmd += ["--user", f"{u.uid}:{u.gid}"]
        cwd = workdir or c.config.get("WorkingDir") or "/"
        cmd += ["--cwd", cwd]
        env_all = oci.merge_env(list(c.config.get("Env") or []), env or [])
        try:
            check_command(view, argv[0], env_all, cwd)
        except ShoalError as exc:
            raise type(exc)(f"OCI runtime exec failed: exec failed: unable to start container "
                            f"process: {str(exc).split('process: ', 1)[-1]}") from None
        return _with_rlimits(process.get("rlimits") or [], engine.by_name(c.runtime).argv(*cmd, c.id, *argv))


# ---- helpers ---------------------------------------------------------------------------------

PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


def _rootfs_propagation(oci_mounts: list[dict[str, Any]]) -> str:
    """moby's setMounts: a shared bind needs the container's root shared, a slave one at least
    slave (a private root would cut the mount off from its peers); else crun's default."""
    modes = {o for m in oci_mounts for o in m.get("options") or [] if o in PROPAGATIONS}
    if modes & {"shared", "rshared"}:
        return "shared"
    if modes & {"slave", "rslave"}:
        return "rslave"
    return ""


def _image_volumes(image_config: dict[str, Any], mounts: list[Mount]) -> list[Mount]:
    """An anonymous volume for each of the image's VOLUMEs no mount of the container covers
    (moby's createContainerOSSpecificSettings): the image's files there copied up into it at the
    first start, out of the container's layer (a commit leaves them out), removed with the
    container by `rm -v` and `--rm`, and by a swarm task's removal."""
    declared = (image_config.get("config") or {}).get("Volumes") or {}
    taken = {posixpath.normpath(m.target) for m in mounts}
    out: list[Mount] = []
    for path in sorted(declared):
        target = posixpath.normpath("/" + str(path).lstrip("/"))
        if target == "/" or target in taken:
            continue
        taken.add(target)
        out.append(Mount(type="volume", target=target, source=""))
    return out


def _with_rlimits(rlimits: list[dict[str, Any]], argv: list[str]) -> list[str]:
    """The runtime's exec under the container's own rlimits (its ulimits), as moby's exec
    process is the container's process spec with another command: `crun exec` and `runc exec`
    without a process file give the new process whatever limits their caller has (the CLI's
    shell, shoald's), and neither takes an rlimit flag. util-linux's prlimit sets them for the
    runtime, whose exec'd process inherits them."""
    tool = shutil.which("prlimit")
    if not rlimits or tool is None:
        return argv
    def value(v: Any) -> str:
        return "unlimited" if not isinstance(v, int) or v < 0 or v >= 2**64 - 1 else str(v)
    flags = [f"--{str(r['type']).removeprefix('RLIMIT_').lower()}={value(r.get('soft'))}:{value(r.get('hard'))}"
             for r in rlimits if isinstance(r, dict) and str(r.get("type", "")).startswith("RLIMIT_")]
    return [tool, *flags, "--", *argv] if flags else argv


def validate_resources(spec: ContainerSpec) -> None:
    if spec.memory and spec.memory < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if spec.nano_cpus:
        ncpu = os.cpu_count() or 1
        if spec.nano_cpus < 10_000_000 or spec.nano_cpus > ncpu * 1_000_000_000:
            raise InvalidArgument(
                f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if spec.pids_limit < 0:
        spec.pids_limit = 0


def normalize_mount(m: Mount) -> Mount:
    if not m.target.startswith("/"):
        raise InvalidArgument(f"invalid mount config: mount path must be absolute: {m.target}")
    if m.type == "bind" and not m.source.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: '{m.source}' mount path must be absolute")
    if m.type == "volume" and m.source:
        volumes.validate_name(m.source)
    subpath = volumes.subpath_option(m.options)
    if subpath is not None:
        if m.type != "volume":
            raise InvalidArgument(f"invalid mount config for type \"{m.type}\": subpath is for volume mounts")
        try:
            volumes.check_subpath(subpath)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid mount config for type \"volume\": {exc}") from None
    if m.type not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"invalid mount type: {m.type}")
    return Mount(type=m.type, target=m.target, source=m.source, read_only=m.read_only,
                 options=list(m.options))


def check_command(view: LayeredView, name: str, env: list[str], workdir: str) -> None:
    """Docker's errors for a command that is not in the image, before anything is created."""
    if "/" in name and not name.startswith("/"):
        name = os.path.join(workdir or "/", name)
    found = find_executable(view, name, oci.env_path(env))
    prefix = "failed to create task for container: failed to create shim task: OCI runtime " \
             "create failed: runc create failed: unable to start container process: "
    if found is None:
        if "/" in name:
            raise CommandNotFound(f"{prefix}exec: \"{name}\": stat {name}: no such file or directory: unknown")
        raise CommandNotFound(f"{prefix}exec: \"{name}\": executable file not found in $PATH: unknown")
    if not found[1]:
        raise CommandNotExecutable(f"{prefix}exec: \"{name}\": permission denied: unknown")


def _classify_start_error(exc: ShoalError) -> ShoalError:
    text = str(exc)
    if "executable file not found" in text or "no such file or directory" in text:
        return CommandNotFound(text)
    if "permission denied" in text:
        return CommandNotExecutable(text)
    return exc


def _plan_from(c: Container) -> oci.ProcessPlan:
    cfg = c.config
    return oci.ProcessPlan(
        entrypoint=list(cfg.get("Entrypoint") or []), cmd=list(cfg.get("Cmd") or []),
        env=list(cfg.get("Env") or []), user=cfg.get("User", ""),
        workdir=cfg.get("WorkingDir") or "/", hostname=cfg.get("Hostname") or c.id[:12],
        stop_signal=cfg.get("StopSignal") or "SIGTERM", labels=dict(cfg.get("Labels") or {}),
    )


def _docker_config(spec: ContainerSpec, plan: oci.ProcessPlan, image_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "Hostname": plan.hostname,
        "Domainname": spec.domainname,
        "User": plan.user,
        "AttachStdin": spec.attached and spec.open_stdin,
        "AttachStdout": spec.attached,
        "AttachStderr": spec.attached,
        "ExposedPorts": (image_config.get("config") or {}).get("ExposedPorts"),
        "Tty": spec.tty,
        "OpenStdin": spec.open_stdin,
        "StdinOnce": spec.stdin_once,
        "Env": plan.env,
        "Cmd": plan.cmd or None,
        "Image": spec.image,
        "Volumes": (image_config.get("config") or {}).get("Volumes"),
        "WorkingDir": plan.workdir if (spec.workdir or (image_config.get("config") or {}).get("WorkingDir")) else "",
        "Entrypoint": plan.entrypoint or None,
        "OnBuild": None,
        "Labels": plan.labels,
        "StopSignal": plan.stop_signal if (spec.stop_signal or (image_config.get("config") or {}).get("StopSignal")) else None,
        "StopTimeout": spec.stop_timeout,
    }


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait for a conmon (not our child) to exit."""
    if not pid:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "conmon":
                return
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.01)


def _attached(c: Container) -> bool:
    path = c.dir / "shoal-attached.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _remove_dir(c: Container) -> None:
    """A container's directory, or moby's error: a half-removed one (its record gone, its
    upper dir not) must not pass for a removed container. One retry: a mount detached lazily
    a moment ago may still hold a file."""
    error: str | None = None
    for attempt in range(2):
        error = remove_tree(c.dir)
        if error is None:
            return
        if attempt == 0:
            time.sleep(0.2)
    raise ShoalError(f"unable to remove filesystem for {c.id}: {error}")

