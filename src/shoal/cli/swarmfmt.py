"""Tables for swarm objects as docker/cli prints them: `service ls`/`stack services`,
`service ps`/`stack ps` (history rows as ` \\_ name`), `stack ls` (swarm-inventory 2.3-2.5)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from shoal.cli.format import human_duration
from shoal.model.cluster import Task, TaskState

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[Any]:
    """sortorder.NaturalLess: `svc-2` before `svc-10`."""
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(text)]


def ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def strip_digest(image: str) -> str:
    return image.split("@", 1)[0]


def service_mode(spec: dict[str, Any]) -> str:
    return {"replicated-job": "replicated job", "global-job": "global job"}.get(
        spec.get("mode", "replicated") or "replicated", spec.get("mode", "replicated") or "replicated")


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    endpoint = spec.get("endpoint") or {}
    return list(endpoint.get("ports") or spec.get("ports") or [])


def format_ports(spec: dict[str, Any]) -> str:
    """Ingress ports only, sorted by protocol then published port, consecutive runs collapsed:
    `*:4000->80/tcp`, `*:80-81->80-81/tcp`."""
    ports = sorted(
        (p for p in _ports(spec) if (p.get("publish_mode") or p.get("mode") or "ingress") == "ingress"
         and p.get("published")),
        key=lambda p: (p.get("protocol", "tcp"), int(p["published"])),
    )
    out: list[str] = []
    i = 0
    while i < len(ports):
        start = ports[i]
        j = i
        while (j + 1 < len(ports)
               and ports[j + 1].get("protocol", "tcp") == start.get("protocol", "tcp")
               and int(ports[j + 1]["published"]) == int(ports[j]["published"]) + 1
               and int(ports[j + 1]["target"]) in (int(ports[j]["target"]) + 1, int(ports[j]["target"]))):
            j += 1
        end = ports[j]
        proto = start.get("protocol", "tcp")
        pub = f"{start['published']}" if start is end else f"{start['published']}-{end['published']}"
        tgt = f"{start['target']}" if start["target"] == end["target"] else f"{start['target']}-{end['target']}"
        out.append(f"*:{pub}->{tgt}/{proto}")
        i = j + 1
    return ", ".join(out)


def replicas_column(service: dict[str, Any]) -> str:
    status = service.get("status", {})
    text = f"{status.get('RunningTasks', 0)}/{status.get('DesiredTasks', 0)}"
    spec = service.get("spec", {})
    placement = spec.get("placement") or {}
    mode = service_mode(spec)
    if mode == "replicated" and placement.get("max_replicas_per_node"):
        text += f" (max {placement['max_replicas_per_node']} per node)"
    elif mode.endswith("job"):  # formatter.go: the job's progress instead of the per-node max
        desired, completed = int(status.get("DesiredTasks", 0)), int(status.get("CompletedTasks", 0))
        total = int(spec.get("replicas") or 0) if mode == "replicated job" else desired + completed
        text += f" ({completed}/{total} completed)"
    return text


def service_rows(services: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for svc in sorted(services, key=lambda s: natural_key(s["name"])):
        spec = svc.get("spec", {})
        rows.append({
            "ID": svc["id"][:12],
            "Name": svc["name"],
            "Mode": service_mode(spec),
            "Replicas": replicas_column(svc),
            "Image": strip_digest(spec.get("image", "")),
            # docker/cli's formatter reads Endpoint.Ports: the ports as allocated (a port
            # published as 0 shows the one the manager gave it, `*:30000->6379/tcp`).
            "Ports": format_ports({"endpoint": svc["endpoint"]} if (svc.get("endpoint") or {}).get("ports")
                                  else spec),
        })
    return rows


SERVICE_HEADERS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS")
SERVICE_FIELDS = ("ID", "Name", "Mode", "Replicas", "Image", "Ports")
TASK_HEADERS = ("ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS")
TASK_FIELDS = ("ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports")


def current_state(task: Task, now: float) -> str:
    return f"{task.status.state.pretty} {human_duration(now - task.status.timestamp).lower()} ago"


def task_rows(tasks: Sequence[dict[str, Any]], nodes: dict[str, str], no_trunc: bool = False,
              table: bool = True, now: float | None = None, resolve: bool = True) -> list[dict[str, str]]:
    """Sorted by name (natural), newest first within a name; repeated names become ` \\_ name`.
    `resolve` False is --no-resolve (task/print.go generateTaskNames): the service's and the
    node's IDs where their names were."""
    now = now or time.time()
    parsed = [Task.from_dict(t) for t in tasks]

    def task_name(task: Task) -> str:
        return task.name if resolve else f"{task.service_id}.{task.slot if task.slot else task.node_id}"

    parsed.sort(key=lambda t: -t.created_at)
    parsed.sort(key=lambda t: natural_key(task_name(t)))  # stable: newest first inside each name
    rows = []
    previous = None
    for task in parsed:
        name = task_name(task)
        shown = f" \\_ {name}" if table and name == previous else name
        previous = name
        err = task.status.err
        if err and not no_trunc:
            err = ellipsis(err, 30)
        image = task.spec.get("image", "")
        rows.append({
            "ID": task.id if no_trunc else task.id[:12],
            "Name": shown,
            "Image": image if no_trunc else strip_digest(image),
            "Node": nodes.get(task.node_id, task.node_id) if resolve else task.node_id,
            "DesiredState": TaskState(task.desired_state).pretty,
            "CurrentState": current_state(task, now),
            "Error": f'"{err}"' if err else "",
            "Ports": task_ports(task),
        })
    return rows


def task_ports(task: Task) -> str:
    """docker/cli's task PORTS: the task's PortStatus, which dockerd's executor fills with its
    container's host-mode bindings while it runs (`*:80->80/tcp,*:443->443/tcp`); ingress ports
    are the mesh's, not the task's. A host-mode port published as 0 shows nothing here (the
    port the node chose is not reported back)."""
    if task.status.state != TaskState.RUNNING:
        return ""
    return ",".join(f"*:{p['published']}->{p['target']}/{p.get('protocol') or 'tcp'}"
                    for p in (task.spec.get("endpoint") or {}).get("ports") or ()
                    if p.get("publish_mode") == "host" and int(p.get("published") or 0))
