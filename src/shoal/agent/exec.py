"""The executor and its controllers, as swarmkit's agent/exec: the worker drives each task through
a controller's steps (prepare, start, wait, shutdown, terminate, remove) and never calls a
container runtime itself, so a second runtime (Docker Engine API, Podman) is another Executor.

This one runs tasks as shoal containers (runtime.ContainerManager, or any object with its
methods). Controllers hold nothing but the task's container ID, so making one per step costs
nothing on the start path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.errors import NotFound
from shoal.runtime.spec import ContainerSpec


@dataclass(frozen=True)
class ExitStatus:
    """What `wait` found: the process still runs (`running`), or its exit code."""

    running: bool
    exit_code: int | None = None
    pid: int = 0
    pid_start: int = 0


class Controller(Protocol):
    container_id: str

    def prepare(self, spec: ContainerSpec) -> str: ...
    def start(self, before_start: Callable[[Any], None] | None = None) -> Any: ...
    def inspect(self) -> Any: ...
    def wait(self) -> ExitStatus: ...
    def exec_argv(self, argv: list[str]) -> list[str]: ...
    def shutdown(self, grace: int) -> None: ...
    def terminate(self) -> None: ...
    def cleanup(self) -> None: ...
    def remove(self) -> None: ...


class ContainerController:
    """One task's container: each step is one call into the container manager."""

    def __init__(self, containers: Any, container_id: str = "") -> None:
        self._containers = containers
        self.container_id = container_id

    def prepare(self, spec: ContainerSpec) -> str:
        """Create the container (image unpacked, bundle written, network attached): swarmkit's
        Prepare. Returns its ID."""
        self.container_id = self._containers.create(spec).id
        return self.container_id

    def start(self, before_start: Callable[[Any], None] | None = None) -> Any:
        """Run its process; `before_start` runs with the created container just before (the
        resolver listens in its namespace first). Returns the container record."""
        self._containers.start(self.container_id, before_start=before_start)
        return self._containers.get(self.container_id)

    def inspect(self) -> Any:
        return self._containers.get(self.container_id)

    def wait(self) -> ExitStatus:
        """Not blocking: the exit status if the process has exited (conmon recorded it), else
        running. The worker waits on a pidfd of the process instead of a thread per task.
        Raises NotFound when the container is gone."""
        state = self._containers.get(self.container_id).state
        if state.status in ("exited", "dead"):
            return ExitStatus(running=False, exit_code=state.exit_code)
        return ExitStatus(running=True, pid=state.pid, pid_start=state.pid_start)

    def exec_argv(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` inside the container (health probes)."""
        return list(self._containers.exec_argv(self.container_id, argv))

    def shutdown(self, grace: int) -> None:
        """The stop signal, then SIGKILL after `grace` seconds (swarmkit Shutdown)."""
        try:
            self._containers.stop(self.container_id, timeout=grace)
        except NotFound:
            pass

    def terminate(self) -> None:
        """SIGKILL now (swarmkit Terminate)."""
        self._containers.kill(self.container_id, "KILL")

    def cleanup(self) -> None:
        """An exited container's mounts, cgroup and network taken down; its record stays."""
        self._containers.cleanup(self.container_id)

    def remove(self) -> None:
        """Remove the container and everything it holds, its anonymous volumes too (swarmkit's
        container adapter removes with RemoveVolumes)."""
        try:
            self._containers.remove(self.container_id, force=True, volumes_too=True)
        except NotFound:
            pass  # removed meanwhile: done all the same


class ContainerExecutor:
    """swarmkit's Executor for shoal containers."""

    def __init__(self, containers: Any) -> None:
        self.containers = containers
        # Where the runtime keeps each container's state: the worker checks exit files there
        # with a stat, the cheapest look on every pass.
        self.root = str(getattr(containers, "root", ""))

    def warm(self) -> None:
        """The runtime's once-per-process start-up work, ahead of the first task (any object
        without it has none)."""
        getattr(self.containers, "warm", lambda: None)()

    def controller(self, container_id: str = "") -> ContainerController:
        return ContainerController(self.containers, container_id)

    def exit_recorded(self, container_id: str) -> bool:
        """Has conmon written the container's exit file (a stat, no parsing)?"""
        import os

        return os.path.exists(f"{self.root}/{container_id}/exits/{container_id}")

    def tasks_by_container(self, label: str) -> dict[str, str]:
        """Container ID -> task ID of every container carrying the task label."""
        return dict(self.containers.label_values(label))
