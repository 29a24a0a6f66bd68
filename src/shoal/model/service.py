"""A swarm service as the manager stores it: plain data, Swarm's defaults already filled in.
Durations are seconds (float); sizes are bytes; CPUs are nano CPUs (1e9 = one CPU).

What the client gave is kept too: `ServiceSpec.defaulted` names the optional parts (Swarm's nil
pointers: OPTIONAL) it left out, which the spec holds at Swarm's defaults (the dataclasses'
defaults below), so every consumer reads one filled-in value while `inspect` can print the spec
as given, as Docker does (cli/dockerjson.py; `given`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.model._serde import from_dict, to_dict
from shoal.model.container import Mount, Ulimit

# Swarm's defaults (swarmkit api/defaults/service.go), used when the compose file is silent.
DEFAULT_RESTART_CONDITION = "any"
DEFAULT_RESTART_DELAY = 5.0
DEFAULT_STOP_GRACE_PERIOD = 10.0
DEFAULT_UPDATE_MONITOR = 5.0
DEFAULT_REPLICAS = 1
# The cluster's TaskHistoryRetentionLimit (swarmkit api/defaults: 5): tasks kept per slot.
DEFAULT_TASK_HISTORY_LIMIT = 5


@dataclass
class BuildSpec:
    """`build:` kept so the CLI can build a missing image before deploying. context is an
    absolute path (or a URL) on the client."""

    context: str
    dockerfile: str = ""  # empty = Dockerfile in the context
    args: dict[str, str | None] = field(default_factory=dict)  # None: take from the environment
    target: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    network: str = ""
    no_cache: bool = False
    pull: bool = False


@dataclass
class Healthcheck:
    """test: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]; 0 durations = engine defaults."""

    test: list[str] = field(default_factory=list)
    interval: float = 0.0
    timeout: float = 0.0
    retries: int = 0
    start_period: float = 0.0
    start_interval: float = 0.0


@dataclass
class ResourceLimits:
    nano_cpus: int = 0  # 0 = unlimited
    memory_bytes: int = 0
    pids: int = 0


@dataclass
class GenericResource:
    kind: str
    value: int


@dataclass
class ResourceReservations:
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic_resources: list[GenericResource] = field(default_factory=list)


@dataclass
class Resources:
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    reservations: ResourceReservations = field(default_factory=ResourceReservations)


@dataclass
class RestartPolicy:
    """condition none|on-failure|any; max_attempts 0 = unlimited; window 0 = unbounded."""

    condition: str = DEFAULT_RESTART_CONDITION
    delay: float = DEFAULT_RESTART_DELAY
    max_attempts: int = 0
    window: float = 0.0


@dataclass
class UpdateConfig:
    """update_config / rollback_config. parallelism 0 = all at once."""

    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "pause"  # pause | continue | rollback (update only)
    monitor: float = DEFAULT_UPDATE_MONITOR
    max_failure_ratio: float = 0.0
    order: str = "stop-first"  # stop-first | start-first


@dataclass
class Placement:
    constraints: list[str] = field(default_factory=list)  # "node.role==manager"
    preferences: list[str] = field(default_factory=list)  # spread descriptors
    max_replicas_per_node: int = 0  # 0 = unlimited


@dataclass
class PortConfig:
    target: int
    published: int = 0  # 0 = the manager picks one from 30000-32767 (ingress)
    protocol: str = "tcp"  # tcp | udp | sctp
    publish_mode: str = "ingress"  # ingress | host

    def sort_key(self) -> tuple[int, int, str, str]:
        """moby's swarm.PortConfig.Compare: the CLI sends ports in this order."""
        return (self.published, self.target, self.protocol, self.publish_mode)


@dataclass
class EndpointSpec:
    mode: str = "vip"  # vip | dnsrr
    ports: list[PortConfig] = field(default_factory=list)


@dataclass
class NetworkAttachment:
    """target is the full network name (webapp_webnet); aliases include the bare service name
    on user-defined networks, as Swarm adds it."""

    target: str
    aliases: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass
class FileReference:
    """A secret or config given to the service. source is the full object name (webapp_db);
    target an absolute path in the container (a config's may be relative to /, as Docker keeps it)."""

    source: str
    target: str
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444
    # The content's digest, stamped by the manager when the service is written (never sent by
    # a client): a changed secret or config changes it, and the service rolls.
    digest: str = ""


@dataclass
class DependsOn:
    condition: str = "service_started"  # | service_healthy | service_completed_successfully
    required: bool = True
    restart: bool = False


