"""docker/cli's typed compose model (cli/compose/types, loader.go, merge.go at v28), as plain
data in Go's field order, for `stack config` to print what `docker stack config` prints.

Per file, as docker/cli's loadSections: short syntax becomes long (ports, volumes, secrets),
`environment` a mapping with the `env_file` files read into it (docker's kvfile rules), bind
sources and secret files absolute, sizes in bytes, durations Go durations. Then files merge as
merge.go does. Empty values are left out (`omitempty`); Go maps are `Sorted`.

Keys docker's types do not have (compose-spec additions shoal accepts, such as long-form
`depends_on` options or `platform`) are dropped from the printout as docker drops them, except
`x-` extensions where docker keeps them.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.compose.envfile import parse_kv_file
from shoal.compose.errors import ComposeError, dotted
from shoal.compose.goyaml import GoFloat32, Sorted, go_duration, go_sprint
from shoal.compose.syntax import parse_duration_ns, parse_port, parse_size

Lookup = Callable[[str], "str | None"]
P = tuple[str | int, ...]


class _Fail(Exception):
    def __init__(self, path: P, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# --- small converters (loader.go's transformers) -----------------------------------------------


def _str(value: Any) -> str:
    return "" if value is None else (value if isinstance(value, str) else go_sprint(value))


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_str(v) for v in value]
    return [_str(value)]


def _mapping(value: Any, sep: str = "=", allow_nil: bool = False) -> Sorted:
    """transformMappingOrList: a list of `k=v` or a mapping, values as fmt.Sprint."""
    out = Sorted()
    if isinstance(value, dict):
        for key, val in value.items():
            out[str(key)] = None if val is None and allow_nil else _str(val)
    elif isinstance(value, list):
        for item in value:
            key, found, val = _str(item).partition(sep)
            out[key] = val if found else (None if allow_nil else "")
    return out


def _hosts(value: Any) -> list[str]:
    """transformHostsList: `host:ip` entries, brackets around an IPv6 address removed."""
    entries: list[str] = []
    if isinstance(value, dict):
        entries = sorted(f"{k}:{_str(v)}" for k, v in value.items() if v is not None)
    elif isinstance(value, list):
        for item in value:
            text = _str(item)
            for sep in ("=", ":"):
                key, found, val = text.partition(sep)
                if found:
                    entries.append(f"{key}:{val}")
                    break
    out = []
    for entry in entries:
        host, _, ip = entry.partition(":")
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        out.append(f"{host}:{ip}")
    return out


def _shell(value: Any, path: P) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise _Fail(path, str(exc).replace("No closing quotation", "EOF found when "
                                               "expecting closing quote")) from None
    return _string_list(value)


def _duration(value: Any, path: P) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Fail(path, f"invalid type {type(value).__name__} for duration")
    try:
        return go_duration(parse_duration_ns(value))
    except ValueError as exc:
        raise _Fail(path, str(exc)) from None


def _bytes(value: Any, path: P) -> str | None:
    """UnitBytes: printed as a quoted decimal string."""
    if value is None:
        return None
    try:
        return str(parse_size(value))
    except ValueError as exc:
        raise _Fail(path, str(exc)) from None


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """omitempty: zero values, empty lists and maps, and empty structs are left out."""
    if value is None or value is False or value == "" or value == 0 and not isinstance(
            value, bool) and not isinstance(value, _Kept):
        return
    if isinstance(value, (list, dict)) and not value and not isinstance(value, _KeptEmpty):
        return
    out[key] = value


class _Kept(int):
    """A pointer field (`*uint64`): printed even when 0."""


class _KeptEmpty(dict):  # type: ignore[type-arg]
    """A non-nil pointer to an empty struct: printed as {}."""


def _keep_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return _Kept(value)
    return value


def _go_any(value: Any) -> Any:
    """A value docker/cli keeps as `any` (an extension's): its mappings are Go maps, which
    yaml.v3 prints with sorted keys, at every depth."""
    if isinstance(value, dict):
        return Sorted({k: _go_any(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_go_any(v) for v in value]
    return value


def _extras(raw: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, _go_any(raw[k])) for k in raw if str(k).startswith("x-")]


def _with_extras(out: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    from shoal.compose.goyaml import sort_keys

    extras = dict(_extras(raw))
    for key in sort_keys(list(extras)):
        out[key] = extras[key]
    return out


# --- services ------------------------------------------------------------------------------


def _file_refs(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            item = {"source": _str(item)}
        ref: dict[str, Any] = {}
        for key in ("source", "target", "uid", "gid"):
            _put(ref, key, _str(item.get(key)))
        if item.get("mode") is not None:
            ref["mode"] = _keep_int(item["mode"])
        out.append(ref)
    return out


def _ports(value: Any, path: P) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, dict):
            port: dict[str, Any] = {}
            _put(port, "mode", _str(item.get("mode")))
            _put(port, "target", item.get("target"))
            _put(port, "published", item.get("published"))
            _put(port, "protocol", _str(item.get("protocol")))
            out.append(port)
            continue
        try:
            shorts = parse_port(item)
        except ValueError as exc:
            raise _Fail((*path, index), str(exc)) from None
        # nat.ParsePortSpecs: one entry per "port/proto" key, keys sorted as text.
        groups: dict[str, list[Any]] = {}
        for short in shorts:
            groups.setdefault(f"{short.target}/{short.protocol}", []).append(short)
        for key in sorted(groups):
            for short in groups[key]:
                port = {"mode": "ingress"}
                _put(port, "target", short.target)
                _put(port, "published", short.published)
                port["protocol"] = short.protocol
                out.append(port)
    return out


def _volume_spec(spec: str, path: P) -> dict[str, Any]:
    """volumespec.Parse."""
    volume: dict[str, Any] = {"type": "", "source": "", "target": "", "read_only": False}
    if not spec:
        raise _Fail(path, "invalid empty volume spec")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    buffer = ""
    options: list[str] = []
    for ch in spec + "\0":
        if ch == ":" and len(buffer) == 1 and buffer.isalpha():
            buffer += ch
        elif ch in (":", "\0"):
            if not buffer:
                raise _Fail(path, f"invalid spec: {spec}: empty section between colons")
            if not volume["source"] and ch == "\0":
                volume["target"] = buffer
            elif not volume["source"]:
                volume["source"] = buffer
            elif not volume["target"]:
                volume["target"] = buffer
            elif ch == ":":
                raise _Fail(path, f"invalid spec: {spec}: too many colons")
            else:
                options = buffer.split(",")
            buffer = ""
        else:
            buffer += ch
    out: dict[str, Any] = {}
    for option in options:
        if option == "ro":
            volume["read_only"] = True
        elif option == "rw":
            volume["read_only"] = False
        elif option == "nocopy":
            volume["volume"] = {"nocopy": True}
        elif option in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            volume["bind"] = {"propagation": option}
    source = volume["source"]
    if not source:
        kind = "volume"
    elif source[0] in "./~" or source.startswith("\\\\") or (
            len(source) > 1 and source[0].isalpha() and source[1] == ":"):
        kind = "bind"
    else:
        kind = "volume"
    out["type"] = kind
    for key in ("source", "target", "read_only", "bind", "volume"):
        _put(out, key, volume.get(key))
    return out


def _volumes(value: Any, path: P, working_dir: Path, lookup: Lookup) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, str):
            volume = _volume_spec(item, (*path, index))
        elif isinstance(item, dict):
            volume = {}
            for key in ("type", "source", "target"):
                _put(volume, key, _str(item.get(key)))
            _put(volume, "read_only", item.get("read_only") is True)
            _put(volume, "consistency", _str(item.get("consistency")))
            for key, fields in (("bind", ("propagation",)), ("volume", ("nocopy", "subpath")),
                                ("image", ("subpath",)), ("tmpfs", ("size",)),
                                ("cluster", ())):
                sub = item.get(key)
                if isinstance(sub, dict) or (key == "cluster" and sub is not None):
                    opts = _KeptEmpty()
                    for field in fields:
                        val = (sub or {}).get(field)
                        if field == "size" and val is not None:
                            val = _keep_int(int(_bytes(val, (*path, index, key, field)) or 0))
                        _put(opts, field, val if not isinstance(val, str) or field != "nocopy"
                             else val)
                    volume[key] = opts
        else:
            continue
        if volume.get("type") == "bind":
            source = volume.get("source", "")
            if not source:
                raise _Fail((*path, index), 'invalid mount config for type "bind": field '
                                            "Source must not be empty")
            if source.startswith("~"):
                home = lookup("HOME")
                if home is not None:
                    source = source.replace("~", home, 1)
            if not source.startswith("/"):
                source = str(_abs(working_dir, source))
            volume["source"] = source
            volume = {k: volume[k] for k in ("type", "source", "target", "read_only",
                                               "consistency", "bind", "volume", "image",
                                               "tmpfs", "cluster") if k in volume}
        out.append(volume)
    return out


def _abs(working_dir: Path, path: str) -> str:
    """filepath.Join: cleaned, as Go joins paths."""
    import posixpath

    if path.startswith("/"):
        return path
    return posixpath.normpath(posixpath.join(str(working_dir), path))


def _environment(raw: dict[str, Any], path: P, working_dir: Path, lookup: Lookup) -> Sorted:
    """resolveEnvironment: env_file lines first, then `environment`; an empty or missing value
    is taken from the environment when it is set there."""
    environment = Sorted()

    def update(values: Mapping[str, str | None]) -> None:
        for key, value in values.items():
            found = lookup(key)
            environment[key] = found if (value is None or value == "") and found is not None \
                else value

    files = raw.get("env_file")
    if files is not None:
        lines: list[str] = []
        entries = files if isinstance(files, list) else [files]
        for index, entry in enumerate(entries):
            required = True
            if isinstance(entry, dict):  # compose-spec long form (a shoal extension)
                required = entry.get("required", True) is not False
                entry = entry.get("path")
            file = Path(_abs(working_dir, _str(entry)))
            if not required and not file.exists():
                continue
            try:
                lines.extend(parse_kv_file(file, lookup))
            except OSError as exc:
                where = (*path, "env_file", index) if isinstance(files, list) else (*path, "env_file")
                raise _Fail(where, str(exc)) from None
        parsed: dict[str, str | None] = {}
        for line in lines:
            key, found, value = line.partition("=")
            parsed[key] = value if found else None
        update(parsed)
    update(_mapping(raw.get("environment"), allow_nil=True))
    return environment


def _update_config(raw: Any, path: P) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    if raw.get("parallelism") is not None:
        out["parallelism"] = _keep_int(raw["parallelism"])
    _put(out, "delay", _duration(raw.get("delay"), (*path, "delay")) if raw.get("delay")
         not in (None, "0s") else None)
    _put(out, "failure_action", _str(raw.get("failure_action")))
    _put(out, "monitor", _duration(raw.get("monitor"), (*path, "monitor"))
         if raw.get("monitor") not in (None, "0s") else None)
    ratio = raw.get("max_failure_ratio")
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio:
        out["max_failure_ratio"] = GoFloat32(float(ratio))
    _put(out, "order", _str(raw.get("order")))
    return out


def _resources(raw: Any, path: P, reservations: bool) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    _put(out, "cpus", _str(raw.get("cpus")))
    _put(out, "memory", _bytes(raw.get("memory"), (*path, "memory")) if raw.get("memory")
         not in (None, 0) else None)
    if out.get("memory") == "0":
        del out["memory"]
    if not reservations:
        _put(out, "pids", raw.get("pids"))
    else:
        generic = []
        for item in raw.get("generic_resources") or []:
            spec = (item or {}).get("discrete_resource_spec") if isinstance(item, dict) else None
            entry: dict[str, Any] = {}
            if isinstance(spec, dict):
                entry["discrete_resource_spec"] = {"kind": _str(spec.get("kind")),
                                                   "value": spec.get("value") or 0}
            generic.append(entry)
        _put(out, "generic_resources", generic)
    return out


def _deploy(raw: Any, path: P) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    _put(out, "mode", _str(raw.get("mode")))
    if raw.get("replicas") is not None:
        out["replicas"] = _keep_int(raw["replicas"])
    _put(out, "labels", _mapping(raw.get("labels")))
    for key in ("update_config", "rollback_config"):
        conf = _update_config(raw.get(key), (*path, key))
        if conf is not None:
            out[key] = _KeptEmpty(conf)
    resources: dict[str, Any] = {}
    res = raw.get("resources") if isinstance(raw.get("resources"), dict) else {}
    for key in ("limits", "reservations"):
        conf = _resources(res.get(key), (*path, "resources", key), key == "reservations")
        if conf is not None:
            resources[key] = _KeptEmpty(conf)
    _put(out, "resources", resources)
    policy = raw.get("restart_policy")
    if isinstance(policy, dict):
        rp: dict[str, Any] = {}
        _put(rp, "condition", _str(policy.get("condition")))
        _put(rp, "delay", _duration(policy.get("delay"), (*path, "restart_policy", "delay")))
        if policy.get("max_attempts") is not None:
            rp["max_attempts"] = _keep_int(policy["max_attempts"])
        _put(rp, "window", _duration(policy.get("window"), (*path, "restart_policy", "window")))
        out["restart_policy"] = _KeptEmpty(rp)
    placement = raw.get("placement")
    if isinstance(placement, dict):
        pl: dict[str, Any] = {}
        _put(pl, "constraints", _string_list(placement.get("constraints")))
        _put(pl, "preferences", [
            ({"spread": _str(p.get("spread"))} if isinstance(p, dict) and p.get("spread")
             else {}) for p in placement.get("preferences") or []])
        _put(pl, "max_replicas_per_node", placement.get("max_replicas_per_node"))
        _put(out, "placement", pl)
    _put(out, "endpoint_mode", _str(raw.get("endpoint_mode")))
    return out


def _healthcheck(raw: Any, path: P) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    test = raw.get("test")
    if isinstance(test, str):
        out["test"] = ["CMD-SHELL", test]
    else:
        _put(out, "test", _string_list(test))
    for key in ("timeout", "interval"):
        _put(out, key, _duration(raw.get(key), (*path, key)))
    if raw.get("retries") is not None:
        out["retries"] = _keep_int(raw["retries"])
    for key in ("start_period", "start_interval"):
        _put(out, key, _duration(raw.get(key), (*path, key)))
    _put(out, "disable", raw.get("disable") is True)
    return _KeptEmpty(out)


def _networks(raw: Any) -> Sorted:
    out = Sorted()
    if isinstance(raw, list):
        for name in raw:
            out[_str(name)] = None
    elif isinstance(raw, dict):
        for name, conf in raw.items():
            if not isinstance(conf, dict):
                out[str(name)] = None
                continue
            net: dict[str, Any] = _KeptEmpty()
            _put(net, "aliases", _string_list(conf.get("aliases")))
            _put(net, "driver_opts", _mapping(conf.get("driver_opts")))
            _put(net, "ipv4_address", _str(conf.get("ipv4_address")))
            _put(net, "ipv6_address", _str(conf.get("ipv6_address")))
            out[str(name)] = net
    return out


def _ulimits(raw: Any) -> Sorted:
    out = Sorted()
    for name, value in (raw or {}).items() if isinstance(raw, dict) else []:
        if isinstance(value, dict):
            limit: dict[str, Any] = _KeptEmpty()
            _put(limit, "soft", value.get("soft"))
            _put(limit, "hard", value.get("hard"))
            out[str(name)] = limit
        else:
            out[str(name)] = value
    return out


def service(raw: dict[str, Any], path: P, working_dir: Path, lookup: Lookup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    build = raw.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if isinstance(build, dict):
        b: dict[str, Any] = {}
        _put(b, "context", _str(build.get("context")))
        _put(b, "dockerfile", _str(build.get("dockerfile")))
        _put(b, "args", _mapping(build.get("args"), allow_nil=True))
        _put(b, "labels", _mapping(build.get("labels")))
        _put(b, "cache_from", _string_list(build.get("cache_from")))
        _put(b, "extra_hosts", _hosts(build.get("extra_hosts")))
        _put(b, "network", _str(build.get("network")))
        _put(b, "target", _str(build.get("target")))
        _put(out, "build", b)
    _put(out, "cap_add", _string_list(raw.get("cap_add")))
    _put(out, "cap_drop", _string_list(raw.get("cap_drop")))
    _put(out, "cgroupns_mode", _str(raw.get("cgroupns_mode")))
    _put(out, "cgroup_parent", _str(raw.get("cgroup_parent")))
    _put(out, "command", _shell(raw.get("command"), (*path, "command")))
    _put(out, "configs", _file_refs(raw.get("configs")))
    _put(out, "container_name", _str(raw.get("container_name")))
    cred = raw.get("credential_spec")
    if isinstance(cred, dict):
        c: dict[str, Any] = {}
        for key in ("config", "file", "registry"):
            _put(c, key, _str(cred.get(key)))
        _put(out, "credential_spec", c)
    depends = raw.get("depends_on")
    if isinstance(depends, dict):  # compose-spec's long form, a shoal extension: kept whole
        _put(out, "depends_on", Sorted(depends))
    else:
        _put(out, "depends_on", list(map(str, depends)) if isinstance(depends, list) else [])
    _put(out, "deploy", _deploy(raw.get("deploy"), (*path, "deploy")))
    _put(out, "devices", _string_list(raw.get("devices")))
    _put(out, "dns", _string_list(raw.get("dns")))
    _put(out, "dns_search", _string_list(raw.get("dns_search")))
    _put(out, "domainname", _str(raw.get("domainname")))
    _put(out, "entrypoint", _shell(raw.get("entrypoint"), (*path, "entrypoint")))
    _put(out, "environment", _environment(raw, path, working_dir, lookup))
    env_file = raw.get("env_file")
    _put(out, "env_file", [_str(e.get("path")) if isinstance(e, dict) else _str(e)
                           for e in (env_file if isinstance(env_file, list) else
                                     [env_file] if env_file is not None else [])])
    _put(out, "expose", _string_list(raw.get("expose")))
    _put(out, "external_links", _string_list(raw.get("external_links")))
    _put(out, "extra_hosts", _hosts(raw.get("extra_hosts")))
    _put(out, "hostname", _str(raw.get("hostname")))
    health = _healthcheck(raw.get("healthcheck"), (*path, "healthcheck"))
    if health is not None:
        out["healthcheck"] = health
    _put(out, "image", _str(raw.get("image")))
    if isinstance(raw.get("init"), bool):
        out["init"] = raw["init"]
    _put(out, "ipc", _str(raw.get("ipc")))
    _put(out, "isolation", _str(raw.get("isolation")))
    _put(out, "labels", _mapping(raw.get("labels")))
    _put(out, "links", _string_list(raw.get("links")))
    logging = raw.get("logging")
    if isinstance(logging, dict):
        log: dict[str, Any] = _KeptEmpty()
        _put(log, "driver", _str(logging.get("driver")))
        _put(log, "options", _mapping(logging.get("options")))
        out["logging"] = log
    _put(out, "mac_address", _str(raw.get("mac_address")))
    _put(out, "network_mode", _str(raw.get("network_mode")))
    _put(out, "networks", _networks(raw.get("networks")))
    _put(out, "pid", _str(raw.get("pid")))
    _put(out, "ports", _ports(raw.get("ports"), (*path, "ports")))
    _put(out, "privileged", raw.get("privileged") is True)
    _put(out, "read_only", raw.get("read_only") is True)
    _put(out, "restart", _str(raw.get("restart")))
    _put(out, "secrets", _file_refs(raw.get("secrets")))
    _put(out, "security_opt", _string_list(raw.get("security_opt")))
    _put(out, "shm_size", _str(raw.get("shm_size")))
    _put(out, "stdin_open", raw.get("stdin_open") is True)
    _put(out, "stop_grace_period", _duration(raw.get("stop_grace_period"),
                                             (*path, "stop_grace_period")))
    _put(out, "stop_signal", _str(raw.get("stop_signal")))
    _put(out, "sysctls", _mapping(raw.get("sysctls")))
    _put(out, "tmpfs", _string_list(raw.get("tmpfs")))
    _put(out, "tty", raw.get("tty") is True)
    _put(out, "ulimits", _ulimits(raw.get("ulimits")))
    _put(out, "user", _str(raw.get("user")))
    # oom_score_adj: never printed, as docker/cli's loader never reads it (support.py)
    _put(out, "userns_mode", _str(raw.get("userns_mode")))
    _put(out, "volumes", _volumes(raw.get("volumes"), (*path, "volumes"), working_dir, lookup))
    _put(out, "working_dir", _str(raw.get("working_dir")))
    _rest(out, raw, _SERVICE_KEYS)
    return _with_extras(out, raw)


# Compose keys docker's ServiceConfig has (its yaml names, and the spellings they come from).
_SERVICE_KEYS = frozenset((
    "build", "cap_add", "cap_drop", "cgroupns_mode", "cgroup_parent", "command", "configs",
    "container_name", "credential_spec", "depends_on", "deploy", "devices", "dns",
    "dns_search", "domainname", "entrypoint", "environment", "env_file", "expose",
    "external_links", "extra_hosts", "hostname", "healthcheck", "image", "init", "ipc",
    "isolation", "labels", "links", "logging", "mac_address", "network_mode", "networks", "pid",
    "ports", "privileged", "read_only", "restart", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits",
    "user", "oom_score_adj", "userns_mode", "volumes", "working_dir"))


def _rest(out: dict[str, Any], raw: Mapping[str, Any], known: frozenset[str] | set[str]) -> None:
    """Keys docker's types do not have (compose-spec keys shoal accepts as extensions, which
    docker's schema refuses): printed as written after docker's own fields, so that the
    printout deploys what the file deploys."""
    for key, value in raw.items():
        if key not in known and not str(key).startswith("x-") and key not in out:
            out[str(key)] = value


# --- top-level objects ---------------------------------------------------------------------


def _external(raw: dict[str, Any]) -> tuple[bool, str]:
    ext = raw.get("external")
    if isinstance(ext, dict):
        return True, _str(ext.get("name"))
    return ext is True, ""


def _network(name: str, raw: Any, path: P) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    external, ext_name = _external(raw)
    given = _str(raw.get("name"))
    if external:
        if ext_name and given:
            raise _Fail(path, f"network {name}: network.external.name and network.name "
                              "conflict; only use network.name")
        given = ext_name or given or name
    _put(out, "name", given)
    _put(out, "driver", _str(raw.get("driver")))
    _put(out, "driver_opts", _mapping(raw.get("driver_opts")))
    ipam = raw.get("ipam")
    if isinstance(ipam, dict):
        i: dict[str, Any] = {}
        _put(i, "driver", _str(ipam.get("driver")))
        pools = []
        for pool in ipam.get("config") or []:
            entry: dict[str, Any] = {}
            if isinstance(pool, dict):
                _put(entry, "subnet", _str(pool.get("subnet")))
                _rest(entry, pool, {"subnet"})
            pools.append(entry)
        _put(i, "config", pools)
        _rest(i, ipam, {"driver", "config"})
        _put(out, "ipam", i)
    _put(out, "external", external)
    _put(out, "internal", raw.get("internal") is True)
    _put(out, "attachable", raw.get("attachable") is True)
    _put(out, "labels", _mapping(raw.get("labels")))
    _rest(out, raw, {"name", "driver", "driver_opts", "ipam", "external", "internal",
                     "attachable", "labels"})
    return _with_extras(out, raw) if external else out


def _volume(name: str, raw: Any, path: P) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    external, ext_name = _external(raw)
    given = _str(raw.get("name"))
    if external:
        for key in ("driver", "driver_opts", "labels"):
            if raw.get(key):
                raise _Fail(path, f'conflicting parameters "external" and "{key}" specified '
                                  f'for volume "{name}"')
        if ext_name and given:
            raise _Fail(path, f"volume {name}: volume.external.name and volume.name conflict; "
                              "only use volume.name")
        given = ext_name or given or name
    _put(out, "name", given)
    _put(out, "driver", _str(raw.get("driver")))
    _put(out, "driver_opts", _mapping(raw.get("driver_opts")))
    _put(out, "external", external)
    _put(out, "labels", _mapping(raw.get("labels")))
    if isinstance(raw.get("x-cluster-spec"), dict):
        _put(out, "x-cluster-spec", _cluster_spec(raw["x-cluster-spec"], (*path, "x-cluster-spec")))
    if external:
        return _with_extras(out, {k: v for k, v in raw.items() if k != "x-cluster-spec"})
    return out


def _cluster_spec(raw: dict[str, Any], path: P) -> dict[str, Any]:
    """ClusterVolumeSpec (types.go)."""
    out: dict[str, Any] = _KeptEmpty()
    _put(out, "group", _str(raw.get("group")))
    access = raw.get("access_mode")
    if isinstance(access, dict):
        a: dict[str, Any] = _KeptEmpty()
        _put(a, "scope", _str(access.get("scope")))
        _put(a, "sharing", _str(access.get("sharing")))
        mount = access.get("mount_volume")
        if isinstance(mount, dict):
            m: dict[str, Any] = _KeptEmpty()
            _put(m, "fs_type", _str(mount.get("fs_type")))
            _put(m, "mount_flags", _string_list(mount.get("mount_flags")))
            a["mount_volume"] = m
        if isinstance(access.get("block_volume"), dict):
            a["block_volume"] = _KeptEmpty()
        out["access_mode"] = a
    reqs = raw.get("accessibility_requirements")
    if isinstance(reqs, dict):
        r: dict[str, Any] = _KeptEmpty()
        for key in ("requisite", "preferred"):
            _put(r, key, [({"segments": _mapping(t.get("segments"))} if isinstance(t, dict)
                           and t.get("segments") else {}) for t in reqs.get(key) or []])
        out["accessibility_requirements"] = r
    capacity = raw.get("capacity_range")
    if isinstance(capacity, dict):
        c: dict[str, Any] = _KeptEmpty()
        for key in ("required_bytes", "limit_bytes"):
            value = _bytes(capacity.get(key), (*path, "capacity_range", key))
            _put(c, key, None if value in (None, "0") else value)
        out["capacity_range"] = c
    secrets = []
    for item in raw.get("secrets") or []:
        entry: dict[str, Any] = {}
        if isinstance(item, dict):
            _put(entry, "key", _str(item.get("key")))
            _put(entry, "secret", _str(item.get("secret")))
        secrets.append(entry)
    _put(out, "secrets", secrets)
    _put(out, "availability", _str(raw.get("availability")))
    return out


def _file_object(kind: str, name: str, raw: Any, path: P, working_dir: Path) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    external, ext_name = _external(raw)
    given = _str(raw.get("name"))
    file = _str(raw.get("file"))
    if external:
        if ext_name and given:
            raise _Fail(path, f"{kind} {name}: {kind}.external.name and {kind}.name conflict; "
                              f"only use {kind}.name")
        given = ext_name or given or name
    elif raw.get("driver"):
        if file:
            raise _Fail(path, f"{kind} {name}: {kind}.driver and {kind}.file conflict; only "
                              f"use {kind}.driver")
    else:
        file = _abs(working_dir, file)
    _put(out, "name", given)
    _put(out, "file", file)
    _put(out, "external", external)
    _put(out, "labels", _mapping(raw.get("labels")))
    _with_extras(out, raw)
    _put(out, "driver", _str(raw.get("driver")))
    _put(out, "driver_opts", _mapping(raw.get("driver_opts")))
    _put(out, "template_driver", _str(raw.get("template_driver")))
    return out


def load_file(data: dict[str, Any], version: str, working_dir: Path, lookup: Lookup,
              where: Callable[[P], str]) -> dict[str, Any]:
    """One interpolated, validated file as docker/cli's loadSections types it."""
    try:
        services = data.get("services") if isinstance(data.get("services"), dict) else {}
        model: dict[str, Any] = {"version": version}
        model["services"] = Sorted({
            str(name): service(svc if isinstance(svc, dict) else {}, ("services", str(name)),
                               working_dir, lookup)
            for name, svc in services.items()})
        for section, make in (
                ("networks", lambda n, r, p: _network(n, r, p)),
                ("volumes", lambda n, r, p: _volume(n, r, p)),
                ("secrets", lambda n, r, p: _file_object("secret", n, r, p, working_dir)),
                ("configs", lambda n, r, p: _file_object("config", n, r, p, working_dir))):
            raw = data.get(section)
            entries = Sorted({str(n): make(str(n), r, (section, str(n)))
                              for n, r in (raw.items() if isinstance(raw, dict) else [])})
            _put(model, section, entries)
        return _with_extras(model, data)
    except _Fail as exc:
        raise ComposeError(exc.message, where=where(exc.path), path=dotted(exc.path)) from None


# --- merge.go ------------------------------------------------------------------------------


def _port_key(p: dict[str, Any]) -> int:
    value = p.get("published", 0)
    return value if isinstance(value, int) else 0


_KEYED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ports": _port_key,
    "secrets": lambda r: str(r.get("source", "")),
    "configs": lambda r: str(r.get("source", "")),
    "volumes": lambda v: str(v.get("target", "")),
}


