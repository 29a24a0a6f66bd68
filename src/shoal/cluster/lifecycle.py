"""`cluster create` and `cluster rm`: the order things are made in, and the order they go.

Create writes the cluster's record first (state.py), then makes the wire (net.py), the nodes'
directories, and starts the supervisor (supervisor.py), which starts each node's shoald in its
namespaces (nodeinit.py). NAME-1 runs `swarm init`, the others `swarm join` with the worker
token over TCP and TLS, through their own APIs, as separate machines would. Whatever fails, what
was made is removed again.

Remove does not trust that anything is still in order (a supervisor killed -9, a create that
stopped half-way, a crashed machine's leftovers in /run): it stops the supervisor, then kills
every process still in a node's network namespace or under a node's cgroup, removes the
cgroups, the namespaces (and with them their links, addresses and nftables tables, and the
tasks' namespaces kept by mounts in the node's own mount namespace, which ends with its last
process), the bridge, and the state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shoal import paths
from shoal.cluster import net, state
from shoal.daemonenv import daemon_env
from shoal.errors import Conflict, ShoalError

START_TIMEOUT = 60.0
READY_TIMEOUT = 20.0
SWARM_PORT = 2377


def supervisor_pid_file(record: state.ClusterRecord) -> Path:
    return record.run_dir / "supervisor.pid"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def supervisor_pid(record: state.ClusterRecord) -> int | None:
    """The supervisor's pid if it runs (checked by its command line, not only the pid file)."""
    try:
        pid = int(supervisor_pid_file(record).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    cmd = _cmdline(pid)
    return pid if "shoal.cluster.supervisor" in cmd and str(record.dir) in cmd else None


def node_pid(node: state.NodeRecord) -> int | None:
    try:
        pid = int(node.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def node_answers(node: state.NodeRecord, timeout: float = 1.0) -> bool:
    from shoal.api.client import Client

    if not node.socket.exists():
        return False
    return Client(sock=node.socket, timeout=timeout).ping()


# ---- create ---------------------------------------------------------------------------------------


def _start_supervisor(record: state.ClusterRecord) -> int:
    log = record.dir / "supervisor.log"
    # glibc and CPython read these at the supervisor's start: each node is its fork.
    env = daemon_env(os.environ)
    with open(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shoal.cluster.supervisor", str(record.dir)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                                start_new_session=True, env=env)  # outlives the CLI, away from its terminal
    paths.write_file(supervisor_pid_file(record), f"{proc.pid}\n")
    _started[str(record.dir)] = proc
    return proc.pid


# The supervisors this process started (create): whether one has exited is asked of its Popen,
# which knows its exit status, rather than read from /proc by its pid file and command line.
_started: dict[str, subprocess.Popen[bytes]] = {}


def _supervisor_exited(record: state.ClusterRecord) -> str | None:
    """Why the cluster's supervisor is gone, or None while it runs."""
    proc = _started.get(str(record.dir))
    if proc is None:
        return None if supervisor_pid(record) is not None else "it no longer runs"
    code = proc.poll()
    if code is None:
        return None
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _wait_nodes(record: state.ClusterRecord, timeout: float, nodes: list[state.NodeRecord] | None = None) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(record.nodes if nodes is None else nodes)
    while waiting:
        waiting = [n for n in waiting if not node_answers(n, 2.0)]
        if not waiting:
            return
        gone = _supervisor_exited(record)
        if gone is not None:
            # The log goes with the half-made cluster (create removes it): its last words here.
            raise ShoalError(f"the cluster's supervisor exited ({gone}): {_last_line(record.dir / 'supervisor.log')}")
        if time.monotonic() > deadline:
            node = waiting[0]
            raise ShoalError(f"shoald of {node.hostname} did not answer within {timeout:.0f} s: see {node.log}")
        time.sleep(0.05)


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as exc:
        return f"its log {log} cannot be read ({exc.strerror})"
    return lines[-1] if lines else "it wrote nothing in its log"


def _form_swarm(record: state.ClusterRecord, timeout: float) -> str:
    """NAME-1 inits the swarm as soon as its shoald answers; each other node joins with the
    worker token, over TCP and TLS, as soon as its own answers (each through its own API, as
    `shoal swarm join` on that machine would), in parallel. Returns the manager's address."""
    from shoal.api.client import Client

    manager = record.nodes[0]
    addr = f"{manager.address}:{SWARM_PORT}"
    _wait_nodes(record, timeout, [manager])
    with Client(sock=manager.socket) as client:
        answer = client.post("/swarm/init", {"AdvertiseAddr": manager.address, "ListenAddr": addr})
    token = answer["WorkerToken"]
    errors: list[str] = []

    def join(node: state.NodeRecord) -> None:
        try:
            _wait_nodes(record, timeout, [node])
            with Client(sock=node.socket) as client:
                client.post("/swarm/join", {"RemoteAddrs": [addr], "JoinToken": token,
                                            "AdvertiseAddr": node.address,
                                            "ListenAddr": f"{node.address}:{SWARM_PORT}"})
        except ShoalError as exc:
            errors.append(f"{node.hostname}: swarm join: {exc}")

    threads = [threading.Thread(target=join, args=(n,)) for n in record.nodes[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise ShoalError("; ".join(errors))
    return addr


def _wait_ready(record: state.ClusterRecord, timeout: float) -> set[str]:
    """Wait until every node is Ready in the manager's `node ls` (a joined shoald restarts as
    an agent and registers through its session); returns the hostnames still not Ready."""
    from shoal.api.client import Client

    deadline = time.monotonic() + timeout
    want = {n.hostname for n in record.nodes}
    ready: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with Client(sock=record.nodes[0].socket, timeout=5.0) as client:
                nodes = client.get("/nodes")
            ready = {n.get("hostname") for n in nodes
                     if (n.get("status") or {}).get("state", n.get("state")) == "ready"}
        except ShoalError:
            pass
        if want <= ready:
            return set()
        time.sleep(0.03)  # a GET /nodes costs the manager little; the last join is the wait
    return want - ready


def _make_context(record: state.ClusterRecord, manager_addr: str | None) -> None:
    """A context NAME for the manager, made current: tcp:// with NAME-1's certificates once
    the swarm exists, else NAME-1's unix socket. The context follows NAME-1's certificates
    directory rather than copying it: NAME-1 renews its certificate there, and a root rotation
    replaces both, after which a copy would be refused by the manager."""
    from shoal.api import contexts

    ctx = contexts.Context(record.name, description=f"local cluster {record.name} (shoal cluster)")
    manager = record.nodes[0]
    if manager_addr:
        certs = (Path(manager.root) / "certificates").absolute()
        missing = [str(p) for p in contexts.node_files(certs).values() if not p.is_file()]
        if missing:
            raise ShoalError(f"{record.name}-1 has no swarm certificates after swarm init ({', '.join(missing)})")
        ctx.host = f"tcp://{manager_addr}"
        ctx.node_certs = str(certs)
    else:
        ctx.host = f"unix://{manager.socket}"
    contexts.save(ctx, replace_tls=True)
    contexts.set_current(record.name)


def create(name: str, nodes: int, subnet: str | None, swarm: bool = True,
           progress: Callable[[str], None] = lambda _m: None) -> state.ClusterRecord:
    state.validate_name(name)
    if not 1 <= nodes <= state.MAX_NODES:
        raise ShoalError(f"--nodes {nodes}: between 1 and {state.MAX_NODES}")
    if name in state.names():
        raise Conflict(f'cluster "{name}" already exists')
    for k in range(1, nodes + 1):
        if (net.NETNS_DIR / f"{name}-{k}").exists():
            raise Conflict(f"network namespace {name}-{k} already exists (not made by this cluster): "
                           f"remove it or choose another name")
    from shoal.api import contexts

    if contexts.exists(name):
        raise Conflict(f'a context named "{name}" already exists: remove it (shoal context rm {name}) '
                       f"or choose another cluster name")
    net_ = state.choose_subnet(subnet, nodes)
    record = state.new_record(name, nodes, net_, time.time())
    longest = max((str(n.socket) for n in record.nodes), key=len)
    if len(longest.encode()) > 107:  # sun_path: 108 bytes with the NUL
        raise ShoalError(f"the nodes' API socket path would be too long for a unix socket ({longest}): "
                         f"use a shorter SHOAL_RUN or cluster name")
    state.save(record)  # first: whatever follows can be found and removed
    try:
        net.create(record)
        for node in record.nodes:
            paths.ensure_private_dir(Path(node.root))
            paths.ensure_private_dir(Path(node.run))
        t0 = time.monotonic()
        record.supervisor_pid = _start_supervisor(record)
        state.save(record)
        manager_addr = None
        if swarm:
            manager_addr = _form_swarm(record, START_TIMEOUT)
            progress(f"swarm: {record.nodes[0].hostname} manager at {manager_addr}, "
                     f"{nodes - 1} worker{'s' if nodes != 2 else ''} joined ({time.monotonic() - t0:.1f} s)")
            late = _wait_ready(record, READY_TIMEOUT)
            if late:
                # Joined (certificates issued, over TLS): their agents' sessions are not up yet.
                progress(f"warning: not Ready in `node ls` after {READY_TIMEOUT:.0f} s: {', '.join(sorted(late))} "
                         f"(see their shoald.log under {record.dir})")
            else:
                progress(f"all {nodes} nodes Ready ({time.monotonic() - t0:.1f} s)")
        else:
            _wait_nodes(record, START_TIMEOUT)
            progress(f"shoald answering on {nodes} nodes ({time.monotonic() - t0:.1f} s)")
        _make_context(record, manager_addr)
    except BaseException:
        remove(name)
        raise
    return record


# ---- remove ---------------------------------------------------------------------------------------

def _cgroup_hierarchies() -> list[Path]:
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2") and parts[1].startswith("/sys/fs/cgroup"):
            out.append(Path(parts[1]))
    return out


def cgroup_dirs(node: state.NodeRecord) -> list[Path]:
    return [h / node.cgroup_parent for h in _cgroup_hierarchies() if (h / node.cgroup_parent).is_dir()]


def _pids_in_cgroups(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        for procs in d.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return pids


def pids_in_netns(inode: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                pids.add(int(entry))
        except OSError:
            continue
    return pids


def node_pids(node: state.NodeRecord) -> set[int]:
    """Every process of a node: in its network namespace, or under its cgroup parent."""
    inode = net.netns_inode(node.netns)
    pids = pids_in_netns(inode) if inode is not None else set()
    return (pids | _pids_in_cgroups(cgroup_dirs(node))) - {os.getpid()}


def _stop_supervisor(record: state.ClusterRecord) -> None:
    pid = supervisor_pid(record)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)  # it stops each shoald (SIGTERM, SIGKILL after 20 s)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and supervisor_pid(record) == pid:
        time.sleep(0.05)
    if supervisor_pid(record) == pid:
        os.kill(pid, signal.SIGKILL)


def _kill_all(record: state.ClusterRecord, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = {n.hostname: node_pids(n) for n in record.nodes}
        left = {k: v for k, v in left.items() if v}
        if not left:
            return []
        if time.monotonic() > deadline:
            return [f"{k}: processes {sorted(v)} would not die" for k, v in left.items()]
        for pids in left.values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)


def _remove_cgroups(node: state.NodeRecord, timeout: float = 5.0) -> list[str]:
    from shoal.runtime import cgroups

    for stray in cgroups.stray_dirs(node.cgroup_parent):  # made by a node's runtime, not cgroups
        cgroups.remove_stray(stray)
    errors = []
    for d in cgroup_dirs(node):
        deadline = time.monotonic() + timeout
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [d]:
            while sub.is_dir():
                try:
                    sub.rmdir()
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        errors.append(f"cgroup {sub}: {exc.strerror}")
                        break
                    time.sleep(0.05)
    return errors


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == str(path) or target.startswith(prefix):
            out.append(target)
    return out


def _remove_wireguard_socket(node: state.NodeRecord) -> None:
    from shoal.network import wireguard

    (wireguard.SOCKET_DIR / f"{wireguard.interface_name(Path(node.root))}.sock").unlink(missing_ok=True)


def remove(name: str) -> None:
    """Everything of cluster `name`, whatever state it is in. Raises with every leftover named
    if something could not be removed (and keeps the record, so `cluster rm` can run again)."""
    from shoal.api import contexts

    record = state.load(name)
    _stop_supervisor(record)
    errors = _kill_all(record)
    for node in record.nodes:
        errors += _remove_cgroups(node)
        # A node's wireguard-go (encrypted overlay networks) died with its namespace's processes;
        # its socket is in the machine's /run/wireguard, shared by every namespace.
        _remove_wireguard_socket(node)
    errors += net.remove(record)
    # The nodes' mounts were private to their mount namespaces, gone with their last process;
    # anything mounted under the state from the host's side is unmounted before the files go.
    for top in (record.dir, record.run_dir):
        for target in sorted(mounts_under(top), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
    if errors:
        raise ShoalError(f'cluster "{name}" not fully removed: ' + "; ".join(errors))
    for node in record.nodes:
        node.pid_file.unlink(missing_ok=True)
    shutil.rmtree(record.run_dir, ignore_errors=True)
    shutil.rmtree(record.dir, ignore_errors=True)
    if contexts.exists(name):
        ctx = contexts.load(name)
        if ctx.host in (f"unix://{record.nodes[0].socket}",) or ctx.host.startswith(f"tcp://{record.nodes[0].address}:"):
            if contexts.current_context_setting() == name:
                contexts.set_current(contexts.DEFAULT)
            contexts.remove(name)


def start(name: str, timeout: float = 60.0) -> list[str]:
    """`cluster start`: every node's shoald that is not running is started by the cluster's
    supervisor (SIGUSR1), as `systemctl start shoald` on each machine; returns the hostnames
    started, once each answers."""
    record = state.load(name)
    pid = supervisor_pid(record)
    if pid is None:
        raise ShoalError(f'cluster "{name}" has no supervisor running: remove it ("shoal cluster rm {name}") '
                         "and create it again")
    stopped = [n for n in record.nodes if node_pid(n) is None]
    if stopped:
        os.kill(pid, signal.SIGUSR1)
        _wait_nodes(record, timeout, stopped)
    return [n.hostname for n in stopped]


def status(record: state.ClusterRecord) -> tuple[int, bool]:
    """(nodes whose shoald answers, supervisor running)."""
    return sum(1 for n in record.nodes if node_answers(n, 0.5)), supervisor_pid(record) is not None
