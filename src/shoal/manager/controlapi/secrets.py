"""Secrets and configs on the manager, as swarmkit's controlapi (secret.go, config.go) and
moby's daemon/cluster (helpers.go getSecret/getConfig, filters.go) handle them: validate, then
read or write in one store transaction. The HTTP layer (api/objectsapi.py) only translates.

Errors carry the words Docker prints: the gRPC status swarmkit returns is passed through by
dockerd as `rpc error: code = <Code> desc = <text>`, so `docker secret rm` of a secret in use says
`Error response from daemon: rpc error: code = InvalidArgument desc = secret 'x' is in use by the
following service: y`; the lookups are dockerd's own (`secret x not found`).

A secret's data is sealed before it is stored (manager/files.py stored_content) and never leaves
this module: what is returned is the record without it."""

from __future__ import annotations

import re
import time
from typing import Any

from shoal.errors import Conflict, InvalidArgument, NotFound
from shoal.ids import new_swarm_id
from shoal.model.secret import KINDS, MAX_SIZE, NAME_PATTERN, TEMPLATE_DRIVERS, FileObject
from shoal.store.base import Store, Transaction

_NAME = re.compile(NAME_PATTERN)
# moby daemon/cluster/filters.go newListSecretsFilters / newListConfigsFilters.
FILTER_KEYS = ("id", "label", "name", "names")


def _rpc(code: str, text: str) -> str:
    return f"rpc error: code = {code} desc = {text}"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidArgument(f"unknown object kind {kind!r}")


def validate_name(name: str) -> None:
    """swarmkit validateConfigOrSecretAnnotations."""
    if not name:
        raise InvalidArgument(_rpc("InvalidArgument", "name must be provided"))
    if len(name) > 64 or not _NAME.fullmatch(name):
        raise InvalidArgument(_rpc("InvalidArgument", "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, "
                                                      "and the start and end character must be [a-zA-Z0-9]"))


def validate_data(kind: str, data: bytes) -> None:
    """swarmkit ValidateSecretPayload / validateConfigSpec: 1 byte up to (not including) the limit."""
    limit = MAX_SIZE[kind]
    if len(data) >= limit or len(data) < 1:
        raise InvalidArgument(_rpc("InvalidArgument", f"{kind} data must be larger than 0 and less than {limit} bytes"))


def validate_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidArgument("Labels: a mapping of strings is expected")
    return dict(labels)


def validate_template_driver(driver: str) -> None:
    if driver and driver not in TEMPLATE_DRIVERS:
        # swarmkit's template package knows only "golang" (template/getter.go).
        raise InvalidArgument(_rpc("InvalidArgument", f"template driver '{driver}' not supported"))


def create(store: Store, kind: str, name: str, data: bytes, labels: dict[str, str] | None = None,
           template_driver: str = "", driver: str = "") -> FileObject:
    """`secret create` / `config create`: a new object; a name taken is swarmkit's AlreadyExists."""
    from shoal.manager.files import stored_content

    _check_kind(kind)
    validate_name(name)
    if driver:
        # Secret drivers are plugins (swarmkit drivers.DriverProvider); shoal has none.
        raise InvalidArgument(_rpc("InvalidArgument", f"secret driver {driver} is not available: "
                                                      "shoal has no secret driver plugins"))
    validate_data(kind, data)
    validate_template_driver(template_driver)
    now = time.time()
    record = FileObject(id=new_swarm_id(), name=name, digest="", labels=dict(labels or {}), created_at=now,
                        updated_at=now, template_driver=template_driver)
    raw = dict(record.to_dict(), **stored_content(kind, name, data))
    raw.pop("version", None)
    with store.transaction() as tx:
        if any(o["name"] == name for o in tx.list(kind)):
            raise Conflict(_rpc("AlreadyExists", f"{kind} {name} already exists"))
        made = tx.create(kind, raw)
    return FileObject.from_dict(made)


def _lookup(objects: list[dict[str, Any]], kind: str, ref: str) -> dict[str, Any]:
    """dockerd's getSecret/getConfig: the full ID, else the full name, else an ID prefix;
    several matches are ambiguous."""
    for obj in objects:
        if obj["id"] == ref:
            return obj
    found = [o for o in objects if o["name"] == ref] or [o for o in objects if ref and o["id"].startswith(ref)]
    if not found:
        raise NotFound(f"{kind} {ref} not found")
    if len(found) > 1:
        raise InvalidArgument(f"{kind} {ref} is ambiguous ({len(found)} matches found)")
    return found[0]


def get(store: Store, kind: str, ref: str) -> FileObject:
    _check_kind(kind)
    return FileObject.from_dict(_lookup(store.list(kind), kind, ref))


def parse_filters(filters: dict[str, list[str]] | None) -> dict[str, list[str]]:
    filters = filters or {}
    for key in filters:
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'")
    return filters


def _labels_match(wanted: list[str], labels: dict[str, str]) -> bool:
    """swarmkit filterMatchLabels: every `key` present, every `key=value` equal."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def list_objects(store: Store, kind: str, filters: dict[str, list[str]] | None = None) -> list[FileObject]:
    """swarmkit ListSecrets: names (exact), name (prefix) and id (prefix) are OR'ed, labels AND'ed."""
    _check_kind(kind)
    filters = parse_filters(filters)
    names, prefixes, ids = filters.get("names", []), filters.get("name", []), filters.get("id", [])
    out = []
    for raw in store.list(kind):
        if (names or prefixes or ids) and not (
                raw["name"] in names or any(raw["name"].startswith(p) for p in prefixes)
                or any(raw["id"].startswith(p) for p in ids)):
            continue
        if not _labels_match(filters.get("label", []), raw.get("labels") or {}):
            continue
        out.append(FileObject.from_dict(raw))
    return out


def users(tx: Transaction, kind: str, name: str) -> list[str]:
    """The services whose spec references the object (store.ByReferencedSecretID), by name."""
    return sorted(s["name"] for s in tx.list("service")
                  if any(r.get("source") == name for r in (s.get("spec") or {}).get(f"{kind}s") or []))


def remove(store: Store, kind: str, ref: str) -> FileObject:
    """`secret rm`: refused while a service references it (swarmkit RemoveSecret's words)."""
    _check_kind(kind)
    with store.transaction() as tx:
        raw = _lookup(tx.list(kind), kind, ref)
        using = users(tx, kind, raw["name"])
        if using:
            noun = "service" if len(using) == 1 else "services"
            raise InvalidArgument(_rpc("InvalidArgument", f"{kind} '{raw['name']}' is in use by the following "
                                                          f"{noun}: {', '.join(using)}"))
        tx.delete(kind, raw["id"])
    return FileObject.from_dict(raw)
