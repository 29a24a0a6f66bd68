"""Waiting for one service to converge, with the display `docker service create|update|rollback`
prints (docker/cli cli/command/service/progress/progress.go, rendered as jsonmessage does):

    overall progress: 2 out of 2 tasks
    1/2: running   [==================================================>]
    2/2: running   [==================================================>]
    verify: Service web converged

and for jobs `job progress: 3 out of 3 complete`, `active tasks: 0 out of 0 tasks`, then `job
complete`. On a terminal the lines are rewritten in place; elsewhere each line is printed when
its text changes (jsonmessage prints every update; printing only changes keeps logs short)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from shoal.api.client import Client
from shoal.errors import ShoalError
from shoal.model.cluster import TaskState

# progress.go's numberedStates: the bar of a task is its state's number out of 9.
_NUMBERED = {TaskState.NEW: 1, TaskState.PENDING: 3, TaskState.ASSIGNED: 4, TaskState.ACCEPTED: 5,
             TaskState.PREPARING: 6, TaskState.READY: 7, TaskState.STARTING: 8, TaskState.RUNNING: 9,
             TaskState.COMPLETE: 10, TaskState.SHUTDOWN: 11, TaskState.FAILED: 12, TaskState.REJECTED: 13}
_MAX_PROGRESS = 9
_MAX_BARS = 20
_LONGEST_STATE = 9  # len("allocated"), len("preparing")
POLL = 0.2  # progress.go polls every 200 ms


def _terminal(state: TaskState) -> bool:
    return _NUMBERED.get(state, 99) > _NUMBERED[TaskState.RUNNING]


def trunc_error(message: str) -> str:
    message = message.replace("\n", " ")
    return message if len(message) <= 75 else message[:74] + "…"


class Display:
    """jsonmessage.DisplayJSONMessagesStream for progress records keyed by ID."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.width = shutil.get_terminal_size((80, 24)).columns if self.tty else 0

    def bar(self, current: int, total: int) -> str:
        """JSONProgress.String() with HideCounts: the bar only, on a terminal wider than 110."""
        if not self.tty or self.width <= 110:
            return ""
        filled = min(50, int(current / total * 100) // 2)
        return f"[{'=' * filled}>{' ' * (50 - filled)}] "

    def write(self, ident: str, action: str, current: int = 0, total: int = 0) -> None:
        text = f"{ident}: {action}" if ident else action
        if self.tty and total:
            text = f"{text} {self.bar(current, total)}"
        if self.lines.get(ident) == text:
            return
        if not self.tty:
            self.lines[ident] = text
            self.out.write(text.rstrip() + "\n")
            self.out.flush()
            return
        if ident and ident in self.lines:
            up = len(self.order) - self.order.index(ident)
            self.out.write(f"\x1b[{up}A\x1b[2K\r{text}\x1b[{up}B\r")
        else:
            if ident:
                self.order.append(ident)
            self.out.write(text + "\n")
        self.lines[ident] = text
        self.out.flush()

    def message(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _tasks_by(tasks: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """tasksBySlot / tasksByNode: per slot, the task with the lowest desired then observed state."""
    chosen: dict[Any, dict[str, Any]] = {}
    for task in tasks:
        desired, state = TaskState.parse(task["desired_state"]), TaskState.parse(task["status"]["state"])
        if desired not in _NUMBERED or state not in _NUMBERED:
            continue
        other = chosen.get(task[key])
        if other is not None:
            o_desired, o_state = TaskState.parse(other["desired_state"]), TaskState.parse(other["status"]["state"])
            if _NUMBERED[o_desired] < _NUMBERED[desired]:
                continue
            if _NUMBERED[o_desired] == _NUMBERED[desired] and _NUMBERED[o_state] <= _NUMBERED[state]:
                continue
        chosen[task[key]] = task
    return chosen


class _Updater:
    def __init__(self, display: Display) -> None:
        self.display = display
        self.initialized = False
        self.done = False
        self.slot_map: dict[Any, int] = {}

    def overall(self, running: int, desired: int, rollback: bool) -> None:
        action = (f"rolling back update: {running} out of {desired} tasks" if rollback
                  else f"{running} out of {desired} tasks")
        self.display.write("overall progress", action)

    def task_line(self, ident: str, task: dict[str, Any]) -> None:
        err = task["status"].get("err") or ""
        if err:
            self.display.write(ident, trunc_error(err))
            return
        desired, state = TaskState.parse(task["desired_state"]), TaskState.parse(task["status"]["state"])
        if not _terminal(desired) and not _terminal(state):
            self.display.write(ident, f"{state.text:<{_LONGEST_STATE}}", _NUMBERED[state], _MAX_PROGRESS)

    def running(self, task: dict[str, Any]) -> bool:
        return (not _terminal(TaskState.parse(task["desired_state"]))
                and task["status"]["state"] == TaskState.RUNNING.text)

    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], active: set[str], rollback: bool) -> bool:
        raise NotImplementedError


class _Replicated(_Updater):
    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], active: set[str], rollback: bool) -> bool:
        replicas = int(svc["spec"].get("replicas", 1))
        if not self.initialized:
            self.overall(0, replicas, rollback)
            if replicas <= _MAX_BARS:
                for i in range(1, replicas + 1):
                    self.display.write(f"{i}/{replicas}", " ")
            self.initialized = True
        by_slot = {slot: t for slot, t in _tasks_by(tasks, "slot").items()
                   if not t["node_id"] or t["node_id"] in active}
        if self.done and any(t["status"]["state"] != "running" for t in by_slot.values()):
            self.done = False
        running = 0
        for slot, task in sorted(by_slot.items()):
            mapped = self.slot_map.setdefault(slot, len(self.slot_map) + 1)
            running += self.running(task)
            if not self.done and replicas <= _MAX_BARS and mapped <= replicas:
                self.task_line(f"{mapped}/{replicas}", task)
        if not self.done:
            self.overall(running, replicas, rollback)
            self.done = running == replicas
        return running == replicas


