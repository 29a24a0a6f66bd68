"""What the flags of `service create` and `service update` do to a ServiceSpec, as docker/cli's
cli/command/service/{opts,update}.go and opts/{mount,swarmopts}.go build and change it.

create: flags -> a ServiceSpec with the model's defaults wherever a flag is absent (the same
defaults Compose gets, so a service made here and one made by `stack deploy` are the same kind
of object). update: the current spec with each changed flag applied as update.go applies it:
removals first, then additions, matched by Docker's keys (env and labels by key, mounts by
target, ports by target/protocol/mode, ulimits by name, secrets and configs by source name).

A value a flag cannot take is InvalidArgument (pflag's parse error, exit 125); a combination
Docker refuses after parsing is ShoalError (exit 1), as docker/cli returns it from RunE."""

from __future__ import annotations

import argparse
import csv
import ipaddress
import shlex
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from shoal.cli.serviceflags import ROLLBACK_COMPATIBLE, changed
from shoal.errors import InvalidArgument, ShoalError
from shoal.model.container import Mount, Ulimit
from shoal.model.service import (
    FileReference, GenericResource, Healthcheck, LogDriver, NetworkAttachment, PortConfig,
    RestartPolicy, ServiceSpec, UpdateConfig)

MODES = ("replicated", "global", "replicated-job", "global-job")
JOB_MODES = ("replicated-job", "global-job")
SECRET_DIR = "/run/secrets/"  # where Swarm puts a secret whose target is a bare name



def _flag_error(value: str, flag: str, why: str) -> InvalidArgument:
    return InvalidArgument(f'invalid argument "{value}" for "--{flag}" flag: {why}')


# ---- value parsers -----------------------------------------------------------------------------

def parse_duration(value: str, flag: str, positive: bool = False) -> float:
    """Go's time.ParseDuration, in seconds (opts.DurationOpt / PositiveDurationOpt)."""
    from shoal.compose.syntax import parse_duration_ns

    try:
        ns = parse_duration_ns(value)
    except ValueError as exc:
        raise _flag_error(value, flag, str(exc)) from None
    if positive and ns < 0:
        raise _flag_error(value, flag, "duration cannot be negative")
    return ns / 1e9


def parse_uint(value: str, flag: str) -> int:
    """strconv.ParseUint(s, 0, 64): decimal, 0x.., 0o.., 0b.."""
    try:
        number = int(value, 0)
    except ValueError:
        number = -1
    if number < 0 or number >= 1 << 64:
        raise _flag_error(value, flag, f'strconv.ParseUint: parsing "{value}": invalid syntax')
    return number


