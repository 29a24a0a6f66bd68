"""Merge several compose files the way `docker compose -f a -f b` does (compose-go
override/merge.go and override/uncity.go).

Mappings merge key by key; scalars are replaced; lists are appended, except:
- `command` and `entrypoint` are replaced whole (`healthcheck.test` is appended, as mergo does);
- `environment`, `labels`, `deploy.labels`, `build.args`, `sysctls`... merge by variable name;
- `ports`, `volumes`, `secrets`, `configs` merge by docker/cli's keys (published port, target,
  source) and are sorted by them, as docker/cli's merge.go does; repeated entries within one
  file are kept (the deploy refuses them as Swarm does);
- `depends_on` and service `networks` lists are read as mappings and merged by name;
- `logging` options merge only when the driver is the same;
- a top-level network, volume, secret or config is replaced whole (merge.go's mergo.Map).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from shoal.compose.errors import ComposeError, dotted
from shoal.compose.syntax import parse_port, parse_volume

Path_ = tuple[str | int, ...]


def _matches(path: Path_, pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(
        p == "*" or p == str(q) for p, q in zip(pattern, path, strict=True)
    )


def _p(text: str) -> tuple[str, ...]:
    return tuple(text.split("."))


def _as_key_values(value: Any) -> dict[str, Any]:
    """`["A=1", "B"]` or `{A: 1, B: null}` -> {"A": "1"|1, "B": None}."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    if isinstance(value, list):
        for item in value:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None
    elif isinstance(value, str):
        key, sep, val = value.partition("=")
        out[key] = val if sep else None
    return out


def _merge_key_values(base: Any, over: Any, path: Path_) -> Any:
    merged = _as_key_values(base)
    for key, value in _as_key_values(over).items():
        # mergo keeps an earlier value over a later nil one (docker/cli merge.go); a bare name
        # set in the environment was already resolved in its own file (api.resolve_bare_env).
        if value is None and merged.get(key) is not None and path[-1] == "environment":
            continue
        merged[key] = value
    return merged


