"""The scheduler: PENDING tasks to nodes. Filters first (ready and active, constraints, max
replicas per node), then spread: fewest tasks of this service, then fewest tasks in all
(swarm-inventory 4.5). A task no node can take stays PENDING with swarmkit's explanation."""

from __future__ import annotations

from collections import Counter

from shoal.manager.constraints import matches
from shoal.manager.serviceview import view
from shoal.model.cluster import Node, Task, TaskState
from shoal.store.base import Transaction


def _active(task: Task) -> bool:
    return task.desired_state <= TaskState.COMPLETE and task.status.state <= TaskState.RUNNING


def _explain(failures: Counter[str]) -> str:
    parts = []
    for reason, count in failures.most_common():
        noun = "1 node" if count == 1 else f"{count} nodes"
        parts.append(reason.format(nodes=noun))
    return "no suitable node (" + "; ".join(parts) + ")"


def reconcile(tx: Transaction, now: float) -> None:
    raw_tasks = tx.list("task")
    if not any(t["status"]["state"] == TaskState.PENDING.text for t in raw_tasks):
        return
    nodes = [Node.from_dict(n) for n in tx.list("node")]
    services = {s["id"]: view(s) for s in tx.list("service")}
    tasks = [Task.from_dict(t) for t in raw_tasks]
    per_node: Counter[str] = Counter()
    per_service_node: Counter[tuple[str, str]] = Counter()
    for t in tasks:
        if t.node_id and _active(t):
            per_node[t.node_id] += 1
            per_service_node[(t.service_id, t.node_id)] += 1
    for task in sorted(tasks, key=lambda t: (t.created_at, t.slot)):
        if task.status.state != TaskState.PENDING:
            continue
        if task.desired_state > TaskState.RUNNING:
            task.advance(TaskState.SHUTDOWN, "shutdown", now=now)
            tx.update("task", task.to_dict())
            continue
        svc = services.get(task.service_id)
        if svc is None:
            continue
        failures: Counter[str] = Counter()
        candidates = []
        for node in nodes:
            if task.node_id and node.id != task.node_id:
                continue
            if node.state != "ready" or node.availability != "active":
                failures["{nodes} not available for new tasks"] += 1
            elif not matches(svc.constraints, node):
                failures["scheduling constraints not satisfied on {nodes}"] += 1
            elif svc.max_replicas_per_node and per_service_node[(svc.id, node.id)] >= svc.max_replicas_per_node:
                failures["max replicas per node limit exceed"] += 1
            else:
                candidates.append(node)
        if not candidates:
            message = _explain(failures) if failures else "no suitable node"
            if task.status.err != message:
                task.status.err = message
                tx.update("task", task.to_dict())
            continue
        best = min(candidates, key=lambda n: (per_service_node[(svc.id, n.id)], per_node[n.id], n.hostname))
        confirmed = bool(task.node_id)
        task.node_id = best.id
        task.advance(
            TaskState.ASSIGNED,
            "scheduler confirmed task can run on preassigned node" if confirmed else "scheduler assigned task to node",
            now=now,
        )
        tx.update("task", task.to_dict())
        per_node[best.id] += 1
        per_service_node[(svc.id, best.id)] += 1
