"""shoald: the manager and agent roles of a node in one asyncio process.

Manager role: the store, the API, the orchestrator / allocator / scheduler / reaper pass, and the
dispatcher (manager/dispatcher.py) that serves the agents' sessions. Agent role: the agent
(agent/agent.py: its own store of assignments, the session), the worker driving this node's
tasks, and the embedded DNS. The agent reaches the manager only through its session: one node
uses the in-process one (agent/inprocess.py); a worker-only node passes another (HTTPS) as
`session_factory` and no manager.

It owns nothing the containers need to keep running (conmon supervises each one), so it can be
stopped or killed at any time; on start it reads the stores and the node's containers and carries
on reconciling."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any


def _import_aiohttp_without_system_trust() -> None:
    """aiohttp makes two client TLS contexts when imported, each loading the system's CA bundle
    (about 140 certificates: 2.0 MiB resident, in every shoald and so in every cluster node
    forked from the supervisor). shoald never uses them: each connection it makes to a node
    passes the cluster's context (tlscontext.py), and registry pulls use httpx with contexts of
    their own. So they are made with no CA file or directory: a call that forgot its context
    would fail closed instead of trusting the world's CAs. The environment is restored at once
    (shoald imports this module before it starts any thread)."""
    names = ("SSL_CERT_FILE", "SSL_CERT_DIR")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = os.devnull
    try:
        import aiohttp.connector  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


_import_aiohttp_without_system_trust()

from aiohttp import web  # noqa: E402

from shoal import paths
from shoal.paths import socket_path
from shoal.agent.agent import Agent, AssignedFiles
from shoal.agent.pool import off_loop
from shoal.agent.session import EngineInfo, NodeDescription, PlatformInfo, Resources, Session
from shoal.agent.worker import Worker
from shoal.api.server import make_app
from shoal.errors import ShoalError
from shoal.ids import new_swarm_id
from shoal.store import SQLiteStore

if TYPE_CHECKING:
    from shoal.manager.dispatcher import Dispatcher

log = logging.getLogger("shoald")

# A reconciliation pass also runs this often with nothing to do, to catch what no event reports.
IDLE_RESYNC = 10.0
# How often the agent looks at its running containers for exits it was not told about.
AGENT_POLL = 0.25
PASS_SLOW = 30.0  # seconds an agent pass may run before it is logged as stuck, with its stack
EXIT_RECHECKS = (0.02, 0.1)  # seconds after a task's process exits: conmon records it meanwhile
# How long shoald waits, when it is stopped, for task steps under way to finish.
SHUTDOWN_GRACE = 15.0
# How often the resolver's tables and sockets are checked against the network state.
DNS_RESYNC = 2.0
# How long shoald waits at start for the agent's first session before serving the API anyway
# (a worker whose manager is away still runs what it has).
FIRST_SESSION_WAIT = 5.0
# How long shoald, when stopped, tries to hand the manager the last task states.
FINAL_STATUS_WAIT = 2.0


def describe_node(node_id: str) -> NodeDescription:
    """This machine as the agent describes it at registration."""
    import platform

    from shoal import __version__
    from shoal.network import wireguard

    return NodeDescription(
        hostname=socket.gethostname(),
        platform=PlatformInfo(os="linux", architecture=platform.machine()),
        resources=Resources(nano_cpus=(os.cpu_count() or 1) * 1_000_000_000,
                            memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
        # Whether this node can carry encrypted overlay networks: the scheduler's filter reads it.
        engine=EngineInfo(engine_version=__version__, plugins=wireguard.plugins()),
        node_id=node_id,
    )


NETWORK_COLLECT = 1.0  # seconds between a worker's looks for networks no task uses


def network_records(store: SQLiteStore) -> Callable[[], dict[str, dict[str, Any]]]:
    """The manager's networks that tasks attach to, by name, as a node needs them to make its
    own copy (spec and allocation, from the store: manager/allocator.py node_record)."""

    from shoal.manager import allocator

    def records() -> dict[str, dict[str, Any]]:
        return allocator.node_records(store.list("network"))

    return records


class Daemon:
    def __init__(self, root: Path | None = None,
                 session_factory: Callable[[Daemon], Session] | None = None, worker: bool = False) -> None:
        """`session_factory` gives the agent's session; None: the in-process one, to this
        daemon's own dispatcher (one node, or a manager that runs tasks). A `worker` (a node
        that joined a swarm as one; its session is HTTPS to a manager) runs no manager, as a
        swarmkit worker node runs only its agent: no dispatcher, orchestrator, allocator,
        scheduler or their loop, and their modules are never imported (about 1 MiB of every
        worker's memory, bench/bench_cluster.py). It keeps its store (shoald.db), its one-node
        past: `info` counts from it, and `swarm leave` makes it a one-node manager again."""
        self.root = root or paths.state_root()
        paths.ensure_private_dir(self.root)
        self.store = SQLiteStore(self.root / "shoald.db")
        self.node_id = self._node_id()
        self.is_worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dispatcher: Dispatcher | None = None
        if not worker:
            from shoal.manager import dispatcher

            self.dispatcher = dispatcher.Dispatcher(self.store, on_change=self._kick_threadsafe,
                                                    network_records=network_records(self.store))
        if session_factory is not None:
            session = session_factory(self)
        else:
            from shoal.agent.inprocess import InProcessSession

            if self.dispatcher is None:
                raise ValueError("a worker's daemon needs the session to its manager")
            session = InProcessSession(self.dispatcher)
        self.agent = Agent(self.root, session, describe_node(self.node_id),
                           on_assignments=self._agent_wake_threadsafe)
        self._dns_services = -1
        self._wake = asyncio.Event()
        self._agent_wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._stack_locks: dict[str, asyncio.Lock] = {}
        # Stack networks no stack lists are collected only while no deploy or removal is under
        # way: a deploy makes (or reuses) its networks before it stores them, and a collection
        # in between took a network from under it ("network shop_front not found").
        self._stack_ops = 0
        self._not_collecting = asyncio.Event()
        self._not_collecting.set()
        self._agent_hooks: list[Callable[[], None]] = []
        self._exit_fds: set[int] = set()  # pidfds of running tasks, see _watch_exit
        self.failed = False  # serve() ended because one of its loops did: exit non-zero
        self.dns: Any = None
        self._dns_revision = -1
        self._dns_due = 0.0

    def _node_id(self) -> str:
        path = self.root / "node_id"
        if path.exists():
            return path.read_text().strip()
        node_id = new_swarm_id()
        paths.write_file(path, node_id + "\n")
        return node_id

    def _kick_threadsafe(self) -> None:
        """The dispatcher changed the store (a status batch, a node up or down): from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.kick)
            except RuntimeError:
                pass  # shutting down

    def _agent_wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._agent_wake.set)
            except RuntimeError:
                pass

    def stack_lock(self, name: str) -> asyncio.Lock:
        return self._stack_locks.setdefault(name, _StackLock(self))

    def kick(self) -> None:
        """Something changed the desired state: run the loops now, and let every session's
        assignment stream look at the store."""
        self._wake.set()
        if self.dispatcher is not None:
            self.dispatcher.notify()

    async def changed(self, revision: int, timeout: float) -> None:
        """Wait until the store moves past `revision` (or the timeout)."""
        deadline = time.monotonic() + timeout
        while self.store.revision() <= revision and time.monotonic() < deadline:
            async with self._changed:
                await _wait(self._changed.wait(), min(0.2, deadline - time.monotonic()))

    def manager_pass(self) -> float | None:
        from shoal.manager import allocator, orchestrator, reaper, scheduler

        now = time.time()
        with self.store.transaction() as tx:
            wake = orchestrator.reconcile(tx, now)
            allocator.reconcile(tx, now, allocator.store_networks(tx))
            scheduler.reconcile(tx, now)
            reaper.reconcile(tx)
        return wake

    def collect_networks(self) -> None:
        """Remove the stack networks no stored network lists (run with no stack operation under
        way, so the store read here is not behind one)."""
        from shoal.manager import endpoints

        endpoints.collect_networks({n["name"] for n in self.store.list("network")})

    async def _collect_networks(self) -> None:
        if self._stack_ops:
            return  # the next pass collects
        self._not_collecting.clear()
        try:
            await off_loop(self.collect_networks)
        finally:
            self._not_collecting.set()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def manager_loop(self) -> None:
        while True:
            self._wake.clear()
            before = self.store.revision()
            try:
                wake_at = await off_loop(self.manager_pass)  # never behind API requests
                await self._collect_networks()
            except ShoalError as exc:
                log.error("manager pass failed: %s", exc)
                wake_at = None
            except Exception:  # noqa: BLE001 - as the agent loop's (16b4880): a bug in one pass
                # must not end the orchestration silently while the node still answers
                log.exception("manager pass failed")
                wake_at = None
            if self.store.revision() != before:
                await self._notify()
                if self.dispatcher is not None:
                    self.dispatcher.notify()
                for hook in self._agent_hooks:
                    hook()
                continue  # a pass that changed something may enable the next step at once
            timeout = IDLE_RESYNC if wake_at is None else max(0.0, min(IDLE_RESYNC, wake_at - time.time()))
            await _wait(self._wake.wait(), timeout)

    def _make_worker(self) -> Worker:
        from shoal.agent.netglue import DaemonTaskNetwork
        from shoal.image.store import ImageStore
        from shoal.runtime.manager import ContainerManager

        images = ImageStore()
        loop = asyncio.get_running_loop()
        def on_change() -> None:
            if not loop.is_closed():  # a step finishing while shoald shuts down
                loop.call_soon_threadsafe(self._agent_wake.set)

        def watch_exit(fd: int) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._watch_exit, fd)

        from shoal.agent.attachments import NodeAttachments
        from shoal.agent.netglue import NodeNetworks
        from shoal.network import attach

        # `run --network X` on an attachable swarm network: the address from the manager.
        self.attachments = NodeAttachments(self.agent, loop)
        attach.set_cluster(self.attachments.provider)
        self.node_networks = NodeNetworks(self.agent, manager=not self.is_worker,
                                          attached=self.attachments.networks)
        # The worker runs on the agent's own store; its states go to the manager through the
        # agent (agent.report), its secrets come from the agent's memory.
        return Worker(self.agent.store, self.agent.node_id, ContainerManager(images=images), images,
                      on_change=on_change, network=DaemonTaskNetwork(loop, self.dns), watch_exit=watch_exit,
                      on_status=self.agent.report, files=AssignedFiles(self.agent),
                      image_source=self._image_source(), network_setup=self.node_networks.setup,
                      # A worker whose manager is away restarts exited tasks in place; a
                      # manager's (or one node's) manager is never away.
                      manager_away=self.agent.manager_away if self.is_worker else None)

    def _image_source(self) -> Callable[[], tuple[str, Any]] | None:
        """On a worker (its session is HTTPS to a manager): where it pulls the images it lacks,
        the manager's distribution API with the node's current certificate. None on a manager
        or one node, whose image store is the manager's own."""
        if not self.is_worker:
            return None  # this node's manager is in this process
        from shoal.agent.session_https import HTTPSSession

        session = self.agent.session
        if not isinstance(session, HTTPSSession):
            return None

        def source() -> tuple[str, Any]:
            from shoal.agent.imagefetch import manager_source

            managers = session.managers[session._current:] + session.managers[:session._current]
            return manager_source(managers, session.certs.directory)

        return source

    def _watch_exit(self, fd: int) -> None:
        """A task's pidfd turns readable when its process exits: run the agent then (and again
        shortly, as conmon writes the exit file just after), not at its next poll."""
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(fd)
            self._exit_fds.discard(fd)
            os.close(fd)
            self._agent_wake.set()
            for delay in EXIT_RECHECKS:
                loop.call_later(delay, self._agent_wake.set)

        self._exit_fds.add(fd)
        loop.add_reader(fd, exited)

    async def refresh_dns(self) -> None:
        from shoal.agent.netglue import dns_tables

        if self.dns is None:
            return
        self._dns_revision = self.agent.store.revision()
        self._dns_services = self.agent.services_version
        tables = await off_loop(dns_tables, self.agent.services, self.agent.attachments)
        for network_id, records in tables.items():
            self.dns.set_records(network_id, records)

    async def serve_running_containers(self, reopen: bool = True) -> None:
        """The resolver's sockets live in the daemon: close those whose container is gone, and
        (at start, after a restart) open them again in every running container on a
        user-defined network, tasks and `shoal run` alike. Not while running: a stopping task,
        out of the resolver already, would get sockets again that keep its namespace (and
        its veth) alive after it is removed."""
        from shoal.agent.netglue import container_networks, container_upstreams
        from shoal.network.store import NetworkStore

        if self.dns is None:
            return
        netns_dir = paths.run_root() / "netns"
        for container_id in list(self.dns.serving()):
            if not (netns_dir / container_id).exists():
                await self.dns.unserve(container_id)
        if not reopen:
            return
        wanted = await asyncio.to_thread(
            lambda: {cid for n in NetworkStore().list() if not n.predefined for cid in n.endpoints})
        for container_id in sorted(wanted - set(self.dns.serving())):
            netns = netns_dir / container_id
            if not netns.exists():
                continue
            try:
                await self.dns.serve(container_id, netns, await asyncio.to_thread(container_networks, container_id),
                                     await asyncio.to_thread(container_upstreams, container_id))
            except OSError as exc:
                log.warning("embedded DNS for container %s: %s", container_id[:12], exc)

    async def agent_loop(self) -> None:
        """Drive this node's tasks: on every change, and every AGENT_POLL to notice exits."""
        worker = self._make_worker()

        collect_due = 0.0
        pass_thread = 0

        def step() -> None:
            nonlocal collect_due, pass_thread
            pass_thread = threading.get_ident()
            try:
                worker.sync()
                self.agent.tidy()
                self.node_networks.sync_overlays()
                self.attachments.reconcile()  # containers gone from their network: detached
                if time.monotonic() >= collect_due:
                    # A worker's networks no task uses any more (a second is soon enough).
                    collect_due = time.monotonic() + NETWORK_COLLECT
                    self.node_networks.collect()
            finally:
                pass_thread = 0

        try:
            while True:
                self._agent_wake.clear()
                try:
                    await self._watched_pass(step, lambda: pass_thread)
                    if self.agent.services_version != self._dns_services or time.monotonic() > self._dns_due:
                        # Containers of `shoal run` come and go outside the store: look again often.
                        self._dns_due = time.monotonic() + DNS_RESYNC
                        await self.refresh_dns()
                        await self.serve_running_containers(reopen=False)
                except ShoalError as exc:
                    log.error("agent pass failed: %s", exc)
                except Exception:  # noqa: BLE001 - one bad pass must not end the node's task driving
                    # The loop ended silently on one (its task's exception unread until shoald
                    # stopped): the node stayed Ready while its tasks were never stopped or started.
                    log.exception("agent pass failed")
                await _wait(self._agent_wake.wait(), AGENT_POLL)
        finally:
            loop = asyncio.get_running_loop()
            for fd in list(self._exit_fds):
                loop.remove_reader(fd)
                os.close(fd)
            self._exit_fds.clear()
            # Steps under way (a stop in its grace period) finish and report before we exit.
            await asyncio.to_thread(worker.close, SHUTDOWN_GRACE)

    async def _watched_pass(self, step: Callable[[], None], thread: Callable[[], int]) -> None:
        """One agent pass in a control thread (agent/pool.py: not the default executor, whose
        threads API requests can hold). A pass that has not ended after PASS_SLOW seconds is
        told, with where its thread is, again every PASS_SLOW: nothing on this node is started
        or stopped meanwhile, and its heartbeats keep it Ready, so the log must say why."""
        job = asyncio.ensure_future(off_loop(step))
        started = time.monotonic()
        while True:
            done, _ = await asyncio.wait({job}, timeout=PASS_SLOW)
            if done:
                job.result()
                return
            frame = sys._current_frames().get(thread())
            where = ("".join(traceback.format_stack(frame)) if frame is not None
                     else "(not started: no control thread free)\n")
            log.error("agent pass running for %.0f s: no task of this node is started or stopped until it "
                      "ends; it is at:\n%s", time.monotonic() - started, where.rstrip())

    async def serve(self) -> None:
        run = paths.run_root()
        paths.ensure_private_dir(run)
        # Opened without truncating: a second shoald that loses the race for the lock must not
        # empty the pid the running one wrote (stop scripts and tests read it).
        lock_file = (run / "shoald.lock").open("a")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ShoalError(f"another shoald is running (lock {run / 'shoald.lock'} is held)") from exc
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._loop = asyncio.get_running_loop()
        roles: dict[str, asyncio.Task[Any]] = {}
        if self.dispatcher is not None:
            # Nodes the store has as ready get the unknown-node grace before the agent registers.
            self.dispatcher.start()
            roles["dispatcher"] = asyncio.create_task(self.dispatcher.run())
        roles["agent"] = asyncio.create_task(self.agent.run())
        await self.agent.wait_registered(FIRST_SESSION_WAIT)
        if not self.is_worker:
            from shoal.manager import endpoints

            # Networks an older shoald allocated in this node's files move into the store, once.
            await asyncio.to_thread(endpoints.migrate_networks, self.store)
            # Endpoints a deploy made before a crash kept it from storing its services (a
            # worker's are its agent's, from its assignments: agent/netglue.py).
            await asyncio.to_thread(endpoints.reconcile, {s["id"] for s in self.store.list("service")})
        from shoal.network.dns import EmbeddedDNS

        self.dns = EmbeddedDNS(run_blocking=off_loop)  # a task's resolver never waits behind requests
        await self.refresh_dns()
        await self.serve_running_containers()
        sock = socket_path()
        sock.unlink(missing_ok=True)
        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        old_umask = os.umask(0o077)  # root-only socket: the API can start containers
        try:
            site = web.UnixSite(runner, str(sock))
            await site.start()
            os.chmod(sock, 0o600)  # exactly: read and write is what connecting takes
        finally:
            os.umask(old_umask)
        log.info("shoald listening on unix://%s (node %s)", sock, self.node_id)
        # The cluster's TCP listener (manager), certificate renewal (worker): only on a node in a
        # swarm, so a one-node shoald never loads TLS, the CA (cryptography) or the image API's
        # HTTP client (about 20 MiB); `swarm init` loads them when it starts the listener.
        if in_swarm(self.root):
            from shoal.api import tcp

            await tcp.start_swarm(self)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent_loop = asyncio.create_task(self.agent_loop())
        loops = {"agent loop": agent_loop}
        if not self.is_worker:
            loops["manager loop"] = asyncio.create_task(self.manager_loop())

        def ended(what: str, task: asyncio.Task[Any]) -> None:
            # These run until shoald stops; one that ends on its own (an error at its start,
            # say) left the node answering and heartbeating with nothing behind it, its
            # exception unread until shutdown. shoald stops instead, failed: systemd (or the
            # local cluster's supervisor) starts it again (issue 11).
            if task.cancelled() or stop.is_set():
                return
            log.critical("the %s ended: shoald stops, to be started again", what, exc_info=task.exception())
            self.failed = True
            stop.set()

        for what, task in [*loops.items(), *roles.items()]:
            task.add_done_callback(lambda t, w=what: ended(w, t))
        try:
            await stop.wait()
        finally:
            # The worker first (steps under way finish), then its last states to the manager.
            agent_loop.cancel()
            await asyncio.gather(agent_loop, return_exceptions=True)
            await self.agent.flush(FINAL_STATUS_WAIT)
            others = [t for t in [*loops.values(), *roles.values()] if t is not agent_loop]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self.agent.close()
            tcp_module = sys.modules.get("shoal.api.tcp")
            if tcp_module is not None:
                await tcp_module.stop_swarm(self)
            await runner.cleanup()
            sock.unlink(missing_ok=True)
            lock_file.close()


