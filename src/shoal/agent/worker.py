"""The worker: one pass over this node's tasks moves each one step along swarmkit's controller
(accepted -> preparing -> ready -> starting -> running -> complete/failed, or shutdown), and
removes the containers of tasks the manager no longer lists. On a worker whose manager is away,
a task that exits is restarted in place per its restart policy (agent/localrestart.py).

Slow steps (creating a container, a stop's grace period) run in a thread pool so one task never
holds up another; every status write re-reads the task in its own transaction, so the manager
and the worker never overwrite each other's fields."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from shoal.agent import health, taskfiles, templating
from shoal.agent.exec import ContainerExecutor
from shoal.agent.health import HealthConfig, Probe
from shoal.agent.localrestart import LocalRestarts
from shoal.agent.pool import ElasticPool, release_memory
from shoal.agent.taskspec import container_spec
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.model.cluster import Node, Task, TaskState
from shoal.model.service import DEFAULT_STOP_GRACE_PERIOD
from shoal.runtime.state import proc_start_time
from shoal.store.base import Store

log = logging.getLogger("shoald.worker")


class TaskNetwork:
    """What the worker tells the network side: a task joined (it is running, with these
    addresses) or left (it is about to stop, or has stopped). The daemon puts the task in its
    service's load-balancer rotation and its resolver here; the base class does nothing, for a
    worker with no networking (tests of the controller steps)."""

    def before_start(self, task: Task, container: Any) -> None:
        pass

    def joined(self, task: Task, netns: str, attachments: list[dict[str, Any]]) -> None:
        pass

    def left(self, task: Task) -> None:
        pass

TASK_LABEL = "com.docker.swarm.task.id"
ORPHAN_SCAN = 1.0  # seconds between looks for containers whose task is gone
FULL_CHECK_EVERY = 8  # agent passes between full reads of a running task's container record
TEARDOWNS_AT_ONCE = 4


def _in_thread(fn: Callable[[], Any]) -> futures.Future[Any]:
    """`fn()` in a thread of its own (not the step pool: a step waiting on another step of a
    full pool would wait forever); its result or error in the future."""
    done: futures.Future[Any] = futures.Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            done.set_exception(exc)

    threading.Thread(target=run, name="task-networks", daemon=True).start()
    return done


class Worker:
    def __init__(self, store: Store, node_id: str, containers: Any, images: Any,
                 on_change: Callable[[], None] = lambda: None, threads: int = 8, stop_threads: int = 64,
                 network: TaskNetwork | None = None, watch_exit: Callable[[int], None] | None = None,
                 on_status: Callable[[Task], None] = lambda task: None, files: Any = None,
                 image_source: Callable[[], tuple[str, Any]] | None = None,
                 network_setup: Callable[[Task], None] | None = None,
                 manager_away: Callable[[], bool] | None = None) -> None:
        # Where a node that lacks a task's image pulls it from: (manager URL, TLS context) of
        # its manager's distribution API (agent/imagefetch.py). None on a manager or one node:
        # its own store is the manager's, a missing image is Docker's "No such image".
        self.image_source = image_source
        # Makes the task's networks on this node (their spec and allocation came with the
        # assignments) before its container is prepared; None: the networks exist already.
        self.network_setup = network_setup
        # On a worker, asked when a task exits (agent.Agent.manager_away): while the manager is
        # away, the task is restarted in place per its restart policy. None (a manager, one
        # node): every exit is reported and the orchestrator replaces the task.
        self.restarts = LocalRestarts(store, manager_away) if manager_away is not None else None
        self._rejoin: set[str] = set()  # restarted in place: into the rotation once healthy
        # The node's own store of its assignments (agent/agent.py), or any Store in tests.
        self.store = store
        # Every state the worker records goes to the manager through the agent's session.
        self.on_status = on_status
        # Where taskfiles reads secrets and configs (agent.AssignedFiles: in memory).
        self.files = files if files is not None else store
        # Given a pidfd of a task's process, the daemon wakes the agent when it becomes
        # readable (the process exited): exits are seen at once, not at the next poll.
        self.watch_exit = watch_exit
        self._watched: set[str] = set()  # container IDs whose process is watched
        self.network = network or TaskNetwork()
        self.node_id = node_id
        self.containers = containers
        # Every container step goes through the executor's controllers (agent/exec.py).
        self.executor = ContainerExecutor(containers)
        # The runtime's once-per-process work (the seccomp filter compiled: 19-100 ms of CPU)
        # done now, beside the daemon's start, not in the first task's start.
        threading.Thread(target=self.executor.warm, name="runtime-warm", daemon=True).start()
        self.images = images
        self.on_change = on_change
        # Threads idle for a few seconds exit (agent/pool.py): a burst does not keep its threads,
        # and when the last one goes, the memory the burst freed is handed back.
        self._pool = ElasticPool(threads, thread_name_prefix="task", on_quiet=release_memory)
        # Stops mostly wait out a grace period: many at once, apart from the busy steps, so a
        # `stack rm` of 50 tasks takes about one grace period, not 50/8 of them.
        self._stop_pool = ElasticPool(stop_threads, thread_name_prefix="stop", on_quiet=release_memory)
        # ...but tearing containers down is busy work: a few at a time. Fifty at once starved
        # the threads holding the network or store lock of the GIL (a 30 ms manager pass took
        # 0.9 s), and everything waited on them.
        self._teardowns = threading.BoundedSemaphore(TEARDOWNS_AT_ONCE)
        self._orphans_due = 0.0
        self._passes = 0
        self._busy: set[str] = set()
        self._inflight: set[futures.Future[None]] = set()
        self._probes: dict[str, Probe] = {}
        self._no_health: set[str] = set()  # tasks known to have no healthcheck
        self._seen: tuple[int, Node | None, list[Task]] = (-1, None, [])  # (revision, node, tasks) read
        self._processes: dict[str, tuple[int, int]] = {}  # container ID -> (pid, start time) seen running
        self._lock = threading.Lock()

    def close(self, timeout: float = 0.0) -> None:
        """Stop taking steps; give the ones under way up to `timeout` seconds to finish (a stop
        in its grace period), so their status reports reach the store."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stop_pool.shutdown(wait=False, cancel_futures=True)
        if timeout > 0:
            futures.wait(list(self._inflight), timeout=timeout)

    # ---- status writes -------------------------------------------------------------------------
    def _report(self, task_id: str, state: TaskState, message: str, err: str = "",
                fields: dict[str, Any] | None = None, **status: Any) -> Task | None:
        """Move the task to `state` (with these status and top-level fields) in one write; the
        task as stored, or None when it is gone or already further along."""
        with self.store.transaction() as tx:
            raw = tx.get("task", task_id)
            if raw is None:
                return None
            task = Task.from_dict(raw)
            if not task.advance(state, message, err=err):
                return None
            for key, value in status.items():
                setattr(task.status, key, value)
            for key, value in (fields or {}).items():
                setattr(task, key, value)
            stored = Task.from_dict(tx.update("task", task.to_dict()))
        self.on_status(stored)
        self.on_change()
        return stored

    # ---- steps ----------------------------------------------------------------------------------
    def _prepare(self, task: Task, node: Node) -> None:
        # accepted and preparing are one write: nothing happens between them on one node.
        self._report(task.id, TaskState.PREPARING, "preparing")
        image = task.spec.get("image", "")
        # A pull (a worker lacking the image: 0.5-1 s) and the task's networks on this node
        # (bridge, VXLAN device, VIPs: 0.1-0.3 s on a fresh node) wait on different things, so
        # they are made side by side; the image's error, if any, is still the one told.
        networks = (_in_thread(lambda: self.network_setup(task))  # type: ignore[misc]
                    if self.network_setup is not None and not self._image_present(image) else None)
        missing = self._ensure_image(image, task.service_id)
        network_error = networks.exception() if networks is not None else None
        if missing is not None:
            self._report(task.id, TaskState.REJECTED, "preparing", err=missing)
            return
        try:
            if network_error is not None:
                raise network_error
            if networks is None and self.network_setup is not None:
                self.network_setup(task)
            spec = container_spec(task, node)
            spec.mounts += taskfiles.materialize(
                self.files, task.id, task.spec,
                expand=lambda kind, oid, data, get: templating.expand_payload(kind, oid, data, task, node, get))
            container_id = self.executor.controller().prepare(spec)
        except ShoalError as exc:
            taskfiles.remove(task.id)
            self._report(task.id, TaskState.REJECTED, "preparing", err=str(exc))
            return
        except Exception as exc:
            # Not foreseen, so not known to pass on a retry: rejected, as swarmkit's controller
            # makes a Prepare error fatal, and the restart policy decides what follows. Left to
            # the next pass it was retried at once, for ever, a traceback in the log each time.
            log.exception("task %s: preparing failed", task.id)
            taskfiles.remove(task.id)
            self._report(task.id, TaskState.REJECTED, "preparing", err=str(exc) or type(exc).__name__)
            return
        current = self.store.get("task", task.id)
        if current is not None and TaskState.parse(current["desired_state"]).runs:
            # Nothing holds it back (no depends_on, no restart delay): start it now, in this
            # step, rather than a pass later.
            started = self._report(task.id, TaskState.STARTING, "starting", container_id=container_id)
            if started is not None:
                self._start(started, reported=True)
            return
        self._report(task.id, TaskState.READY, "prepared", container_id=container_id)

    def _prepare_again(self, task: Task, node: Node) -> None:
        raw = self.store.get("task", task.id)
        if raw is None or Task.from_dict(raw).status.state != TaskState.PREPARING:
            return  # its own step finished meanwhile
        containers = getattr(self.executor, "containers", None)
        if containers is not None:  # a container the dead shoald made for it: made again
            for cid, owner in containers.label_values("com.docker.swarm.task.id").items():
                if owner == task.id:
                    self._remove(cid, task.id)
        log.info("task %s: prepared again (left preparing by a shoald that stopped)", task.id)
        self._prepare(Task.from_dict(raw), node)

    def _start_created(self, task: Task) -> None:
        raw = self.store.get("task", task.id)
        if raw is None:
            return
        task = Task.from_dict(raw)
        if task.status.state != TaskState.STARTING or not task.desired_state.runs:
            return
        try:
            if self.executor.controller(task.status.container_id).inspect().state.status != "created":
                return  # its own step started it after the pass looked
        except NotFound:
            return  # gone: the next pass reports it
        log.info("task %s: started (left created by a shoald that stopped)", task.id)
        self._start(task, reported=True)

    def _image_present(self, image: str) -> bool:
        try:
            self.images.resolve(image)
            return True
        except (NotFound, InvalidArgument):
            return False

    def _ensure_image(self, image: str, service_id: str = "") -> str | None:
        """None once the task's image is in this node's store, pulled from the manager first
        when this node is a worker that lacks it (as Docker's prepare step pulls), then from
        the image's registry (with the service's credentials when it was given them); else the
        task's error, beginning with Docker's "No such image: <ref>"."""
        from shoal.image import reference as refs
        from shoal.image import registryauth

        try:
            self.images.resolve(image)
            return None
        except (NotFound, InvalidArgument):
            pass
        encoded = getattr(self.files, "registry_auth", lambda _sid: None)(service_id) if service_id else None
        try:
            decoded = registryauth.decode(encoded) if encoded else None
            named_registry = refs.parse_normalized(image).domain not in (refs.DEFAULT_DOMAIN, "localhost")
        except ShoalError:
            decoded, named_registry = None, False
        if self.image_source is None and decoded is None and not named_registry:
            # One node: its store is the manager's; a Docker Hub or bare `localhost/` name (a
            # local build's) is not fetched unasked; a service given credentials, or naming a
            # registry host (`registry.example/`, `127.0.0.1:5000/`), is pulled from it.
            return f"No such image: {image}"
        from shoal.agent.imagefetch import ImageUnavailable, ensure_image

        try:
            manager_url, context = self.image_source() if self.image_source is not None else (None, None)
            ensure_image(self.images, image, manager_url=manager_url, ssl_context=context,
                         credentials=decoded[0] if decoded else None)
        except ImageUnavailable as exc:
            return str(exc)
        except (ShoalError, OSError) as exc:
            return f"No such image: {image} (no manager to pull from: {exc})"
        return None

    def _start(self, task: Task, reported: bool = False) -> None:
        if not reported:
            self._report(task.id, TaskState.STARTING, "starting")
        try:
            container = self.executor.controller(task.status.container_id).start(
                before_start=lambda c, t=task: self.network.before_start(t, c))
        except Exception as exc:  # noqa: BLE001 - whatever it was, the task failed and must say why
            if not isinstance(exc, ShoalError):
                log.exception("starting task %s", task.id)
            self._report(task.id, TaskState.FAILED, "starting", err=f"starting container failed: {exc}")
            return
        attachments = self._attachments(task, container.network)
        config = self._health_config(task)
        if config is None:
            self._no_health.add(task.id)
        else:
            # RUNNING (and in the rotation) only after the first healthy probe.
            with self._lock:
                self._probes[task.id] = Probe(config, started=health.now())
            self._report(task.id, TaskState.STARTING, "starting", fields={"networks": attachments},
                         pid=container.state.pid)
            return
        self._running(task, container.state.pid, attachments, container.network.get("netns", ""))

    def _watch(self, container_id: str, pid: int, start_time: int) -> None:
        if self.watch_exit is None or container_id in self._watched or pid <= 0:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # gone already: the exit file says so at the next pass
        if proc_start_time(pid) != start_time:  # not the process we saw: a recycled pid
            os.close(fd)
            return
        self._watched.add(container_id)
        self.watch_exit(fd)

    def _running(self, task: Task, pid: int, attachments: list[dict[str, Any]], netns: str,
                 message: str = "started", fields: dict[str, Any] | None = None, **status: Any) -> None:
        self._watch(task.status.container_id, pid, proc_start_time(pid))
        if attachments:
            # In this node's rotation before the manager hears RUNNING: from then on it may stop
            # the service's tasks elsewhere, and this one must already answer here.
            self.network.joined(task, netns, attachments)
        self._report(task.id, TaskState.RUNNING, message, fields={"networks": attachments, **(fields or {})},
                     pid=pid, **status)

    def _health_config(self, task: Task) -> HealthConfig | None:
        try:
            image = self.images.resolve(task.spec.get("image", ""))
        except ShoalError:
            return None
        return health.config_for(task.spec, image.config)

    def _probe(self, task: Task, probe: Probe) -> None:
        cid = task.status.container_id
        controller = self.executor.controller(cid)
        try:
            argv = controller.exec_argv(probe.config.argv)
            ok, output = health.run_probe(argv, probe.config.timeout)
        except ShoalError as exc:
            ok, output = False, str(exc)
        probe.record(ok, health.now(), output)
        if probe.unhealthy:
            log.info("task %s is unhealthy: %s", task.id, output.strip())
            self.network.left(task)
            try:
                controller.terminate()
            except ShoalError:
                pass
            return
        if probe.healthy and task.id in self._rejoin:
            # Restarted in place (it stayed RUNNING): healthy again, back in the rotation.
            self._rejoin.discard(task.id)
            container = controller.inspect()
            self.network.joined(task, container.network.get("netns", ""),
                                task.networks or self._attachments(task, container.network))
        elif probe.healthy and task.status.state == TaskState.STARTING:
            container = controller.inspect()
            self._running(task, container.state.pid, task.networks or self._attachments(task, container.network),
                          container.network.get("netns", ""))

    @staticmethod
    def _attachments(task: Task, network: dict[str, Any]) -> list[dict[str, Any]]:
        """The task's address on each network, in interface order, with its aliases."""
        wanted = {a["target"]: list(a.get("aliases") or []) for a in task.spec.get("networks") or []}
        names = list(network.get("networks") or [])
        addresses = list(network.get("addresses") or [])
        return [{"network": n, "addresses": [a], "aliases": wanted.get(n, [])} for n, a in zip(names, addresses)]

    def _check_exit(self, task: Task) -> bool:
        """Is the task's process (still) running? If it has exited, the exit is handled."""
        cid = task.status.container_id
        if not self.executor.exit_recorded(cid):
            # conmon writes the exit file: a stat is enough on most passes. Every
            # FULL_CHECK_EVERY passes, a look at the process itself notices a conmon that was
            # killed with its container (nobody wrote the exit then).
            if self._passes % FULL_CHECK_EVERY:
                return True
            known = self._processes.get(cid)
            if known is not None and proc_start_time(known[0]) == known[1]:
                return True
        pending = self.restarts.pending(task.id) if self.restarts is not None else None
        try:
            container = self.executor.controller(cid).inspect()
        except NotFound:
            self._report(task.id, TaskState.FAILED, "started", err="container removed")
            return False
        state = container.state  # get() has read the exit file already
        if state.status == "created" and task.status.state == TaskState.STARTING:
            # Created, told STARTING, never started: the shoald that was starting it died
            # between the two (a step of this process would hold the task's key, and _submit
            # then does nothing). Started now, as swarmkit's controller resumes from the state.
            self._submit(task.id, lambda t=task: self._start_created(t))
            return True
        if state.status not in ("exited", "dead"):
            self._processes[cid] = (state.pid, state.pid_start)
            self._watch(cid, state.pid, state.pid_start)  # after a restart of shoald, say
            return True
        self._processes.pop(cid, None)
        self._watched.discard(cid)  # a restart in place watches its new process
        if self.restarts is None:
            self._exited(task, state.exit_code)
        elif pending is None:
            # Whether to restart it here may wait for the manager's answer: off the pass thread.
            self._submit(task.id, lambda t=task, code=state.exit_code: self._exited(t, code))
        elif time.time() >= pending.due:
            self._submit(task.id, lambda t=task: self._restart(t))
        return False

    def _exited(self, task: Task, exit_code: int | None) -> None:
        """The task's process has exited: out of the rotation, torn down, and reported; or, on a
        worker whose manager is away, its restart in place decided (agent/localrestart.py)."""
        cid = task.status.container_id
        raw = self.store.get("task", task.id)
        if raw is None:
            return
        task = Task.from_dict(raw)
        if task.status.state not in (TaskState.STARTING, TaskState.RUNNING) or task.status.container_id != cid:
            return  # seen and reported already (a pass that read the tasks before the report)
        if self.restarts is not None:
            try:
                if self.executor.controller(cid).wait().running:
                    return  # restarted in place since that pass looked
            except NotFound:
                pass
        self.network.left(task)
        # Tasks run without conmon's exit command: their teardown (mounts, cgroups, network) is
        # ours, off the pass thread.
        self._submit(f"cleanup-{cid}", lambda: self._cleanup(cid), self._stop_pool)
        with self._lock:
            probe = self._probes.pop(task.id, None)
        self._rejoin.discard(task.id)
        code = exit_code if exit_code is not None else 0
        if self.restarts is not None and task.desired_state.runs:
            record = self.restarts.decide(task, code, self._slot_history(task))
            if record is not None:
                log.info("task %s exited (%s) with its manager away: restarted here in %.1f s",
                         task.id, code, max(0.0, record.due - time.time()))
                return
        if code == 0:
            self._report(task.id, TaskState.COMPLETE, "finished", exit_code=0)
        else:
            reason = ": dockerexec: unhealthy container" if probe is not None and probe.unhealthy else ""
            self._report(task.id, TaskState.FAILED, "started",
                         err=f"task: non-zero exit ({code}){reason}", exit_code=code)

    def _slot_history(self, task: Task) -> list[Task]:
        """The tasks of the task's slot (a global task's: of its node) this node holds."""
        return [t for t in self._seen[2] if t.service_id == task.service_id
                and (t.slot == task.slot if task.slot else not t.slot and t.node_id == task.node_id)]

    def _restart(self, task: Task) -> None:
        """The restart policy's delay has passed: the task's container runs again (same task,
        same container, the manager's address for it on each network). The task never left
        RUNNING in what the node reports: the next report carries the new process, the restart
        count and the last exit code."""
        assert self.restarts is not None
        raw = self.store.get("task", task.id)
        pending = self.restarts.pending(task.id)
        if raw is None or pending is None:
            return
        task = Task.from_dict(raw)
        if not task.desired_state.runs or task.status.state not in (TaskState.STARTING, TaskState.RUNNING):
            self.restarts.cancel(task.id)  # the manager wants it stopped: _shutdown does the rest
            return
        try:
            if self.network_setup is not None:
                self.network_setup(task)  # the task's address set aside again for its new attach
            container = self.executor.controller(task.status.container_id).start(
                before_start=lambda c, t=task: self.network.before_start(t, c))
        except Exception as exc:  # noqa: BLE001 - whatever it was, the task failed and must say why
            if not isinstance(exc, ShoalError):
                log.exception("restarting task %s", task.id)
            self.restarts.cancel(task.id)
            self._report(task.id, TaskState.FAILED, "starting", err=f"restarting container failed: {exc}",
                         exit_code=pending.last_exit)
            return
        record = self.restarts.restarted(task.id)
        log.info("task %s restarted here (%d restarts while the manager was away)", task.id, len(record.restarts))
        attachments = self._attachments(task, container.network)
        netns = container.network.get("netns", "")
        config = self._health_config(task)
        # The restarts go with the task's status, for the orchestrator's max_attempts at heal.
        restarts = {"local_restarts": list(record.restarts)}
        if config is None:
            self._running(task, container.state.pid, attachments, netns, message=record.message(),
                          fields=restarts, exit_code=record.last_exit)
            return
        # Out of the rotation until its healthcheck passes again: a task that was RUNNING stays
        # so (states only move forward) and _probe puts it back; one still STARTING goes on as
        # a first start does.
        with self._lock:
            self._probes[task.id] = Probe(config, started=health.now())
        if task.status.state == TaskState.RUNNING:
            self._rejoin.add(task.id)
        self._watch(task.status.container_id, container.state.pid, proc_start_time(container.state.pid))
        self._report(task.id, task.status.state, record.message(), fields={"networks": attachments, **restarts},
                     pid=container.state.pid, exit_code=record.last_exit)

    def _shutdown(self, task: Task) -> None:
        # Out of the rotation (and the resolver) before the stop signal, so no request is lost.
        self.network.left(task)
        with self._lock:
            self._probes.pop(task.id, None)
        self._rejoin.discard(task.id)
        if self.restarts is not None:
            self.restarts.cancel(task.id)  # an exited task waiting for its restart stays stopped
        if task.status.container_id:
            try:
                # moby's containerAdapter.shutdown: whole seconds, the fraction dropped (1.5s is 1)
                grace = int(float(task.spec.get("stop_grace_period", DEFAULT_STOP_GRACE_PERIOD)))
                self.executor.controller(task.status.container_id).shutdown(grace)
            except ShoalError as exc:
                log.warning("stopping task %s: %s", task.id, exc)
        self._report(task.id, TaskState.SHUTDOWN, "shutdown")
        if task.desired_state == TaskState.REMOVE and task.status.container_id:
            # Its service is gone or scaled down: the task record goes next, and its container
            # with it, now rather than at the next orphan scan.
            self._remove(task.status.container_id, task.id)

    def _remove_orphans(self, live_ids: set[str]) -> None:
        for container_id, task_id in self.executor.tasks_by_container(TASK_LABEL).items():
            if task_id not in live_ids:
                self._submit(f"rm-{container_id}", lambda c=container_id, t=task_id: self._remove(c, t),
                             self._stop_pool)

    def _health(self, task: Task, state: TaskState) -> None:
        with self._lock:
            probe = self._probes.get(task.id)
        if probe is None:
            if task.id in self._no_health:
                return
            # After a restart of shoald: pick the task's healthcheck up again.
            config = self._health_config(task)
            if config is None:
                self._no_health.add(task.id)
                return
            probe = Probe(config, started=health.now())
            probe.healthy = state == TaskState.RUNNING
            with self._lock:
                probe = self._probes.setdefault(task.id, probe)
        if probe.due(health.now()):
            self._submit(f"health-{task.id}", lambda t=task, p=probe: self._probe(t, p))

    def _cleanup(self, container_id: str) -> None:
        with self._teardowns:
            self.executor.controller(container_id).cleanup()

    def _remove(self, container_id: str, task_id: str) -> None:
        with self._teardowns:
            self.executor.controller(container_id).remove()  # one removed meanwhile is done too
        taskfiles.remove(task_id)

    # ---- the pass ------------------------------------------------------------------------------
    def _submit(self, key: str, fn: Callable[[], None], pool: ElasticPool | None = None) -> None:
        with self._lock:
            if key in self._busy:
                return
            self._busy.add(key)

        def run() -> None:
            try:
                fn()
            except Exception:  # a crash of one step must not kill the worker; the next pass retries
                log.exception("task step %s failed", key)
            finally:
                with self._lock:
                    self._busy.discard(key)
                self.on_change()

        future = (pool or self._pool).submit(run)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)

    def sync(self) -> None:
        self._passes += 1
        revision = self.store.revision()
        if revision != self._seen[0]:  # most passes only look for exits: nothing to read again
            raw_node = self.store.get("node", self.node_id)
            node = None if raw_node is None else Node.from_dict(raw_node)
            self._seen = (revision, node, [Task.from_dict(t) for t in self.store.list("task")])
        _, node, tasks = self._seen
        if node is None:
            return
        for task in tasks:
            if task.node_id != self.node_id:
                continue
            state, desired = task.status.state, task.desired_state
            if state.terminal:
                continue
            if desired >= TaskState.SHUTDOWN and state >= TaskState.ASSIGNED:
                self._submit(task.id, lambda t=task: self._shutdown(t), self._stop_pool)
            elif state == TaskState.ASSIGNED:
                self._submit(task.id, lambda t=task: self._prepare(t, node))
            elif state == TaskState.PREPARING:
                # A step of this process holds the task's key while it prepares: one found
                # PREPARING with none was left mid-prepare by a shoald that died (killed in its
                # pull, say). Prepared again, as swarmkit's controller resumes from the state.
                self._submit(task.id, lambda t=task: self._prepare_again(t, node))
            elif state == TaskState.READY and desired.runs:  # a job's task: desired COMPLETE
                self._submit(task.id, lambda t=task: self._start(t))
            elif state in (TaskState.STARTING, TaskState.RUNNING) and task.status.container_id:
                if self._check_exit(task):
                    self._health(task, state)
        live = {t.id for t in tasks}
        self._no_health &= live
        if self.restarts is not None:
            self.restarts.prune(live)
        running = {t.status.container_id for t in tasks if t.status.container_id}
        for cid in [c for c in self._processes if c not in running]:
            del self._processes[cid]
        self._watched &= running
        if time.monotonic() >= self._orphans_due:  # reads every container record: not each pass
            self._orphans_due = time.monotonic() + ORPHAN_SCAN
            self._remove_orphans(live)
