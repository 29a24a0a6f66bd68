"""Which compose-spec keys shoal honours, as data (it also generates the docs' support matrix).

Status:
- supported:   converted into the StackSpec.
- unsupported: dropped with Docker's warning `Ignoring unsupported options: a, b`.
- deprecated:  dropped with Docker's `Ignoring deprecated options:` and the reason.
- forbidden:   an error, as `docker stack deploy` makes it (Docker's reason quoted).
- ignored:     dropped without a word, as docker stack deploy drops it (a key docker/cli's
               loader or convert never reads; the reason says which).
Anything the schema allows that is not in this table is reported as unsupported, so a key is
never silently ignored unless Docker ignores it silently too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shoal.compose.errors import ComposeError

SUPPORTED = "supported"
UNSUPPORTED = "unsupported"
DEPRECATED = "deprecated"
FORBIDDEN = "forbidden"
IGNORED = "ignored"


@dataclass(frozen=True)
class KeySupport:
    scope: str  # "service", "service.deploy", "network", "top", ...; "[]" = each list item
    key: str
    status: str
    reason: str = ""


_DEPLOY_LIMITS = "Set resource limits using deploy.resources"
_SWARM_ONLY = "not used by swarm services"


def _rows() -> Iterator[KeySupport]:
    top_supported = ("version", "services", "networks", "volumes", "secrets", "configs")
    for key in top_supported:
        yield KeySupport("top", key, SUPPORTED)
    yield KeySupport("top", "name", UNSUPPORTED, "the stack name is given on the command line")
    yield KeySupport("top", "include", FORBIDDEN, "Support for `include` is not implemented yet.")
    yield KeySupport("top", "models", UNSUPPORTED, "AI models are not part of swarm stacks")

    service_supported = (
        "build cap_add cap_drop command configs depends_on deploy dns dns_search entrypoint "
        "env_file environment extra_hosts healthcheck hostname image init labels "
        "networks ports read_only secrets stdin_open stop_grace_period "
        "stop_signal sysctls tty ulimits user volumes working_dir"
    ).split()
    for key in service_supported:
        yield KeySupport("service", key, SUPPORTED)
    yield KeySupport("service", "logging", SUPPORTED,
                     "a task's output is kept by shoal (service logs) whatever the driver; `json-file` "
                     "and `local` options are checked as moby's drivers check them (an unknown option or "
                     "a bad size rejects the task in moby's words) and `max-size` times `max-file` bounds "
                     "the log (`local`: 20m x 5 by default); otherwise capped at 10 MiB "
                     "(`SHOAL_LOG_SIZE_MAX`), where Docker's json-file keeps everything")
    # docker/cli's OomScoreAdj field has no mapstructure name, so its loader matches only a key
    # spelled `oomscoreadj`, which the schema refuses: `oom_score_adj` never reaches Swarm.
    yield KeySupport("service", "oom_score_adj", IGNORED,
                     "docker/cli's loader never reads it (no Swarm OomScoreAdj)")
    yield KeySupport("service", "tmpfs", IGNORED,
                     "docker/cli's convert never reads it: no mount (a `type: tmpfs` volume is one)")
    # Docker warns about `restart` but still applies it when deploy.restart_policy is absent.
    yield KeySupport(
        "service", "restart", UNSUPPORTED,
        "warned as docker does, yet applied as deploy.restart_policy when that is absent",
    )
    for key in (
        "cgroupns_mode cgroup_parent devices domainname external_links ipc links mac_address "
        "network_mode pid privileged security_opt shm_size userns_mode"
    ).split():
        yield KeySupport("service", key, UNSUPPORTED, "ignored by docker stack deploy")
    yield KeySupport("service", "container_name", DEPRECATED,
                     "Setting the container name is not supported.")
    yield KeySupport(
        "service", "expose", DEPRECATED,
        "Exposing ports is unnecessary - services on the same network can access each "
        "other's containers on any port.",
    )
    forbidden = {
        "extends": "Support for `extends` is not implemented yet.",
        "volume_driver": "Instead of setting the volume driver on the service, define a volume "
        "using the top-level `volumes` option and specify the driver there.",
        "volumes_from": "To share a volume between services, define it using the top-level "
        "`volumes` option and reference it from each service that shares it using the "
        "service-level `volumes` option.",
        "cpu_quota": _DEPLOY_LIMITS,
        "cpu_shares": _DEPLOY_LIMITS,
        "cpuset": _DEPLOY_LIMITS,
        "mem_limit": _DEPLOY_LIMITS,
        "memswap_limit": _DEPLOY_LIMITS,
    }
    for key, reason in forbidden.items():
        yield KeySupport("service", key, FORBIDDEN, reason)
    for key in (
        "annotations attach blkio_config cgroup cpu_count cpu_percent cpu_period "
        "cpu_rt_period cpu_rt_runtime cpus develop device_cgroup_rules "
        "dns_opt gpus group_add label_file mem_reservation mem_swappiness models "
        "oom_kill_disable pids_limit platform post_start pre_stop profiles provider "
        "pull_policy pull_refresh_after runtime scale storage_opt use_api_socket uts"
    ).split():
        yield KeySupport("service", key, UNSUPPORTED, "not in the v3 format docker stack reads")
    # docker/cli's convert passes these to Swarm without a word; both mean something on Windows
    # nodes only (Hyper-V isolation, gMSA credential specs), so shoal drops them as silently.
    yield KeySupport("service", "isolation", IGNORED,
                     "Windows only; docker stack deploy takes it without a word")
    yield KeySupport("service", "credential_spec", IGNORED,
                     "Windows only (gMSA); docker stack deploy takes it without a word")

    for key in ("endpoint_mode labels mode placement replicas resources restart_policy "
                "rollback_config update_config").split():
        yield KeySupport("service.deploy", key, SUPPORTED)
    for key in ("cpus", "memory", "pids"):
        yield KeySupport("service.deploy.resources.limits", key, SUPPORTED)
    for key in ("cpus", "memory", "generic_resources"):
        yield KeySupport("service.deploy.resources.reservations", key, SUPPORTED)
    yield KeySupport("service.deploy.resources.reservations", "devices", UNSUPPORTED,
                     "device reservations are not in the v3 format")

    for key in ("target", "published", "protocol", "mode"):
        yield KeySupport("service.ports[]", key, SUPPORTED)
    yield KeySupport("service.ports[]", "host_ip", UNSUPPORTED,
                     "swarm services listen on 0.0.0.0")
    yield KeySupport("service.ports[]", "name", UNSUPPORTED, _SWARM_ONLY)
    yield KeySupport("service.ports[]", "app_protocol", UNSUPPORTED, _SWARM_ONLY)

    for key in ("type", "source", "target", "read_only", "consistency", "bind", "volume",
                "tmpfs"):
        yield KeySupport("service.volumes[]", key, SUPPORTED)
    yield KeySupport("service.volumes[]", "image", UNSUPPORTED, "image mounts are not supported")
    yield KeySupport("service.volumes[]", "cluster", UNSUPPORTED,
                     "cluster (CSI) volumes are not supported")

    yield KeySupport("service.networks.*", "aliases", SUPPORTED)
    yield KeySupport("service.networks.*", "driver_opts", SUPPORTED)
    for key in ("ipv4_address", "ipv6_address"):
        # docker/cli's convert never reads them, and says nothing of them.
        yield KeySupport("service.networks.*", key, IGNORED,
                         "static addresses are dropped by docker stack deploy, without a word")
    for key in ("interface_name", "link_local_ips", "mac_address", "priority", "gw_priority"):
        yield KeySupport("service.networks.*", key, UNSUPPORTED, _SWARM_ONLY)

    for key in ("context", "dockerfile", "args", "target", "labels", "tags", "network",
                "no_cache", "pull"):
        yield KeySupport("service.build", key, SUPPORTED)

    for key in ("name driver driver_opts ipam external internal attachable labels").split():
        yield KeySupport("network", key, SUPPORTED)
    for key in ("enable_ipv4", "enable_ipv6"):
        yield KeySupport("network", key, UNSUPPORTED, "IPv4-only overlay networks")
    for key in ("name", "driver", "driver_opts", "external", "labels"):
        yield KeySupport("volume", key, SUPPORTED)
    for key in ("name", "file", "external", "labels", "driver", "driver_opts",
                "template_driver"):
        yield KeySupport("secret", key, SUPPORTED)
    yield KeySupport("secret", "environment", UNSUPPORTED, "not in the v3 format")
    for key in ("name", "file", "external", "labels", "template_driver"):
        yield KeySupport("config", key, SUPPORTED)
    for key in ("content", "environment"):
        yield KeySupport("config", key, UNSUPPORTED, "not in the v3 format")


TABLE: tuple[KeySupport, ...] = tuple(_rows())
_BY_SCOPE: dict[tuple[str, str], KeySupport] = {(r.scope, r.key): r for r in TABLE}


def status(scope: str, key: str) -> KeySupport | None:
    return _BY_SCOPE.get((scope, key))


def _known_scope(scope: str) -> bool:
    return any(r.scope == scope for r in TABLE)


Path_ = tuple[str | int, ...]


class Findings:
    """Keys shoal does not honour, by status, with where each was first seen."""

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {UNSUPPORTED: set(), DEPRECATED: set(), FORBIDDEN: set()}
        self.reasons: dict[str, str] = {}
        self.paths: dict[str, Path_] = {}

    def sorted(self, status_name: str) -> list[str]:
        return sorted(self.names[status_name])

    def add(self, status_name: str, name: str, reason: str, path: Path_) -> None:
        self.names[status_name].add(name)
        self.reasons.setdefault(name, reason)
        self.paths.setdefault(name, path)


def _check(scope: str, mapping: Any, label: str, path: Path_, found: Findings) -> None:
    if not isinstance(mapping, dict) or not _known_scope(scope):
        return
    for key in mapping:
        if key.startswith("x-"):
            continue
        row = status(scope, key)
        name = f"{label}{key}"
        if row is None:
            found.add(UNSUPPORTED, name, "not known to shoal", (*path, key))
        elif row.status not in (SUPPORTED, IGNORED):
            found.add(row.status, name, row.reason, (*path, key))


def scan(config: dict[str, Any]) -> Findings:
    """Every key in the (merged) config that shoal does not honour."""
    found = Findings()
    _check("top", config, "", (), found)
    services = config.get("services")
    for service_name, service in (services.items() if isinstance(services, dict) else ()):
        if not isinstance(service, dict):
            continue
        base: Path_ = ("services", service_name)
        _check("service", service, "", base, found)
        deploy = service.get("deploy")
        if isinstance(deploy, dict):
            _check("service.deploy", deploy, "deploy.", (*base, "deploy"), found)
            resources = deploy.get("resources")
            if isinstance(resources, dict):
                for part in ("limits", "reservations"):
                    _check(f"service.deploy.resources.{part}", resources.get(part),
                           f"deploy.resources.{part}.", (*base, "deploy", "resources", part),
                           found)
        for section in ("ports", "volumes"):
            items = service.get(section)
            for index, item in enumerate(items if isinstance(items, list) else []):
                _check(f"service.{section}[]", item, f"{section}.", (*base, section, index),
                       found)
        networks = service.get("networks")
        if isinstance(networks, dict):
            for network_name, attachment in networks.items():
                _check("service.networks.*", attachment, "networks.",
                       (*base, "networks", network_name), found)
        if isinstance(service.get("build"), dict):
            _check("service.build", service["build"], "build.", (*base, "build"), found)
    for section, scope in (("networks", "network"), ("volumes", "volume"),
                           ("secrets", "secret"), ("configs", "config")):
        entries = config.get(section)
        for entry_name, entry in (entries.items() if isinstance(entries, dict) else ()):
            _check(scope, entry, f"{section}.", (section, entry_name), found)
    return found


def report(config: dict[str, Any], warn: Callable[[str], None],
           locate: Callable[[Path_], str] = lambda path: "") -> None:
    """Warn about unsupported and deprecated keys with Docker's wording; raise for forbidden
    ones (one line, where Docker prints a block), naming where the first one is written."""
    found = scan(config)
    forbidden = found.sorted(FORBIDDEN)
    if forbidden:
        reasons = "; ".join(f"{name}: {found.reasons[name]}" for name in forbidden)
        raise ComposeError("compose file contains unsupported options: " + reasons,
                           where=locate(found.paths[forbidden[0]]))
    if found.names[UNSUPPORTED]:
        warn("Ignoring unsupported options: " + ", ".join(found.sorted(UNSUPPORTED)) + "\n")
    if found.names[DEPRECATED]:
        lines = [f"{name}: {found.reasons[name]}" for name in found.sorted(DEPRECATED)]
        warn("Ignoring deprecated options:\n\n" + "\n\n".join(lines) + "\n")


# The keys docker/cli's typed model has, per scope (cli/compose/types at v28): `stack config`
# prints these as `docker stack config` does (dockermodel.py).
_DOCKER_MODEL: dict[str, frozenset[str]] = {
    scope: frozenset(keys.split()) for scope, keys in {
        "top": "version services networks volumes secrets configs",
        "service": "build cap_add cap_drop cgroupns_mode cgroup_parent command configs "
                   "container_name credential_spec depends_on deploy devices dns dns_search "
                   "domainname entrypoint environment env_file expose external_links "
                   "extra_hosts hostname healthcheck image init ipc isolation labels links "
                   "logging mac_address network_mode networks pid ports privileged read_only "
                   "restart secrets security_opt shm_size stdin_open stop_grace_period "
                   "stop_signal sysctls tmpfs tty ulimits user userns_mode "
                   "volumes working_dir",
        "service.build": "context dockerfile args labels cache_from extra_hosts network target",
        "service.deploy": "mode replicas labels update_config rollback_config resources "
                          "restart_policy placement endpoint_mode",
        "service.deploy.resources.limits": "cpus memory pids",
        "service.deploy.resources.reservations": "cpus memory generic_resources",
        "service.networks.*": "aliases driver_opts ipv4_address ipv6_address",
        "service.ports[]": "mode target published protocol",
        "service.volumes[]": "type source target read_only consistency bind volume image tmpfs "
                             "cluster",
        "network": "name driver driver_opts ipam external internal attachable labels",
        "volume": "name driver driver_opts external labels",
        "secret": "name file external labels driver driver_opts template_driver",
        "config": "name file external labels driver driver_opts template_driver",
    }.items()
}
# Where shoal prints a key docker's model lacks as written (so the printout deploys the same).
_KEPT_AS_WRITTEN = {"service", "network"}


def printed(row: KeySupport) -> str:
    """How `stack config` prints the key, next to `docker stack config`."""
    if (row.scope, row.key) == ("service", "oom_score_adj"):
        return "left out, as Docker's loader never reads it"
    if row.key in _DOCKER_MODEL.get(row.scope, frozenset()):
        return "as Docker"
    if row.scope in _KEPT_AS_WRITTEN:
        return "as written (not in Docker's model)"
    return "left out, as Docker's model has no such field"


def markdown() -> str:
    """The support matrix for the docs, generated from TABLE."""
    out = ["| scope | key | status | `stack config` prints it | notes |",
           "|---|---|---|---|---|"]
    for row in sorted(TABLE, key=lambda r: (r.scope, r.key)):
        out.append(f"| {row.scope} | `{row.key}` | {row.status} | {printed(row)} | {row.reason} |")
    return "\n".join(out) + "\n"