def _merge_value(key: str, base: Any, over: Any, depth: int) -> Any:
    if depth == 0 and key in _KEYED and isinstance(base, list) and isinstance(over, list):
        entries = {}
        for item in base + over:
            entries[_KEYED[key](item)] = item
        return [entries[k] for k in sorted(entries)]
    if depth == 0 and key in ("command", "entrypoint"):
        return over or base
    if depth == 0 and key == "logging" and isinstance(base, dict) and isinstance(over, dict):
        if base.get("driver") in (None, over.get("driver")) or over.get("driver") is None:
            merged = type(base)(base)
            if not merged.get("driver") and over.get("driver"):
                merged = {"driver": over["driver"], **{k: v for k, v in merged.items()
                                                       if k != "driver"}}
                merged = _KeptEmpty(merged)
            options = Sorted(base.get("options") or {})
            options.update(over.get("options") or {})
            if options:
                merged["options"] = options
            return merged
        return over
    if depth == 0 and key == "networks" and isinstance(base, dict) and isinstance(over, dict):
        merged_networks = Sorted(base)
        for name, conf in over.items():
            old = merged_networks.get(name)
            if conf is None or old is None:
                merged_networks[name] = conf if conf is not None else old
                continue
            new = _KeptEmpty(old)
            if conf:
                new.pop("aliases", None)
                if conf.get("aliases"):
                    new["aliases"] = conf["aliases"]
                for addr in ("ipv4_address", "ipv6_address"):
                    if conf.get(addr):
                        new[addr] = conf[addr]
            merged_networks[name] = _KeptEmpty(
                {k: new[k] for k in ("aliases", "driver_opts", "ipv4_address", "ipv6_address")
                 if k in new})
        return merged_networks
    if isinstance(base, dict) and isinstance(over, dict):
        merged_struct = _merge_struct(base, over, depth + 1)
        order = _STRUCT_ORDERS.get(key)
        if order is not None and not isinstance(merged_struct, Sorted):
            # A field only the later file has goes to its place in the Go struct.
            rank = {name: i for i, name in enumerate(order)}
            items = sorted(merged_struct.items(), key=lambda kv: rank.get(kv[0], len(rank)))
            merged_struct = type(merged_struct)(items)
        return merged_struct
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def _merge_struct(base: dict[str, Any], over: dict[str, Any], depth: int) -> dict[str, Any]:
    """mergo.Merge WithOverride + WithAppendSlice: a later non-empty value wins; map entries
    merge; a key only the later file has is added in the earlier file's field order."""
    merged = type(base)(base) if isinstance(base, (Sorted, _KeptEmpty)) else dict(base)
    for key, value in over.items():
        if key in merged and merged[key] is not None and value is not None:
            merged[key] = _merge_value(key, merged[key], value, depth)
        elif value is not None or key not in merged:
            merged[key] = value
    return merged


