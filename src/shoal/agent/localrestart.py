"""A worker cut off from its manager restarts its exited tasks in place, per their restart policy
(issue 11 item 5), as a container with a restart policy would: the same task (same slot, same
task ID, same container) runs again after the policy's delay, and the node keeps a record of
the restarts in its own store (kind KIND in <root>/worker/tasks.db).

Why this cannot run a slot twice: a restarted task never leaves RUNNING in what the node
reports (no exit is reported for it, so the orchestrator has nothing to replace), and a task
the manager replaced meanwhile (its node was taken for Down) is desired SHUTDOWN in the
complete set the node gets when its session opens again, so the node stops its copy then, as
it stops a copy that never exited.

Only while the manager is away: with the manager there, an exit is reported and the
orchestrator replaces the task, as swarmkit's does (its restart supervisor keeps the history
that `max_attempts` and `window` count). The restarts made here go with the task's status
(Task.local_restarts), and the orchestrator counts them in that history: `max_attempts` is the
total of both. "Away" is asked when the exit is seen, not taken from
the session's last state: a cut link shows in the session only at its next heartbeat or read
timeout, so the agent sends one heartbeat and waits AWAY_PROBE for its answer
(agent/agent.py manager_away)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.model.cluster import Task
from shoal.model.service import RestartPolicy

KIND = "localrestart"
AWAY_PROBE = 2.0  # seconds a heartbeat gets to come back before the manager counts as away
JOB_MODES = ("replicated-job", "global-job")  # a job's task spec carries its mode

_DEFAULT = RestartPolicy()


def policy(spec: dict[str, Any]) -> RestartPolicy:
    """The task's restart_policy with Swarm's defaults (model/service.py, the one set)."""
    raw = spec.get("restart_policy") or {}
    return RestartPolicy(
        condition=raw.get("condition") or _DEFAULT.condition,
        delay=_DEFAULT.delay if raw.get("delay") is None else float(raw["delay"]),
        max_attempts=int(raw.get("max_attempts") or _DEFAULT.max_attempts),
        window=_DEFAULT.window if raw.get("window") is None else float(raw["window"]),
    )


def should_restart(spec: dict[str, Any], exit_code: int, earlier: list[float], now: float) -> bool:
    """The orchestrator's rule (manager/orchestrator.py _should_restart) for an exit seen on the
    node: `none` never; `on-failure` (and `any` for a job, as swarmkit's jobs orchestrator)
    only a non-zero exit; `max_attempts` restarts at most, counting those in `earlier` (when
    each ran) within `window` before the exit."""
    p = policy(spec)
    if p.condition == "none":
        return False
    if exit_code == 0 and (p.condition == "on-failure" or spec.get("mode") in JOB_MODES):
        return False
    if p.max_attempts <= 0:
        return True
    counted = [t for t in earlier if p.window <= 0 or now - p.window < t <= now]
    return len(counted) < p.max_attempts


@dataclass
class Record:
    """One task's in-place restarts."""

    id: str  # the task's ID
    container_id: str = ""
    restarts: list[float] = field(default_factory=list)  # when each restart ran (wall clock)
    last_exit: int | None = None
    exited_at: float = 0.0
    due: float = 0.0  # when the pending restart runs (wall clock); 0: none pending

    def message(self) -> str:
        """The task's status message once it runs again: what happened, for `inspect`."""
        n = len(self.restarts)
        return (f"restarted by its node while the manager was away ({n} restart{'s' if n != 1 else ''}, "
                f"last exit code {self.last_exit})")


def _record(raw: dict[str, Any]) -> Record:
    fields = {k: v for k, v in raw.items() if k in Record.__dataclass_fields__}
    fields["restarts"] = list(fields.get("restarts") or [])  # the store's objects are read-only
    return Record(**fields)


class LocalRestarts:
    """The node's records of in-place restarts, kept in memory and in its store (so a shoald
    restarted during the partition keeps the pending delay and the count)."""

    def __init__(self, store: Any, manager_away: Callable[[], bool]) -> None:
        self.store = store
        self.manager_away = manager_away
        self._lock = threading.Lock()
        self._records = {raw["id"]: _record(raw) for raw in store.list(KIND)}

    def _save(self, record: Record) -> None:
        data = asdict(record)
        with self.store.transaction() as tx:
            if tx.get(KIND, record.id) is None:
                tx.create(KIND, data)
            else:
                tx.update(KIND, data, expect_version=None)

    def pending(self, task_id: str) -> Record | None:
        with self._lock:
            record = self._records.get(task_id)
        return record if record is not None and record.due else None

    def decide(self, task: Task, exit_code: int, history: list[Task]) -> Record | None:
        """A task wanted running has exited: the record of its pending restart when the policy
        restarts it and the manager is away, else None (the exit is reported as it is).
        `history`: the tasks of its slot (or node, for a global task) the node holds; the
        orchestrator's replacements among them count against max_attempts, as its own."""
        now = time.time()
        with self._lock:
            record = self._records.get(task.id) or Record(id=task.id)
        # The slot's other tasks' restarts in place count too (the manager's count: orchestrator.py).
        same = [t for t in history if t.spec_version == task.spec_version]
        earlier = [t.created_at for t in same if t.restarted] + \
            [at for t in same if t.id != task.id for at in t.local_restarts]
        if not should_restart(task.spec, exit_code, earlier + record.restarts, now):
            return None
        if not self.manager_away():
            return None
        record.container_id = task.status.container_id
        record.last_exit = exit_code
        record.exited_at = now
        record.due = now + policy(task.spec).delay
        self._save(record)
        with self._lock:
            self._records[task.id] = record
        return record

    def restarted(self, task_id: str) -> Record:
        """The pending restart ran: counted, no longer pending."""
        with self._lock:
            record = self._records.setdefault(task_id, Record(id=task_id))
            record.restarts.append(time.time())
            record.due = 0.0
        self._save(record)
        return record

    def cancel(self, task_id: str) -> None:
        """The task stops (the manager wants it stopped, or its restart failed): no restart."""
        with self._lock:
            record = self._records.get(task_id)
            if record is None or not record.due:
                return
            record.due = 0.0
        self._save(record)

    def prune(self, live: set[str]) -> None:
        """Forget the records of tasks the node no longer holds."""
        with self._lock:
            gone = [tid for tid in self._records if tid not in live]
            for tid in gone:
                del self._records[tid]
        if gone:
            with self.store.transaction() as tx:
                for tid in gone:
                    tx.delete(KIND, tid)
