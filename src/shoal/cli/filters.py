"""Docker's `--filter key=value` (docker/cli opts.FilterOpt + moby api/types/filters.Args).

The rules, as Docker has them:
- the flag is `key=value`; key lower-cased and both trimmed; no `=` is the flag's own error
  (`invalid argument "x" for "-f, --filter" flag: bad format of filter (expected name=value)`,
  exit 125, as pflag reports it);
- values of one key are a set and match if ANY matches; different keys must ALL match;
- a key the command does not know is the daemon's `invalid filter 'x'` (exit 1);
- `label` is the exception: every label value given must be on the object (MatchKVList).

The container side of `ps --filter` (moby daemon/list.go: includeContainerInList) is here too,
on a plain PsItem, so that the local runtime's containers and a remote node's list share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import InvalidArgument, ShoalError


class FilterError(ShoalError):
    """A filter the daemon refuses: printed as `Error response from daemon: ...`, exit 1."""

    from_daemon = True


def invalid_filter(key: str, values: Sequence[str] | None = None) -> FilterError:
    """moby's invalidFilter text: `invalid filter 'key'`, or with the values as Go prints a
    []string: `invalid filter 'dangling=[maybe]'`."""
    if values is None:
        return FilterError(f"invalid filter '{key}'")
    return FilterError(f"invalid filter '{key}=[{' '.join(values)}]'")


class Filters:
    """moby's filters.Args: key -> set of values (insertion order kept for stable messages)."""

    def __init__(self, fields: Mapping[str, Iterable[str]] | None = None) -> None:
        self.fields: dict[str, list[str]] = {}
        for key, values in (fields or {}).items():
            for value in values:
                self.add(key, value)

    @classmethod
    def parse(cls, items: Iterable[str] | None, flag: str = "-f, --filter") -> Filters:
        out = cls()
        for item in items or ():
            if item == "":
                continue  # FilterOpt.Set ignores an empty value
            key, sep, value = item.partition("=")
            if not sep:
                raise InvalidArgument(f'invalid argument "{item}" for "{flag}" flag: '
                                      "bad format of filter (expected name=value)")
            out.add(key.strip().lower(), value.strip())
        return out

    def add(self, key: str, value: str) -> None:
        values = self.fields.setdefault(key, [])
        if value not in values:
            values.append(value)

    def validate(self, accepted: Iterable[str]) -> Filters:
        allowed = set(accepted)
        for key in self.fields:
            if key not in allowed:
                raise invalid_filter(key)
        return self

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.fields.items()}

    def get(self, key: str) -> list[str]:
        return list(self.fields.get(key, ()))

    def contains(self, key: str) -> bool:
        return key in self.fields

    def exact_match(self, key: str, source: str) -> bool:
        """True without values for the key, else when one value is `source`."""
        values = self.fields.get(key)
        return not values or source in values

    def match(self, key: str, source: str) -> bool:
        """Exact, else each value as an unanchored regular expression (Go's regexp.MatchString);
        a value that is no valid expression is skipped, as moby skips it."""
        if self.exact_match(key, source):
            return True
        for pattern in self.fields.get(key, ()):
            try:
                if re.search(pattern, source):
                    return True
            except re.error:
                continue
        return False

    def fuzzy_match(self, key: str, source: str) -> bool:
        """Exact, else a value that is a prefix of `source` (IDs)."""
        if self.exact_match(key, source):
            return True
        return any(source.startswith(v) for v in self.fields.get(key, ()))

    def match_kv_list(self, key: str, sources: Mapping[str, str]) -> bool:
        """Every `k` / `k=v` value must be on `sources` (labels are AND'ed, unlike other keys)."""
        values = self.fields.get(key)
        if not values:
            return True
        if not sources:
            return False
        for value in values:
            k, sep, v = value.partition("=")
            if k not in sources or (sep and sources[k] != v):
                return False
        return True

    def get_bool_or_default(self, key: str, default: bool) -> bool:
        """moby's GetBoolOrDefault: true/1 or false/0 exactly; none of them, or both kinds, is
        an invalid filter."""
        values = self.fields.get(key)
        if not values:
            return default
        true, false = bool({"true", "1"} & set(values)), bool({"false", "0"} & set(values))
        if true == false:
            raise invalid_filter(key, list(values))
        return true


# --- ps ----------------------------------------------------------------------------------------

PS_FILTERS = ("ancestor", "before", "exited", "id", "isolation", "label", "name", "status", "health",
              "since", "volume", "network", "is-task", "publish", "expose")
_STATES = ("paused", "restarting", "removing", "running", "dead", "created", "exited")
_HEALTH = ("starting", "healthy", "unhealthy", "none")