@dataclass
class LogDriver:
    name: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceSpec:
    name: str  # webapp_web
    compose_name: str = ""  # web; "" for a service made by `service create`
    stack: str = ""  # webapp; "" for a service made by `service create`
    image: str = ""  # as written in the file (web:v1); required (the control API says so)
    build: BuildSpec | None = None
    labels: dict[str, str] = field(default_factory=dict)  # service labels (deploy.labels + stack)
    container_labels: dict[str, str] = field(default_factory=dict)
    # The container, with shoal.runtime.spec.ContainerSpec's field names.
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)  # sorted K=V (a bare K is passed as K)
    user: str = ""
    groups: list[str] = field(default_factory=list)  # ContainerSpec.Groups (`--group`)
    workdir: str = ""
    hostname: str = ""  # may hold Swarm templates ({{.Task.Slot}}) for the node to expand
    mounts: list[Mount] = field(default_factory=list)
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    tty: bool = False
    open_stdin: bool = False
    read_only: bool = False
    init: bool | None = None
    extra_hosts: list[str] = field(default_factory=list)  # "IP host", as Swarm stores them
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)  # DNSConfig.Options (`--dns-option`)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    # Docker's --security-opt strings (no-new-privileges, seccomp=unconfined|<profile JSON>,
    # apparmor=...): Swarm's ContainerSpec.Privileges; the runtime applies them as for `run`.
    security_opt: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: list[Ulimit] = field(default_factory=list)
    oom_score_adj: int = 0
    log_driver: LogDriver | None = None
    # The service.
    mode: str = "replicated"  # replicated | global | replicated-job | global-job
    replicas: int = DEFAULT_REPLICAS  # for replicated modes (a replicated-job's TotalCompletions); 0 for global
    # A replicated-job's MaxConcurrent; None = replicas, as `--max-concurrent` defaults
    # ("default equal to --replicas") and as Compose converts a job's replicas.
    max_concurrent: int | None = None
    # TaskTemplate.ForceUpdate: a counter; changing it alone rolls the service's tasks
    # (`service update --force` adds one).
    force_update: int = 0
    resources: Resources = field(default_factory=Resources)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    update_config: UpdateConfig = field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = field(default_factory=UpdateConfig)
    placement: Placement = field(default_factory=Placement)
    endpoint: EndpointSpec = field(default_factory=EndpointSpec)
    networks: list[NetworkAttachment] = field(default_factory=list)
    secrets: list[FileReference] = field(default_factory=list)
    configs: list[FileReference] = field(default_factory=list)
    depends_on: dict[str, DependsOn] = field(default_factory=dict)  # by compose service name
    # The OPTIONAL parts the client did not give (filled in above with Swarm's defaults), as
    # docker/cli's compose convert leaves them nil: `stack deploy` says so; [] = all given.
    defaulted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        return from_dict(cls, data)


# The parts of a spec that are pointers in Swarm's API (nil when the client did not give them),
# with the value a spec holds for one it was not given: swarmkit's defaults (api/defaults).
OPTIONAL: dict[str, Any] = {
    "stop_grace_period": DEFAULT_STOP_GRACE_PERIOD,  # ContainerSpec.StopGracePeriod
    "dns_config": {"dns": [], "dns_search": [], "dns_options": []},  # ContainerSpec.DNSConfig
    "resources.limits": dataclasses.asdict(ResourceLimits()),
    "resources.reservations": dataclasses.asdict(ResourceReservations()),
    "restart_policy": dataclasses.asdict(RestartPolicy()),
    "restart_policy.delay": DEFAULT_RESTART_DELAY,
    "update_config": dataclasses.asdict(UpdateConfig()),
    "rollback_config": dataclasses.asdict(UpdateConfig()),
}


def _value(spec: Mapping[str, Any], path: str) -> Any:
    if path == "dns_config":
        return {k: list(spec.get(k) or []) for k in ("dns", "dns_search", "dns_options")}
    value: Any = spec
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def given(spec: Mapping[str, Any], path: str) -> bool:
    """Whether the client gave this OPTIONAL part of the spec (a ServiceSpec's dict, or a task's
    copy): not listed as defaulted, or changed since (a `service update` flag set it)."""
    if path not in (spec.get("defaulted") or ()):
        return True
    value = _value(spec, path)
    default = OPTIONAL[path]
    if isinstance(default, dict) and isinstance(value, Mapping):
        return any(value.get(k, v) != v for k, v in default.items())
    return bool(value != default)
