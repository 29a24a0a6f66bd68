"""From a task (its copy of the service spec) to the ContainerSpec the runtime runs, as the
swarm executor does: Swarm's container name and labels, templates expanded on the node."""

from __future__ import annotations

import os
from typing import Any

from shoal.agent.templating import container_name, expand
from shoal import units
from shoal.errors import InvalidArgument, ShoalError
from shoal.gofmt import quote
from shoal.gotemplate import TemplateError
from shoal.model.cluster import Node, Task
from shoal.model.service import DEFAULT_STOP_GRACE_PERIOD
from shoal.runtime.spec import ContainerSpec, Mount, Ulimit

EMBEDDED_DNS = "127.0.0.11"


def _expanded(what: str, text: str, task: Task, node: Node) -> str:
    """One field through Swarm's template context, failing as swarmkit's ExpandContainerSpec:
    `expanding env failed: expanding env "A={{.X}}": template: ...`."""
    try:
        return expand(text, task, node)
    except TemplateError as exc:
        raise InvalidArgument(f"expanding {what} failed: {exc}") from None


def _env(entries: list[str], task: Task, node: Node) -> list[str]:
    out = []
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            try:
                value = expand(value, task, node)
            except TemplateError as exc:
                raise InvalidArgument(f"expanding env failed: expanding env {quote(entry)}: {exc}") from None
        out.append(f"{key}{sep}{value}")
    return out


def _mounts(mounts: list[dict[str, Any]], task: Task, node: Node) -> list[Mount]:
    out = []
    for m in mounts:
        fields = dict(m)
        for key in ("source", "target"):
            try:
                fields[key] = expand(m.get(key, ""), task, node)
            except TemplateError as exc:
                raise InvalidArgument(f"expanding mounts failed: expanding mount {key} "
                                      f"{quote(m.get(key, ''))}: {exc}") from None
        if fields.get("type") == "bind" and fields.get("source") and not os.path.exists(fields["source"]):
            # dockerd makes a task's container with HostConfig.Mounts, whose bind source must
            # exist on the node (only `run -v` creates one): the task is rejected in its words,
            # rather than a directory made in the host's /var/run/docker.sock.
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path does not exist: '
                                  f'{fields["source"]}')
        out.append(Mount(**fields))
    return out


def _extra_hosts(entries: list[str]) -> list[str]:
    """Swarm stores `IP host`; ContainerSpec takes Docker's `host:IP`."""
    out = []
    for entry in entries:
        parts = entry.split()
        out.append(f"{parts[1]}:{parts[0]}" if len(parts) == 2 else entry)
    return out


# The options moby's json-file and local drivers take (ValidateLogOpt): any other is refused.
_LOG_OPTS = {"json-file": {"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"},
             "local": {"max-file", "max-size", "compress"}}


def log_size_max(driver: dict[str, Any] | None) -> int:
    """The bytes of output a task's log keeps, from its service's json-file or local driver:
    max-size times max-file, the most moby's rotation keeps (conmon keeps one file, emptied when
    it reaches this), parsed as moby's drivers parse them (go-units RAMInBytes; max-file from
    1). 0: shoal's default. Another driver's output is kept as shoal keeps it by default."""
    if not driver:
        return 0
    name, options = driver.get("name") or "", dict(driver.get("options") or {})
    if name not in _LOG_OPTS:
        return 0
    for key in options:
        if key not in _LOG_OPTS[name]:
            raise ShoalError(f"unknown log opt '{key}' for {name} log driver")
    size = options.get("max-size", "")
    files = options.get("max-file", "1" if name == "json-file" else "5")
    try:
        count = int(files)
    except ValueError:
        raise ShoalError(f"failed to initialize logging driver: invalid max-file: '{files}'") from None
    if count < 1:
        raise ShoalError("failed to initialize logging driver: max-file cannot be less than 1")
    if not size:
        return 0 if name == "json-file" else 20 * 1024 * 1024 * count  # local: 20m a file
    try:
        nbytes = units.parse_ram_bytes(size)
    except ValueError as exc:
        raise ShoalError(f"failed to initialize logging driver: {exc}") from None
    if nbytes <= 0:
        raise ShoalError("failed to initialize logging driver: max-size must be a positive number")
    return nbytes * count


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
    attachments = list(spec.get("networks") or [])
    limits = (spec.get("resources") or {}).get("limits") or {}
    reservations = (spec.get("resources") or {}).get("reservations") or {}
    return ContainerSpec(
        image=spec["image"],
        name=container_name(task),
        entrypoint=spec.get("entrypoint"),
        cmd=spec.get("cmd"),
        env=_env(list(spec.get("env") or []), task, node),
        user=spec.get("user") or "",
        workdir=spec.get("workdir") or "",
        hostname=_expanded("hostname", spec.get("hostname") or "", task, node),
        labels=labels,
        mounts=_mounts(list(spec.get("mounts") or []), task, node),
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
        # moby's containerAdapter.shutdown: int(StopGracePeriod.Seconds), the fraction dropped
        stop_timeout=int(float(spec.get("stop_grace_period", DEFAULT_STOP_GRACE_PERIOD))),
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
        log_size_max=log_size_max(spec.get("log_driver")),
    )
