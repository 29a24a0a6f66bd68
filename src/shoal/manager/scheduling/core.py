"""The scheduler proper (swarmkit manager/scheduler/scheduler.go, nodeset.go, decision_tree.go),
pure and incremental: it is told of node and task changes (create/update/delete, as swarmkit's
event loop is) and keeps its node set between passes; `process_preassigned` and `tick` return
decisions for the caller to write.

A tick groups the unassigned tasks by (service, spec version): one group shares one spec, so the
pipeline is set once and one decision tree is built for it. The tree has a level per spread
preference (branches = the nodes' values of that label, "" for nodes without it), and each leaf
keeps the best N nodes that pass the filters (N = tasks in the group), ordered by nodeLess:
recent failures (only once a node has 5 within 5 minutes), then fewest active tasks of the
service, then fewest active tasks in all. Tasks are split over branches so the branch totals
(existing tasks of the service included) even out, then dealt to a leaf's ordered nodes: the
best node is filled until the next one is as good, then one task each in turn, each node run
through the pipeline again after every assignment (resources, host ports, max replicas).

Where swarmkit leaves order to Go's map iteration, this goes in a fixed order (tasks by
creation and slot, nodes as given, ties broken by node ID), so a placement can be tested."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from shoal.manager.constraints import ENGINE_LABEL_PREFIX, NODE_LABEL_PREFIX, has_prefix_fold
from shoal.manager.scheduling.filters import Pipeline
from shoal.manager.scheduling.nodeinfo import COMPLETE, MAX_FAILURES, NodeInfo, TaskInfo
from shoal.model.cluster import Node, TaskState

PENDING = int(TaskState.PENDING)
ASSIGNED = int(TaskState.ASSIGNED)
RUNNING = int(TaskState.RUNNING)
FAILED = int(TaskState.FAILED)
REJECTED = int(TaskState.REJECTED)

ASSIGNED_MESSAGE = "scheduler assigned task to node"
CONFIRMED_MESSAGE = "scheduler confirmed task can run on preassigned node"


class Decision(NamedTuple):
    """old: the task as it was; new: as the scheduler wants it stored (ASSIGNED with a node,
    or still PENDING with `err` saying why), with the status message to record."""

    old: TaskInfo
    new: TaskInfo
    message: str


class _Tree:
    """decisionTree: `tasks` of the service under this branch; `next` by label value, or, at a
    leaf, the candidate nodes."""

    __slots__ = ("tasks", "next", "nodes", "ordered")

    def __init__(self) -> None:
        self.tasks = 0
        self.next: dict[str, _Tree] | None = None
        self.nodes: list[NodeInfo] = []
        self.ordered = False


def _spread_value(n: NodeInfo, descriptor: str) -> str | None:
    """The node's branch for one spread preference; None when swarmkit skips the descriptor
    (only node.labels.* and engine.labels.* are supported)."""
    if has_prefix_fold(descriptor, NODE_LABEL_PREFIX):
        return n.node.labels.get(descriptor[len(NODE_LABEL_PREFIX):], "")
    if has_prefix_fold(descriptor, ENGINE_LABEL_PREFIX):
        return n.node.engine.labels.get(descriptor[len(ENGINE_LABEL_PREFIX):], "")
    return None


class Scheduler:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}  # nodeSet
        self.all_tasks: dict[str, TaskInfo] = {}
        self.unassigned: dict[str, TaskInfo] = {}
        self.pending_preassigned: dict[str, TaskInfo] = {}
        self.preassigned: set[str] = set()
        self.pipeline = Pipeline()

    # -- the node set ------------------------------------------------------------------------

    def add_or_update_node(self, node: Node, now: float = 0.0) -> None:
        info = self.nodes.get(node.id)
        if info is not None:
            info.set_node(node)
            return
        info = self.nodes[node.id] = NodeInfo(node, now)
        # A node seen again (removed, then back) takes up the tasks it still has.
        for t in self.all_tasks.values():
            if t.node_id == node.id and t.id not in self.pending_preassigned and PENDING <= t.state <= RUNNING:
                info.add_task(t)

    def remove_node(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)

    # -- task events (swarmkit's createTask / updateTask / deleteTask) --------------------------

    def create_task(self, t: TaskInfo) -> bool:
        """True when a tick is worth running."""
        if t.state < PENDING or t.state > RUNNING:
            return False
        self.all_tasks[t.id] = t
        if not t.node_id:
            self.unassigned[t.id] = t
            return True
        if t.state == PENDING:
            self.preassigned.add(t.id)
            self.pending_preassigned[t.id] = t
            return False
        info = self.nodes.get(t.node_id)
        if info is not None:
            info.add_task(t)
        return False

    def update_task(self, t: TaskInfo, now: float = 0.0) -> bool:
        if t.state < PENDING:
            return False
        old = self.all_tasks.get(t.id)
        if t.state > RUNNING:
            if old is None:
                return False
            if t.state != old.state and t.state in (FAILED, REJECTED) and t.id not in self.preassigned:
                # The node is pushed back for this service version once it keeps failing it.
                info = self.nodes.get(t.node_id)
                if info is not None:
                    info.task_failed(t, now)
            self.delete_task(old)
            return True
        if not t.node_id:
            if old is not None:
                self.delete_task(old)
            self.all_tasks[t.id] = t
            self.unassigned[t.id] = t
            return True
        if t.state == PENDING:
            if old is not None:
                self.delete_task(old)
            self.preassigned.add(t.id)
            self.all_tasks[t.id] = t
            self.pending_preassigned[t.id] = t
            return False
        self.all_tasks[t.id] = t
        info = self.nodes.get(t.node_id)
        if info is not None:
            info.add_task(t)
        return False

    def delete_task(self, t: TaskInfo) -> bool:
        self.all_tasks.pop(t.id, None)
        self.preassigned.discard(t.id)
        self.pending_preassigned.pop(t.id, None)
        self.unassigned.pop(t.id, None)
        info = self.nodes.get(t.node_id)
        return info is not None and info.remove_task(t)

    # -- scheduling --------------------------------------------------------------------------

    def process_preassigned(self) -> list[Decision]:
        """Tasks given a node already (global services): only that node is filtered. A task
        that does not fit stays pending with the pipeline's explanation (no "no suitable
        node" around it, as swarmkit's taskFitNode)."""
        decisions = []
        for t in sorted(self.pending_preassigned.values(), key=lambda t: t.order):
            info = self.nodes.get(t.node_id)
            if info is None:
                continue  # the node is gone: nothing to decide
            self.pipeline.set_task(t)
            if not self.pipeline.process(info):
                new = t.moved(t.node_id, t.state, self.pipeline.explain())
                self.all_tasks[t.id] = new
                self.pending_preassigned[t.id] = new
                decisions.append(Decision(t, new, ""))
                continue
            new = t.moved(t.node_id, ASSIGNED)
            self.all_tasks[t.id] = new
            del self.pending_preassigned[t.id]
            info.add_task(new)
            decisions.append(Decision(t, new, CONFIRMED_MESSAGE))
        return decisions

    def tick(self, now: float = 0.0) -> list[Decision]:
        groups: dict[tuple[str, int], dict[str, TaskInfo]] = {}
        for t in sorted(self.unassigned.values(), key=lambda t: t.order):
            groups.setdefault((t.service_id, t.spec_version), {})[t.id] = t
        self.unassigned = {}
        decisions: dict[str, Decision] = {}
        for group in groups.values():
            self._schedule_group(group, decisions, now)
        return list(decisions.values())

    def _schedule_group(self, group: dict[str, TaskInfo], decisions: dict[str, Decision], now: float) -> None:
        t = next(iter(group.values()))
        self.pipeline.set_task(t)
        service, version = t.service_id, t.spec_version

        def key(n: NodeInfo) -> tuple[Any, ...]:
            # nodeLess as a sort key; failures count only from MAX_FAILURES on, as in swarmkit.
            failed = n.recent_failures(service, version, now) if n.failures else 0
            return (failed if failed >= MAX_FAILURES else 0, n.by_service.get(service, 0), n.active)

        tree = self._tree(service, t.spec.preferences, len(group))
        self._on_subtree(len(group), group, tree, decisions, key)
        if group:
            explanation = self.pipeline.explain()
            err = f"no suitable node ({explanation})" if explanation else "no suitable node"
            for task in group.values():
                new = task.moved("", task.state, err)
                self.all_tasks[task.id] = new
                self.unassigned[task.id] = new  # tried again at the next tick
                decisions[task.id] = Decision(task, new, "")

    def _tree(self, service: str, preferences: tuple[str, ...], max_assignments: int) -> _Tree:
        """nodeSet.tree: every node counts its tasks of the service into its branches; only
        nodes that pass the pipeline become candidates."""
        root = _Tree()
        process = self.pipeline.process
        for n in self.nodes.values():
            count = n.by_service.get(service, 0)
            tree = root
            for descriptor in preferences:
                value = _spread_value(n, descriptor)
                if value is None:
                    continue
                tree.tasks += count
                if tree.next is None:
                    tree.next = {}
                branch = tree.next.get(value)
                if branch is None:
                    branch = tree.next[value] = _Tree()
                tree = branch
            tree.tasks += count
            if process(n):
                tree.nodes.append(n)
        return root

    def _ordered(self, leaf: _Tree, key: Callable[[NodeInfo], Any], max_assignments: int) -> list[NodeInfo]:
        """decisionTree.orderedNodes: best first. A leaf visited again is filtered again, its
        nodes having taken tasks since."""
        if leaf.ordered:
            process = self.pipeline.process
            leaf.nodes = [n for n in leaf.nodes if process(n)]
            leaf.nodes.sort(key=lambda n: (key(n), n.id))
        else:
            leaf.nodes.sort(key=lambda n: (key(n), n.id))
            del leaf.nodes[max_assignments:]  # the heap keeps the N best
            leaf.ordered = True
        return leaf.nodes

    def _on_subtree(self, n: int, group: dict[str, TaskInfo], tree: _Tree, decisions: dict[str, Decision],
                    key: Callable[[NodeInfo], Any], max_assignments: int | None = None) -> int:
        """scheduleNTasksOnSubtree: split n tasks over the branches so they even out."""
        if max_assignments is None:
            max_assignments = n
        if tree.next is None:
            nodes = self._ordered(tree, key, max_assignments)
            if not nodes:
                return 0
            return self._on_nodes(n, group, nodes, decisions, key)
        scheduled = 0
        in_usable = tree.tasks
        no_room: set[int] = set()
        branches = list(tree.next.values())
        converging = True
        while scheduled != n and len(no_room) != len(branches) and converging:
            usable = len(branches) - len(no_room)
            desired, remainder = divmod(in_usable + n - scheduled, usable)
            converging = False
            for i, sub in enumerate(branches):
                if i in no_room:
                    continue
                if sub.tasks < desired or (sub.tasks == desired and remainder > 0):
                    converging = True
                    to_assign = desired - sub.tasks
                    if remainder > 0:
                        to_assign += 1
                    res = self._on_subtree(to_assign, group, sub, decisions, key, max_assignments)
                    if res < to_assign:
                        no_room.add(i)
                        in_usable -= sub.tasks
                    elif remainder > 0:
                        remainder -= 1
                    scheduled += res
        return scheduled

    def _on_nodes(self, n: int, group: dict[str, TaskInfo], nodes: list[NodeInfo], decisions: dict[str, Decision],
                  key: Callable[[NodeInfo], Any]) -> int:
        """scheduleNTasksOnNodes: fill the best node until the next is as good, then one task
        per node in turn; a node that no longer passes the pipeline is skipped from then on."""
        scheduled = 0
        failed: set[int] = set()
        it = 0
        count = len(nodes)
        process = self.pipeline.process
        all_tasks = self.all_tasks
        for task_id in list(group):
            t = group[task_id]
            if task_id in decisions:
                continue
            info = nodes[it % count]
            new = TaskInfo(task_id, t.service_id, t.spec_version, info.id, ASSIGNED, t.desired, t.spec, t.order)
            all_tasks[task_id] = new
            info.add_task(new)
            decisions[task_id] = Decision(t, new, ASSIGNED_MESSAGE)
            del group[task_id]
            scheduled += 1
            if scheduled == n:
                return scheduled
            if it + 1 < count:
                # First pass: stay on this node until the next one is strictly better.
                if key(nodes[(it + 1) % count]) < key(info):
                    it += 1
            else:
                it += 1
            start = it
            while (it % count) in failed or not process(nodes[it % count]):
                failed.add(it % count)
                it += 1
                if it - start == count:
                    return scheduled  # no node meets the filters any more
        return scheduled

    # -- helpers for callers -----------------------------------------------------------------

    def load(self, nodes: Iterable[Node], tasks: Iterable[TaskInfo], now: float = 0.0) -> None:
        """The initial state (setupTasksList + buildNodeSet)."""
        for node in nodes:
            self.add_or_update_node(node, now)
        for t in tasks:
            if t.state == PENDING and t.desired > COMPLETE:
                continue  # unassigned work nobody wants any more
            self.create_task(t)