class _Global(_Updater):
    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], active: set[str], rollback: bool) -> bool:
        by_node = _tasks_by(tasks, "node_id")
        count = len(by_node)
        if not self.initialized:
            if count == 0:
                self.display.write("overall progress", "waiting for new tasks")
                return False
            self.overall(0, count, rollback)
            self.initialized = True
        if self.done and any(t["status"]["state"] != "running" for t in by_node.values()):
            self.done = False
        running = 0
        for node, task in sorted(by_node.items()):
            if node in active:
                running += self.running(task)
                if not self.done and count <= _MAX_BARS:
                    self.task_line(node[:12], task)
        if not self.done:
            self.overall(running, count, rollback)
            self.done = running == count
        return running == count


class _ReplicatedJob(_Updater):
    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], active: set[str], rollback: bool) -> bool:
        total = int(svc["spec"].get("replicas", 1))
        concurrent = svc["spec"].get("max_concurrent")
        concurrent = total if concurrent is None else int(concurrent)
        if not self.initialized:
            self.overall_job(0, 0, total, concurrent)
            if total <= _MAX_BARS:
                for i in range(1, total + 1):
                    self.display.write(f"{i}/{total}", " ")
            self.initialized = True
        by_slot: dict[int, dict[str, Any]] = {}
        for task in tasks:
            state = TaskState.parse(task["status"]["state"])
            if state not in _NUMBERED or TaskState.parse(task["desired_state"]) not in _NUMBERED:
                continue
            other = by_slot.get(task["slot"])
            if other is None or _NUMBERED[TaskState.parse(other["status"]["state"])] > _NUMBERED[state]:
                by_slot[task["slot"]] = task
        running = complete = 0
        for slot, task in sorted(by_slot.items()):
            state = TaskState.parse(task["status"]["state"])
            if total <= _MAX_BARS:
                ident = f"{slot + 1}/{total}"  # swarmkit's job slots run from 0; docker/cli shows Slot+1
                if task["status"].get("err"):
                    self.display.write(ident, trunc_error(task["status"]["err"]))
                else:
                    self.display.write(ident, f"{state.text:<{_LONGEST_STATE}}", _NUMBERED[state],
                                       _NUMBERED[TaskState.COMPLETE])
            running += state < TaskState.COMPLETE
            complete += state == TaskState.COMPLETE
        self.overall_job(running, complete, total, concurrent)
        return complete == total

    def overall_job(self, active: int, completed: int, total: int, concurrent: int) -> None:
        digits, active_digits = len(str(total)), len(str(concurrent))
        self.display.write("job progress", f"{completed:>{digits}} out of {total} complete", completed, total)
        desired = min(total - completed, concurrent)
        self.display.write("active tasks", f"{active:>{active_digits}} out of {desired:>{active_digits}} tasks")


