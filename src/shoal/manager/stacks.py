"""Applying a stack to the store: services and networks created, updated or pruned in one
transaction, with the lines `docker stack deploy` prints. The body of the control API's
deploy_stack / remove_stack (manager/controlapi/stacks.py), which validates and makes the
endpoints around it.

A stack is only a label (com.docker.stack.namespace) on its services and networks, as in Swarm."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.errors import InvalidArgument, NotFound
from shoal.ids import new_swarm_id
from shoal.manager import files, registryauth
from shoal.model._serde import from_dict
from shoal.model.records import Endpoint, Network, Service
from shoal.model.service import ServiceSpec
from shoal.model.stack import NetworkSpec
from shoal.store.base import Transaction

NAMESPACE_LABEL = "com.docker.stack.namespace"


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("labels") or obj.get("spec", {}).get("labels") or {}


def stack_of(obj: dict[str, Any]) -> str | None:
    return obj.get("stack") or _labels(obj).get(NAMESPACE_LABEL)


def service_ids(tx: Transaction, stack: dict[str, Any]) -> dict[str, str]:
    """The ID each of the stack's services has, or will have once created."""
    existing = {s["name"]: s["id"] for s in tx.list("service")}
    return {svc["name"]: existing.get(svc["name"]) or new_swarm_id() for svc in stack.get("services", {}).values()}


