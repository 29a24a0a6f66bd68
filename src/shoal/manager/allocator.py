"""The allocator: a NEW task becomes PENDING once what it needs from the cluster is reserved.

Network attachments (addresses on the service's networks) are allocated by the network
allocator when one is configured; a task that cannot get them stays NEW with the reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.errors import ShoalError
from shoal.model.cluster import Task, TaskState
from shoal.store.base import Transaction

# (transaction, task) -> the task's network attachments; raises ShoalError when none can be had
NetworkAllocator = Callable[[Transaction, Task], list[dict[str, Any]]]


def reconcile(tx: Transaction, now: float, allocate_networks: NetworkAllocator | None = None) -> None:
    for raw in tx.list("task"):
        task = Task.from_dict(raw)
        if task.status.state != TaskState.NEW:
            continue
        if task.desired_state > TaskState.RUNNING:
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
            tx.update("task", task.to_dict())
            continue
        if allocate_networks is not None:
            try:
                task.networks = allocate_networks(tx, task)
            except ShoalError as exc:
                if task.status.err != str(exc):
                    task.status.err = str(exc)
                    tx.update("task", task.to_dict())
                continue
        task.advance(TaskState.PENDING, "pending task scheduling", now=now)
        tx.update("task", task.to_dict())
