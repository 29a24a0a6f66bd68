"""A service's logs on this node: every task container's log (conmon's k8s-file lines), with the
task each line came from, read once or followed incrementally by file offset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal import paths
from shoal.model.cluster import Node, Task
from shoal.runtime.logs import LogLine, LogReader
from shoal.store.base import Store


class TaskLogs:
    def __init__(self, store: Store, service_id: str, node_id: str) -> None:
        self.store = store
        self.service_id = service_id
        self.node_id = node_id
        self._offsets: dict[str, int] = {}
        self._readers: dict[str, LogReader] = {}

    def _tasks(self) -> list[tuple[Task, Path]]:
        root = paths.state_root() / "containers"
        out = []
        for raw in self.store.list("task"):
            task = Task.from_dict(raw)
            if task.service_id == self.service_id and task.node_id == self.node_id and task.status.container_id:
                out.append((task, root / task.status.container_id / "ctr.log"))
        return out

    def _record(self, task: Task, node: str, line: LogLine) -> dict[str, Any]:
        return {"task_id": task.id, "service": task.service_name, "slot": task.slot, "node": node,
                "stream": line.stream, "time": line.docker_time(),
                "line": line.data.decode("utf-8", "replace")}

    def _node_name(self) -> str:
        raw = self.store.get("node", self.node_id)
        return Node.from_dict(raw).hostname if raw else self.node_id

    def _read(self, path: Path) -> list[LogLine]:
        key = str(path)
        reader = self._readers.setdefault(key, LogReader())
        try:
            with path.open("rb") as f:
                size = path.stat().st_size
                offset = self._offsets.get(key, 0)
                if size < offset:  # conmon truncated the file at its size cap
                    offset = 0
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete, _, _rest = data.rpartition(b"\n")
        if not complete and not data.endswith(b"\n"):
            return []
        self._offsets[key] = offset + len(complete) + 1
        lines = []
        for raw in complete.split(b"\n"):
            line = reader.feed(raw + b"\n")
            if line is not None:
                lines.append(line)
        return lines

    def existing(self, tail: int | None) -> list[dict[str, Any]]:
        node = self._node_name()
        records: list[dict[str, Any]] = []
        for task, path in self._tasks():
            lines = self._read(path)
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            records += [self._record(task, node, line) for line in lines]
        records.sort(key=lambda r: r["time"])
        return records

    def new_lines(self) -> list[dict[str, Any]]:
        return self.existing(None)