def pruned_services(tx: Transaction, stack: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = {svc["name"] for svc in stack.get("services", {}).values()}
    return [s for s in tx.list("service") if stack_of(s) == stack["name"] and s["name"] not in wanted]


def check_externals(tx: Transaction, stack: dict[str, Any],
                    local_scope: Callable[[str], str | None] = lambda name: None) -> None:
    """What docker/cli's deploy checks before it creates anything, in its order and words:
    each external network exists and is swarm-scoped (validateExternalNetworks; `local_scope`
    gives the scope of this node's own network of that name, which Docker's NetworkInspect
    also finds), then each service's secrets and configs exist (convertServiceSecrets/Configs,
    `service web: secret not found: x`). An external secret or config no service uses is not
    looked up, as there."""
    swarm_networks = {n["name"] for n in tx.list("network")}
    for net in sorted(stack.get("networks", {}).values(), key=lambda n: n["name"]):
        name = net["name"]
        if not net.get("external") or name in NODE_NETWORKS or name in swarm_networks:
            continue
        scope = local_scope(name)
        if scope is None:
            raise NotFound(f'network "{name}" is declared as external, but could not be found. '
                           "You need to create a swarm-scoped network before the stack is deployed")
        raise InvalidArgument(f'network "{name}" is declared as external, but it is not in the right '
                              f'scope: "{scope}" instead of "swarm"')
    declared = {kind: {s["name"] for s in stack.get(f"{kind}s", {}).values() if not s.get("external")}
                for kind in files.KINDS}
    stored = {kind: {o["name"] for o in tx.list(kind)} for kind in files.KINDS}
    for svc in stack.get("services", {}).values():
        for kind in files.KINDS:
            for ref in svc.get(f"{kind}s") or []:
                if ref["source"] not in declared[kind] and ref["source"] not in stored[kind]:
                    raise NotFound(f"service {svc.get('compose_name') or svc['name']}: "
                                   f"{kind} not found: {ref['source']}")


# Networks every node has, that a stack may name as external without creating them: a
# service on `host` uses its node's own network, on `none` has none.
NODE_NETWORKS = ("host", "none")


def apply_stack(tx: Transaction, stack: dict[str, Any], prune: bool = False,
                ids: dict[str, str] | None = None, endpoints: dict[str, dict[str, Any]] | None = None,
                contents: dict[str, dict[str, str]] | None = None,
                allocations: dict[str, Any] | None = None) -> list[str]:
    """Create or update the stack's networks, secrets and configs (`contents`: their data, read
    by the client), then its services, in Docker's order; returns Docker's progress lines.
    `ids`, `endpoints` (by service name) and the new networks' `allocations` (by network name)
    come from the allocator, earlier in the same transaction."""
    ids = ids or {}
    endpoints = endpoints or {}
    name = stack["name"]
    now = time.time()
    lines: list[str] = []
    existing_services = {s["name"]: s for s in tx.list("service") if stack_of(s) == name}
    wanted = {svc["name"]: svc for svc in stack.get("services", {}).values()}
    if prune:
        for svc_name in sorted(set(existing_services) - set(wanted)):
            lines.append(f"Removing service {svc_name}")
            tx.delete("service", existing_services[svc_name]["id"])
            registryauth.remove(tx, existing_services[svc_name]["id"])
    networks = {n["name"]: n for n in tx.list("network")}
    for net in sorted(stack.get("networks", {}).values(), key=lambda n: n["name"]):
        if net.get("external"):
            if net["name"] in NODE_NETWORKS:
                continue  # on every node already (docker/cli's validateExternalNetworks skips them)
            found = networks.get(net["name"])
            if found is None:
                raise NotFound(
                    f'network "{net["name"]}" is declared as external, but could not be found. '
                    "You need to create a swarm-scoped network before the stack is deployed"
                )
            continue
        if net["name"] in networks:
            continue  # Swarm leaves an existing stack network unchanged
        lines.append(f"Creating network {net['name']}")
        tx.create("network", Network(id=new_swarm_id(), name=net["name"], stack=name,
                                     spec=from_dict(NetworkSpec, net), created_at=now,
                                     allocation=(allocations or {}).get(net["name"])).to_dict())
    lines += files.apply_files(tx, stack, contents or {})
    for svc_name in sorted(wanted):
        spec = wanted[svc_name]
        old = existing_services.get(svc_name)
        if old is None:
            lines.append(f"Creating service {svc_name}")
            endpoint = endpoints.get(svc_name)
            tx.create("service", Service(
                id=ids.get(svc_name) or new_swarm_id(), name=svc_name, stack=name, spec=ServiceSpec.from_dict(spec),
                created_at=now, updated_at=now,
                endpoint=from_dict(Endpoint, endpoint) if endpoint else Endpoint()).to_dict())
            continue
        if old.get("spec", {}).get("mode", "replicated") != spec.get("mode", "replicated"):
            raise InvalidArgument(f"service {svc_name}: service mode change is not allowed")
        lines.append(f"Updating service {svc_name} (id: {old['id']})")
        # docker/cli's deployServices: stack deploy has no --force, so the service's ForceUpdate
        # is kept; a `service update --force` made earlier does not restart every task again.
        spec = {**spec, "force_update": old.get("spec", {}).get("force_update", 0)}
        if svc_name in endpoints:
            old["endpoint"] = endpoints[svc_name]
        if old["spec"] != spec:
            # As swarmkit's UpdateService: the old spec kept for a rollback, the update status
            # reset (the orchestrator starts a new one for the new version).
            old.update(previous_spec=old["spec"], spec=spec, spec_version=old["spec_version"] + 1, updated_at=now,
                       update_status=None, rolling_back=False)
        tx.update("service", old)
    return lines


def remove_stack(tx: Transaction, name: str) -> list[str]:
    """Delete everything labelled with the stack; Docker's `stack rm` lines. Empty when nothing."""
    lines = []
    for svc in sorted((s for s in tx.list("service") if stack_of(s) == name), key=lambda s: s["name"]):
        lines.append(f"Removing service {svc['name']}")
        tx.delete("service", svc["id"])
        registryauth.remove(tx, svc["id"])
    lines += files.remove_files(tx, name)
    for net in sorted((n for n in tx.list("network") if stack_of(n) == name), key=lambda n: n["name"]):
        lines.append(f"Removing network {net['name']}")
        tx.delete("network", net["id"])
    return lines
