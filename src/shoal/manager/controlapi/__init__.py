"""The manager's control API, as swarmkit's manager/controlapi: every change a user asks of the
cluster's objects is validated and written here, in one store transaction, and nowhere else.
The HTTP layer (api/server.py, api/objectsapi.py) only translates requests into these calls.

  services.py  create / update (and rollback) / scale / remove / list / inspect a service
  networks.py  create / remove / list / inspect a swarm-scoped network
  stacks.py    deploy / remove a stack: the same service and network writes, many at once
  secrets.py   secrets and configs

Errors carry the words Docker prints. swarmkit's refusals reach the Docker CLI through dockerd
as `rpc error: code = <Code> desc = <text>` (so `docker service create` of a name taken says
`Error response from daemon: rpc error: code = AlreadyExists desc = name conflicts with an
existing object: service web already exists`); dockerd's own lookups are plain (`service x not
found`, `network x not found`).

This module imports nothing of its package (manager/files.py imports controlapi.secrets, which
the stack deploy path imports in turn)."""

from __future__ import annotations

from typing import Any

from shoal.errors import InvalidArgument, NotFound


def rpc(code: str, text: str) -> str:
    """A swarmkit refusal as dockerd passes it on."""
    return f"rpc error: code = {code} desc = {text}"


def resolve(objects: list[dict[str, Any]], ref: str, kind: str) -> dict[str, Any]:
    """Docker's lookup order: full ID, then full name, then a unique ID prefix; moby's words when
    none or several match (daemon/cluster/helpers.go getService)."""
    for key in ("id", "name"):
        for obj in objects:
            if obj[key] == ref:
                return obj
    prefixed = [o for o in objects if ref and o["id"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise InvalidArgument(f"{kind} {ref} is ambiguous ({len(prefixed)} matches found)")
    raise NotFound(f"{kind} {ref} not found")


def resolve_task(tasks: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """moby's getTask: the full ID, else the task's name (naming.Task: its container's name,
    `web.1.<task id>`, `web.<node id>.<task id>` for a global one), else a unique ID prefix."""
    for t in tasks:
        if t["id"] == ref:
            return t
    named = [t for t in tasks if f"{t['service_name']}.{t.get('slot') or t.get('node_id')}.{t['id']}" == ref]
    found = named or [t for t in tasks if ref and t["id"].startswith(ref)]
    if not found:
        raise NotFound(f"task {ref} not found")
    if len(found) > 1:
        raise InvalidArgument(f"task {ref} is ambiguous ({len(found)} matches found)")
    return found[0]
