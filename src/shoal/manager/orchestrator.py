"""The orchestrator: keeps each service's tasks matching its spec (swarmkit's replicated and
global orchestrators, restart supervisor and updater, for one store transaction at a time).

Every pass reads the whole desired state and fixes what differs, so running it twice, or again
after a crash, changes nothing more. It returns the next time a delayed action falls due."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shoal.ids import new_swarm_id
from shoal.manager.serviceview import ServiceView, view
from shoal.model.cluster import Node, Task, TaskState, TaskStatus
from shoal.store.base import Transaction

# Keys of a service spec that do not reach the task: changing them never replaces a task.
SERVICE_ONLY_KEYS = frozenset({"mode", "replicas", "update_config", "rollback_config", "labels", "build", "depends_on"})
OLD_TASK_TIMEOUT = 60.0  # swarmkit defaultOldTaskTimeout


def task_spec(service_spec: dict[str, Any]) -> dict[str, Any]:
    """The task's copy of the spec, with the ingress attachment swarmkit's allocator gives a
    task of a service publishing in ingress mode (manager/ingress.py)."""
    from shoal.manager import ingress

    spec = {k: v for k, v in ingress.effective(service_spec).items() if k not in SERVICE_ONLY_KEYS}
    if service_spec.get("mode") in JOB_MODES:
        # A node restarting a task in place while its manager is away (agent/localrestart.py)
        # applies the job's rule: `any` acts as `on-failure`, a completed task is done.
        spec["mode"] = service_spec["mode"]
    return spec


def new_task(svc: ServiceView, slot: int, node_id: str, desired: TaskState, now: float, **extra: Any) -> Task:
    return Task(
        id=new_swarm_id(),
        service_id=svc.id,
        service_name=svc.name,
        slot=slot,
        node_id=node_id,
        spec_version=svc.spec_version,
        desired_state=desired,
        status=TaskStatus(state=TaskState.NEW, timestamp=now, message="created"),
        created_at=now,
        spec=task_spec(svc.spec),
        **extra,
    )


@dataclass
class _Pass:
    tx: Transaction
    now: float
    wake: list[float] = field(default_factory=list)
    services: dict[str, ServiceView] = field(default_factory=dict)
    tasks_by_service: dict[str, list[Task]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # the stored services by ID
    created: list[Task] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)

    def node_invalid(self, node_id: str) -> bool:
        """swarmkit's InvalidNode: the task's node is gone, down or drained, so its tasks are
        replaced elsewhere."""
        node = self.nodes.get(node_id)
        return node is None or node.state == "down" or node.availability == "drain"

    def node_down(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is None or node.state == "down"

    def node_draining(self, node_id: str) -> bool:
        """Up and drained: its tasks move off in order (_drain), not all at once."""
        node = self.nodes.get(node_id)
        return node is not None and node.state != "down" and node.availability == "drain"

    def save_service(self, record: dict[str, Any]) -> None:
        record.update(self.tx.update("service", record))

    def service_named(self, name: str) -> ServiceView | None:
        return next((s for s in self.services.values() if s.name == name), None)


    def save(self, task: Task) -> None:
        task.version = self.tx.update("task", task.to_dict())["version"]

    def create(self, task: Task) -> None:
        task.version = self.tx.create("task", task.to_dict())["version"]
        self.created.append(task)


def _condition_met(p: _Pass, dep: ServiceView, condition: str) -> bool:
    """service_started / service_healthy: every desired task of the dependency runs (a task
    with a healthcheck only reaches RUNNING once healthy); service_completed_successfully: its
    tasks ended with exit 0."""
    tasks = [t for t in p.tasks_by_service.get(dep.id, []) if t.desired_state != TaskState.REMOVE]
    if condition == "service_completed_successfully":
        done = [t for t in tasks if t.status.state == TaskState.COMPLETE]
        return bool(done) and not any(t.status.state <= TaskState.RUNNING for t in tasks)
    running = sum(1 for t in tasks if t.status.state == TaskState.RUNNING and t.desired_state.runs)
    wanted = dep.replicas if dep.mode != "global" else max(1, sum(1 for t in tasks if t.desired_state.runs))
    return running >= max(1, wanted)


def waiting_on(p: _Pass, svc: ServiceView) -> list[str]:
    """The dependencies (full service names) whose condition is not met yet."""
    stack = svc.spec.get("stack") or ""
    waiting = []
    for compose_name, dep in (svc.spec.get("depends_on") or {}).items():
        name = f"{stack}_{compose_name}" if stack else compose_name
        other = p.service_named(name)
        if other is None:
            if (dep or {}).get("required", True):
                waiting.append(name)
            continue
        if not _condition_met(p, other, (dep or {}).get("condition", "service_started")):
            waiting.append(name)
    return waiting


def _should_restart(svc: ServiceView, old: Task, history: list[Task], now: float) -> bool:
    condition = svc.restart.condition
    if condition == "none":
        return False
    if svc.mode in JOB_MODES and old.status.state == TaskState.COMPLETE:
        return False  # swarmkit: for a job, `any` is `on-failure` (a completed task is done)
    if condition == "on-failure" and old.status.state == TaskState.COMPLETE:
        return False
    if svc.restart.max_attempts <= 0:
        return True
    # swarmkit's restart supervisor counts the slot's restarts: the tasks it made, and here also
    # the restarts in place each task's node made while the manager was away (Task.local_restarts).
    same = [t for t in history if t.spec_version == svc.spec_version]
    restarts = [t.created_at for t in same if t.restarted] + [at for t in same for at in t.local_restarts]
    if svc.restart.window > 0:
        reference = old.status.timestamp or now
        restarts = [at for at in restarts if reference - svc.restart.window < at <= reference]
    return len(restarts) < svc.restart.max_attempts


def _restart(p: _Pass, svc: ServiceView, old: Task, history: list[Task]) -> None:
    """The restart supervisor: retire the dead task, park a replacement in the same slot until the
    restart delay has passed."""
    old.desired_state = TaskState.SHUTDOWN
    p.save(old)
    if not _should_restart(svc, old, history, p.now):
        return
    # No restart delay for a task moved off a drained node (swarmkit), nor, unlike swarmkit, for
    # one lost with its node: the delay slows a task's crash loop, and a node that went down is
    # not the task failing. Swarm waits the delay (5 s by default) on top of noticing the loss.
    node = p.nodes.get(old.node_id) if old.node_id else None
    moved = node is not None and node.availability == "drain"
    # ORPHANED: its node was removed (`node rm`), lost too.
    lost = bool(old.node_id) and (old.status.state <= TaskState.RUNNING or old.status.state == TaskState.ORPHANED) \
        and p.node_down(old.node_id)
    delay = 0.0 if moved or lost else svc.restart.delay
    pending = [t.start_after for t in history if t.desired_state == TaskState.READY]
    start_after = max([p.now + delay, *pending])
    p.create(new_task(svc, old.slot, old.node_id if svc.mode in ("global", "global-job") else "", TaskState.READY,
                      p.now, start_after=start_after, replaces=old.id, restarted=True))
    p.wake.append(start_after)


def _run_state(task: Task) -> TaskState:
    """swarmkit's StartNow: a job's task (its spec carries the job's mode, as a job's task
    carries its JobIteration) goes desired COMPLETE, any other RUNNING."""
    return TaskState.COMPLETE if task.spec.get("mode") in JOB_MODES else TaskState.RUNNING


def _release_parked(p: _Pass, tasks: Iterable[Task], by_id: dict[str, Task]) -> None:
    """DelayStart: a parked task goes RUNNING once its delay has passed and the task it replaces
    has stopped (or a minute has gone by)."""
    for task in tasks:
        if task.desired_state != TaskState.READY or task.status.state > TaskState.RUNNING:
            continue
        if task.waits_for:
            svc = p.services.get(task.service_id)
            still = waiting_on(p, svc) if svc is not None else []
            if still:
                continue  # re-checked on the next pass: a dependency's progress is a store change
            task.waits_for = []
            task.desired_state = _run_state(task)
            p.save(task)
            continue
        if p.now < task.start_after:
            p.wake.append(task.start_after)
            continue
        old = by_id.get(task.replaces) if task.replaces else None
        # swarmkit's restart supervisor does not wait for a task whose node is down: it
        # cannot report stopping (and is told to stop when its node comes back).
        old_stopped = old is None or old.status.state > TaskState.RUNNING or old.status.state < TaskState.ASSIGNED \
            or bool(old.node_id and p.node_down(old.node_id))
        if not old_stopped and p.now < task.start_after + OLD_TASK_TIMEOUT:
            p.wake.append(task.start_after + OLD_TASK_TIMEOUT)
            continue
        task.desired_state = _run_state(task)
        p.save(task)


def _is_dirty(svc: ServiceView, task: Task) -> bool:
    return task.spec_version != svc.spec_version and task.spec != task_spec(svc.spec)


def _update_config(svc: ServiceView, rolling_back: bool = False) -> dict[str, Any]:
    cfg = svc.update_config(rolling_back)  # the model's defaults, the only set
    return {"parallelism": cfg.parallelism, "delay": cfg.delay, "order": cfg.order, "monitor": cfg.monitor,
            "failure_action": cfg.failure_action, "max_failure_ratio": cfg.max_failure_ratio}


_ACTIVE = ("updating", "rollback_started")
_PAUSED = ("paused", "rollback_paused")


def _update_status(p: _Pass, svc: ServiceView, busy: bool, slot_count: int) -> bool:
    """UpdateStatus as swarmkit's updater keeps it; returns False when the update must not go
    on (paused, or just rolled back). Once no slot is left to replace, the update stays
    `updating` (or `rollback_started`) for `monitor` after the last task it made started, and
    only then completes. A task it made that fails or ends before it ran, or within `monitor`
    of starting, is a failure, whether or not slots are left (failure_action,
    max_failure_ratio)."""
    record = p.records.get(svc.id)
    if record is None:
        return True
    status = dict(record.get("update_status") or {})
    rolling_back = bool(record.get("rolling_back"))
    if not busy and status.get("state") not in _ACTIVE:
        return True
    if busy and status.get("spec_version") != svc.spec_version:
        status = {"state": "rollback_started" if rolling_back else "updating", "started_at": p.now,
                  "spec_version": svc.spec_version,
                  "message": "manually requested rollback" if rolling_back and not status else
                  ("update in progress" if not rolling_back else status.get("message", ""))}
        record["update_status"] = status
        p.save_service(record)
    if status.get("state") in _PAUSED:
        return False
    cfg = _update_config(svc, rolling_back)
    # The updater's own tasks of this update (swarmkit's updatedTasks): not the first tasks of
    # a slot, nor the restart supervisor's replacements. A status left by an older spec (an
    # update that a spec change without dirty tasks superseded) is not monitored.
    mine = [t for t in p.tasks_by_service.get(svc.id, [])
            if t.spec_version == svc.spec_version == status.get("spec_version")
            and t.created_at >= status.get("started_at", 0) and t.replaces and not t.restarted]
    if cfg["failure_action"] != "continue":
        failed = [t for t in mine if t.status.state in (TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED)
                  and (not t.started_at or t.status.timestamp - t.started_at <= cfg["monitor"])]
        if failed and len(failed) / max(1, slot_count) > cfg["max_failure_ratio"]:
            _update_failed(p, svc, record, status, min(failed, key=lambda t: t.status.timestamp).id)
            return False
    if busy:
        return True
    # swarmkit's updater keeps watching for failures for `monitor` after its last slot's task
    # reached RUNNING (or went past it) before it declares the update complete.
    started = [t.started_at or t.status.timestamp for t in mine if t.status.state >= TaskState.RUNNING]
    deadline = max(started) + cfg["monitor"] if started else 0.0
    if p.now < deadline:
        p.wake.append(deadline)
        return True
    done = "rollback_completed" if status["state"] == "rollback_started" else "completed"
    status.update(state=done, completed_at=p.now,
                  message="rollback completed" if done == "rollback_completed" else "update completed")
    record.update(update_status=status, rolling_back=False)
    p.save_service(record)
    return True


def _update_failed(p: _Pass, svc: ServiceView, record: dict[str, Any], status: dict[str, Any], culprit: str) -> None:
    """failure_action: roll back (never a rollback itself) or pause."""
    rolling_back = bool(record.get("rolling_back"))
    cfg = _update_config(svc, rolling_back)
    if cfg["failure_action"] == "rollback" and not rolling_back and record.get("previous_spec"):
        record.update(spec=record["previous_spec"], previous_spec=record["spec"],
                      spec_version=svc.spec_version + 1, rolling_back=True, updated_at=p.now,
                      update_status={"state": "rollback_started", "started_at": p.now,
                                     "spec_version": svc.spec_version + 1,
                                     "message": f"update rolled back due to failure or early termination of task {culprit}"})
    else:
        state = "rollback_paused" if rolling_back else "paused"
        what = "rollback" if rolling_back else "update"
        status.update(state=state, message=f"{what} paused due to failure or early termination of task {culprit}")
        record["update_status"] = status
    p.save_service(record)


def _rolling_update(p: _Pass, svc: ServiceView, slots: dict[int | str, list[Task]]) -> None:
    """The updater: replace dirty slots `parallelism` at a time, `delay` apart, stop-first or
    start-first (swarm-inventory 3.7)."""
    cfg = _update_config(svc, bool(p.records.get(svc.id, {}).get("rolling_back")))
    in_flight = 0
    last_done = 0.0
    dirty: list[tuple[int | str, Task]] = []
    # The tasks this pass made already (a restart, a global node's new task) are the slot's:
    # else a slot whose old-spec task just died or was shut down got a second task here.
    made: dict[int | str, list[Task]] = defaultdict(list)
    for t in p.created:
        if t.service_id == svc.id:
            made[t.node_id if svc.mode == "global" else t.slot].append(t)
    for key, history in slots.items():
        history = history + [t for t in made.get(key, []) if t not in history]
        live = [t for t in history if t.desired_state <= TaskState.RUNNING]
        fresh = [t for t in live if t.spec_version == svc.spec_version]
        stale = [t for t in live if _is_dirty(svc, t)]
        for t in fresh:
            if not t.replaces or t.restarted:
                continue  # not made by the updater (a first task, or a restart)
            if t.status.state < TaskState.RUNNING:
                in_flight += 1
            else:
                last_done = max(last_done, t.status.timestamp)
        if fresh and stale and cfg["order"] == "start-first":
            if any(t.status.state == TaskState.RUNNING for t in fresh):
                for t in stale:
                    t.desired_state = TaskState.SHUTDOWN
                    p.save(t)
            continue
        if stale and not fresh:
            dirty.append((key, stale[0]))
        elif not live and history and _is_dirty(svc, history[-1]):
            # A slot whose task died and was not restarted still follows the new spec (this is
            # how a rollback brings back the slots that the failed update killed).
            dirty.append((key, history[-1]))
    if not _update_status(p, svc, bool(dirty or in_flight), len(slots)) or not dirty:
        return
    if cfg["delay"] and last_done and p.now < last_done + cfg["delay"]:
        p.wake.append(last_done + cfg["delay"])
        return
    budget = len(dirty) if cfg["parallelism"] == 0 else cfg["parallelism"] - in_flight
    for _key, old in sorted(dirty, key=lambda kv: str(kv[0]))[: max(budget, 0)]:
        if cfg["order"] == "start-first":
            p.create(new_task(svc, old.slot, old.node_id if svc.mode == "global" else "", TaskState.RUNNING,
                              p.now, replaces=old.id))
        else:
            if old.desired_state < TaskState.SHUTDOWN:
                old.desired_state = TaskState.SHUTDOWN
                p.save(old)
            p.create(new_task(svc, old.slot, old.node_id if svc.mode == "global" else "", TaskState.READY,
                              p.now, replaces=old.id, start_after=p.now))


def _slot_occupied(svc: ServiceView, history: list[Task]) -> bool:
    """A slot counts if it has a live task, or if its newest task is dead and not restarted
    (so `max_attempts` exhausted shows 0/1 rather than a fresh task)."""
    if any(t.desired_state <= TaskState.RUNNING for t in history):
        return True
    return bool(history)


def _reconcile_replicated(p: _Pass, svc: ServiceView, tasks: list[Task]) -> None:
    slots: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        if t.desired_state != TaskState.REMOVE:
            slots[t.slot].append(t)
    for history in slots.values():
        history.sort(key=lambda t: t.created_at)
    _restart_dead(p, svc, slots, replicated=True)
    _drain(p, svc, slots)
    occupied = {s: h for s, h in slots.items() if _slot_occupied(svc, h)}
    if len(occupied) < svc.replicas:
        # The service's first tasks wait for its dependencies; later ones (scale, restarts) don't.
        deps = waiting_on(p, svc) if not occupied else []
        free = (n for n in range(1, len(occupied) + svc.replicas + 1) if n not in occupied)
        for _ in range(svc.replicas - len(occupied)):
            slot = next(free)
            if deps:
                p.create(new_task(svc, slot, "", TaskState.READY, p.now, waits_for=deps))
            else:
                p.create(new_task(svc, slot, "", TaskState.RUNNING, p.now))
    elif len(occupied) > svc.replicas:
        def running_first(item: tuple[int, list[Task]]) -> tuple[int, int]:
            slot, history = item
            live = any(t.status.state == TaskState.RUNNING and t.desired_state <= TaskState.RUNNING for t in history)
            return (0 if live else 1, slot)

        # swarmkit's scale-down: each slot ranked as the nth copy of the service on its node
        # (running slots, lower slot numbers first), the lowest ranks kept, so the copies go
        # from the nodes that have the most (after a node failure, the survivors'); a slot
        # with no single placed task ranks last. Keeping the lowest slots left 3 on one node
        # and 1 on another of 3 + 3.
        per_node: dict[str, int] = defaultdict(int)
        ranked: list[tuple[int, tuple[int, list[Task]]]] = []
        for item in sorted(occupied.items(), key=running_first):
            live = [t for t in item[1] if t.desired_state <= TaskState.RUNNING]
            if len(live) == 1 and live[0].node_id:
                per_node[live[0].node_id] += 1
                ranked.append((per_node[live[0].node_id], item))
            else:
                ranked.append((1 << 30, item))
        ranked.sort(key=lambda r: r[0])
        for _slot, history in [item for _rank, item in ranked][svc.replicas:]:
            for t in history:
                t.desired_state = TaskState.REMOVE
                p.save(t)
            occupied.pop(_slot)
    _rolling_update(p, svc, {s: h for s, h in slots.items() if s in occupied})


def _matches(node: Node, svc: ServiceView) -> bool:
    from shoal.manager.constraints import matches

    return matches(svc.constraints, node)


def _eligible(node: Node, svc: ServiceView) -> bool:
    return node.state == "ready" and node.availability == "active" and _matches(node, svc)


def _reconcile_global(p: _Pass, svc: ServiceView, tasks: list[Task], nodes: list[Node]) -> None:
    by_node: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        if t.desired_state != TaskState.REMOVE:
            by_node[t.node_id].append(t)
    for history in by_node.values():
        history.sort(key=lambda t: t.created_at)
    eligible = {n.id for n in nodes if _eligible(n, svc)}
    # A paused node keeps the task it runs (swarmkit's global orchestrator neither adds, updates
    # nor shuts down tasks there); one that dies there is not restarted (its tickTasks). So does
    # a node in state Unknown (not registered again since the manager restarted): it is neither
    # Down nor drained, and no task is placed on it until it is Ready.
    paused = {n.id for n in nodes if n.state != "down" and n.availability != "drain" and _matches(n, svc)
              and (n.availability == "pause" or n.state != "ready")}
    for node_id, history in by_node.items():
        if node_id in paused:
            for t in history:
                if t.desired_state <= TaskState.RUNNING and t.status.state > TaskState.RUNNING:
                    t.desired_state = TaskState.SHUTDOWN
                    p.save(t)
        elif node_id not in eligible:
            for t in history:
                if t.desired_state <= TaskState.RUNNING:
                    t.desired_state = TaskState.SHUTDOWN
                    p.save(t)
    live_nodes = {k: v for k, v in by_node.items() if k in eligible}
    _restart_dead(p, svc, live_nodes)
    restarted = {t.node_id for t in p.created if t.service_id == svc.id}
    for node_id in sorted(eligible - restarted):
        history = by_node.get(node_id, [])
        if any(t.desired_state <= TaskState.RUNNING for t in history):
            continue
        # A node whose task was shut down because it went Down or was drained gets a new one
        # once it is eligible again (swarmkit's reconcileOneNode on the node's update), unless
        # its last task ended as the restart policy says it stays ended (IsTaskUpdatable).
        if history and not _should_restart(svc, history[-1], history, p.now):
            continue
        p.create(new_task(svc, 0, node_id, TaskState.RUNNING, p.now))
    _rolling_update(p, svc, live_nodes)


JOB_MODES = ("replicated-job", "global-job")


def max_concurrent(spec: dict[str, Any], total: int) -> int:
    """ReplicatedJob.MaxConcurrent: unset means the total completions (as docker/cli sends it)."""
    value = spec.get("max_concurrent")
    return total if value is None else int(value)


def job_counts(spec: dict[str, Any], spec_version: int, tasks: Iterable[Task]) -> tuple[int, int]:
    """(desired, completed) of a job's current iteration, as moby's ServiceStatus counts them:
    a replicated job desires min(MaxConcurrent, TotalCompletions - completed) tasks, a global
    job its tasks of this iteration that have not completed."""
    current = [t for t in tasks if t.spec_version == spec_version and t.desired_state != TaskState.REMOVE]
    completed = sum(1 for t in current if t.status.state == TaskState.COMPLETE)
    if spec.get("mode") == "global-job":
        desired = sum(1 for t in current if t.status.state != TaskState.COMPLETE
                      and t.desired_state <= TaskState.COMPLETE)
        return desired, completed
    total = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
    return max(0, min(max_concurrent(spec, total), total - completed)), completed


def _reconcile_job(p: _Pass, svc: ServiceView, tasks: list[Task], nodes: list[Node]) -> None:
    """swarmkit's jobs orchestrator (manager/orchestrator/jobs): every spec version is a new job
    iteration; its tasks run to completion, a failed one is restarted by the restart policy
    (`any` acting as `on-failure`). A replicated job keeps at most MaxConcurrent tasks active and
    never more than TotalCompletions (= replicas) active or complete; a global job runs one task
    on each eligible node. Tasks are created desired COMPLETE, as swarmkit's reconcilers make
    them (the node runs a task until its status reaches that), and a restarted one goes from
    desired READY to COMPLETE (_run_state)."""
    live: list[Task] = []
    for t in tasks:
        if t.desired_state == TaskState.REMOVE:
            continue
        if t.spec_version != svc.spec_version:
            # An older iteration: what still runs is removed (swarmkit); what completed is
            # shut down so that the reaper's history bound applies to it.
            if t.status.state <= TaskState.RUNNING:
                t.desired_state = TaskState.REMOVE
                p.save(t)
            elif t.desired_state <= TaskState.COMPLETE:
                t.desired_state = TaskState.SHUTDOWN
                p.save(t)
            continue
        live.append(t)
    groups: dict[Any, list[Task]] = defaultdict(list)
    for t in live:
        groups[t.node_id if svc.mode == "global-job" else t.slot].append(t)
    for history in groups.values():
        history.sort(key=lambda t: t.created_at)
    _restart_dead(p, svc, groups, replicated=svc.mode == "replicated-job")
    completed = active = exhausted = 0
    for history in groups.values():
        if any(t.status.state == TaskState.COMPLETE for t in history):
            completed += 1
        elif any(t.desired_state <= TaskState.COMPLETE for t in history):
            active += 1
        else:
            exhausted += 1  # failed and not to be restarted: the slot stays taken
    deps = waiting_on(p, svc) if not groups else []
    desired = TaskState.READY if deps else TaskState.COMPLETE
    extra: dict[str, Any] = {"waits_for": deps} if deps else {}
    if svc.mode == "global-job":
        for node in sorted((n for n in nodes if _eligible(n, svc)), key=lambda n: n.id):
            if node.id not in groups:
                p.create(new_task(svc, 0, node.id, desired, p.now, **extra))
        return
    total = svc.replicas
    room = min(max_concurrent(svc.spec, total) - active, total - completed - active - exhausted)
    # Slots 0 to TotalCompletions-1, as swarmkit's replicated-job reconciler numbers them (so
    # `service ps` names the slot-0 task by its node, as docker/cli does any task of slot 0).
    free = (n for n in range(total) if n not in groups)
    for _ in range(max(0, room)):
        p.create(new_task(svc, next(free), "", desired, p.now, **extra))


def _restart_dead(p: _Pass, svc: ServiceView, slots: dict[Any, list[Task]], replicated: bool = False) -> None:
    # A parked (desired READY) replacement that died before release is retired the same way.
    # A replicated task on a node that is down, drained or gone is restarted elsewhere, as
    # swarmkit's replicated orchestrator does (restartTasksByNodeID); global tasks of such a
    # node are shut down by _reconcile_global.
    for history in slots.values():
        for t in list(history):
            # A job's task is desired COMPLETE while it runs, and done once it got there.
            if t.desired_state > TaskState.COMPLETE or t.status.state == t.desired_state == TaskState.COMPLETE:
                continue
            if t.desired_state == TaskState.READY and t.status.state > TaskState.RUNNING and p.now < t.start_after:
                # swarmkit's waitRestart: a replacement that fails while it still waits out its
                # restart delay (its node rejects it when preparing: no such image) is restarted
                # once that delay has passed, not at once: else a missing image is a tight loop.
                p.wake.append(t.start_after)
                continue
            if t.status.state > TaskState.RUNNING or (
                    replicated and t.node_id and t.status.state >= TaskState.ASSIGNED and p.node_invalid(t.node_id)
                    and not p.node_draining(t.node_id)):
                _restart(p, svc, t, history)


def _unplaceable(t: Task) -> bool:
    """Pending because the scheduler found no node for it (its err says why)."""
    return not t.node_id and t.status.state == TaskState.PENDING and t.status.err.startswith("no suitable node")


def _drain(p: _Pass, svc: ServiceView, slots: dict[int, list[Task]]) -> None:
    """The tasks of a drained node move to other nodes as an update moves tasks: `parallelism`
    slots at a time (0: all), in the update's `order`. start-first: the replacement is made while
    the old task runs and the old one is stopped once the replacement runs, so the service never
    has fewer copies running (a replacement that fits nowhere leaves the old task running);
    stop-first: the old task is stopped and its replacement starts when it has. swarmkit's drain
    restarts every task at once through the restart supervisor; the issue asks for the update's
    rules, which keep a drain from taking a service down (the delay between batches is not
    applied: a drain is maintenance, not a rollout)."""
    cfg = _update_config(svc)
    in_flight = 0  # slots moving: an old copy still stopping, or a replacement not running yet
    candidates: list[tuple[int, Task]] = []
    for slot, history in slots.items():
        on_node = [t for t in history if t.node_id and p.node_draining(t.node_id)
                   and TaskState.ASSIGNED <= t.status.state <= TaskState.RUNNING]
        wanted = [t for t in on_node if t.desired_state <= TaskState.RUNNING]
        others = [t for t in history if t not in on_node and t.desired_state <= TaskState.RUNNING
                  and t.status.state <= TaskState.RUNNING]
        if wanted and not others:
            candidates.append((slot, wanted[0]))
        elif wanted and any(t.status.state == TaskState.RUNNING for t in others):
            for t in wanted:  # start-first: the replacement runs, the old copy can stop now
                t.desired_state = TaskState.SHUTDOWN
                p.save(t)
            in_flight += 1
        elif on_node:
            in_flight += 1
        else:
            drained = {t.id for t in history if t.node_id and p.node_draining(t.node_id)}
            # A replacement no node can take (its constraint matched only the drained node)
            # does not hold the drain: it would wait for ever and the node never empty. swarmkit
            # stops them all and leaves them Pending with the scheduler's reason.
            if any(t.replaces in drained and t.status.state < TaskState.RUNNING and not _unplaceable(t)
                   for t in others):
                in_flight += 1  # stop-first: the old copy stopped, its replacement is starting
    budget = len(candidates) if cfg["parallelism"] == 0 else cfg["parallelism"] - in_flight
    for slot, old in sorted(candidates, key=lambda c: c[0])[: max(budget, 0)]:
        if cfg["order"] == "start-first":
            p.create(new_task(svc, slot, "", TaskState.RUNNING, p.now, replaces=old.id, restarted=True))
        else:
            old.desired_state = TaskState.SHUTDOWN
            p.save(old)
            p.create(new_task(svc, slot, "", TaskState.READY, p.now, replaces=old.id, restarted=True,
                              start_after=p.now))


def reconcile(tx: Transaction, now: float) -> float | None:
    """One orchestration pass. Returns when the next delayed action falls due, if any."""
    p = _Pass(tx, now)
    p.records = {s["id"]: s for s in tx.list("service")}
    services = {sid: view(s) for sid, s in p.records.items()}
    p.services = services
    nodes = [Node.from_dict(n) for n in tx.list("node")]
    p.nodes = {n.id: n for n in nodes}
    tasks_by_service: dict[str, list[Task]] = defaultdict(list)
    all_tasks: dict[str, Task] = {}
    for raw in tx.list("task"):
        task = Task.from_dict(raw)
        all_tasks[task.id] = task
        tasks_by_service[task.service_id].append(task)
    p.tasks_by_service = tasks_by_service
    for service_id, tasks in tasks_by_service.items():
        if service_id not in services:
            for t in tasks:
                if t.desired_state != TaskState.REMOVE:
                    t.desired_state = TaskState.REMOVE
                    p.save(t)
    for svc in services.values():
        tasks = tasks_by_service.get(svc.id, [])
        if svc.mode in JOB_MODES:
            _reconcile_job(p, svc, tasks, nodes)
        elif svc.mode == "global":
            _reconcile_global(p, svc, tasks, nodes)
        else:
            _reconcile_replicated(p, svc, tasks)
    # With the tasks the passes above created (parked ones may have their gates open already).
    # Every write went through p.save / p.create, so these objects are what the store holds.
    fresh = sorted([*all_tasks.values(), *p.created], key=lambda t: t.id)
    by_id = {t.id: t for t in fresh}
    p.tasks_by_service = defaultdict(list)
    for t in fresh:
        p.tasks_by_service[t.service_id].append(t)
    _release_parked(p, fresh, by_id)
    return min(p.wake) if p.wake else None