class _GlobalJob(_Updater):
    """globalJobProgressUpdater: the nodes that have a task when the display starts are the job."""

    def __init__(self, display: Display) -> None:
        super().__init__(display)
        self.nodes: set[str] = set()

    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], active: set[str], rollback: bool) -> bool:
        if not self.initialized:
            if not tasks and active:
                self.display.write("job progress", "waiting for tasks")
                return False
            self.nodes = {t["node_id"] for t in tasks}
            self.overall_job(0)
            self.initialized = True
        by_node: dict[str, dict[str, Any]] = {}
        for task in tasks:
            if task["node_id"] not in self.nodes:
                continue
            other = by_node.get(task["node_id"])
            state = TaskState.parse(task["status"]["state"])
            if other is None or _NUMBERED.get(TaskState.parse(other["status"]["state"]), 99) > _NUMBERED.get(state, 99):
                by_node[task["node_id"]] = task
        complete = 0
        for node, task in sorted(by_node.items()):
            state = TaskState.parse(task["status"]["state"])
            if len(self.nodes) <= _MAX_BARS:
                if task["status"].get("err"):
                    self.display.write(node, trunc_error(task["status"]["err"]))
                else:
                    self.display.write(node, f"{state.text:<{_LONGEST_STATE}}", _NUMBERED.get(state, 0),
                                       _NUMBERED[TaskState.COMPLETE])
            complete += state == TaskState.COMPLETE
        self.overall_job(complete)
        return complete == len(self.nodes)

    def overall_job(self, complete: int) -> None:
        total = len(self.nodes)
        self.display.write("job progress", f"{complete:>{len(str(total))}} out of {total} complete", complete, total)


def _updater(mode: str, display: Display) -> _Updater:
    return {"global": _Global, "replicated-job": _ReplicatedJob, "global-job": _GlobalJob}.get(
        mode, _Replicated)(display)


def wait_on_service(client: Client, ref: str, quiet: bool = False, out: TextIO | None = None,
                    poll: float = POLL) -> int:
    """WaitOnService: until the service runs its tasks at its current spec version and they
    stayed up for update_config.monitor (jobs: until every task completed). A paused update or
    rollback is an error, as Docker ends it."""
    display = Display(out or sys.stdout) if not quiet else None
    updater: _Updater | None = None
    converged_at: float | None = None
    rollback = False
    message: str | None = None
    try:
        while True:
            svc = client.get(f"/services/{ref}")
            spec = svc.get("spec") or {}
            monitor = float((spec.get("update_config") or {}).get("monitor") or 5.0)
            mode = spec.get("mode") or "replicated"
            if updater is None:
                updater = _updater(mode, display or Display(_Null(), tty=False))
            status = svc.get("update_status") or {}
            state = status.get("state")
            if state == "updating":
                rollback = False
            elif state == "completed" and converged_at is None:
                # docker/cli: the manager finished the update (its monitor passed) before this
                # display saw the tasks converge; nothing is left to watch.
                return 0
            elif state == "paused":
                raise ShoalError(f"service update paused: {status.get('message', '')}")
            elif state == "rollback_started":
                if not rollback and status.get("message") and display:
                    display.write("rollback", status["message"])
                rollback = True
            elif state == "rollback_paused":
                raise ShoalError(f"service rollback paused: {status.get('message', '')}")
            elif state == "rollback_completed":
                if converged_at is None:
                    message = status.get("message")
                rollback = True
            if converged_at is not None and time.monotonic() - converged_at >= monitor:
                if display:
                    display.write("verify", f"Service {ref} converged")
                    if message:
                        display.write("rollback", message)
                return 0
            # moby's `_up-to-date` filter: made at the service's spec version, or not dirty (a
            # scale, or a rollback to the spec a task runs, leaves it in place).
            tasks = client.get("/tasks", service=svc["id"], up_to_date="1")
            if mode.endswith("job"):  # a job counts its iteration's tasks only (JobIteration)
                tasks = [t for t in tasks if t.get("spec_version") == svc.get("spec_version")]
            active = {n["id"] for n in client.get("/nodes")
                      if (n.get("status") or {}).get("state", n.get("state")) != "down"}
            converged = updater.update(svc, tasks, active, rollback)
            if converged:
                if mode.endswith("job"):
                    if display:
                        display.message("job complete")
                    return 0
                if converged_at is None:
                    converged_at = time.monotonic()
                wait = monitor - (time.monotonic() - converged_at)
                if wait >= 0 and display:
                    display.write("verify", f"Waiting {int(wait) + 1} seconds to verify that tasks are stable...")
            elif converged_at is not None:
                if display:
                    display.write("verify", "Detected task failure")
                converged_at = None
            time.sleep(poll)
    except KeyboardInterrupt:
        if display and converged_at is None:
            display.message("Operation continuing in background.")
            display.message(f"Use `shoal service ps {ref}` to check progress.")
        return 0


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
