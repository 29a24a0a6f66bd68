"""The agent: a node's side of its session with the manager (swarmkit's agent/agent.go and
agent/worker.go).

It keeps the node's assignments in a small store of its own (<root>/worker/tasks.db, 0600): the
tasks with their specs and the last state the node observed. The Worker runs against that store
alone, so what it does does not depend on the manager being reachable. Nothing secret is in it:
the secrets' and configs' data an assignment carries is held in memory (`files`) and written
only to the per-task tmpfs agent/taskfiles.py mounts.

- Assignments in: a COMPLETE set replaces what the node runs (a task the set does not list is no
  longer wanted: it is shut down and removed, so a slot the manager gave to another node while
  this one was away never runs twice); INCREMENTAL sets change it.
- Status out: every state the worker records is queued (the newest per task) and sent in
  batches; a batch the manager did not take stays queued and is sent again, with backoff. Each
  new session starts by sending the state of every task the node has.
- Heartbeats at the period the manager gives.
- Manager away: the worker carries on with what it has. Tasks keep running; a task that exits
  is restarted in place per its restart policy (agent/localrestart.py: same task, same slot,
  its process run again; it never leaves RUNNING in what is reported, so the orchestrator has
  nothing to replace), unlike swarmkit's agent, whose exits wait for the manager; with the
  manager there, exits are reported and the orchestrator replaces the task. The node's local
  store survives a restart of shoald, so a node that comes up while its manager is away runs
  what it had."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.agent.pool import off_loop
from shoal.agent.session import (AssignmentSet, AssignmentType, CertificateUnusable, FileData, LogSubscription,
                                 NodeDescription, NodeRemoved, ServiceRecord, Session, SessionInfo, SessionInvalid,
                                 TaskStatusUpdate, Unreachable)
from shoal.errors import ShoalError
from shoal.model.cluster import Task, TaskState
from shoal.store import SQLiteStore
from shoal.store.sqlite import StoreUnreadable

log = logging.getLogger("shoald.agent")

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
STATUS_BATCH = 500  # updates per request at most
LOG_BATCH = 1000  # log lines per publish at most
LOG_POLL = 0.2  # seconds between looks at a followed service's logs

# The fields of a task the manager owns; the node keeps its own status and addresses.
_MANAGER_FIELDS = ("service_id", "service_name", "slot", "node_id", "spec_version", "desired_state", "spec",
                   "created_at", "start_after", "replaces", "restarted", "waits_for")


EVENTS_KEPT = 1000  # the agent's store keeps this many events (its revision is the newest's)
TRIM_EVERY = 60.0  # seconds


def local_store_path(root: Path) -> Path:
    return root / "worker" / "tasks.db"


class LocalStore(SQLiteStore):
    """The agent's store. Nobody replays its event log (the manager's is what `events` reads),
    so it is trimmed to the last EVENTS_KEPT events rather than the manager's 50,000: every
    status write logs the whole task, and a busy node's file grew by megabytes an hour."""

    def quick_check(self) -> str:
        """'' for a file SQLite reads whole, else what it found wrong (its first line)."""
        with self._lock:
            row = self._conn.execute("PRAGMA quick_check").fetchone()
        return "" if row is None or row[0] == "ok" else str(row[0])

    def trim_events(self, keep: int = EVENTS_KEPT) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM events WHERE revision <= (SELECT MAX(revision) FROM events) - ?",
                               (keep,))


def open_local_store(path: Path) -> LocalStore:
    """The agent's store. One this node cannot read (truncated, overwritten: a disk that filled,
    a crash mid-write on a filesystem without ordering) is moved aside with one line in the log
    and started empty, where shoald ended in a traceback at every start, restarted for ever. It
    holds the manager's assignments, which the next session's complete set brings again (a
    running task's container is its own again with it); what only this file held, restarts in
    place while the manager was away and states not yet sent, is lost. swarmkit's node, on a
    tasks.db bolt cannot open, fails to start and stays out of the swarm."""
    try:
        store = LocalStore(path)
    except StoreUnreadable as exc:
        problem: str = str(exc.__cause__ or exc)
    else:
        try:
            problem = store.quick_check()
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        if not problem:
            return store
        store.close()
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if path.with_name(path.name + suffix).exists():
            path.with_name(path.name + suffix).rename(aside.with_name(aside.name + suffix))
    log.warning("%s is unreadable (%s): moved to %s, starting with no assignments until the manager sends them",
                path, problem, aside.name)
    return LocalStore(path)


