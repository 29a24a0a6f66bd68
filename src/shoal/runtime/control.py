"""What Docker does to a container that exists already, besides start/stop/rm: pause and unpause
(the cgroup freezer, v1 or v2, through the runtime), restart, rename, resource updates of a
running container, the processes it runs (`top`) and its published ports (`port`). Errors are
moby's daemon texts; the CLI prefixes them with `Error response from daemon: `."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.runtime import cgroups, engine
from shoal.runtime.manager import ContainerManager, _NAME, validate_resources
from shoal.runtime.state import Container

_PS_ARGS_PID = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


def _running(c: Container) -> None:
    if c.state.status != "running":
        raise Conflict(f"container {c.id} is not running")


# ---- pause / unpause ----------------------------------------------------------------------------

def pause(mgr: ContainerManager, ref: str) -> None:
    c = mgr.get(ref)
    with c.locked():
        c.refresh()
        _running(c)
        if cgroups.frozen(c.id):
            raise Conflict(f"container {c.id} is already paused")
        proc = engine.by_name(c.runtime).run("pause", c.id, check=False)
        if proc.returncode != 0:
            raise ShoalError(f"cannot pause container {c.id}: {_last_line(proc.stderr)}")


def unpause(mgr: ContainerManager, ref: str) -> None:
    c = mgr.get(ref)
    with c.locked():
        c.refresh()
        if c.state.status != "running" or not cgroups.frozen(c.id):
            raise Conflict(f"Container {c.id} is not paused")
        proc = engine.by_name(c.runtime).run("resume", c.id, check=False)
        if proc.returncode != 0:
            raise ShoalError(f"Cannot unpause container {c.id}: {_last_line(proc.stderr)}")


def thaw(c: Container) -> None:
    """A signal to a frozen container is only delivered once it is thawed (moby resumes a
    paused container it kills or stops, so do we)."""
    if cgroups.frozen(c.id):
        engine.by_name(c.runtime).run("resume", c.id, check=False)


@contextlib.contextmanager
def frozen_while(c: Container) -> Iterator[None]:
    """The container frozen for the duration (as moby's archive code does for `cp`), so its
    processes cannot swap a path for a symlink between our check and our use."""
    if c.state.status != "running" or cgroups.frozen(c.id):
        yield
        return
    runtime = engine.by_name(c.runtime)
    froze = runtime.run("pause", c.id, check=False).returncode == 0
    try:
        yield
    finally:
        if froze:
            runtime.run("resume", c.id, check=False)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "runtime error"


# ---- restart ------------------------------------------------------------------------------------

def restart(mgr: ContainerManager, ref: str, timeout: int | None, signal: str | None, before_start=None) -> None:
    """moby's containerRestart: stop (its signal, grace, then SIGKILL) if running, then start."""
    c = mgr.get(ref)
    if c.state.status == "running":
        thaw(c)
        stop_signal = signal or c.config.get("StopSignal") or "SIGTERM"
        from shoal.runtime.manager import parse_signal

        parse_signal(stop_signal)  # a bad --signal fails before anything is stopped
        old = c.config.get("StopSignal")
        c.config["StopSignal"] = stop_signal
        try:
            _stop_with(mgr, c, timeout)
        finally:
            c.config["StopSignal"] = old
    mgr.start(c.id, before_start=before_start)


def _stop_with(mgr: ContainerManager, c: Container, timeout: int | None) -> None:
    import signal as signals
    from shoal.runtime.manager import DEFAULT_STOP_TIMEOUT, parse_signal

    grace = timeout if timeout is not None else (
        c.spec.stop_timeout if c.spec.stop_timeout is not None else DEFAULT_STOP_TIMEOUT)
    if grace != 0:
        mgr._signal(c, parse_signal(c.config.get("StopSignal") or "SIGTERM"))
        if grace < 0 or mgr._wait_exit(c, grace) is not None:
            return
    mgr._signal(c, signals.SIGKILL)
    mgr._wait_exit(c, 30)


# ---- rename -------------------------------------------------------------------------------------

def rename(mgr: ContainerManager, ref: str, new_name: str) -> None:
    """moby's ContainerRename: names unique (under the names lock create takes too)."""
    if not ref or not new_name:
        raise InvalidArgument("Neither old nor new names may be empty")
    new_name = new_name.lstrip("/")
    if not _NAME.match(new_name):
        raise InvalidArgument(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    c = mgr.get(ref)
    if c.name == new_name:
        raise InvalidArgument("Renaming a container with the same name as its current name")
    with mgr._names_lock():
        other = mgr._names().get(new_name)
        if other is not None:
            raise Conflict(
                f'Conflict. The container name "/{new_name}" is already in use by container '
                f'"{other}". You have to remove (or rename) that container to be able to reuse '
                "that name.")
        with c.locked():
            fresh = Container.load(c.dir)
            fresh.name = new_name
            fresh.spec.name = new_name
            fresh.save()


# ---- update -------------------------------------------------------------------------------------

@dataclass
class Resources:
    """`docker update`'s resource flags; 0 = leave as it is (pids_limit -1 = unlimited)."""

    nano_cpus: int = 0
    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0


def update(mgr: ContainerManager, ref: str, res: Resources) -> None:
    """moby's ContainerUpdate: validated, recorded for the next start, and written to the
    cgroup of a running (or paused) container through the runtime's `update`."""
    c = mgr.get(ref)
    if res.memory and res.memory < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    with c.locked():
        c = Container.load(c.dir)
        c.refresh()
        spec = c.spec
        memory = res.memory or spec.memory
        swap = res.memory_swap or spec.memory_swap
        if res.memory and not res.memory_swap and spec.memory_swap > 0 and res.memory > spec.memory_swap:
            raise Conflict(f"Cannot update container {c.id}: Conflicting options: Memory limit should be "
                           "smaller than already set memoryswap limit, update the memoryswap at the same time")
        if swap > 0 and memory and swap < memory:
            raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
        if swap > 0 and not memory:
            raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
        candidate = type(spec).from_dict(spec.to_dict())
        candidate.nano_cpus = res.nano_cpus or spec.nano_cpus
        candidate.memory = memory
        candidate.memory_swap = swap
        candidate.memory_reservation = res.memory_reservation or spec.memory_reservation
        candidate.cpu_shares = res.cpu_shares or spec.cpu_shares
        if res.pids_limit:
            candidate.pids_limit = res.pids_limit if res.pids_limit > 0 else 0
        validate_resources(candidate)
        if c.state.status == "running" and c.process_alive():
            args = _runtime_update_args(res, candidate)
            if args:
                proc = engine.by_name(c.runtime).run("update", *args, c.id, check=False)
                if proc.returncode != 0:
                    raise ShoalError(f"Cannot update container {c.id}: {_last_line(proc.stderr)}")
        c.spec = candidate
        c.save()


def _runtime_update_args(res: Resources, spec) -> list[str]:
    from shoal.runtime.oci import CFS_PERIOD

    args: list[str] = []
    if res.nano_cpus:
        args += [f"--cpu-period={CFS_PERIOD}", f"--cpu-quota={res.nano_cpus * CFS_PERIOD // 1_000_000_000}"]
    if res.cpu_shares:
        args.append(f"--cpu-share={res.cpu_shares}")
    if res.memory or res.memory_swap:
        args.append(f"--memory={spec.memory}")
        # Docker: swap unset = twice the memory; -1 = unlimited
        swap = spec.memory_swap if spec.memory_swap else 2 * spec.memory
        args.append(f"--memory-swap={swap}")
    if res.memory_reservation:
        args.append(f"--memory-reservation={res.memory_reservation}")
    if res.pids_limit:
        args.append(f"--pids-limit={res.pids_limit if res.pids_limit > 0 else -1}")
    return args


# ---- top / port ---------------------------------------------------------------------------------

def top(mgr: ContainerManager, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
    """moby's ContainerTop: the host's `ps` (-ef unless told) over the container's processes,
    its lines kept when their PID is one of the container's."""
    ps_args = ps_args or "-ef"
    for key, value in _PS_ARGS_PID.findall(ps_args):
        if key == "" or value == "":
            continue
        raise InvalidArgument(f'specifying "{key}={value}" is not allowed')
    c = mgr.get(ref)
    _running(c)
    procs = cgroups.pids(c.id)
    args = ps_args.split(" ")
    try:
        proc = subprocess.run(["ps", *args, "-q" + ",".join(map(str, procs))], capture_output=True, text=True)
        if proc.returncode != 0:
            proc = subprocess.run(["ps", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise ShoalError('ps: exec: "ps": executable file not found in $PATH') from None
    if proc.returncode != 0:
        raise ShoalError("ps: " + (proc.stderr.splitlines() or ["exit status %d" % proc.returncode])[0])
    return parse_ps(proc.stdout, procs)


def parse_ps(output: str, procs: list[int]) -> tuple[list[str], list[list[str]]]:
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ShoalError("Couldn't find PID field in ps output")
    index = titles.index("PID")
    rows: list[list[str]] = []
    previous_ours = False
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        if fields[index] == "-":  # a thread line (`-L`, `m`): kept when its process is ours
            if previous_ours:
                rows.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[index])
        except ValueError:
            raise ShoalError(f"Unexpected pid '{fields[index]}': strconv.Atoi: parsing "
                             f"\"{fields[index]}\": invalid syntax") from None
        previous_ours = pid in procs
        if previous_ours:
            rows.append(_fit(fields, len(titles)))
    return titles, rows


def _fit(fields: list[str], n: int) -> list[str]:
    """The command (the last title) keeps its spaces: the fields past it are joined into it."""
    return fields[: n - 1] + [" ".join(fields[n - 1 :])]


def port_lines(c: Container, private: str | None = None, ref: str = "") -> list[str]:
    """docker port: `80/tcp -> 0.0.0.0:8080` lines (natural order), or the frontends of one port."""
    if c.state.status != "running":
        bindings: list[dict] = []
    else:
        bindings = c.network.get("ports") or [vars(p) for p in c.spec.ports]
    frontends: dict[str, list[str]] = {}
    for p in bindings:
        if not p.get("published"):
            continue
        host = p.get("host_ip") or "0.0.0.0"
        host = f"[{host}]" if ":" in host else host
        frontends.setdefault(f"{p['target']}/{p['protocol']}", []).append(f"{host}:{p['published']}")
    if private is not None:
        key = private if "/" in private else f"{private}/tcp"
        number, _, proto = key.partition("/")
        if not number.isdigit() or not proto:
            raise InvalidArgument(f"invalid port: {private}")
        found = frontends.get(key)
        if not found:
            raise NotFound(f"no public port '{private}' published for {ref or c.name}")
        return sorted(found, key=_natural)
    return sorted((f"{k} -> {v}" for k, vs in frontends.items() for v in vs), key=_natural)


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
