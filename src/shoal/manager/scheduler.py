"""The scheduler pass: PENDING tasks to nodes, as swarmkit's scheduler places them (the placement
itself is manager/scheduling/, pure; this is the store side).

Each pass tells the scheduling core what changed in the store since the last pass, the way
swarmkit's scheduler follows store events: a node or task whose stored version and decoded
record are the ones seen last time is skipped (the SQLite store hands out the same read-only
nested objects until a row changes, and a store that does not costs only speed), a new or
changed one is an update, a missing one a delete. The core keeps its node set (tasks, active
counts, resources left, host ports) between passes; switching to another store just looks like
every object changed.

Then preassigned tasks (global services) are checked against their node, the rest scheduled in
groups, and the decisions written: ASSIGNED with the node, or PENDING with swarmkit's
explanation ("no suitable node (insufficient resources on 2 nodes; 1 node not available for
new tasks)"). A PENDING task whose desired state is past COMPLETE is shut down here, as before."""

from __future__ import annotations

import threading
from typing import Any

from shoal.manager.scheduling import Decision, Scheduler, TaskInfo, TaskSpecInfo, describe_spec
from shoal.model.cluster import Node, TaskState
from shoal.store.base import Transaction

_PENDING = int(TaskState.PENDING)
_COMPLETE = int(TaskState.COMPLETE)  # a job's task is desired COMPLETE from the start
_STATES = {s.text: int(s) for s in TaskState}


class _Seen:
    """What the last passes saw: (version, nested record) per object, and the core."""

    def __init__(self) -> None:
        self.core = Scheduler()
        self.tasks: dict[str, tuple[Any, Any]] = {}
        self.nodes: dict[str, tuple[Any, Any]] = {}
        # (service, spec version) -> (placement, resources, endpoint, networks, the encrypted
        # networks, what they make): the tasks of one version share a spec; checked by
        # equality, so another store cannot hand a stale one out.
        self.specs: dict[tuple[str, int], tuple[Any, Any, Any, Any, frozenset[str], TaskSpecInfo]] = {}
        # The store's encrypted overlay networks by name, read once per pass when a task needs them.
        self.encrypted: frozenset[str] | None = None
        self.tx: Transaction | None = None

    def spec_info(self, service_id: str, version: int, spec: dict[str, Any]) -> TaskSpecInfo:
        encrypted = self._encrypted() if spec.get("networks") else frozenset()
        parts = (spec.get("placement"), spec.get("resources"), spec.get("endpoint"), spec.get("networks"), encrypted)
        hit = self.specs.get((service_id, version))
        if hit is not None and hit[:5] == parts:
            return hit[5]
        info = describe_spec(spec, encrypted)
        if len(self.specs) > 10_000:
            self.specs.clear()
        self.specs[(service_id, version)] = (*parts, info)
        return info

    def _encrypted(self) -> frozenset[str]:
        if self.encrypted is None:
            self.encrypted = encrypted_networks(self.tx) if self.tx is not None else frozenset()
        return self.encrypted


def encrypted_networks(tx: Transaction) -> frozenset[str]:
    """Names of the stored overlay networks made with `--opt encrypted` (their tasks need a node
    that can make a WireGuard interface: scheduling/filters.py EncryptionFilter)."""
    out = set()
    for raw in tx.list("network"):
        spec = raw.get("spec") or {}
        options = {**(spec.get("driver_opts") or {}), **((raw.get("allocation") or {}).get("options") or {})}
        if (spec.get("driver") or "overlay") == "overlay" and "encrypted" in options:
            out.add(raw["name"])
    return frozenset(out)


_lock = threading.Lock()
_seen = _Seen()


def _token(raw: dict[str, Any], key: str) -> tuple[Any, Any]:
    nested = raw.get(key)
    return (raw.get("version"), nested if isinstance(nested, (dict, list)) else None)


def _unchanged(seen: tuple[Any, Any] | None, raw: dict[str, Any], key: str) -> bool:
    # Identity, not equality: the same object is the same stored version, and we hold it, so
    # its id cannot be reused. Rows written in the open transaction decode afresh each read.
    return seen is not None and seen[1] is not None and seen[0] == raw.get("version") and seen[1] is raw.get(key)


