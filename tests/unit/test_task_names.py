"""The NAME and NODE columns of service ps / stack ps / node ps as docker/cli's task.Print:
`service.slot` (`service.nodeid` for a global task), previous tasks of a name indented ` \\_ `
in a table, and --no-resolve's IDs where the names were (generateTaskNames)."""

from __future__ import annotations

from typing import Any

from shoal.cli.swarmfmt import task_rows

SERVICE_ID = "pvwoqyschmv3o0e6lpfr5mcoh"


def _task(task_id: str, slot: int, created: float, node: str = "n1") -> dict[str, Any]:
    return {"id": task_id * 25, "service_id": SERVICE_ID, "service_name": "web", "slot": slot, "node_id": node,
            "desired_state": "running", "created_at": created, "status": {"state": "running", "timestamp": 0.0},
            "spec": {"image": "nginx:1"}}


TASKS = [_task("a", 1, 1.0), _task("b", 1, 2.0), _task("c", 2, 3.0), _task("d", 0, 4.0, node="n2")]


def test_names_resolved_and_indented() -> None:
    rows = task_rows(TASKS, {"n1": "node-1", "n2": "node-2"}, now=10.0)
    assert [(r["Name"], r["Node"]) for r in rows] == [
        ("web.1", "node-1"), (" \\_ web.1", "node-1"), ("web.2", "node-1"), ("web.n2", "node-2")]
    assert [r["ID"][0] for r in rows] == ["b", "a", "c", "d"]  # newest first within a name


def test_no_resolve_shows_the_ids() -> None:
    rows = task_rows(TASKS, {}, now=10.0, resolve=False)
    assert [(r["Name"], r["Node"]) for r in rows] == [
        (f"{SERVICE_ID}.1", "n1"), (f" \\_ {SERVICE_ID}.1", "n1"), (f"{SERVICE_ID}.2", "n1"), (f"{SERVICE_ID}.n2", "n2")]
    # not a table: no indent
    assert task_rows(TASKS, {}, now=10.0, table=False, resolve=False)[1]["Name"] == f"{SERVICE_ID}.1"
