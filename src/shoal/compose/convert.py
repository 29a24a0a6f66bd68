"""Merged, validated compose config -> StackSpec, with docker/cli's conversion rules
(cli/compose/convert/{service,compose,volume}.go) and swarmkit's defaults filled in.

The only I/O here is on the client side, as docker does it: env_file files are read and bind,
build and secret paths are resolved against the working directory."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal import capabilities
from shoal.compose.errors import ComposeError, dotted
from shoal.compose.names import SERVICE_NAME, check_image_reference, validate_stack_name
from shoal.compose.syntax import parse_cpus, parse_port, parse_volume
from shoal.compose import values as v
from shoal.compose.values import P, Invalid
from shoal.model import (
    IPAM,
    LABEL_IMAGE,
    LABEL_NAMESPACE,
    BuildSpec,
    DependsOn,
    EndpointSpec,
    FileReference,
    GenericResource,
    Healthcheck,
    IPAMPool,
    LogDriver,
    NetworkAttachment,
    NetworkSpec,
    Placement,
    PortConfig,
    ResourceLimits,
    ResourceReservations,
    Resources,
    RestartPolicy,
    SecretSpec,
    ServiceSpec,
    StackSpec,
    UpdateConfig,
    VolumeSpec,
)
from shoal.model.container import Mount, Ulimit  # not runtime.spec: a deploy needs no ContainerSpec

DEFAULT_NETWORK = "default"
MIN_NANO_CPUS = 1_000_000  # 0.001 CPU (swarmkit controlapi)
MIN_MEMORY = 4 * 1024 * 1024  # 4 MiB
MIN_HEALTH_DURATION = 0.001  # 1 ms


# --- the conversion -----------------------------------------------------------------------


class Converter:
    def __init__(
        self,
        config: dict[str, Any],
        stack: str,
        working_dir: Path,
        environment: Mapping[str, str],
        warn: Callable[[str], None],
    ) -> None:
        self.config = config
        self.stack = stack
        self.working_dir = working_dir
        self.environment = environment
        self.warn = warn
        self.network_configs = v.mapping(config.get("networks"), ("networks",))
        self.volume_configs = v.mapping(config.get("volumes"), ("volumes",))
        self.secret_configs = v.mapping(config.get("secrets"), ("secrets",))
        self.config_configs = v.mapping(config.get("configs"), ("configs",))
        self.used_networks: set[str] = set()
        self.used_volumes: set[str] = set()

    def scope(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def resolve(self, text: str) -> str:
        """A client-side path: `~` from HOME, relative to the first file's directory. As
        docker/cli's absPath, only a relative path is joined (and so cleaned): an absolute one
        is kept as written, so `/var/lib/docker/` stays the bind source Docker gives Swarm."""
        if text.startswith("~"):
            home = self.environment.get("HOME") or os.path.expanduser("~")
            text = home + text[1:]
        if text.startswith("/"):
            return text
        return os.path.normpath(self.working_dir / text)

    # The stack ------------------------------------------------------------------------------

    def stack_spec(self) -> StackSpec:
        spec = StackSpec(name=self.stack)
        services = v.mapping(self.config.get("services"), ("services",))
        for compose_name in sorted(services):
            service = self.service(compose_name, services[compose_name], services)
            spec.services[service.name] = service
        for compose_name in sorted(self.used_networks):
            network = self.network(compose_name)
            spec.networks[network.name] = network
        for compose_name in sorted(self.used_volumes):
            volume = self.volume(compose_name)
            spec.volumes[volume.name] = volume
        for compose_name, raw in sorted(self.secret_configs.items()):
            secret = self.file_object(("secrets", compose_name), compose_name, raw)
            spec.secrets[secret.name] = secret
        for compose_name, raw in sorted(self.config_configs.items()):
            config = self.file_object(("configs", compose_name), compose_name, raw)
            spec.configs[config.name] = config
        return spec

    def _object_name(self, compose_name: str, raw: dict[str, Any], path: P) -> tuple[str, bool]:
        external = raw.get("external")
        is_external = False
        name = v.string(raw.get("name"), (*path, "name"))
        if isinstance(external, dict):  # the deprecated `external: {name: x}`
            is_external = True
            name = v.string(external.get("name"), (*path, "external", "name")) or name
        else:
            is_external = v.boolean(external, (*path, "external"))
        if is_external:
            return name or compose_name, True
        return name or self.scope(compose_name), False

    def network(self, compose_name: str) -> NetworkSpec:
        path: P = ("networks", compose_name)
        raw = v.mapping(self.network_configs.get(compose_name), path)
        name, external = self._object_name(compose_name, raw, path)
        if external:
            return NetworkSpec(name=name, compose_name=compose_name, external=True, driver="")
        ipam_raw = v.mapping(raw.get("ipam"), (*path, "ipam"))
        pools = []
        for index, pool in enumerate(ipam_raw.get("config") or []):
            ppath = (*path, "ipam", "config", index)
            pool = v.mapping(pool, ppath)
            pools.append(IPAMPool(
                subnet=v.string(pool.get("subnet"), (*ppath, "subnet")),
                gateway=v.string(pool.get("gateway"), (*ppath, "gateway")),
                ip_range=v.string(pool.get("ip_range"), (*ppath, "ip_range")),
            ))
        labels = v.labels(raw.get("labels"), (*path, "labels"))
        labels[LABEL_NAMESPACE] = self.stack
        return NetworkSpec(
            name=name,
            compose_name=compose_name,
            driver=v.string(raw.get("driver"), (*path, "driver")) or "overlay",
            driver_opts={k: v or "" for k, v in
                         v.list_or_dict(raw.get("driver_opts"), (*path, "driver_opts")).items()},
            ipam=IPAM(driver=v.string(ipam_raw.get("driver"), (*path, "ipam", "driver")),
                      config=pools),
            internal=v.boolean(raw.get("internal"), (*path, "internal")),
            attachable=v.boolean(raw.get("attachable"), (*path, "attachable")),
            labels=labels,
        )

    def volume(self, compose_name: str) -> VolumeSpec:
        path: P = ("volumes", compose_name)
        raw = v.mapping(self.volume_configs.get(compose_name), path)
        name, external = self._object_name(compose_name, raw, path)
        if external:
            return VolumeSpec(name=name, compose_name=compose_name, external=True)
        labels = v.labels(raw.get("labels"), (*path, "labels"))
        labels[LABEL_NAMESPACE] = self.stack
        return VolumeSpec(
            name=name,
            compose_name=compose_name,
            driver=v.string(raw.get("driver"), (*path, "driver")),
            driver_opts={k: v or "" for k, v in
                         v.list_or_dict(raw.get("driver_opts"), (*path, "driver_opts")).items()},
            labels=labels,
        )

    def file_object(self, path: P, compose_name: str, raw: Any) -> SecretSpec:
        raw = v.mapping(raw, path)
        name, external = self._object_name(compose_name, raw, path)
        if external:
            return SecretSpec(name=name, compose_name=compose_name, external=True)
        labels = v.labels(raw.get("labels"), (*path, "labels"))
        labels[LABEL_NAMESPACE] = self.stack
        file = v.string(raw.get("file"), (*path, "file"))
        driver = v.string(raw.get("driver"), (*path, "driver"))
        if not file and not driver:
            raise Invalid(path, f"{str(path[0])[:-1]} {compose_name!r} needs a file (or external)")
        resolved = self.resolve(file) if file else ""
        if resolved and not os.path.isfile(resolved):
            # docker reads it at deploy; failing now leaves nothing half-created.
            raise Invalid((*path, "file"), f"open {resolved}: no such file")
        return SecretSpec(
            name=name,
            compose_name=compose_name,
            file=resolved,
            labels=labels,
            driver=driver,
            driver_opts={k: v or "" for k, v in
                         v.list_or_dict(raw.get("driver_opts"), (*path, "driver_opts")).items()},
            template_driver=v.string(raw.get("template_driver"), (*path, "template_driver")),
        )

    # One service ----------------------------------------------------------------------------

    def service(self, compose_name: str, raw: Any, all_services: dict[str, Any]) -> ServiceSpec:
        path: P = ("services", compose_name)
        raw = v.mapping(raw, path)
        full_name = self.scope(compose_name)
        if not SERVICE_NAME.fullmatch(full_name) or len(full_name) > 63:
            raise Invalid(path, f"invalid service name {full_name!r}: it must be a valid DNS "
                                "name of 63 characters or fewer ([a-zA-Z0-9], '-' or '_' inside)")
        build = self.build(raw.get("build"), (*path, "build"))
        image = v.string(raw.get("image"), (*path, "image"))
        if not image and build is not None:
            image = f"{self.stack}-{compose_name}".lower()  # docker compose's name for builds
        problem = check_image_reference(image)
        if problem:
            raise Invalid((*path, "image"),
                          f"invalid image reference for service {compose_name}: {problem}")
        deploy = v.mapping(raw.get("deploy"), (*path, "deploy"))
        dpath: P = (*path, "deploy")

        labels = v.labels(deploy.get("labels"), (*dpath, "labels"))
        labels[LABEL_NAMESPACE] = self.stack
        labels[LABEL_IMAGE] = image
        container_labels = v.labels(raw.get("labels"), (*path, "labels"))
        container_labels[LABEL_NAMESPACE] = self.stack

        mode, replicas = self.mode(deploy, dpath)
        endpoint = self.endpoint(raw, deploy, path)
        # docker/cli convert: opts.EffectiveCapAddCapDrop (CAP_ names, sorted, adding wins)
        cap_add, cap_drop = capabilities.effective(
            v.strings(raw.get("cap_add"), (*path, "cap_add")),
            v.strings(raw.get("cap_drop"), (*path, "cap_drop")))
        spec = ServiceSpec(
            name=full_name,
            compose_name=compose_name,
            stack=self.stack,
            image=image,
            build=build,
            labels=labels,
            container_labels=container_labels,
            entrypoint=v.shell_words(raw.get("entrypoint"), (*path, "entrypoint")),
            cmd=v.shell_words(raw.get("command"), (*path, "command")),
            env=self.env(raw, path),
            user=v.string(raw.get("user"), (*path, "user")),
            workdir=v.string(raw.get("working_dir"), (*path, "working_dir")),
            hostname=v.string(raw.get("hostname"), (*path, "hostname")),
            mounts=self.mounts(raw, path),
            stop_grace_period=v.duration(raw.get("stop_grace_period"),
                                        (*path, "stop_grace_period"), 10.0),
            stop_signal=v.string(raw.get("stop_signal"), (*path, "stop_signal")),
            healthcheck=self.healthcheck(raw.get("healthcheck"), (*path, "healthcheck")),
            tty=v.boolean(raw.get("tty"), (*path, "tty")),
            open_stdin=v.boolean(raw.get("stdin_open"), (*path, "stdin_open")),
            read_only=v.boolean(raw.get("read_only"), (*path, "read_only")),
            init=None if raw.get("init") is None else v.boolean(raw.get("init"), (*path, "init")),
            extra_hosts=self.extra_hosts(raw.get("extra_hosts"), (*path, "extra_hosts")),
            dns=v.strings(raw.get("dns"), (*path, "dns")),
            dns_search=v.strings(raw.get("dns_search"), (*path, "dns_search")),
            cap_add=cap_add,
            cap_drop=cap_drop,
            sysctls={k: v or "" for k, v in
                     v.list_or_dict(raw.get("sysctls"), (*path, "sysctls")).items()},
            ulimits=self.ulimits(raw.get("ulimits"), (*path, "ulimits")),
            # oom_score_adj is left at 0: docker/cli's loader never reads it (support.py)
            log_driver=self.logging(raw.get("logging"), (*path, "logging")),
            mode=mode,
            replicas=replicas,
            resources=self.resources(deploy.get("resources"), (*dpath, "resources")),
            restart_policy=self.restart_policy(raw, deploy, path),
            update_config=self.update_config(deploy.get("update_config"),
                                              (*dpath, "update_config"), rollback=False),
            rollback_config=self.update_config(deploy.get("rollback_config"),
                                                (*dpath, "rollback_config"), rollback=True),
            placement=self.placement(deploy.get("placement"), (*dpath, "placement")),
            endpoint=endpoint,
            networks=self.networks(raw.get("networks"), (*path, "networks"), compose_name),
            secrets=self.references(raw.get("secrets"), (*path, "secrets"), "secrets",
                                    self.secret_configs, "/run/secrets/"),
            # A config's target stays as written (docker/cli convertFileObject: the source
            # name by default); the node puts a relative one under / (moby's
            # getConfigTargetPath). A secret's goes under /run/secrets here already.
            configs=self.references(raw.get("configs"), (*path, "configs"), "configs",
                                    self.config_configs, ""),
            depends_on=self.depends_on(raw.get("depends_on"), (*path, "depends_on"),
                                       all_services),
        )
        if mode.endswith("job") and deploy.get("update_config") is not None:
            raise Invalid((*dpath, "update_config"), "Jobs may not have an update config")
        spec.defaulted = self.defaulted(raw, deploy)
        return spec

    @staticmethod
    def defaulted(raw: dict[str, Any], deploy: dict[str, Any]) -> list[str]:
        """The parts docker/cli's convert leaves nil for this service (model/service.py
        OPTIONAL): the spec holds Swarm's defaults for them, `inspect` prints them as Docker."""
        out = []
        if raw.get("stop_grace_period") is None:
            out.append("stop_grace_period")
        if raw.get("dns") is None and raw.get("dns_search") is None:  # convertDNSConfig: nil
            out.append("dns_config")
        resources = deploy.get("resources") or {}
        out += [f"resources.{k}" for k in ("limits", "reservations") if resources.get(k) is None]
        policy = deploy.get("restart_policy")
        if policy is not None:
            if policy.get("delay") is None:
                out.append("restart_policy.delay")
        elif str(raw.get("restart") or "").partition(":")[0] in ("no", ""):
            out.append("restart_policy")  # convertRestartPolicy: nil
        else:
            out.append("restart_policy.delay")  # the legacy `restart:` sets no delay
        out += [key for key in ("update_config", "rollback_config") if deploy.get(key) is None]
        return out

    def build(self, raw: Any, path: P) -> BuildSpec | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"context": raw}
        raw = v.mapping(raw, path)
        context = v.string(raw.get("context"), (*path, "context"), ".") or "."
        if not re.match(r"^(?:[a-z]+://|git@|github\.com/)", context):
            context = self.resolve(context)
        return BuildSpec(
            context=context,
            dockerfile=v.string(raw.get("dockerfile"), (*path, "dockerfile")),
            args=v.list_or_dict(raw.get("args"), (*path, "args"), allow_bare=True),
            target=v.string(raw.get("target"), (*path, "target")),
            labels=v.labels(raw.get("labels"), (*path, "labels")),
            tags=v.strings(raw.get("tags"), (*path, "tags")),
            network=v.string(raw.get("network"), (*path, "network")),
            no_cache=v.boolean(raw.get("no_cache"), (*path, "no_cache")),
            pull=v.boolean(raw.get("pull"), (*path, "pull")),
        )

    def env(self, raw: dict[str, Any], path: P) -> list[str]:
        # env_file was read into environment per file, before merging (api.resolve_environment)
        values: dict[str, str | None] = {}
        values.update(v.list_or_dict(raw.get("environment"), (*path, "environment"),
                                    allow_bare=True))
        out = []
        for key, value in values.items():
            # loader.go updateEnvironment: an empty or missing value comes from the
            # environment when it is set there.
            found = self.environment.get(key) if not value else None
            if found is not None:
                out.append(f"{key}={found}")
            else:
                out.append(key if value is None else f"{key}={value}")
        return sorted(out)

    def mounts(self, raw: dict[str, Any], path: P) -> list[Mount]:
        mounts: list[Mount] = []
        volumes = raw.get("volumes")
        for index, item in enumerate(volumes if isinstance(volumes, list) else []):
            mounts.append(self.mount(item, (*path, "volumes", index)))
        # The service's `tmpfs:` makes no mount: docker/cli's convert never reads it (only a
        # `type: tmpfs` volume is one), so docker stack deploy drops it without a word.
        seen: set[str] = set()
        for index, mount in enumerate(mounts):
            where = (*path, "volumes", index)
            if not mount.target.startswith("/"):
                raise Invalid(where, f"invalid mount target {mount.target!r}: must be an absolute path")
            # Swarm's controlapi refuses the service (validateMounts); nothing is dropped.
            if mount.target in seen:
                raise Invalid(where, f"ContainerSpec: duplicate mount point: {mount.target}")
            seen.add(mount.target)
        return mounts

    def mount(self, item: Any, path: P) -> Mount:
        if isinstance(item, str):
            try:
                short = parse_volume(item)
            except ValueError as exc:
                raise Invalid(path, str(exc)) from None
            long: dict[str, Any] = {"type": short.type, "source": short.source,
                                    "target": short.target, "read_only": short.read_only}
            if short.nocopy:
                long["volume"] = {"nocopy": True}
            if short.propagation:
                long["bind"] = {"propagation": short.propagation}
            item = long
        item = v.mapping(item, path)
        kind = v.string(item.get("type"), (*path, "type"))
        source = v.string(item.get("source"), (*path, "source"))
        target = v.string(item.get("target"), (*path, "target"))
        if not target:
            raise Invalid(path, "a mount needs a target")
        read_only = v.boolean(item.get("read_only"), (*path, "read_only"))
        options: list[str] = []
        for other in ("bind", "volume", "tmpfs"):
            if other != kind and item.get(other) is not None:
                raise Invalid((*path, other), f"{other} options are incompatible with type {kind}")
        if kind == "volume":
            opts = v.mapping(item.get("volume"), (*path, "volume"))
            if v.boolean(opts.get("nocopy"), (*path, "volume", "nocopy")):
                options.append("nocopy")
            if opts.get("subpath"):
                subpath = v.string(opts["subpath"], (*path, "volume", "subpath"))
                if not _is_local(subpath):
                    raise Invalid((*path, "volume", "subpath"), "subpath must be a relative path within the volume")
                options.append(f"subpath={subpath}")
            if not source:
                # docker/cli handleVolumeToMount: an anonymous volume gets no VolumeOptions at
                # all, so its nocopy and subpath are dropped there.
                return Mount(type="volume", target=target, read_only=read_only)
            if source not in self.volume_configs:
                raise Invalid((*path, "source") if "source" in item else path,
                              f'undefined volume "{source}"')
            self.used_volumes.add(source)
            volume_raw = v.mapping(self.volume_configs.get(source), ("volumes", source))
            name, external = self._object_name(source, volume_raw, ("volumes", source))
            if not external:
                # docker/cli convertVolumeToMount: the volume's driver and options travel with
                # the mount, for the node that makes the volume when a task first uses it
                # (`--mount volume-driver=...,volume-opt=k=v` are the same words).
                driver = v.string(volume_raw.get("driver"), ("volumes", source, "driver"))
                if driver:
                    options.append(f"volume-driver={driver}")
                driver_opts = v.list_or_dict(volume_raw.get("driver_opts"), ("volumes", source, "driver_opts"))
                options += [f"volume-opt={key}={value or ''}" for key, value in driver_opts.items()]
                # ...and its labels with the stack's (addStackLabel), which the node gives the
                # volume it makes, as dockerd does (`volume ls --filter label=...` finds it).
                labels = v.labels(volume_raw.get("labels"), ("volumes", source, "labels"))
                labels[LABEL_NAMESPACE] = self.stack
                options += [f"volume-label={key}={labels[key]}" for key in sorted(labels)]
            return Mount(type="volume", source=name, target=target, read_only=read_only,
                         options=options)
        if kind == "bind":
            if not source:
                raise Invalid(path, "invalid bind source, source cannot be empty")
            opts = v.mapping(item.get("bind"), (*path, "bind"))
            propagation = v.string(opts.get("propagation"), (*path, "bind", "propagation"))
            if propagation:
                options.append(propagation)
            return Mount(type="bind", source=self.resolve(source), target=target,
                         read_only=read_only, options=options)
        if kind == "tmpfs":
            if source:
                raise Invalid((*path, "source"), "invalid tmpfs source, source must be empty")
            opts = v.mapping(item.get("tmpfs"), (*path, "tmpfs"))
            if opts.get("size") is not None:
                options.append(f"size={v.size(opts['size'], (*path, 'tmpfs', 'size'))}")
            # tmpfs.mode is dropped, as docker/cli's convert drops it (its TmpFsOpts has only
            # Size): the mount keeps tmpfs's 1777 under docker stack deploy.
            return Mount(type="tmpfs", target=target, read_only=read_only, options=options)
        raise Invalid((*path, "type"), f"mount type {kind!r} is not supported by shoal")

    def healthcheck(self, raw: Any, path: P) -> Healthcheck | None:
        if raw is None:
            return None
        raw = v.mapping(raw, path)
        test_raw = raw.get("test")
        disable = v.boolean(raw.get("disable"), (*path, "disable"))
        if disable:
            if test_raw:
                raise Invalid(path, "test and disable can't be set at the same time")
            return Healthcheck(test=["NONE"])
        if isinstance(test_raw, str):
            test = ["CMD-SHELL", test_raw]
        else:
            test = v.strings(test_raw, (*path, "test"))
        check = Healthcheck(test=test, retries=v.integer(raw.get("retries"), (*path, "retries")))
        for key in ("interval", "timeout", "start_period", "start_interval"):
            value = v.duration(raw.get(key), (*path, key))
            if value and value < MIN_HEALTH_DURATION:
                raise Invalid((*path, key), "must be at least 1ms")
            if value < 0:
                raise Invalid((*path, key), "must not be negative")
            setattr(check, key, value)
        return check

    def extra_hosts(self, raw: Any, path: P) -> list[str]:
        """docker/cli's transformHostsList, then convertExtraHosts: a mapping's entries sorted
        (a null value left out), a list's as written, `host=ip` or `host:ip` (the first `=`,
        else the first `:`), brackets around an IPv6 address dropped; Swarm stores "IP host",
        as /etc/hosts reads. An entry with neither separator is dropped by docker stack deploy
        without a word; shoal warns of it."""
        pairs: list[tuple[str, str]] = []
        if isinstance(raw, dict):
            for host, ips in raw.items():
                for ip in (ips if isinstance(ips, list) else [ips]):
                    if ip is not None:
                        pairs.append((str(host), v.string(ip, (*path, host))))
            pairs.sort(key=lambda pair: f"{pair[0]}:{pair[1]}")
        else:
            for index, entry in enumerate(v.strings(raw, path)):
                host, sep, ip = entry.partition("=")
                if not sep:
                    host, sep, ip = entry.partition(":")
                if not sep:
                    self.warn(f"{dotted((*path, index))}: ignoring extra host {entry!r}: "
                              "it is not host:ip")
                    continue
                pairs.append((host, ip))
        out = []
        for host, ip in pairs:
            if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
                ip = ip[1:-1]
            out.append(f"{ip} {host}")
        return out

    def ulimits(self, raw: Any, path: P) -> list[Ulimit]:
        out = []
        for name, value in sorted(v.mapping(raw, path).items()):
            if isinstance(value, dict):
                soft = v.integer(value.get("soft"), (*path, name, "soft"), minimum=-1)
                hard = v.integer(value.get("hard"), (*path, name, "hard"), minimum=-1)
            else:
                soft = hard = v.integer(value, (*path, name), minimum=-1)
            out.append(Ulimit(name=name, soft=soft, hard=hard))
        return out

    def logging(self, raw: Any, path: P) -> LogDriver | None:
        if raw is None:
            return None
        raw = v.mapping(raw, path)
        options = {k: v or "" for k, v in
                   v.list_or_dict(raw.get("options"), (*path, "options")).items()}
        return LogDriver(name=v.string(raw.get("driver"), (*path, "driver")), options=options)

    # deploy ------------------------------------------------------------------------------------

    def mode(self, deploy: dict[str, Any], path: P) -> tuple[str, int]:
        mode = v.string(deploy.get("mode"), (*path, "mode")) or "replicated"
        replicas_raw = deploy.get("replicas")
        if mode in ("global", "global-job"):
            if replicas_raw is not None:
                raise Invalid((*path, "replicas"),
                              "replicas can only be used with replicated or replicated-job mode")
            return mode, 0
        if mode not in ("replicated", "replicated-job"):
            raise Invalid((*path, "mode"), f"unknown mode: {mode}")
        return mode, v.integer(replicas_raw, (*path, "replicas"), default=1)

    def resources(self, raw: Any, path: P) -> Resources:
        raw = v.mapping(raw, path)
        limits_raw = v.mapping(raw.get("limits"), (*path, "limits"))
        reservations_raw = v.mapping(raw.get("reservations"), (*path, "reservations"))

        def cpus(value: Any, cpath: P) -> int:
            if value is None:
                return 0
            try:
                nano = parse_cpus(value)
            except ValueError as exc:
                raise Invalid(cpath, str(exc)) from None
            if 0 < nano < MIN_NANO_CPUS:
                raise Invalid(cpath, "invalid cpu value: must be at least 0.001")
            return nano

        def memory(value: Any, mpath: P) -> int:
            size = v.size(value, mpath)
            if 0 < size < MIN_MEMORY:
                raise Invalid(mpath, "invalid memory value: must be at least 4MiB")
            return size

        generic = []
        for index, item in enumerate(reservations_raw.get("generic_resources") or []):
            gpath = (*path, "reservations", "generic_resources", index)
            spec = v.mapping(v.mapping(item, gpath).get("discrete_resource_spec"),
                            (*gpath, "discrete_resource_spec"))
            generic.append(GenericResource(
                kind=v.string(spec.get("kind"), (*gpath, "discrete_resource_spec", "kind")),
                value=v.integer(spec.get("value"), (*gpath, "discrete_resource_spec", "value")),
            ))
        return Resources(
            limits=ResourceLimits(
                nano_cpus=cpus(limits_raw.get("cpus"), (*path, "limits", "cpus")),
                memory_bytes=memory(limits_raw.get("memory"), (*path, "limits", "memory")),
                pids=v.integer(limits_raw.get("pids"), (*path, "limits", "pids")),
            ),
            reservations=ResourceReservations(
                nano_cpus=cpus(reservations_raw.get("cpus"), (*path, "reservations", "cpus")),
                memory_bytes=memory(reservations_raw.get("memory"),
                                    (*path, "reservations", "memory")),
                generic_resources=generic,
            ),
        )

    def restart_policy(self, raw: dict[str, Any], deploy: dict[str, Any], path: P) -> RestartPolicy:
        policy = deploy.get("restart_policy")
        ppath: P = (*path, "deploy", "restart_policy")
        if policy is not None:
            policy = v.mapping(policy, ppath)
            condition = v.string(policy.get("condition"), (*ppath, "condition")) or "any"
            if condition not in ("none", "on-failure", "any"):
                raise Invalid((*ppath, "condition"),
                              f"invalid restart condition {condition!r}: "
                              "use none, on-failure or any")
            return RestartPolicy(
                condition=condition,
                delay=v.duration(policy.get("delay"), (*ppath, "delay"), 5.0),
                max_attempts=v.integer(policy.get("max_attempts"), (*ppath, "max_attempts")),
                window=v.duration(policy.get("window"), (*ppath, "window")),
            )
        legacy = raw.get("restart")
        if legacy is None:
            return RestartPolicy()
        text = v.string(legacy, (*path, "restart"))
        name, _, count = text.partition(":")
        attempts = 0
        if count:
            if not re.fullmatch(r"[0-9]{1,18}", count):
                raise Invalid((*path, "restart"),
                              f"invalid restart policy: maximum retry count must be an integer: "
                              f"{count!r}")
            attempts = int(count)
        if name in ("no", ""):
            return RestartPolicy()  # nil in the spec: swarmkit's defaults
        if name in ("always", "unless-stopped"):
            return RestartPolicy(condition="any", max_attempts=attempts)
        if name == "on-failure":
            return RestartPolicy(condition="on-failure", max_attempts=attempts)
        raise Invalid((*path, "restart"),
                      f"invalid restart policy: unknown policy '{name}' (must be one of 'no', "
                      "'always', 'on-failure', or 'unless-stopped')")

    def update_config(self, raw: Any, path: P, *, rollback: bool) -> UpdateConfig:
        if raw is None:
            return UpdateConfig()
        raw = v.mapping(raw, path)
        actions = ("pause", "continue") if rollback else ("pause", "continue", "rollback")
        action = v.string(raw.get("failure_action"), (*path, "failure_action")) or "pause"
        if action not in actions:
            raise Invalid((*path, "failure_action"),
                          f"invalid failure action {action!r}: use " + " or ".join(actions))
        order = v.string(raw.get("order"), (*path, "order")) or "stop-first"
        if order not in ("stop-first", "start-first"):
            raise Invalid((*path, "order"), f"invalid order {order!r}: use stop-first or "
                                            "start-first")
        ratio = v.number(raw.get("max_failure_ratio"), (*path, "max_failure_ratio"))
        if not 0 <= ratio <= 1:
            raise Invalid((*path, "max_failure_ratio"), "must be between 0 and 1")
        monitor = v.duration(raw.get("monitor"), (*path, "monitor"))
        delay = v.duration(raw.get("delay"), (*path, "delay"))
        if delay < 0 or monitor < 0:
            raise Invalid(path, "durations must not be negative")
        return UpdateConfig(
            parallelism=v.integer(raw.get("parallelism"), (*path, "parallelism"), default=1),
            delay=delay,
            failure_action=action,
            monitor=monitor or 5.0,  # 0 is sent as unset: swarm monitors for 5s
            max_failure_ratio=ratio,
            order=order,
        )

    def placement(self, raw: Any, path: P) -> Placement:
        raw = v.mapping(raw, path)
        preferences = []
        for index, item in enumerate(raw.get("preferences") or []):
            item = v.mapping(item, (*path, "preferences", index))
            spread = v.string(item.get("spread"), (*path, "preferences", index, "spread"))
            if spread:
                preferences.append(spread)
        constraints = v.strings(raw.get("constraints"), (*path, "constraints"))
        for index, constraint in enumerate(constraints):
            if "==" not in constraint and "!=" not in constraint:
                raise Invalid((*path, "constraints", index),
                              f"invalid constraint {constraint!r}: use key==value or key!=value")
        return Placement(
            constraints=constraints,
            preferences=preferences,
            max_replicas_per_node=v.integer(raw.get("max_replicas_per_node"),
                                       (*path, "max_replicas_per_node")),
        )

    def endpoint(self, raw: dict[str, Any], deploy: dict[str, Any], path: P) -> EndpointSpec:
        mode = (v.string(deploy.get("endpoint_mode"), (*path, "deploy", "endpoint_mode"))
                or "vip").lower()
        if mode not in ("vip", "dnsrr"):
            raise Invalid((*path, "deploy", "endpoint_mode"), f"invalid resolution mode: {mode}")
        ports: list[PortConfig] = []
        raw_ports = raw.get("ports")
        for index, item in enumerate(raw_ports if isinstance(raw_ports, list) else []):
            ports.extend(self.port(item, (*path, "ports", index)))
        published = set()
        for port in ports:  # Swarm's validateEndpointSpec
            if port.published:
                if (port.published, port.protocol) in published:
                    raise Invalid((*path, "ports"), "EndpointSpec: duplicate published ports provided")
                published.add((port.published, port.protocol))
        ports.sort(key=PortConfig.sort_key)
        if mode == "dnsrr" and any(p.publish_mode == "ingress" and p.published for p in ports):
            raise Invalid((*path, "deploy", "endpoint_mode"),
                          "port published with ingress mode can't be used with dnsrr mode")
        return EndpointSpec(mode=mode, ports=ports)

    def port(self, item: Any, path: P) -> list[PortConfig]:
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            text = v.text(item)
            try:
                shorts = parse_port(text)
            except ValueError as exc:
                raise Invalid(path, str(exc)) from None
            if any(s.target == 0 for s in shorts):
                raise Invalid(path, f"invalid port {text!r}: the container port must be 1-65535")
            return [PortConfig(target=s.target, published=s.published, protocol=s.protocol)
                    for s in shorts]
        item = v.mapping(item, path)
        target = v.integer(item.get("target"), (*path, "target"), default=-1)
        if not 1 <= target <= 65535:
            raise Invalid((*path, "target"), "a port target between 1 and 65535 is required")
        published_raw = item.get("published")
        published = 0
        if published_raw is not None:
            text = v.text(published_raw)
            # At most 5 digits before int(): Python refuses to read thousands of digits.
            if not re.fullmatch(r"\d{1,5}", text) or not 0 <= int(text) <= 65535:
                raise Invalid((*path, "published"), f"invalid published port {text!r}")
            published = int(text)
        protocol = (v.string(item.get("protocol"), (*path, "protocol")) or "tcp").lower()
        if protocol not in ("tcp", "udp", "sctp"):
            raise Invalid((*path, "protocol"), f"invalid protocol {protocol!r}: use tcp, udp "
                                               "or sctp")
        # moby's portConfigToGRPC upper-cases it: `Host` is host mode
        mode = (v.string(item.get("mode"), (*path, "mode")) or "ingress").lower()
        if mode not in ("ingress", "host"):
            raise Invalid((*path, "mode"), f"invalid publish mode {mode!r}: use ingress or host")
        return [PortConfig(target=target, published=published, protocol=protocol,
                           publish_mode=mode)]

    def networks(self, raw: Any, path: P, compose_name: str) -> list[NetworkAttachment]:
        if raw is None or raw == [] or raw == {}:
            attachments: dict[str, Any] = {DEFAULT_NETWORK: None}
        elif isinstance(raw, list):
            attachments = {v.string(n, (*path, i)): None for i, n in enumerate(raw)}
        else:
            attachments = v.mapping(raw, path)
        out = []
        for position, (name, config) in enumerate(attachments.items()):
            npath = (*path, name)
            if name not in self.network_configs and name != DEFAULT_NETWORK:
                raise Invalid(npath if isinstance(raw, dict) else (*path, position),
                              f'undefined network "{name}"')
            self.used_networks.add(name)
            network_raw = v.mapping(self.network_configs.get(name), ("networks", name))
            target, external = self._object_name(name, network_raw, ("networks", name))
            config = v.mapping(config, npath)
            aliases = v.strings(config.get("aliases"), (*npath, "aliases"))
            driver_opts = {k: v or "" for k, v in
                           v.list_or_dict(config.get("driver_opts"),
                                         (*npath, "driver_opts")).items()}
            # Swarm adds the bare service name on user-defined networks only.
            if target not in ("host", "bridge", "none") and not target.startswith("container:"):
                aliases.append(compose_name)
            out.append(NetworkAttachment(target=target, aliases=aliases,
                                         driver_opts=driver_opts))
        out.sort(key=lambda a: a.target)
        return out

    def references(self, raw: Any, path: P, section: str, declared: dict[str, Any],
                   prefix: str) -> list[FileReference]:
        out = []
        targets: dict[str, str] = {}
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            ipath = (*path, index)
            if isinstance(item, str):
                item = {"source": item}
            item = v.mapping(item, ipath)
            source = v.string(item.get("source"), (*ipath, "source"))
            if source not in declared:
                raise Invalid(ipath, f'undefined {section[:-1]} "{source}"')
            name, _external = self._object_name(source, v.mapping(declared[source],
                                                                 (section, source)),
                                                (section, source))
            target = v.string(item.get("target"), (*ipath, "target")) or source
            if prefix and not target.startswith("/"):
                target = prefix + target
            mode_raw = item.get("mode")
            mode = 0o444
            if mode_raw is not None:
                if isinstance(mode_raw, str):
                    if not re.fullmatch(r"0?[0-7]{1,4}", mode_raw):
                        raise Invalid((*ipath, "mode"), f"invalid file mode {mode_raw!r}")
                    mode = int(mode_raw, 8)
                else:
                    mode = v.integer(mode_raw, (*ipath, "mode"))
            # Swarm's validateSecretRefsSpec / validateConfigRefsSpec: one file per target.
            file_name = v.string(item.get("target"), (*ipath, "target")) or source
            if file_name in targets:
                raise Invalid(ipath, f"{section[:-1]} references '{targets[file_name]}' and "
                                     f"'{name}' have a conflicting target: '{file_name}'")
            targets[file_name] = name
            out.append(FileReference(
                source=name,
                target=target,
                uid=v.string(item.get("uid"), (*ipath, "uid")) or "0",
                gid=v.string(item.get("gid"), (*ipath, "gid")) or "0",
                mode=mode,
            ))
        out.sort(key=lambda r: r.source)
        return out

    def depends_on(self, raw: Any, path: P, services: dict[str, Any]) -> dict[str, DependsOn]:
        if raw is None:
            return {}
        if isinstance(raw, list):
            entries: dict[str, Any] = {v.string(n, (*path, i)): None for i, n in enumerate(raw)}
        else:
            entries = v.mapping(raw, path)
        out = {}
        for name, config in entries.items():
            if name not in services:
                # docker/cli never reads depends_on, so a stack file whose dependency was left
                # out (an external database) deploys there without a word: nothing to wait on.
                continue
            config = v.mapping(config, (*path, name))
            out[name] = DependsOn(
                condition=v.string(config.get("condition"), (*path, name, "condition"))
                or "service_started",
                required=v.boolean(config.get("required"), (*path, name, "required"), True),
                restart=v.boolean(config.get("restart"), (*path, name, "restart")),
            )
        return out


__all__ = ["Converter", "Invalid", "convert", "validate_stack_name"]


def convert(
    config: dict[str, Any],
    stack: str,
    working_dir: Path,
    environment: Mapping[str, str],
    warn: Callable[[str], None],
) -> StackSpec:
    """Raises Invalid (with the key path) for a value Swarm would refuse."""
    return Converter(config, stack, working_dir, environment, warn).stack_spec()


def _is_local(path: str) -> bool:
    """Go's filepath.IsLocal, as moby checks a volume mount's subpath: relative, and no `..`
    that leaves it once cleaned."""
    cleaned = posixpath.normpath(path)
    return not path.startswith("/") and cleaned != ".." and not cleaned.startswith("../")