def task_info(raw: dict[str, Any], seen: _Seen | None = None) -> TaskInfo:
    """A stored task as the core sees it."""
    status = raw["status"]
    version = int(raw.get("spec_version") or 0)
    spec = raw.get("spec") or {}
    return TaskInfo(
        raw["id"],
        raw["service_id"],
        version,
        raw.get("node_id") or "",
        _STATES[status["state"]],
        _STATES[raw["desired_state"]],
        seen.spec_info(raw["service_id"], version, spec) if seen is not None else describe_spec(spec),
        (raw.get("created_at") or 0.0, raw.get("slot") or 0, raw["id"]),
        status.get("err") or "",
    )


def _sync_nodes(tx: Transaction, seen: _Seen, now: float) -> None:
    present = set()
    for raw in tx.list("node"):
        node_id = raw["id"]
        present.add(node_id)
        key = "status" if isinstance(raw.get("status"), dict) else "labels"
        if _unchanged(seen.nodes.get(node_id), raw, key):
            continue
        seen.core.add_or_update_node(Node.from_dict(raw), now)
        seen.nodes[node_id] = _token(raw, key)
    for node_id in [n for n in seen.nodes if n not in present]:
        seen.core.remove_node(node_id)
        del seen.nodes[node_id]


def _sync_tasks(tx: Transaction, seen: _Seen, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed the core the changed tasks; returns (every stored task, PENDING ones to shut down)."""
    core = seen.core
    services = {s["id"] for s in tx.list("service")}
    raws = tx.list("task")
    present = set()
    shutdown = []
    for raw in raws:
        task_id = raw["id"]
        present.add(task_id)
        if _unchanged(seen.tasks.get(task_id), raw, "status"):
            continue
        seen.tasks[task_id] = _token(raw, "status")
        known = core.all_tasks.get(task_id)
        if (known is not None and known.node_id == (raw.get("node_id") or "")
                and known.state == _STATES[raw["status"]["state"]] and known.desired == _STATES[raw["desired_state"]]):
            continue  # what the core has already (most often: the scheduler's own write, read back)
        t = task_info(raw, seen)
        if t.state == _PENDING and (t.desired > _COMPLETE or t.service_id not in services):
            old = core.all_tasks.get(task_id)
            if old is not None:
                core.delete_task(old)
            if t.desired > _COMPLETE:
                shutdown.append(raw)
            continue
        core.update_task(t, now)
    for task_id in [i for i in seen.tasks if i not in present]:
        old = core.all_tasks.get(task_id)
        if old is not None:
            core.delete_task(old)
        del seen.tasks[task_id]
    return raws, shutdown


def _write(tx: Transaction, seen: _Seen, raw: dict[str, Any], d: Decision | None, now: float) -> None:
    # The stored record changed in place of Task.from_dict/advance/to_dict (the same fields:
    # the status keeps its container, pid and exit code); 100,000 of them at once is common.
    task = dict(raw)
    status = dict(raw["status"])
    if d is None:
        status.update(state=TaskState.SHUTDOWN.text, timestamp=now, message="shutdown", err="")
    elif d.new.state == _PENDING:
        if status.get("err") == d.new.err:
            return  # the same explanation again: nothing to write, a converged pass writes nothing
        status["err"] = d.new.err
    else:
        task["node_id"] = d.new.node_id
        status.update(state=TaskState.ASSIGNED.text, timestamp=now, message=d.message, err="")
    task["status"] = status
    tx.update("task", task)
    seen.tasks[task["id"]] = (None, None)  # read it again next pass, whether or not this commits


def reconcile(tx: Transaction, now: float) -> None:
    global _seen
    with _lock:
        try:
            _pass(tx, _seen, now)
        except BaseException:
            # The core may hold decisions that were never written: start again from the store.
            _seen = _Seen()
            raise


def _pass(tx: Transaction, seen: _Seen, now: float) -> None:
    _sync_nodes(tx, seen, now)
    seen.tx, seen.encrypted = tx, None
    try:
        raws, shutdown = _sync_tasks(tx, seen, now)
    finally:
        seen.tx, seen.encrypted = None, None
    core = seen.core
    if not shutdown and not core.unassigned and not core.pending_preassigned:
        return
    decisions = core.process_preassigned() + core.tick(now)
    if not decisions and not shutdown:
        return
    by_id = {raw["id"]: raw for raw in raws}
    for raw in shutdown:
        _write(tx, seen, raw, None, now)
    for d in decisions:
        raw = by_id.get(d.old.id)
        if raw is not None:
            _write(tx, seen, raw, d, now)


def reset() -> None:
    """Forget what the passes have seen (a new manager term, or a test)."""
    global _seen
    with _lock:
        _seen = _Seen()
