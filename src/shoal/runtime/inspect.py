"""Docker-shaped views of a container: the `inspect` document, ps fields and status text."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from shoal.units import human_duration
from shoal.runtime import hostsec, oci
from shoal.runtime.state import Container

_ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    if not ts:
        return _ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((ts % 1) * 1e9):09d}Z"


def status_text(c: Container, now: float | None = None) -> str:
    """The STATUS column: `Up 3 seconds`, `Exited (137) 2 minutes ago`, `Created`."""
    now = now or time.time()
    st = c.state
    if st.status == "running":
        return "Up " + human_duration(now - st.started_at) + (" (Paused)" if is_paused(c) else "")
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {human_duration(now - st.finished_at)} ago"
    if st.status == "dead":
        return "Dead"
    return "Created"


def is_paused(c: Container) -> bool:
    from shoal.runtime import cgroups

    return c.state.status == "running" and cgroups.frozen(c.id)


def command_text(c: Container) -> str:
    return " ".join([c.path, *c.args]) if c.args else c.path


def ports_text(c: Container) -> str:
    if c.state.status != "running":
        return ""
    out = []
    ports = c.network.get("ports") or [vars(p) for p in c.spec.ports]
    for p in ports:
        if p["published"]:
            out.append(f"{p['host_ip'] or '0.0.0.0'}:{p['published']}->{p['target']}/{p['protocol']}")
        else:
            out.append(f"{p['target']}/{p['protocol']}")
    return ", ".join(out)


def _cgroupns(mode: str) -> str:
    return mode or ("private" if hostsec.facts().cgroup_v2 else "host")


def _system_paths(c: Container, default: list[str]) -> list[str]:
    """Docker shows the masked and read-only paths the container got: none when privileged or
    with systempaths=unconfined."""
    if c.spec.privileged or "systempaths=unconfined" in c.spec.security_opt:
        return []
    return list(default)


def inspect(c: Container) -> dict[str, Any]:
    spec = c.spec
    st = c.state
    return {
        "Id": c.id,
        "Created": rfc3339(c.created),
        "Path": c.path,
        "Args": c.args,
        "State": {
            "Status": "paused" if is_paused(c) else st.status,
            "Running": st.status == "running",
            "Paused": is_paused(c),
            "Restarting": False,
            "OOMKilled": st.oom_killed,
            "Dead": st.status == "dead",
            "Pid": st.pid if st.status == "running" else 0,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": rfc3339(st.started_at),
            "FinishedAt": rfc3339(st.finished_at),
        },
        "Image": c.image_id,
        "ResolvConfPath": str(c.dir / "resolv.conf"),
        "HostnamePath": str(c.dir / "hostname"),
        "HostsPath": str(c.dir / "hosts"),
        "LogPath": str(c.log_path),
        "Name": "/" + c.name,
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "NetworkMode": "default" if spec.network == "default" else spec.network,
            "PortBindings": {f"{p.target}/{p.protocol}": [{"HostIp": p.host_ip, "HostPort": str(p.published or "")}]
                             for p in spec.ports} or None,
            "AutoRemove": spec.auto_remove,
            "Binds": [f"{m.source}:{m.target}" + (":ro" if m.read_only else "")
                      for m in spec.mounts if m.type in ("bind", "volume") and m.source
                      and m.source not in c.anonymous_volumes] or None,  # as moby: those are Config.Volumes
            "Tmpfs": {m.target: ",".join(m.options) for m in spec.mounts if m.type == "tmpfs"} or None,
            "CapAdd": spec.cap_add or None,
            "CapDrop": spec.cap_drop or None,
            "Dns": spec.dns,
            "DnsOptions": spec.dns_options,
            "DnsSearch": spec.dns_search,
            "ExtraHosts": spec.extra_hosts or None,
            "GroupAdd": spec.group_add or None,
            "Privileged": spec.privileged,
            "SecurityOpt": spec.security_opt or None,
            "CgroupnsMode": _cgroupns(spec.cgroupns),
            "MaskedPaths": _system_paths(c, oci.MASKED_PATHS),
            "ReadonlyPaths": _system_paths(c, oci.READONLY_PATHS),
            "ReadonlyRootfs": spec.read_only,
            "ShmSize": spec.shm_size,
            "Runtime": c.runtime,
            "Memory": spec.memory,
            "MemoryReservation": spec.memory_reservation,
            "NanoCpus": spec.nano_cpus,
            "CpuShares": spec.cpu_shares,
            "PidsLimit": spec.pids_limit or None,
            "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in spec.ulimits] or None,
            "Sysctls": spec.sysctls or None,
            "Init": spec.init or None,
        },
        "Mounts": c.mounts,
        "Config": {**c.config, "Image": c.image},
        "NetworkSettings": {
            "SandboxKey": c.network.get("netns", "") if st.status == "running" else "",
            "IPAddress": (c.network.get("addresses") or [""])[0].split("/")[0] if st.status == "running" else "",
            "Ports": {f"{p.target}/{p.protocol}": [{"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.published)}]
                      for p in spec.ports} if st.status == "running" else {},
        },
    }