def parse_int(value: str, flag: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise _flag_error(value, flag, f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_float(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise _flag_error(value, flag, f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None


def parse_nano_cpus(value: str, flag: str) -> int:
    from shoal.cli.container import parse_cpus

    try:
        return parse_cpus(value)
    except InvalidArgument as exc:  # its message names --cpus: say which flag it was
        raise InvalidArgument(str(exc).replace('"--cpus"', f'"--{flag}"')) from None


def parse_bytes(value: str, flag: str) -> int:
    from shoal.cli.container import parse_memory

    return parse_memory(value, f"--{flag}")


def _csv_fields(value: str) -> list[str]:
    try:
        return next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise InvalidArgument(f"invalid value: {value}") from None


def kv_map(items: Iterable[str]) -> dict[str, str]:
    """opts.ConvertKVStringsToMap: `k=v`, or `k` alone for an empty value (`run`'s parser,
    without its check that a --sysctl has a value: a service's sysctls are not checked)."""
    from shoal.cli.container import parse_kv

    return parse_kv(list(items), "--label")


def validate_label(value: str, flag: str) -> str:
    """opts.ValidateLabel."""
    key = value.partition("=")[0]
    if not key.strip():
        raise _flag_error(value, flag, f"invalid label '{value}': empty name")
    if any(c.isspace() for c in key):
        raise _flag_error(value, flag, f"label '{key}' contains whitespaces")
    return value


def validate_ip(value: str, flag: str) -> str:
    """opts.ValidateIPAddress."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise _flag_error(value, flag, f"IP address is not correctly formatted: {value}") from None


def swarm_host(value: str, flag: str) -> str:
    """`host:ip` (opts.ValidateExtraHost) -> Swarm's "IP host" entry."""
    host, sep, ip = value.partition(":")
    if not sep:
        host, sep, ip = value.partition("=")
    if not sep or not host:
        raise _flag_error(value, flag, f'bad format for add-host: "{value}"')
    try:
        if ip != "host-gateway":  # opts.ValidateExtraHost: the node's daemon puts its address in
            ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise _flag_error(value, flag, f'invalid IP address in add-host: "{ip}"') from None
    return f"{ip.strip('[]')} {host}"


def parse_mount(value: str) -> Mount:
    """opts.MountOpt: `type=volume|bind|tmpfs,source=..,target=..,readonly,...`."""
    flag = "mount"
    value = value.strip()
    if not value:
        raise _flag_error(value, flag, "value is empty")
    kind, source, target, read_only = "volume", "", "", False
    options: list[str] = []
    typed: dict[str, str] = {}  # option -> the mount type it belongs to
    for field in _csv_fields(value):
        key, has_value, val = field.partition("=")
        key = key.lower()
        if not has_value and key not in ("readonly", "ro", "volume-nocopy"):
            raise _flag_error(value, flag, f"invalid field '{field}' must be a key=value pair")
        if has_value and not val.strip():
            raise _flag_error(value, flag, f"invalid value for '{key}': value is empty")
        if key == "type":
            kind = val.lower()
        elif key in ("source", "src"):
            source = val
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            if has_value and val.lower() not in ("1", "true", "0", "false"):
                raise _flag_error(value, flag, f"invalid value for {key}: {val}")
            read_only = not has_value or val.lower() in ("1", "true")
        elif key == "bind-propagation":
            if val not in ("rprivate", "private", "rshared", "shared", "rslave", "slave"):
                raise _flag_error(value, flag, f"invalid value for {key}: {val}")
            options.append(val)
            typed[key] = "bind"
        elif key == "volume-nocopy":
            if not has_value or val.lower() in ("1", "true"):
                options.append("nocopy")
            typed[key] = "volume"
        elif key == "volume-subpath":
            from shoal.runtime.volumes import check_subpath

            try:
                check_subpath(val)
            except InvalidArgument as exc:
                raise _flag_error(value, flag, f"invalid value for {key}: {exc}") from None
            options.append(f"subpath={val}")
            typed[key] = "volume"
        elif key == "tmpfs-size":
            try:
                options.append(f"size={parse_bytes(val, flag)}")
            except InvalidArgument:
                raise _flag_error(value, flag, f"invalid value for {key}: {val}") from None
            typed[key] = "tmpfs"
        elif key == "tmpfs-mode":
            try:
                options.append(f"mode={int(val, 8):o}")
            except ValueError:
                raise _flag_error(value, flag, f"invalid value for {key}: {val}") from None
            typed[key] = "tmpfs"
        else:
            raise _flag_error(value, flag, f"unknown option '{key}' in '{field}'")
    if kind not in ("volume", "bind", "tmpfs"):
        raise _flag_error(value, flag, f"mount type '{kind}' is not supported by shoal")
    for key, owner in typed.items():
        if owner != kind:
            raise _flag_error(value, flag, f"cannot mix '{owner}-*' options with mount type '{kind}'")
    if not target:
        raise _flag_error(value, flag, "target is required")
    if not target.startswith("/"):
        raise _flag_error(value, flag, f"invalid mount target, must be an absolute path: {target}")
    if kind == "bind" and not source:
        raise _flag_error(value, flag, 'invalid mount config for type "bind": field Source must not be empty')
    if kind == "tmpfs" and source:
        raise _flag_error(value, flag, "invalid tmpfs source, source must be empty")
    return Mount(type=kind, source=source, target=target, read_only=read_only, options=options)


def parse_ports(value: str, flag: str = "publish") -> list[PortConfig]:
    """swarmopts.PortOpt: `published=8080,target=80,protocol=udp,mode=host`, or the short
    `[published:]target[/protocol]` with ranges (`8080-8081:80-81`)."""
    import re

    if re.search(r"\w+=\w+(,\w+=\w+)*", value):
        port = PortConfig(target=0)
        for field in _csv_fields(value):
            key, sep, val = field.lower().partition("=")
            if not sep or not key:
                raise _flag_error(value, flag, f"invalid field: {field}")
            if key == "protocol":
                if val not in ("tcp", "udp", "sctp"):
                    raise _flag_error(value, flag, f"invalid protocol value '{val}'")
                port.protocol = val
            elif key == "mode":
                if val not in ("ingress", "host"):
                    raise _flag_error(value, flag, f"invalid publish mode value ({val}): must be either 'ingress' or 'host'")
                port.publish_mode = val
            elif key in ("target", "published"):
                if not val.isdigit() or int(val) > 65535:
                    why = "invalid syntax" if not val.isdigit() else "value out of range"
                    raise _flag_error(value, flag, f"invalid {key} port ({val}): value must be an integer: {why}")
                setattr(port, key, int(val))
            else:
                raise _flag_error(value, flag, f"invalid field key: {key}")
        if port.target == 0:
            raise _flag_error(value, flag, "missing mandatory field 'target'")
        return [port]
    spec, _, proto = value.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise _flag_error(value, flag, f"invalid proto: {proto}")
    parts = spec.split(":")
    if len(parts) > 2:
        raise _flag_error(value, flag, "hostip is not supported")
    published_text, target_text = (parts if len(parts) == 2 else ["", parts[0]])

    def span(text: str) -> list[int]:
        low, dash, high = text.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise _flag_error(value, flag, f"invalid containerPort: {text}" if text is target_text
                              else f"invalid hostPort: {text}")
        first, last = int(low), int(high) if dash else int(low)
        if first > 65535 or last > 65535 or last < first:
            raise _flag_error(value, flag, f"invalid port range: {text}")
        return list(range(first, last + 1))

    targets = span(target_text)
    published = span(published_text) if published_text else [0] * len(targets)
    if len(published) != len(targets):
        if len(targets) == 1:
            return [PortConfig(target=targets[0], published=p, protocol=proto) for p in published]
        raise _flag_error(value, flag, f"invalid ranges specified for container and host Ports: {target_text} and {published_text}")
    return [PortConfig(target=t, published=p, protocol=proto) for t, p in zip(targets, published)]


def parse_file_ref(value: str, kind: str) -> tuple[str, FileReference]:
    """swarmopts.SecretOpt / ConfigOpt: `name`, or `source=..,target=..,uid=..,gid=..,mode=..`.
    Returns the file name as given (for duplicate checks) and the reference with Swarm's path."""
    flag = kind
    fields = _csv_fields(value)
    source, name, uid, gid, mode = "", "", "0", "0", 0o444
    if len(fields) == 1 and "=" not in fields[0]:
        source = name = fields[0]
    else:
        for field in fields:
            key, sep, val = field.partition("=")
            if not sep or not key:
                raise _flag_error(value, flag, f"invalid field '{field}' must be a key=value pair")
            key = key.lower()
            if key in ("source", "src"):
                source = val
            elif key == "target":
                name = val
            elif key == "uid":
                uid = val
            elif key == "gid":
                gid = val
            elif key == "mode":
                try:
                    mode = int(val, 0) if not (val.startswith("0") and val[1:].isdigit()) else int(val, 8)
                except ValueError:
                    raise _flag_error(value, flag, f'invalid mode specified: strconv.ParseUint: parsing "{val}": invalid syntax') from None
            else:
                raise _flag_error(value, flag, f"invalid field in {kind} request: {key}")
    if not source:
        raise _flag_error(value, flag, "source is required")
    name = name or source
    # A config's File.Name stays as given (opts/swarmopts ConfigOpt: the source by default), the
    # node puts a relative one under /; a secret's bare name is kept under /run/secrets.
    target = SECRET_DIR + name if kind == "secret" and not name.startswith("/") else name
    return name, FileReference(source=source, target=target, uid=uid, gid=gid, mode=mode)


def parse_network(value: str) -> NetworkAttachment:
    """opts.NetworkOpt: `name`, or `name=..,alias=..,driver-opt=k=v`."""
    if "=" not in value:
        return NetworkAttachment(target=value)
    target, aliases, driver_opts = "", [], {}
    for field in _csv_fields(value):
        key, sep, val = field.partition("=")
        if not sep:
            raise _flag_error(value, "network", f"invalid field '{field}' must be a key=value pair")
        key = key.lower()
        if key == "name":
            target = val
        elif key == "alias":
            aliases.append(val)
        elif key == "driver-opt":
            opt_key, opt_sep, opt_val = val.partition("=")
            if not opt_sep:
                raise _flag_error(value, "network", f"invalid key value pair format in driver options")
            driver_opts[opt_key] = opt_val
        else:
            raise _flag_error(value, "network", f"invalid field key {key}")
    if not target:
        raise _flag_error(value, "network", "network name/id is not specified")
    return NetworkAttachment(target=target, aliases=aliases, driver_opts=driver_opts)


def parse_placement_pref(value: str, flag: str) -> str:
    strategy, sep, arg = value.partition("=")
    if not sep or not strategy:
        raise _flag_error(value, flag, 'placement preference must be of the format "<strategy>=<arg>"')
    if strategy != "spread":
        raise _flag_error(value, flag, f"unsupported placement preference {strategy} (only spread is supported)")
    return arg


def parse_generic_resource(value: str, flag: str) -> GenericResource:
    kind, sep, amount = value.partition("=")
    if not sep or not kind or not amount.isdigit():
        raise _flag_error(value, flag, f"invalid generic resource specification: {value}")
    return GenericResource(kind=kind, value=int(amount))


def capabilities(items: Iterable[str]) -> set[str]:
    """opts.CapabilitiesMap: upper-cased, CAP_ prefixed (except ALL)."""
    out = set()
    for item in items:
        cap = item.strip().upper()
        if not cap:
            continue
        if cap != "ALL" and not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        out.add(cap)
    return out


def _caps_list(caps: set[str]) -> list[str]:
    return ["ALL"] if "ALL" in caps else sorted(caps)


def effective_caps(add: list[str], drop: list[str]) -> tuple[list[str], list[str]]:
    """opts.EffectiveCapAddCapDrop (a capability both added and dropped is added)."""
    from shoal import capabilities as caps

    return caps.effective(add, drop)


def parse_env(env_files: list[str], env: list[str]) -> list[str]:
    """opts.ReadKVEnvStrings then makeEnv: files first, then -e; a later value for a key
    replaces the earlier one, moving it to the end (Docker's order)."""
    from shoal.cli import container

    values: list[str] = []
    for path in env_files:
        values += container.parse_env_file(path)
    values += container.parse_env(env)
    out: list[str] = []
    for item in values:
        if item in out:
            continue
        key = item.partition("=")[0]
        out = [e for e in out if not e.startswith(key + "=") and e != key]
        out.append(item)
    return out


# ---- pieces shared by create and update --------------------------------------------------------

def _update_config(args: argparse.Namespace, what: str, base: UpdateConfig | None) -> UpdateConfig | None:
    names = ("parallelism", "delay", "monitor", "failure_action", "max_failure_ratio", "order")
    given = {n: getattr(args, f"{what}_{n}") for n in names if getattr(args, f"{what}_{n}") is not None}
    if not given:
        return base
    cfg = replace(base) if base is not None else UpdateConfig()
    flag = f"{what}-"
    if "parallelism" in given:
        cfg.parallelism = parse_uint(given["parallelism"], flag + "parallelism")
    if "delay" in given:
        cfg.delay = parse_duration(given["delay"], flag + "delay")
    if "monitor" in given:
        # moby sends a Monitor of 0 as unset (updateConfigToGRPC), which swarmkit reads as its
        # default: Swarm never updates without monitoring.
        cfg.monitor = parse_duration(given["monitor"], flag + "monitor") or UpdateConfig().monitor
    if "failure_action" in given:
        allowed = ("pause", "continue", "rollback") if what == "update" else ("pause", "continue")
        if given["failure_action"] not in allowed:
            raise ShoalError(f"invalid {what} failure action: {given['failure_action']} "
                                  f"(use {', '.join(allowed)})")
        cfg.failure_action = given["failure_action"]
    if "max_failure_ratio" in given:
        cfg.max_failure_ratio = parse_float(given["max_failure_ratio"], flag + "max-failure-ratio")
    if "order" in given:
        if given["order"] not in ("start-first", "stop-first"):
            raise ShoalError(f"invalid {what} order: {given['order']} (use start-first or stop-first)")
        cfg.order = given["order"]
    return cfg


def _restart_policy(args: argparse.Namespace, base: RestartPolicy | None) -> RestartPolicy | None:
    if all(getattr(args, f"restart_{n}") is None for n in ("condition", "delay", "max_attempts", "window")):
        return base
    policy = replace(base) if base is not None else RestartPolicy()
    if args.restart_condition is not None:
        if args.restart_condition not in ("none", "on-failure", "any"):
            raise ShoalError(f"invalid restart condition: {args.restart_condition} (use none, on-failure or any)")
        policy.condition = args.restart_condition
    if args.restart_delay is not None:
        policy.delay = parse_duration(args.restart_delay, "restart-delay")
    if args.restart_max_attempts is not None:
        policy.max_attempts = parse_uint(args.restart_max_attempts, "restart-max-attempts")
    if args.restart_window is not None:
        policy.window = parse_duration(args.restart_window, "restart-window")
    return policy


_HEALTH = ("health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period",
           "health_start_interval")


def _health(args: argparse.Namespace, base: Healthcheck | None) -> Healthcheck | None:
    """toHealthConfig (create) / updateHealthcheck (update)."""
    given = [n for n in _HEALTH if getattr(args, n) is not None]
    if args.no_healthcheck:
        if given:
            raise ShoalError("--no-healthcheck conflicts with --health-* options")
        return Healthcheck(test=["NONE"])
    if not given:
        return base
    check = replace(base, test=list(base.test)) if base is not None else Healthcheck()
    if check.test[:1] == ["NONE"]:
        check.test = []
    for name in ("interval", "timeout", "start_period", "start_interval"):
        raw = getattr(args, f"health_{name}")
        if raw is not None:
            setattr(check, name, parse_duration(raw, f"health-{name.replace('_', '-')}", positive=True))
    if args.health_retries is not None:
        check.retries = parse_int(args.health_retries, "health-retries")
    if args.health_cmd is not None:
        check.test = ["CMD-SHELL", args.health_cmd] if args.health_cmd else []
    return check


def _shlex(value: str, flag: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise _flag_error(value, flag, str(exc)) from None


def _file_refs(values: list[str], kind: str, existing: Callable[[], Iterable[str]]) -> list[FileReference]:
    """ParseSecrets / ParseConfigs: each source must exist; one reference per file name."""
    refs: dict[str, FileReference] = {}
    names: set[str] = set()
    for value in values:
        name, ref = parse_file_ref(value, kind)
        if name in refs:
            raise ShoalError(f"duplicate {kind} target for {ref.source} not allowed")
        refs[name] = ref
        names.add(ref.source)
    known = set(existing()) if refs else set()
    for ref in refs.values():
        if ref.source not in known:
            raise ShoalError(f"{kind} not found: {ref.source}")
    return list(refs.values())


# Every node has these; a service may use them without the manager making them (Swarm's
# node-local networks).
NODE_NETWORKS = ("host", "none")


class Lookups:
    """What the flags need from the manager: the names of its secrets and configs, and its
    networks by name and by ID (asked only when a flag names one)."""

    def __init__(self, secrets: Callable[[], Iterable[str]] = lambda: (),
                 configs: Callable[[], Iterable[str]] = lambda: (),
                 networks: Callable[[], Iterable[str] | dict[str, str]] = lambda: ()) -> None:
        self.secrets, self.configs, self._networks = secrets, configs, networks

    def networks(self) -> dict[str, str]:
        """Each ref a --network may use (name, full ID, ID prefix) -> the network's name."""
        found = self._networks()
        refs = dict(found) if isinstance(found, dict) else {n: n for n in found}
        refs.update({n: n for n in NODE_NETWORKS})
        return refs


def _network_name(ref: str, known: dict[str, str]) -> str:
    """resolveNetworkID: a name, an ID, or a unique ID prefix; shoal's specs name the network."""
    if ref in known:
        return known[ref]
    prefixed = {name for key, name in known.items() if len(key) == 25 and key.startswith(ref)}
    if len(prefixed) == 1:
        return prefixed.pop()
    raise ShoalError(f"network {ref} not found")


def _check_networks(attachments: list[NetworkAttachment], lookups: Lookups) -> None:
    if not attachments:
        return
    known = lookups.networks()
    for net in attachments:
        net.target = _network_name(net.target, known)


# ---- create ------------------------------------------------------------------------------------

def spec_from_create(args: argparse.Namespace, lookups: Lookups | None = None) -> ServiceSpec:
    """ToService: the spec `service create` sends."""
    lookups = lookups or Lookups()
    mode = args.mode or "replicated"
    replicas = None if args.replicas is None else parse_uint(args.replicas, "replicas")
    max_concurrent = None if args.max_concurrent is None else parse_uint(args.max_concurrent, "max-concurrent")
    max_per_node = 0 if args.replicas_max_per_node is None else parse_uint(args.replicas_max_per_node, "replicas-max-per-node")
    if mode not in MODES:
        raise ShoalError(f"unknown mode: {mode}, only replicated and global supported")
    if mode in ("global", "global-job"):
        if replicas is not None:
            raise ShoalError("replicas can only be used with replicated or replicated-job mode")
        if max_per_node > 0:
            raise ShoalError("replicas-max-per-node can only be used with replicated or replicated-job mode")
    if mode != "replicated-job" and max_concurrent is not None:
        raise ShoalError("max-concurrent can only be used with replicated-job mode")
    update_cfg = _update_config(args, "update", None)
    rollback_cfg = _update_config(args, "rollback", None)
    if mode in JOB_MODES and (update_cfg is not None or rollback_cfg is not None):
        raise ShoalError("update and rollback configuration is not supported for jobs")
    name = args.name or ""
    labels = kv_map(validate_label(v, "label") for v in args.label or [])
    container_labels = kv_map(validate_label(v, "container-label") for v in args.container_label or [])
    mounts = [parse_mount(v) for v in args.mount or []]
    seen: set[str] = set()
    for m in mounts:
        if m.target in seen:
            raise ShoalError(f"invalid mount config: duplicate mount point: {m.target}")
        seen.add(m.target)
    networks = [parse_network(v) for v in args.network or []]
    _check_networks(networks, lookups)
    networks.sort(key=lambda n: n.target)
    ports: list[PortConfig] = []
    for value in args.publish or []:
        ports += parse_ports(value)
    cap_add, cap_drop = effective_caps(args.cap_add or [], args.cap_drop or [])
    spec = ServiceSpec(
        name=name,
        compose_name=name,
        stack="",
        image=args.image,
        labels=labels,
        container_labels=container_labels,
        entrypoint=_shlex(args.entrypoint, "entrypoint") if args.entrypoint is not None else None,
        cmd=list(args.args) or None,
        env=parse_env(args.env_file or [], args.env or []),
        user=args.user or "",
        groups=list(args.group or []),
        workdir=args.workdir or "",
        hostname=args.hostname or "",
        mounts=mounts,
        stop_signal=args.stop_signal or "",
        healthcheck=_health(args, None),
        tty=bool(args.tty),
        read_only=bool(args.read_only),
        init=args.init,  # None when not given: the image's or the engine's default, as compose's
        extra_hosts=[swarm_host(v, "host") for v in args.host or []],
        dns=[validate_ip(v, "dns") for v in args.dns or []],
        dns_search=list(args.dns_search or []),
        dns_options=list(args.dns_option or []),
        cap_add=cap_add if args.cap_add or args.cap_drop else [],
        cap_drop=cap_drop if args.cap_add or args.cap_drop else [],
        sysctls=kv_map(args.sysctl or []),
        ulimits=_ulimits(args.ulimit or [], "ulimit"),
        mode=mode,
        replicas=0 if mode in ("global", "global-job") else (1 if replicas is None else replicas),
        max_concurrent=max_concurrent,
        secrets=sorted(_file_refs(args.secret or [], "secret", lookups.secrets), key=lambda r: r.source),
        configs=sorted(_file_refs(args.config or [], "config", lookups.configs), key=lambda r: r.source),
        networks=networks,
    )
    if args.stop_grace_period is not None:
        spec.stop_grace_period = parse_duration(args.stop_grace_period, "stop-grace-period")
    if args.oom_score_adj is not None:
        spec.oom_score_adj = _oom(args.oom_score_adj)
    if args.log_driver:
        spec.log_driver = LogDriver(name=args.log_driver, options=kv_map(args.log_opt or []))
    _resources(args, spec)
    spec.resources.reservations.generic_resources = [
        parse_generic_resource(v, "generic-resource") for v in args.generic_resource or []]
    spec.restart_policy = _restart_policy(args, None) or RestartPolicy()
    spec.update_config = update_cfg or UpdateConfig()
    spec.rollback_config = rollback_cfg or UpdateConfig()
    spec.placement.constraints = list(args.constraint or [])
    spec.placement.preferences = [parse_placement_pref(v, "placement-pref") for v in args.placement_pref or []]
    spec.placement.max_replicas_per_node = max_per_node
    spec.endpoint.mode = _endpoint_mode(args.endpoint_mode or "vip")
    spec.endpoint.ports = sorted(ports, key=PortConfig.sort_key)
    # What ToService leaves nil without its flags (model/service.py OPTIONAL; the spec holds
    # Swarm's defaults for them): DNSConfig and both Resources blocks it always sets.
    restart_given = _restart_policy(args, None) is not None
    spec.defaulted = [key for key, absent in (
        ("stop_grace_period", args.stop_grace_period is None),
        ("restart_policy", not restart_given),
        ("restart_policy.delay", restart_given and args.restart_delay is None),
        ("update_config", update_cfg is None), ("rollback_config", rollback_cfg is None)) if absent]
    return spec


def _endpoint_mode(mode: str) -> str:
    mode = mode.lower()
    if mode not in ("vip", "dnsrr"):
        raise ShoalError(f"invalid endpoint mode: {mode} (use vip or dnsrr)")
    return mode


def _oom(value: str) -> int:
    number = parse_int(value, "oom-score-adj")
    if not -1000 <= number <= 1000:
        raise ShoalError(f"Invalid value {number}, range for oom score adj is [-1000, 1000]")
    return number


def _ulimits(values: list[str], flag: str) -> list[Ulimit]:
    from shoal.cli.container import parse_ulimit

    by_name: dict[str, Ulimit] = {}
    for value in values:
        try:
            limit = parse_ulimit(value)
        except InvalidArgument as exc:
            raise InvalidArgument(str(exc).replace('"--ulimit"', f'"--{flag}"')) from None
        by_name[limit.name] = Ulimit(name=limit.name, soft=limit.soft, hard=limit.hard)
    return [by_name[n] for n in sorted(by_name)]


def _resources(args: argparse.Namespace, spec: ServiceSpec) -> None:
    limits, reservations = spec.resources.limits, spec.resources.reservations
    if args.limit_cpu is not None:
        limits.nano_cpus = parse_nano_cpus(args.limit_cpu, "limit-cpu")
    if args.limit_memory is not None:
        limits.memory_bytes = parse_bytes(args.limit_memory, "limit-memory")
    if args.limit_pids is not None:
        limits.pids = parse_int(args.limit_pids, "limit-pids")
    if args.reserve_cpu is not None:
        reservations.nano_cpus = parse_nano_cpus(args.reserve_cpu, "reserve-cpu")
    if args.reserve_memory is not None:
        reservations.memory_bytes = parse_bytes(args.reserve_memory, "reserve-memory")


# ---- update ------------------------------------------------------------------------------------

def _dedupe(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _port_key(port: PortConfig) -> str:
    """portConfigToString: `published:target/protocol/mode`."""
    return f"{port.published}:{port.target}/{port.protocol}/{port.publish_mode}"


def _update_ports(current: list[PortConfig], add: list[str], remove: list[str]) -> list[PortConfig]:
    kept: dict[str, PortConfig] = {}
    for port in current:
        kept.setdefault(_port_key(port), port)
    gone = [p for value in remove for p in parse_ports(value, "publish-rm")]
    out = [p for p in kept.values()
           if not any(p.target == r.target and p.protocol == r.protocol and p.publish_mode == r.publish_mode
                      for r in gone)]
    for value in add:
        for port in parse_ports(value, "publish-add"):
            if _port_key(port) not in kept:
                out.append(port)
    return sorted(out, key=_port_key)


def _update_hosts(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    """updateHosts: `host` removes the name from every entry, `host:ip` only from that IP's."""
    removals = [(entry.partition(":")[0], entry.partition(":")[2]) for entry in remove]
    out = []
    for entry in current:
        parts = entry.split()
        if not parts:
            continue
        ip, names = parts[0], parts[1:]
        for host, host_ip in removals:
            if host_ip and host_ip != ip:
                continue
            names = [n for n in names if n != host]
        if names:
            out.append(f"{ip} {' '.join(names)}")
    out += [swarm_host(v, "host-add") for v in add]
    return _dedupe(out)


def _update_caps(spec: ServiceSpec, add: list[str] | None, drop: list[str] | None) -> None:
    """updateCapabilities: adding a dropped capability un-drops it, dropping an added one
    un-adds it; `RESET` clears a list."""
    cap_add, cap_drop = capabilities(spec.cap_add), capabilities(spec.cap_drop)
    to_add, to_drop = capabilities(add or []), capabilities(drop or [])
    if "CAP_RESET" in to_add:
        cap_add, to_add = set(), to_add - {"CAP_RESET"}
    if "CAP_RESET" in to_drop:
        cap_drop, to_drop = set(), to_drop - {"CAP_RESET"}
    for cap in to_drop:
        if cap not in to_add:
            if cap in cap_add:
                cap_add.discard(cap)
            else:
                cap_drop.add(cap)
    for cap in to_add:
        if cap in cap_drop:
            cap_drop.discard(cap)
        else:
            cap_add.add(cap)
    spec.cap_add, spec.cap_drop = _caps_list(cap_add) if cap_add else [], _caps_list(cap_drop) if cap_drop else []


def apply_update(current: dict[str, Any], args: argparse.Namespace, lookups: Lookups | None = None) -> dict[str, Any]:
    """updateService + getUpdatedSecrets/Configs: `current` (a ServiceSpec dict) with the given
    flags applied; returns the new spec dict."""
    lookups = lookups or Lookups()
    given = changed(args)
    if args.rollback and given - ROLLBACK_COMPATIBLE:
        raise ShoalError("other flags may not be combined with --rollback")
    spec = ServiceSpec.from_dict(current)

    def rm(flag: str) -> set[str]:
        return set(getattr(args, flag.replace("-", "_")) or [])

    def add(flag: str) -> list[str]:
        return list(getattr(args, flag.replace("-", "_")) or [])

    # Labels and container labels: removals by key, then additions.
    for field_name, flag in (("labels", "label"), ("container_labels", "container-label")):
        values = dict(getattr(spec, field_name))
        for key in rm(f"{flag}-rm"):
            values.pop(key, None)
        values.update(kv_map(validate_label(v, f"{flag}-add") for v in add(f"{flag}-add")))
        setattr(spec, field_name, values)
    if args.image is not None:
        spec.image = args.image
    if args.args is not None:
        spec.cmd = _shlex(args.args, "args") or None
    if args.entrypoint is not None:
        spec.entrypoint = _shlex(args.entrypoint, "entrypoint") or None
    # Environment: removals by key, then additions replace by key.
    env = [e for e in spec.env if e.partition("=")[0] not in rm("env-rm")]
    for item in parse_env([], add("env-add")):
        key = item.partition("=")[0]
        index = next((i for i, e in enumerate(env) if e.partition("=")[0] == key), None)
        if index is None:
            env.append(item)
        else:
            env[index] = item
    spec.env = env
    if args.workdir is not None:
        spec.workdir = args.workdir
    if args.user is not None:
        spec.user = args.user
    if args.hostname is not None:
        spec.hostname = args.hostname
    if args.init is not None:
        spec.init = args.init
    # Mounts by target: an added one replaces the same target; then removals.
    if "mount-add" in given or "mount-rm" in given:
        by_target: dict[str, Mount] = {}
        for m in (parse_mount(v) for v in add("mount-add")):
            if m.target in by_target:
                raise ShoalError("duplicate mount target")
            by_target[m.target] = m
        for m in spec.mounts:
            by_target.setdefault(m.target, m)
        spec.mounts = sorted((m for t, m in by_target.items() if t not in rm("mount-rm")),
                             key=lambda m: (m.source, m.target))
    if "sysctl-add" in given or "sysctl-rm" in given:
        sysctls = {k: v for k, v in spec.sysctls.items() if k not in kv_map(rm("sysctl-rm"))}
        sysctls.update(kv_map(add("sysctl-add")))
        spec.sysctls = sysctls
    if "ulimit-add" in given or "ulimit-rm" in given:
        gone = kv_map(rm("ulimit-rm"))
        by_name = {u.name: u for u in spec.ulimits if u.name not in gone}
        by_name.update({u.name: u for u in _ulimits(add("ulimit-add"), "ulimit-add")})
        spec.ulimits = [by_name[n] for n in sorted(by_name)]
    _resources(args, spec)
    if args.oom_score_adj is not None:
        spec.oom_score_adj = _oom(args.oom_score_adj)
    generic = {g.kind: g for g in spec.resources.reservations.generic_resources}
    for value in add("generic-resource-add"):
        res = parse_generic_resource(value, "generic-resource-add")
        generic[res.kind] = res
    for kind in add("generic-resource-rm"):
        if kind not in generic:
            raise ShoalError(f"could not find generic-resource `{kind}` to remove it")
        del generic[kind]
    spec.resources.reservations.generic_resources = [generic[k] for k in sorted(generic)]
    if args.stop_grace_period is not None:
        spec.stop_grace_period = parse_duration(args.stop_grace_period, "stop-grace-period")
    spec.restart_policy = _restart_policy(args, spec.restart_policy) or spec.restart_policy
    # Constraints: additions, then removals, sorted.
    if "constraint-add" in given or "constraint-rm" in given:
        constraints = list(spec.placement.constraints) + add("constraint-add")
        spec.placement.constraints = sorted(c for c in constraints if c not in rm("constraint-rm"))
    if "placement-pref-add" in given or "placement-pref-rm" in given:
        gone_prefs = {parse_placement_pref(v, "placement-pref-rm") for v in add("placement-pref-rm")}
        prefs = [p for p in spec.placement.preferences if p not in gone_prefs]
        spec.placement.preferences = prefs + [parse_placement_pref(v, "placement-pref-add")
                                              for v in add("placement-pref-add")]
    if "network-add" in given or "network-rm" in given:
        known = lookups.networks()
        gone = {_network_name(ref, known) for ref in rm("network-rm")}
        nets = [n for n in spec.networks if n.target not in gone]
        attached = {n.target for n in nets}
        for net in (parse_network(v) for v in add("network-add")):
            ref = net.target
            net.target = _network_name(ref, known)
            if net.target in attached:
                raise ShoalError(f"service is already attached to network {ref}")
            nets.append(net)
            attached.add(net.target)
        spec.networks = sorted(nets, key=lambda n: n.target)
    if args.replicas is not None:
        if spec.mode != "replicated":
            raise ShoalError("replicas can only be used with replicated mode")
        spec.replicas = parse_uint(args.replicas, "replicas")
    if args.max_concurrent is not None:
        if spec.mode != "replicated-job":
            raise ShoalError("max-concurrent can only be used with replicated-job mode")
        spec.max_concurrent = parse_uint(args.max_concurrent, "max-concurrent")
    if args.replicas_max_per_node is not None:
        spec.placement.max_replicas_per_node = parse_uint(args.replicas_max_per_node, "replicas-max-per-node")
    update_cfg = _update_config(args, "update", spec.update_config)
    rollback_cfg = _update_config(args, "rollback", spec.rollback_config)
    if spec.mode in JOB_MODES and (update_cfg is not spec.update_config or rollback_cfg is not spec.rollback_config):
        raise ShoalError("update and rollback configuration is not supported for jobs")
    spec.update_config, spec.rollback_config = update_cfg or spec.update_config, rollback_cfg or spec.rollback_config
    if args.endpoint_mode is not None:
        spec.endpoint.mode = _endpoint_mode(args.endpoint_mode)
    if "group-add" in given or "group-rm" in given:
        spec.groups = sorted(g for g in list(spec.groups) + add("group-add") if g not in rm("group-rm"))
    if "publish-add" in given or "publish-rm" in given:
        spec.endpoint.ports = _update_ports(spec.endpoint.ports, add("publish-add"), add("publish-rm"))
    if given & {"dns-add", "dns-rm", "dns-option-add", "dns-option-rm", "dns-search-add", "dns-search-rm"}:
        servers = _dedupe(spec.dns + [validate_ip(v, "dns-add") for v in add("dns-add")])
        spec.dns = sorted((s for s in servers if s not in rm("dns-rm")), key=ipaddress.ip_address)
        spec.dns_search = sorted(s for s in _dedupe(spec.dns_search + add("dns-search-add"))
                                 if s not in rm("dns-search-rm"))
        spec.dns_options = sorted(o for o in _dedupe(spec.dns_options + add("dns-option-add"))
                                  if o not in rm("dns-option-rm"))
    if "host-add" in given or "host-rm" in given:
        spec.extra_hosts = _update_hosts(spec.extra_hosts, add("host-add"), add("host-rm"))
    if args.log_driver:
        spec.log_driver = LogDriver(name=args.log_driver, options=kv_map(args.log_opt or []))
    if args.force:
        spec.force_update += 1
    spec.healthcheck = _health(args, spec.healthcheck)
    if args.tty is not None:
        spec.tty = args.tty
    if args.read_only is not None:
        spec.read_only = args.read_only
    if args.stop_signal is not None:
        spec.stop_signal = args.stop_signal
    if args.cap_add is not None or args.cap_drop is not None:
        _update_caps(spec, args.cap_add, args.cap_drop)
    # Secrets and configs: removals by source name, then additions (which must exist).
    for kind, lookup in (("secret", lookups.secrets), ("config", lookups.configs)):
        field_name = f"{kind}s"
        refs = [r for r in getattr(spec, field_name) if r.source not in rm(f"{kind}-rm")]
        added = _file_refs(add(f"{kind}-add"), kind, lookup)
        refs = [r for r in refs if r.target not in {a.target for a in added}] + added
        setattr(spec, field_name, refs)
    return spec.to_dict()


def registry_auth(args: argparse.Namespace, image: str) -> str | None:
    """docker/cli's create/update with --with-registry-auth: the client's stored credentials for
    the image's registry, encoded (image/registryauth.py), for the request body, never a command
    line. None without the flag: an update then keeps the credentials the service has."""
    if not getattr(args, "with_registry_auth", None):
        return None
    from shoal.image.registryauth import for_image

    return for_image(image)