def _as_mapping(value: Any, default: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return {str(item): (copy.deepcopy(default) if default is not None else None)
                for item in value}
    return {}


def _merge_depends_on(base: Any, over: Any, path: Path_) -> Any:
    default = {"condition": "service_started", "required": True}
    return _merge_mappings(_as_mapping(base, default), _as_mapping(over, default), path)


def _merge_networks(base: Any, over: Any, path: Path_) -> Any:
    """docker/cli mergeServiceNetworkConfig: a later non-empty entry replaces the aliases (even
    with none) and sets the addresses it gives; driver_opts stay the earlier file's."""
    merged = _as_mapping(base, None)
    for name, conf in _as_mapping(over, None).items():
        old = merged.get(name)
        if not isinstance(old, dict) or not isinstance(conf, dict) or not conf:
            merged[name] = conf if old is None or (isinstance(conf, dict) and not conf
                                                   and not isinstance(old, dict)) else old
            continue
        new = {k: v for k, v in old.items() if k != "aliases"}
        if conf.get("aliases") is not None:
            new["aliases"] = conf["aliases"]
        for key in ("ipv4_address", "ipv6_address"):
            if conf.get(key):
                new[key] = conf[key]
        merged[name] = new
    return merged


def _merge_build(base: Any, over: Any, path: Path_) -> Any:
    def as_build(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"context": value}
        return dict(value) if isinstance(value, dict) else {}

    return _merge_mappings(as_build(base), as_build(over), path)


def _merge_logging(base: Any, over: Any, path: Path_) -> Any:
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    if "driver" not in over or "driver" not in base or over["driver"] == base["driver"]:
        return _merge_mappings(base, over, path)
    return over


def _merge_sequence(base: Any, over: Any, _path: Path_) -> Any:
    def as_list(value: Any) -> list[Any]:
        if isinstance(value, list):
            return list(value)
        if isinstance(value, dict):
            return [k if v is None else f"{k}={v}" for k, v in sorted(value.items())]
        return [value]

    return as_list(base) + as_list(over)


def _merge_extra_hosts(base: Any, over: Any, path: Path_) -> Any:
    """HostsList: each file's entries as `host:ip`, appended (mergo WithAppendSlice)."""
    def as_hosts(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [f"{k}:{ip}" for k, v in sorted(value.items())
                    for ip in (v if isinstance(v, list) else [v])]
        return list(value) if isinstance(value, list) else [value]

    return as_hosts(base) + as_hosts(over)


def _merge_health_test(base: Any, over: Any, _path: Path_) -> Any:
    """docker/cli appends the later test to the earlier one (HealthCheckTest is a plain slice
    to mergo); a string is ["CMD-SHELL", string] in each file first."""
    def as_test(value: Any) -> list[Any]:
        if isinstance(value, str):
            return ["CMD-SHELL", value]
        return list(value) if isinstance(value, list) else [value]

    return as_test(base) + as_test(over)


def _replace(_base: Any, over: Any, _path: Path_) -> Any:
    return over


_SPECIALS: tuple[tuple[tuple[str, ...], Callable[[Any, Any, Path_], Any]], ...] = (
    (_p("networks.*.labels"), _merge_key_values),
    (_p("volumes.*.labels"), _merge_key_values),
    (_p("secrets.*.labels"), _merge_key_values),
    (_p("configs.*.labels"), _merge_key_values),
    (_p("services.*.annotations"), _merge_key_values),
    (_p("services.*.build"), _merge_build),
    (_p("services.*.build.args"), _merge_key_values),
    (_p("services.*.build.labels"), _merge_key_values),
    (_p("services.*.build.additional_contexts"), _merge_key_values),
    (_p("services.*.build.extra_hosts"), _merge_extra_hosts),
    (_p("services.*.command"), _replace),
    (_p("services.*.entrypoint"), _replace),
    (_p("services.*.healthcheck.test"), _merge_health_test),
    (_p("services.*.depends_on"), _merge_depends_on),
    (_p("services.*.deploy.labels"), _merge_key_values),
    (_p("services.*.dns"), _merge_sequence),
    (_p("services.*.dns_opt"), _merge_sequence),
    (_p("services.*.dns_search"), _merge_sequence),
    (_p("services.*.env_file"), _merge_sequence),
    (_p("services.*.environment"), _merge_key_values),
    (_p("services.*.extra_hosts"), _merge_extra_hosts),
    (_p("services.*.labels"), _merge_key_values),
    (_p("services.*.logging"), _merge_logging),
    (_p("services.*.networks"), _merge_networks),
    (_p("services.*.sysctls"), _merge_key_values),
    (_p("services.*.tmpfs"), _merge_sequence),
    (_p("services.*.ulimits.*"), _replace),
)


def _merge_mappings(base: dict[str, Any], over: dict[str, Any], path: Path_) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key in out:
            out[key] = merge_values(out[key], value, (*path, key))
        else:
            out[key] = value
    return out


_TOP_OBJECTS = ("networks", "volumes", "secrets", "configs")


def merge_values(base: Any, over: Any, path: Path_) -> Any:
    if len(path) == 2 and path[0] in _TOP_OBJECTS:
        # docker/cli merge.go (mergo.Map WithOverride): a network, volume, secret or config the
        # later file declares replaces the earlier one whole, even when it is empty.
        return over
    for pattern, merger in _SPECIALS:
        if _matches(path, pattern):
            if over is None:
                return base
            if base is None:
                return over
            return merger(base, over, path)
    if over is None:
        return base
    if isinstance(base, dict):
        if not isinstance(over, dict):
            raise ComposeError(f"cannot override {dotted(path)}: a mapping is replaced by "
                               f"a {type(over).__name__}")
        return _merge_mappings(base, over, path)
    if isinstance(base, list):
        if not isinstance(over, list):
            raise ComposeError(f"cannot override {dotted(path)}: a list is replaced by "
                               f"a {type(over).__name__}")
        return base + over
    return over


# --- ports, volumes, secrets and configs across files ---------------------------------------
# docker/cli's merge.go (mergeSlice): when a service is in both files and the earlier file has
# the list, both lists are put in one map by a key (ports by published port, volumes by target,
# secrets and configs by source), the later file winning, and written back sorted by that key.
# Within one file nothing is collapsed: `stack config` shows every entry and the deploy refuses
# duplicates as Swarm does.


def _volume_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target", ""))
    if isinstance(item, str):
        try:
            return parse_volume(item).target
        except ValueError:
            return item
    return repr(item)


def _source_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("source", ""))
    return str(item)


def _long_ports(item: Any) -> list[Any]:
    """A short port as docker's loader types it before merging (one entry per port of a
    range); anything unparsable stays as written for the converter to report."""
    if isinstance(item, dict) or isinstance(item, bool):
        return [item]
    if isinstance(item, (str, int)):
        try:
            shorts = parse_port(item)
        except ValueError:
            return [item]
        return [{"mode": "ingress", "target": s.target, "published": s.published,
                 "protocol": s.protocol} for s in shorts]
    return [item]


def _port_key(item: Any) -> int:
    if isinstance(item, dict):
        published = item.get("published")
        if isinstance(published, int) and not isinstance(published, bool):
            return published
        if isinstance(published, str) and published.isdigit() and len(published) < 6:
            return int(published)
    return 0


def _keyed_merge(key: Callable[[Any], Any], expand: Callable[[Any], list[Any]] | None = None
                 ) -> Callable[[Any, Any, Path_], Any]:
    def merge(base: Any, over: Any, path: Path_) -> Any:
        if not isinstance(base, list) or not isinstance(over, list):
            return over
        if not base:  # mergo calls the transformer only for a non-nil list: append
            return base + over
        entries: dict[Any, Any] = {}
        for item in base + over:
            for one in (expand(item) if expand else [item]):
                entries[key(one)] = one
        try:
            return [entries[k] for k in sorted(entries)]
        except TypeError:  # keys of mixed types: an invalid file, reported by the converter
            return list(entries.values())

    return merge


_SPECIALS = (
    *_SPECIALS,
    (_p("services.*.ports"), _keyed_merge(_port_key, _long_ports)),
    (_p("services.*.volumes"), _keyed_merge(_volume_key)),
    (_p("services.*.secrets"), _keyed_merge(_source_key)),
    (_p("services.*.configs"), _keyed_merge(_source_key)),
)


def merge_configs(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge parsed (and interpolated) files, later files overriding earlier ones."""
    if not configs:
        return {}
    merged: dict[str, Any] = copy.deepcopy(configs[0])
    for other in configs[1:]:
        merged = _merge_mappings(merged, copy.deepcopy(other), ())
    return merged