class _StackLock(asyncio.Lock):
    """A stack's deploy/remove lock that also keeps the network collection out while held."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__()
        self._daemon = daemon

    async def acquire(self) -> bool:
        await super().acquire()
        self._daemon._stack_ops += 1
        try:
            await self._daemon._not_collecting.wait()
        except BaseException:
            self.release()
            raise
        return True

    def release(self) -> None:
        self._daemon._stack_ops -= 1
        super().release()


async def _wait(waiter: Coroutine[Any, Any, Any], timeout: float) -> None:
    """Wait for `waiter` at most `timeout` seconds. Not asyncio.wait_for: on Python 3.11 it can
    swallow a cancellation that lands as the waiter completes (gh-86296), and a loop that
    lost its cancellation kept shoald from stopping on SIGTERM."""
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await waiter
    except TimeoutError:
        pass


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one, as Go programs (dockerd, containerd) do
    at start: shoald holds the resolver's sockets of every task, their forwards and TCP
    clients, pidfds and API connections, and the soft limit a shell or systemd gives (1,024)
    is a few busy stacks' worth. contrib/shoald.service sets both to 1048576. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    return soft


# asyncio gives every TLS connection a 256 KiB read buffer (sslproto.SSLProtocol.max_size), zeroed
# when the connection opens, so resident at once: with each node's session holding its streams and
# its heartbeats on TLS connections to the manager, that was most of the manager's 1 MiB per node
# (bench/bench_agents.py). A TLS record carries at most 16 KiB of data, so 32 KiB reads lose
# nothing but a few more read calls on a long transfer (an image layer).
TLS_READ_BUFFER = 32 * 1024


def small_tls_buffers() -> None:
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def in_swarm(root: Path) -> bool:
    """Has this node joined or made a swarm? (manager/swarmnode.py's state file, read without
    loading the swarm modules.)"""
    return (root / "swarm" / "state.json").exists()


def run() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shoald %(levelname)s %(message)s")
    # `kill -USR2 <shoald>`: every thread's Python stack to its stderr (its log), for a node that
    # stopped driving its tasks while it heartbeats (issue 11), where py-spy is not installed.
    import faulthandler

    faulthandler.register(signal.SIGUSR2, all_threads=True)
    raise_nofile_limit()
    small_tls_buffers()
    from shoal.api.swarmapi import finish_leave, restart_if_requested

    factory = None
    try:
        if in_swarm(paths.state_root()):  # a worker: HTTPS to its manager
            from shoal.agent.session_https import for_worker

            factory = for_worker(paths.state_root())
        paths.ensure_private_dir(paths.run_root())  # serve() makes it too; here its error is one line
        daemon = Daemon(session_factory=factory, worker=factory is not None)
    except OSError as exc:  # a state or run root that cannot be made (a file in its path, a read-only disk)
        print(f"shoald: cannot use {exc.filename or paths.state_root()}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ShoalError as exc:  # its state damaged (shoald.db, swarm/state.json): one line naming the file
        print(f"shoald: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(daemon.serve())
    finally:
        from shoal.agent.pool import stop_control_pool

        stop_control_pool()
    if daemon.failed:
        return 1  # Restart=on-failure starts it again
    finish_leave()  # a worker's `swarm leave`: its task containers removed, as moby's Leave
    restart_if_requested()  # after swarm join / leave: start again in the new role
    return 0
