"""From a task (its copy of the service spec) to the ContainerSpec the runtime runs, as the
swarm executor does: Swarm's container name and labels, templates expanded on the node."""

from __future__ import annotations

import re
from typing import Any

from shoal.model.cluster import Node, Task
from shoal.model.service import DEFAULT_STOP_GRACE_PERIOD
from shoal.runtime.spec import ContainerSpec, Mount, Ulimit

EMBEDDED_DNS = "127.0.0.11"
_TEMPLATE = re.compile(r"\{\{\s*\.([A-Za-z.]+)\s*\}\}")


def container_name(task: Task) -> str:
    """`webapp_web.1.l0vk4ex09c34...` as dockerd names a swarm task's container."""
    return f"{task.name}.{task.id}"


def expand(text: str, task: Task, node: Node, service_labels: dict[str, str]) -> str:
    """Swarm's templates for hostname, env values and mount sources (swarm-inventory 1.3)."""
    values = {
        "Service.Name": task.service_name,
        "Service.ID": task.service_id,
        "Node.ID": node.id,
        "Node.Hostname": node.hostname,
        "Node.Platform.OS": "linux",
        "Node.Platform.Architecture": __import__("platform").machine(),
        "Task.ID": task.id,
        "Task.Name": container_name(task),
        "Task.Slot": str(task.slot if task.slot else node.id),
    }

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.startswith("Service.Labels."):
            return service_labels.get(key[len("Service.Labels."):], "")
        return values.get(key, m.group(0))

    return _TEMPLATE.sub(sub, text)


def _extra_hosts(entries: list[str]) -> list[str]:
    """Swarm stores `IP host`; ContainerSpec takes Docker's `host:IP`."""
    out = []
    for entry in entries:
        parts = entry.split()
        out.append(f"{parts[1]}:{parts[0]}" if len(parts) == 2 else entry)
    return out


def container_spec(task: Task, node: Node) -> ContainerSpec:
    spec: dict[str, Any] = task.spec
    labels = dict(spec.get("container_labels") or {})
    labels.update({
        "com.docker.swarm.node.id": node.id,
        "com.docker.swarm.service.id": task.service_id,
        "com.docker.swarm.service.name": task.service_name,
        "com.docker.swarm.task": "",
        "com.docker.swarm.task.id": task.id,
        "com.docker.swarm.task.name": container_name(task),
    })
    service_labels = spec.get("labels") or {}
    attachments = list(spec.get("networks") or [])
    limits = (spec.get("resources") or {}).get("limits") or {}
    reservations = (spec.get("resources") or {}).get("reservations") or {}
    return ContainerSpec(
        image=spec["image"],
        name=container_name(task),
        entrypoint=spec.get("entrypoint"),
        cmd=spec.get("cmd"),
        env=[expand(e, task, node, service_labels) for e in spec.get("env") or []],
        user=spec.get("user") or "",
        workdir=spec.get("workdir") or "",
        hostname=expand(spec.get("hostname") or "", task, node, service_labels),
        labels=labels,
        mounts=[Mount(**dict(m, source=expand(m.get("source", ""), task, node, service_labels)))
                for m in spec.get("mounts") or []],
        read_only=bool(spec.get("read_only")),
        init=bool(spec.get("init")),
        tty=bool(spec.get("tty")),
        open_stdin=bool(spec.get("open_stdin")),
        nano_cpus=int(limits.get("nano_cpus") or 0),
        memory=int(limits.get("memory_bytes") or 0),
        memory_reservation=int(reservations.get("memory_bytes") or 0),
        pids_limit=int(limits.get("pids") or 0),
        ulimits=[Ulimit(**u) for u in spec.get("ulimits") or []],
        sysctls=dict(spec.get("sysctls") or {}),
        cap_add=list(spec.get("cap_add") or []),
        cap_drop=list(spec.get("cap_drop") or []),
        security_opt=list(spec.get("security_opt") or []),
        stop_signal=spec.get("stop_signal") or "",
        stop_timeout=int(round(float(spec.get("stop_grace_period", DEFAULT_STOP_GRACE_PERIOD)))),
        extra_hosts=_extra_hosts(list(spec.get("extra_hosts") or [])),
        # The embedded resolver answers service names; it forwards every other name.
        dns=list(spec.get("dns") or []) or ([EMBEDDED_DNS] if attachments else []),
        network=attachments[0]["target"] if attachments else "none",
        network_aliases=list(attachments[0].get("aliases") or []) if attachments else [],
        extra_networks=[{"network": a["target"], "aliases": list(a.get("aliases") or [])} for a in attachments[1:]],
        swarm_task=True,
        dns_search=list(spec.get("dns_search") or []),
        dns_options=list(spec.get("dns_options") or []),
        group_add=list(spec.get("groups") or []),
    )
