"""The task reaper: bounded history per slot (or per node for global tasks), and deletion of
tasks that were removed by scale-down or service removal once they have stopped
(swarm-inventory 3.4)."""

from __future__ import annotations

from collections import defaultdict

from shoal.manager.serviceview import DEFAULT_HISTORY_LIMIT, view
from shoal.model.cluster import Task, TaskState
from shoal.store.base import Transaction


def _stopped(task: Task) -> bool:
    return task.status.state < TaskState.ASSIGNED or task.status.state >= TaskState.COMPLETE


def reconcile(tx: Transaction) -> list[str]:
    """Delete what the history limit and removals allow; returns the deleted task IDs."""
    services = {s["id"]: view(s) for s in tx.list("service")}
    groups: dict[tuple[str, object], list[Task]] = defaultdict(list)
    deleted: list[str] = []
    for raw in tx.list("task"):
        task = Task.from_dict(raw)
        if task.desired_state == TaskState.REMOVE or task.service_id not in services:
            if _stopped(task):
                tx.delete("task", task.id)
                deleted.append(task.id)
            continue
        key = task.slot if task.slot else task.node_id
        groups[(task.service_id, key)].append(task)
    for (service_id, _key), history in groups.items():
        limit = services[service_id].history_limit if service_id in services else DEFAULT_HISTORY_LIMIT
        if len(history) <= limit:
            continue
        history.sort(key=lambda t: t.status.timestamp)
        excess = len(history) - limit
        for task in history:
            if excess <= 0:
                break
            dead = task.status.state > TaskState.RUNNING and task.desired_state >= TaskState.SHUTDOWN
            never_ran = task.status.state < TaskState.ASSIGNED and task.desired_state > TaskState.COMPLETE
            if dead or never_ran:
                tx.delete("task", task.id)
                deleted.append(task.id)
                excess -= 1
    return deleted