def _service_order(service: dict[str, Any]) -> dict[str, Any]:
    order = list(_SERVICE_FIELDS)
    known = {k: service[k] for k in order if k in service}
    extras = {k: service[k] for k in service if k not in known}
    from shoal.compose.goyaml import sort_keys

    known.update((k, extras[k]) for k in sort_keys(list(extras)))
    return known


_UPDATE = ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order")
_STRUCT_ORDERS: dict[str, tuple[str, ...]] = {
    "build": ("context", "dockerfile", "args", "labels", "cache_from", "extra_hosts", "network",
              "target"),
    "deploy": ("mode", "replicas", "labels", "update_config", "rollback_config", "resources",
               "restart_policy", "placement", "endpoint_mode"),
    "update_config": _UPDATE,
    "rollback_config": _UPDATE,
    "resources": ("limits", "reservations"),
    "limits": ("cpus", "memory", "pids"),
    "reservations": ("cpus", "memory", "generic_resources"),
    "restart_policy": ("condition", "delay", "max_attempts", "window"),
    "placement": ("constraints", "preferences", "max_replicas_per_node"),
    "healthcheck": ("test", "timeout", "interval", "retries", "start_period", "start_interval",
                    "disable"),
    "logging": ("driver", "options"),
    "credential_spec": ("config", "file", "registry"),
}