@dataclass
class PsItem:
    """What `ps --filter` looks at in one container (moby's container.Snapshot, the parts used)."""

    id: str
    name: str
    state: str  # created | running | paused | exited | dead
    image_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0
    started: bool = False
    health: str = "none"
    managed: bool = False  # a swarm task's container
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (name or source, destination)
    networks: dict[str, str] = field(default_factory=dict)  # name -> network ID
    ports: list[tuple[int, int, str]] = field(default_factory=list)  # (published, target, proto)
    row: Any = None  # what the caller prints

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")


def _port_set(key: str, values: Sequence[str]) -> set[tuple[int, str]]:
    """moby's portOp: `80`, `80/udp`, `8000-8080/tcp`."""
    out: set[tuple[int, str]] = set()
    for value in values:
        if ":" in value:
            raise FilterError(f"filter for '{key}' should not contain ':': {value}")
        port, _, proto = value.partition("/")
        proto = (proto or "tcp").lower()
        start_s, dash, end_s = port.partition("-")
        try:
            start = int(start_s)
            end = int(end_s) if dash else start
            if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start:
                raise ValueError
        except ValueError:
            raise FilterError(f"error while looking up for {key} {value}: invalid range specified for port: "
                              f"{port}" if dash else f"error while looking up for {key} {value}: "
                              f"invalid start port '{start_s}': invalid syntax") from None
        out.update((p, proto) for p in range(start, end + 1))
    return out


def _by_id_or_name(items: Sequence[PsItem], value: str) -> PsItem:
    """moby's idOrNameFilter: a full or unique-prefix ID, else an exact name."""
    ref = value.lstrip("/")
    for item in items:
        if item.id == value or item.name == ref:
            return item
    prefixed = [i for i in items if i.id.startswith(value)]
    if len(prefixed) == 1:
        return prefixed[0]
    raise FilterError(f"No such container: {value}")


def ps_filter(items: Sequence[PsItem], filters: Filters, show_all: bool, limit: int = -1,
              ancestors: set[str] | None = None) -> list[PsItem]:
    """The containers `ps` shows, newest first (items must come newest first), as moby's
    reduceContainers; `ancestors` is the set of image IDs the `ancestor` values resolved to
    (with their descendants), None when that filter is not given."""
    filters.validate(PS_FILTERS)
    exited: list[int] = []
    for value in filters.get("exited"):
        try:
            exited.append(int(value))
        except ValueError:
            raise FilterError(f'strconv.Atoi: parsing "{value}": invalid syntax') from None
    for value in filters.get("status"):
        if value not in _STATES:
            raise FilterError(f"invalid filter 'status={value}'")  # daemon/list.go's own words
        show_all = True
    task_filter: bool | None = None
    if filters.contains("is-task"):
        if "true" in filters.get("is-task"):
            task_filter = True
        elif "false" in filters.get("is-task"):
            task_filter = False
        else:  # moby prints the values as Go prints a []string
            raise FilterError(f"invalid filter 'is-task=[{' '.join(filters.get('is-task'))}]'")
    for value in filters.get("health"):
        if value not in _HEALTH:
            raise FilterError(f"Unrecognised filter value for health: {value}")
    before = since = None
    for value in filters.get("before"):
        before = _by_id_or_name(items, value)
    for value in filters.get("since"):
        since = _by_id_or_name(items, value)
    # moby's fast path: with `id` values, only the containers each one names by a unique prefix
    by_id: set[str] | None = None
    if filters.contains("id"):
        by_id = set()
        for value in filters.get("id"):
            prefixed = [i.id for i in items if i.id.startswith(value)]
            if len(prefixed) == 1:
                by_id.add(prefixed[0])
    publish = _port_set("publish", filters.get("publish"))
    expose = _port_set("expose", filters.get("expose"))

    out: list[PsItem] = []
    for item in items:
        if before is not None:  # skip everything up to and including the `before` container
            if item.id == before.id:
                before = None
            continue
        if since is not None and item.id == since.id:
            break
        if not item.running and not show_all and limit <= 0:
            continue
        if not filters.match("name", item.name) and not filters.match("name", "/" + item.name):
            continue
        if by_id is not None and item.id not in by_id:
            continue
        if task_filter is not None and task_filter != item.managed:
            continue
        if not filters.match_kv_list("label", item.labels):
            continue
        if limit > 0 and len(out) == limit:
            break
        if exited and not (not item.running and item.started and item.exit_code in exited):
            continue
        if not filters.match("status", item.state):
            continue
        if not filters.exact_match("health", item.health):
            continue
        if filters.contains("volume"):
            wanted = filters.get("volume")
            if not any(name in wanted or dest in wanted for name, dest in item.mounts):
                continue
        if ancestors is not None and item.image_id not in ancestors:
            continue
        if filters.contains("network"):
            wanted = filters.get("network")
            if not any(name in wanted or any(nid.startswith(w) for w in wanted if w)
                       for name, nid in item.networks.items()):
                continue
        if publish or expose:
            if not any((pub, proto) in publish or (target, proto) in expose for pub, target, proto in item.ports):
                continue
        out.append(item)
    return out
