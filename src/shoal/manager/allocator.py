"""The allocator: a NEW task becomes PENDING (swarmkit's `pending task scheduling`).

On one node there is nothing left to reserve here: a service's networks, VIPs and published
ports are made in the deploy request (so a clash fails `stack deploy` itself), and a task's
address is taken when its container is attached on the node."""

from __future__ import annotations

from shoal.model.cluster import Task, TaskState
from shoal.store.base import Transaction


def reconcile(tx: Transaction, now: float) -> None:
    for raw in tx.list("task"):
        if raw["status"]["state"] != TaskState.NEW.text:
            continue
        task = Task.from_dict(raw)
        if task.desired_state > TaskState.RUNNING:
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
        else:
            task.advance(TaskState.PENDING, "pending task scheduling", now=now)
        tx.update("task", task.to_dict())