_SERVICE_FIELDS = (
    "build", "cap_add", "cap_drop", "cgroupns_mode", "cgroup_parent", "command", "configs",
    "container_name", "credential_spec", "depends_on", "deploy", "devices", "dns", "dns_search",
    "domainname", "entrypoint", "environment", "env_file", "expose", "external_links",
    "extra_hosts", "hostname", "healthcheck", "image", "init", "ipc", "isolation", "labels",
    "links", "logging", "mac_address", "network_mode", "networks", "pid", "ports", "privileged",
    "read_only", "restart", "secrets", "security_opt", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user",
    "userns_mode", "volumes", "working_dir",
)


def merge(models: list[dict[str, Any]]) -> dict[str, Any]:
    """docker/cli merge.go: services merged field by field, top-level objects replaced by name;
    the first file's version and extensions stay."""
    base = copy.deepcopy(models[0])
    for over in models[1:]:
        services = Sorted(base.get("services") or {})
        for name, svc in (over.get("services") or {}).items():
            if name in services:
                services[name] = _service_order(_merge_struct(services[name], svc, 0))
            else:
                services[name] = svc
        base["services"] = services
        for section in ("networks", "volumes", "secrets", "configs"):
            if over.get(section):
                entries = Sorted(base.get(section) or {})
                entries.update(over[section])
                base[section] = entries
    ordered = {k: base[k] for k in ("version", "services", "networks", "volumes", "secrets",
                                    "configs") if k in base}
    ordered.update((k, v) for k, v in base.items() if k not in ordered)
    return ordered
