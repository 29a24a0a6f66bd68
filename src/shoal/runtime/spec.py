"""What a user asks of one container: plain data shared by the CLI, the runtime and (later) the
agent that runs swarm tasks. No I/O here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Shared with the service model; defined there (the model imports nothing outside it).
from shoal.model.container import Mount, Ulimit

__all__ = ["ContainerSpec", "Mount", "PortMapping", "Ulimit"]


@dataclass
class PortMapping:
    """`-p [ip:]published:target[/proto]`; published 0 = pick a free port."""

    target: int
    published: int = 0
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass
class ContainerSpec:
    """Docker's Config + HostConfig, reduced to what shoal honours. None/empty = image default."""

    image: str  # the reference as the user wrote it (`web:v1`)
    image_id: str = ""  # sha256:... of the image config, resolved at create time
    name: str = ""
    entrypoint: list[str] | None = None  # overrides the image ENTRYPOINT ([] clears it)
    cmd: list[str] | None = None  # overrides the image CMD
    env: list[str] = field(default_factory=list)  # K=V, merged over the image's
    user: str = ""  # name, uid, name:group, uid:gid
    workdir: str = ""
    hostname: str = ""  # default: the 12-character container ID
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    read_only: bool = False
    init: bool = False
    tty: bool = False
    open_stdin: bool = False
    # docker's StdinOnce (`run -i` attached): the first attached client to close its stdin
    # closes the container's; without it (`run -d -i`) clients come and go, stdin stays open
    stdin_once: bool = False
    # a client attaches to its output (`run` without -d, `create`): docker's AttachStdout and
    # AttachStderr, and AttachStdin with -i
    attached: bool = False
    # [rows, cols] of the client's terminal at create (docker's HostConfig.ConsoleSize): the
    # container's terminal has that size before its process runs
    console_size: list[int] = field(default_factory=list)
    nano_cpus: int = 0  # 1e9 = one CPU
    cpu_shares: int = 0
    memory: int = 0  # bytes; 0 = unlimited
    memory_reservation: int = 0
    memory_swap: int = 0  # memory + swap, bytes; 0 = Docker's default (twice memory), -1 = unlimited
    pids_limit: int = 0  # 0 = unlimited
    ulimits: list[Ulimit] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    cap_add: list[str] = field(default_factory=list)  # names, CAP_ optional, or ALL
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    # Docker's HostConfig.SecurityOpt: no-new-privileges, seccomp=unconfined or seccomp=<the
    # profile's JSON> (the CLI reads a FILE, as docker's does), apparmor=..., systempaths=...
    security_opt: list[str] = field(default_factory=list)
    cgroupns: str = ""  # "" = Docker's default (private on cgroup v2, host on v1), host, private
    stop_signal: str = ""  # default: the image's STOPSIGNAL, else SIGTERM
    stop_timeout: int | None = None  # seconds; default 10
    network: str = "default"  # "default", "none", "host", or a network name/ID
    network_aliases: list[str] = field(default_factory=list)
    # More networks after the first: [{"network": name, "aliases": [...]}] (swarm tasks).
    extra_networks: list[dict[str, Any]] = field(default_factory=list)
    swarm_task: bool = False  # may join non-attachable overlay networks, as the swarm agent does
    ports: list[PortMapping] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)  # "host:ip"
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)  # resolv.conf `options` (--dns-option)
    # Supplementary groups (--group-add, a service's Groups): names resolved against the image's
    # /etc/group at start, numbers taken as they are.
    group_add: list[str] = field(default_factory=list)
    auto_remove: bool = False  # --rm
    # Bytes of output its log keeps (conmon's --log-size-max: the file is emptied when it gets
    # there); 0: the default, runtime/conmon.py LOG_SIZE_MAX.
    log_size_max: int = 0
    shm_size: int = 64 * 1024 * 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerSpec:
        data = dict(data)
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["ports"] = [PortMapping(**p) for p in data.get("ports", [])]
        data["ulimits"] = [Ulimit(**u) for u in data.get("ulimits", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