class AssignedFiles:
    """Secrets and configs for taskfiles.materialize, from memory: `list(kind)` gives records as
    the manager's store would (name, data), `list("task")` the node's tasks (for collecting
    the files of tasks that are gone)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def list(self, kind: str) -> list[dict[str, Any]]:
        if kind == "task":
            return self._agent.store.list("task")
        import base64

        with self._agent._lock:
            found = [f for f in self._agent.files.values() if f.kind == kind]
        return [{"id": f.id, "name": f.name, "data": base64.b64encode(f.data).decode(),
                 "template_driver": f.template_driver} for f in found]

    def registry_auth(self, service_id: str) -> str | None:
        """The encoded registry credentials the service's tasks pull with (--with-registry-auth),
        from the assignments; never written to the node's store."""
        with self._agent._lock:
            return self._agent.registry_auths.get(service_id)


class Agent:
    def __init__(self, root: Path, session: Session, description: NodeDescription,
                 on_assignments: Callable[[], None] = lambda: None) -> None:
        path = local_store_path(root)
        paths.ensure_private_dir(path.parent)
        self.store = open_local_store(path)
        self._trim_due = 0.0
        self.session = session
        self.description = description
        self.node_id = description.node_id
        self.on_assignments = on_assignments  # wake the worker
        self.files: dict[str, FileData] = {}  # "kind/id" -> data, in memory only
        self.registry_auths: dict[str, str] = {}  # service ID -> encoded credentials, in memory only
        self.services: list[ServiceRecord] = []
        self.services_version = 0  # bumped when `services` changes (the resolver reads them again)
        # The networks this node's tasks attach to, by name, as the manager made them.
        self.networks: dict[str, dict[str, Any]] = {}
        # Containers attached to attachable swarm networks on the node's networks, as the
        # manager sent them (manager/controlapi/attachments.py records; agent/attachments.py).
        self.attachments: list[dict[str, Any]] = []
        self.info: SessionInfo | None = None
        self.connected = False
        self._lock = threading.Lock()
        self._pending: dict[str, TaskStatusUpdate] = {}  # task ID -> newest state not yet taken
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush: asyncio.Event | None = None
        self._sequence = 0
        # The newest set whose service records the node's rotations follow (netglue reports it),
        # and the newest the manager was told of: sent at once, the manager holds stops on it.
        self._applied = (None, 0)  # (session ID, sequence)
        self._acked = (None, 0)
        self._ack: asyncio.Event | None = None
        self._unassigned: set[str] = set()  # tasks being shut down because no set lists them
        self._registered_event: asyncio.Event | None = None
        self._removed_told = False  # the manager's "removed" logged once
        self._certificate_told = ""  # an unusable certificate's error, logged once
        # The last answered heartbeat (the loop's, an ack's, a probe's) and the period it gave.
        self._period = 0.0
        self._last_beat = 0.0
        self._beaten: asyncio.Event | None = None

    # ---- status ----------------------------------------------------------------------------------
    def report(self, task: Task) -> None:
        """The worker recorded a state (from any thread): queue it for the manager."""
        update = TaskStatusUpdate(task_id=task.id, state=task.status.state.text, message=task.status.message,
                                  err=task.status.err, timestamp=task.status.timestamp,
                                  container_id=task.status.container_id, pid=task.status.pid,
                                  exit_code=task.status.exit_code, networks=list(task.networks),
                                  restarts=list(task.local_restarts) or None)
        with self._lock:
            self._pending[task.id] = update
        self._kick_flush()

    def _kick_flush(self) -> None:
        loop, flush = self._loop, self._flush
        if loop is not None and flush is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(flush.set)
            except RuntimeError:
                pass

    async def flush(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the manager has taken every queued state."""
        self._kick_flush()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.pending() and self.connected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending()

    async def wait_registered(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the first session (run() must be running)."""
        if self._registered_event is None:
            self._registered_event = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._registered_event.wait()
        except TimeoutError:
            return False
        return True

    @property
    def ever_registered(self) -> bool:
        """Has a session opened since shoald started? dockerd's node is "pending" until then."""
        return self._registered_event is not None and self._registered_event.is_set()

    def manager_away(self, timeout: float = 2.0) -> bool:
        """Asked from a worker thread when a task exits (agent/localrestart.py): is the manager
        out of reach now? Yes with no session, or when a heartbeat gets no answer within
        `timeout`: a cut link shows in the session only at its next heartbeat or read timeout.
        An answer of any kind, a refusal too, means the manager is there."""
        loop = self._loop
        if not self.connected or loop is None or loop.is_closed():
            return True
        try:
            probe = asyncio.run_coroutine_threadsafe(asyncio.wait_for(self._probe(), timeout), loop)
            probe.result(timeout + 1.0)
        except (Unreachable, TimeoutError):
            return True
        except ShoalError:
            return False  # SessionInvalid, NodeRemoved: it answered
        except RuntimeError:
            return True  # the loop is closing
        return False

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    async def _flusher(self) -> None:
        assert self._flush is not None
        backoff = BACKOFF_MIN
        while True:
            await self._flush.wait()
            self._flush.clear()
            while True:
                with self._lock:
                    batch = list(self._pending.values())[:STATUS_BATCH]
                if not batch:
                    break
                try:
                    await self.session.update_status(batch)
                except (Unreachable, SessionInvalid) as exc:
                    # Kept; sent again after the backoff, or as soon as a new session opens.
                    log.info("status not sent (%s): again in %.1f s", exc, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                except ShoalError as exc:
                    # Refused (not a transport failure): sending it again would be refused again.
                    # The states stay in the local store and go with the next session's resend.
                    # A removed node's refusals are the session's to tell, once.
                    removed = isinstance(exc, NodeRemoved) and exc.confirmed
                    (log.debug if removed else log.error)("status refused by the manager: %s", exc)
                except Exception:  # noqa: BLE001 - a bug in one send must not end the sending
                    # It ended this task, unread until shoald stopped: no state of the node
                    # reached the manager again (its new tasks Assigned there for good) while
                    # its heartbeats kept it Ready. Kept and sent again, as a transport failure.
                    log.exception("status not sent: again in %.1f s", backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_MIN
                with self._lock:
                    for u in batch:
                        if self._pending.get(u.task_id) is u:  # not replaced by a newer state meanwhile
                            del self._pending[u.task_id]

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short when a new session opens (it kicks the flush)."""
        assert self._flush is not None
        self._flush.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._flush.wait()
        except TimeoutError:
            pass

    # ---- assignments -----------------------------------------------------------------------------
    def apply(self, aset: AssignmentSet) -> None:
        """Make the local store what the set says (one transaction)."""
        complete = aset.type == AssignmentType.COMPLETE
        if not complete and aset.applies_to != self._sequence:
            # A set out of order cannot be applied: the session is re-opened for a complete one.
            raise SessionInvalid(f"assignment set {aset.sequence} applies to {aset.applies_to}, "
                                 f"the node has {self._sequence}")
        listed = {t["id"] for t in aset.tasks}
        with self.store.transaction() as tx:
            if aset.node is not None:
                node = {k: v for k, v in aset.node.items() if k != "version"}
                if tx.get("node", node["id"]) is None:
                    tx.create("node", node)
                else:
                    tx.update("node", node, expect_version=None)
            gone = set(aset.removed_tasks)
            if complete:
                gone |= {t["id"] for t in tx.list("task") if t["id"] not in listed}
            for task_id in gone:
                self._unassign(tx, task_id)
            for raw in aset.tasks:
                self._assign(tx, raw)
                self._unassigned.discard(raw["id"])
        with self._lock:
            if complete:
                self.files = {}
            for key in aset.removed_files:
                self.files.pop(key, None)
            for f in aset.files:
                self.files[f"{f.kind}/{f.id}"] = f
            if aset.registry_auths is not None:
                self.registry_auths = dict(aset.registry_auths)
        if aset.services is not None and aset.services != self.services:
            self.services = aset.services
            self.services_version += 1
        if aset.networks is not None:
            self.networks = {n["name"]: n for n in aset.networks}
        if aset.attachments is not None and aset.attachments != self.attachments:
            self.attachments = aset.attachments  # containers attached on the node's networks
            self.services_version += 1  # the resolver's names of them (agent/netglue.py dns_tables)
        self._sequence = aset.sequence
        self.on_assignments()

    @staticmethod
    def _assign(tx: Any, raw: dict[str, Any]) -> None:
        local = tx.get("task", raw["id"])
        if local is None:
            tx.create("task", {k: v for k, v in raw.items() if k != "version"})
            return
        merged = dict(local)
        for key in _MANAGER_FIELDS:
            if key in raw:
                merged[key] = raw[key]
        if TaskState.parse(raw["status"]["state"]) > TaskState.parse(local["status"]["state"]):
            merged["status"] = raw["status"]  # the manager knows more (the node lost its store)
        if any(merged.get(k) != local.get(k) for k in (*_MANAGER_FIELDS, "status")):
            tx.update("task", merged, expect_version=None)

    def _unassign(self, tx: Any, task_id: str) -> None:
        """No longer wanted here: a task that still runs is shut down and its container removed
        (desired REMOVE); a stopped one is forgotten (its container goes at the orphan scan)."""
        local = tx.get("task", task_id)
        if local is None:
            return
        task = Task.from_dict(local)
        if task.status.state.terminal or task.status.state < TaskState.ASSIGNED:
            tx.delete("task", task_id)
        else:
            self._unassigned.add(task_id)
            if task.desired_state != TaskState.REMOVE:
                task.desired_state = TaskState.REMOVE
                tx.update("task", task.to_dict(), expect_version=None)

    def removed(self, why: str) -> None:
        """The manager said this node was removed (`node rm`): it replaced the node's tasks on
        other nodes (they are ORPHANED there), so none of them is wanted here any more; each is
        stopped and its container removed, as an empty complete set would. swarmkit's node
        learns it through the desired shutdowns its open assignment stream carries before its
        certificate is refused; a node removed while cut off never hears them and ran its
        copies beside their replacements: this holds whenever the refusal comes."""
        before = set(self._unassigned)
        with self.store.transaction() as tx:
            for raw in tx.list("task"):
                self._unassign(tx, raw["id"])
        stopping = self._unassigned - before
        if stopping:  # told once per task, not at each refused registration
            log.warning("this node was removed from the swarm (%s): its %d tasks are shut down", why, len(stopping))
        with self._lock:
            self.files = {}
            self.registry_auths = {}
        if self.services:
            self.services = []
            self.services_version += 1
        self.on_assignments()

    def tidy(self) -> None:
        """Forget the unassigned tasks that have stopped and whose last state the manager has
        taken (the worker removed their containers when it stopped them); trim the event log
        now and then."""
        now = time.monotonic()
        if now >= self._trim_due:
            self._trim_due = now + TRIM_EVERY
            self.store.trim_events()
        if not self._unassigned:
            return
        with self._lock:
            waiting = set(self._pending)
        with self.store.transaction() as tx:
            for task_id in list(self._unassigned):
                raw = tx.get("task", task_id)
                if raw is None:
                    self._unassigned.discard(task_id)
                elif TaskState.parse(raw["status"]["state"]).terminal and task_id not in waiting:
                    tx.delete("task", task_id)
                    self._unassigned.discard(task_id)

    # ---- the session -----------------------------------------------------------------------------
    def _registered(self, info: SessionInfo) -> None:
        self.info = info
        self.node_id = info.node_id
        self.description.node_id = info.node_id
        if info.node:
            node = {k: v for k, v in info.node.items() if k != "version"}
            with self.store.transaction() as tx:
                if tx.get("node", node["id"]) is None:
                    tx.create("node", node)
                else:
                    tx.update("node", node, expect_version=None)

    async def _probe(self) -> None:
        self._beat(await self.session.heartbeat())

    def _beat(self, period: float) -> None:
        """A heartbeat was answered: the manager's deadline for the node is now `period` times
        its grace from now, whichever call sent it, so the loop's next beat is due `period` from
        now. Else a shorter period (`swarm update --dispatcher-heartbeat 1s` after 20s) given to
        an ack or a probe would set that deadline while the loop sleeps out the old, longer one,
        and the manager would take a live node for Down."""
        self._period = period
        self._last_beat = time.monotonic()
        if self._beaten is not None:
            self._beaten.set()

    async def _heartbeats(self, period: float) -> None:
        self._beaten = asyncio.Event()
        self._beat(period)
        while True:
            self._beaten.clear()
            wait = self._last_beat + self._period - time.monotonic()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._beaten.wait()
                    continue  # another call's heartbeat was answered: due a period after it
                except TimeoutError:
                    pass
            applied = self._applied_here()  # again with each beat: an ack lost on the way is not lost
            self._beat(await (self.session.heartbeat() if applied is None else self.session.heartbeat(applied)))

    def _applied_here(self) -> int | None:
        session_id, sequence = self._applied
        return sequence if self.info is not None and session_id == self.info.session_id and sequence else None

    def rotation_applied(self, session_id: str | None, sequence: int) -> None:
        """The node's rotations now follow the service records of set `sequence` of that session
        (netglue, from the worker's thread): told to the manager at once (_acks)."""
        if session_id is None or (session_id, sequence) == self._applied:
            return
        self._applied = (session_id, sequence)
        loop, event = self._loop, self._ack
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop is closing

    async def _acks(self) -> None:
        self._ack = asyncio.Event()
        while True:
            await self._ack.wait()
            self._ack.clear()
            applied = self._applied_here()
            if applied is not None and self._applied != self._acked:
                acked = self._applied
                self._beat(await self.session.heartbeat(applied))
                self._acked = acked

    async def _assignments(self) -> None:
        first = True
        async for aset in self.session.assignments():
            # In a control thread: the default executor's can all be held by API requests.
            await off_loop(self.apply, aset)
            if first:
                # Everything the node knows goes to the manager once per session: states
                # reached while it was away, or lost with a previous session.
                first = False
                for raw in await off_loop(self.store.list, "task"):
                    self.report(Task.from_dict(raw))
        raise Unreachable("the assignment stream ended")

    async def _logs(self) -> None:
        """The manager's log subscriptions (`service logs`): each read from this node's task logs
        and published back over the session; ended with the session."""
        running: dict[str, asyncio.Task[None]] = {}
        try:
            async for sub in self.session.log_subscriptions():
                old = running.pop(sub.id, None)
                if old is not None:
                    old.cancel()
                if not sub.close:
                    job = asyncio.create_task(self._publish_logs(sub))
                    running[sub.id] = job
                    job.add_done_callback(lambda j, key=sub.id: running.pop(key, None) if running.get(key) is j else None)
        finally:
            for job in running.values():
                job.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
        raise Unreachable("the log subscription stream ended")

    async def _publish_logs(self, sub: LogSubscription) -> None:
        from shoal.agent.tasklogs import TaskLogs

        logs = TaskLogs(self.store, sub.service_id, self.node_id)
        try:
            records = await asyncio.to_thread(logs.existing, sub.tail)
            while True:
                for start in range(0, len(records), LOG_BATCH):
                    if not await self.session.publish_logs(sub.id, records[start:start + LOG_BATCH]):
                        return  # the client left
                if not sub.follow:
                    await self.session.publish_logs(sub.id, [], close=True)
                    return
                await asyncio.sleep(LOG_POLL)
                records = await asyncio.to_thread(logs.new_lines)
        except (Unreachable, SessionInvalid, NodeRemoved) as exc:
            log.info("logs for subscription %s not sent: %s", sub.id, exc)

    async def _serve(self, info: SessionInfo) -> None:
        self.connected = True
        self._kick_flush()
        jobs = [asyncio.create_task(self._heartbeats(info.heartbeat_period)),
                asyncio.create_task(self._assignments()),
                asyncio.create_task(self._logs()),
                asyncio.create_task(self._acks())]
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            for job in done:
                job.result()
        finally:
            self.connected = False
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    async def run(self) -> None:
        """Register, then serve the session; when it fails, register again with backoff. The
        worker meanwhile runs on the local store."""
        self._loop = asyncio.get_running_loop()
        self._flush = asyncio.Event()
        flusher = asyncio.create_task(self._flusher())
        backoff = BACKOFF_MIN
        from shoal.network import wireguard

        try:
            while True:
                try:
                    # A new WireGuard keypair with every session (the static key rotates), taken
                    # into use once the manager has it: a node that cannot reach its manager
                    # keeps the key its peers know.
                    self.description.wireguard = await off_loop(wireguard.rotate)
                    info = await self.session.register(self.description)
                    wireguard.commit(self.description.wireguard)
                    self._registered(info)
                    self._sequence = 0
                    if self._registered_event is None:
                        self._registered_event = asyncio.Event()
                    self._registered_event.set()
                    backoff = BACKOFF_MIN
                    log.info("session %s with the manager (node %s, heartbeat %.2f s)", info.session_id[:12],
                             info.node_id[:12], info.heartbeat_period)
                    period = wireguard.rotation_period() if self.description.wireguard else None
                    started = time.monotonic()
                    try:
                        await asyncio.wait_for(self._serve(info), period)
                    except TimeoutError:
                        if period is None or time.monotonic() - started < period:
                            raise
                        # Served its period: a new session, with a new WireGuard keypair.
                        log.info("session %s renewed: a new WireGuard key", info.session_id[:12])
                        continue
                except NodeRemoved as exc:
                    # Said once: a removed node asks again every few seconds for good.
                    (log.debug if exc.confirmed and self._removed_told else log.error)("%s", exc)
                    if exc.confirmed:
                        self._removed_told = True
                        self.removed(str(exc))
                except CertificateUnusable as exc:
                    # Said once (and again if it changes): it stays so until someone acts.
                    (log.debug if str(exc) == self._certificate_told else log.error)("%s", exc)
                    self._certificate_told = str(exc)
                except (Unreachable, SessionInvalid) as exc:
                    log.warning("session with the manager ended: %s", exc)
                except ShoalError as exc:
                    log.error("session with the manager failed: %s", exc)
                except Exception:  # noqa: BLE001 - a bug in one session must not end the agent
                    log.exception("session with the manager failed")
                await asyncio.sleep(backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            try:
                await self.session.close()
            except ShoalError:
                pass

    def close(self) -> None:
        self.store.close()
