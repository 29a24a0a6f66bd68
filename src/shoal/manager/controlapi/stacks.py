"""Stacks in the control API: `stack deploy` and `stack rm`. A stack is only a label on its
services, networks, secrets and configs (as in Swarm), so a deploy is many of the writes
services.py and networks.py make one at a time, in one transaction (manager/stacks.py holds the
transaction's body: what is created, updated or pruned, and Docker's progress lines).

Order, as for one service: every spec validated; each image pinned to the manager's digest;
then one transaction: the allocator gives the stack's new networks their subnets and VNIs and
each service its VIPs (a full pool fails here), the records are written, and this node's copy of
the networks and endpoints is made from them (a port clash fails here); on failure nothing is
stored and what this deploy made in the kernel is taken down again."""

from __future__ import annotations

import logging
from typing import Any

from shoal.errors import InvalidArgument
from shoal.manager.controlapi.services import validate_service_spec
from shoal.model._serde import to_dict
from shoal.model.service import ServiceSpec
from shoal.store.base import Store

log = logging.getLogger("shoald.controlapi")


def _validate(stack: dict[str, Any], existing: set[str]) -> None:
    """Every service as `service create/update` checks it; docker/cli's words around the
    daemon's refusal (`failed to create service webapp_web: ...`)."""
    for spec in stack.get("services", {}).values():
        try:
            validate_service_spec(ServiceSpec.from_dict(spec))
        except InvalidArgument as exc:
            verb = "update" if spec.get("name") in existing else "create"
            raise InvalidArgument(f"failed to {verb} service {spec.get('name')}: {exc}") from None


def _local_scope(name: str) -> str | None:
    """The scope of this node's own network `name` (a bridge made by `network create`), which
    an external network of a stack must not be; None if there is none (or only this node's copy
    of a swarm network, which the store's check has already looked for)."""
    from shoal.network.store import NetworkStore

    found = NetworkStore().find(name)
    if found is None or found.scope == "swarm":  # this node's copy of a swarm network
        return None
    return found.scope or "local"


def deploy_stack(store: Store, stack: dict[str, Any], prune: bool = False,
                 files: dict[str, dict[str, str]] | None = None,
                 resolve_image: str = "always",
                 registry_auth: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """`stack` is a StackSpec dict (checked by the caller against the model's types); `files`
    the secrets' and configs' data (kind -> name -> base64), read by the client. Returns
    Docker's progress lines and warnings. `registry_auth`: service name -> the client's encoded
    credentials for its image (--with-registry-auth); a service not named keeps its own."""
    from shoal.manager import endpoints, ingress
    from shoal.manager.stacks import check_externals, pruned_services, service_ids

    with store.transaction() as tx:
        check_externals(tx, stack, _local_scope)
        ids = service_ids(tx, stack)
        fresh = {n for n, i in ids.items() if tx.get("service", i) is None}
        _validate(stack, set(ids) - fresh)
        gone = [s["id"] for s in pruned_services(tx, stack)] if prune else []
        current = {n: tx.get("service", i) for n, i in ids.items()}
    warnings = pin_images(stack, current, resolve_image)
    services = list(stack.get("services", {}).values())
    if any(ingress.attaches(spec) for spec in services):  # a service of no network publishing a port
        ingress.ensure(store)
    for attempt in (1, 2):
        try:
            lines = _write(store, stack, prune, ids, fresh, current, files, registry_auth)
            break
        except endpoints.StaleCopy as exc:
            # This node's copy of a network a `stack rm` removed just now, not the same network
            # again, still held by its stopping tasks: once it is free, the deploy is made again.
            if attempt == 2:
                raise
            endpoints.wait_for_stale_copies(exc.names)
    for service_id in gone:
        endpoints.remove_service(service_id)
    return lines, warnings


def _write(store: Store, stack: dict[str, Any], prune: bool, ids: dict[str, str], fresh: set[str],
           current: dict[str, Any], files: dict[str, dict[str, str]] | None,
           registry_auth: dict[str, str] | None) -> list[str]:
    """The deploy's one transaction; on failure nothing stored and this node's part undone."""
    from shoal.manager import allocator, endpoints, ingress, registryauth
    from shoal.manager.stacks import apply_stack

    services = list(stack.get("services", {}).values())
    created_networks: list[str] = []
    try:
        with store.transaction() as tx:
            # The allocator's part, then the records, then this node's copy of what they say
            # (a port a host process holds here fails it), all in one transaction.
            _check_ports(tx, services, ids, fresh)
            allocations = _allocate_networks(tx, stack)
            new_records = {name: {"name": name, "allocation": to_dict(alloc),
                                  "spec": stack["networks"][key]}
                           for key, name, alloc in ((k, v["name"], allocations.get(v["name"]))
                                                    for k, v in stack.get("networks", {}).items()) if alloc}
            given: dict[str, set[str]] = {}
            made: dict[str, dict[str, Any]] = {}
            for spec in services:
                old = current.get(spec["name"])
                made[spec["name"]] = allocator.allocate_endpoint(
                    tx, ids[spec["name"]], ingress.effective(spec), (old or {}).get("endpoint"), new_records, given)
            lines = apply_stack(tx, stack, prune=prune, ids=ids, endpoints=made, contents=files or {},
                                allocations=allocations)
            for svc_name, encoded in (registry_auth or {}).items():
                if svc_name in ids:
                    registryauth.put(tx, ids[svc_name], encoded)
            records = allocator.node_records(tx.list("network"))
            created_networks = endpoints.adopt_networks(
                [records[n["name"]] for n in stack.get("networks", {}).values() if n["name"] in records])
            for spec in services:
                endpoints.apply_service(ids[spec["name"]], ingress.effective(spec), made[spec["name"]], records)
    except BaseException:
        for svc_name in fresh:  # the one that failed may hold VIPs already
            endpoints.remove_service(ids[svc_name])
        endpoints.undo_networks(created_networks)
        raise
    return lines


def _check_ports(tx: Any, services: list[dict[str, Any]], ids: dict[str, str], fresh: set[str]) -> None:
    """Each service's published ports against every other service, as docker/cli's deploy
    meets swarmkit's checkPortConflicts creating or updating them one by one, by name: the
    stack's own services with their new specs, the store's others as they are."""
    from shoal.manager.controlapi.services import check_port_conflicts

    mine = set(ids.values())
    others = [raw for raw in tx.list("service") if raw["id"] not in mine]
    for spec in sorted(services, key=lambda s: s["name"]):
        try:
            check_port_conflicts(tx, ServiceSpec.from_dict(spec), ids[spec["name"]], others)
        except InvalidArgument as exc:
            verb = "create" if spec["name"] in fresh else "update"
            raise InvalidArgument(f"failed to {verb} service {spec['name']}: {exc}") from None
        others.append({"id": ids[spec["name"]], "name": spec["name"], "spec": spec})


def _allocate_networks(tx: Any, stack: dict[str, Any]) -> dict[str, Any]:
    """network name -> the allocation of each of the stack's networks the store has not got
    yet (all refused before any is written: the transaction is undone on the first error)."""
    from shoal.manager import endpoints
    from shoal.model._serde import from_dict
    from shoal.model.stack import NetworkSpec

    existing = {n["name"] for n in tx.list("network")}
    out: dict[str, Any] = {}
    for raw in sorted(stack.get("networks", {}).values(), key=lambda n: n["name"]):
        if raw.get("external") or raw["name"] in existing:
            continue
        # Each avoids the subnets and VNIs the ones before it in this deploy got.
        out[raw["name"]] = endpoints.allocate_network(tx, from_dict(NetworkSpec, raw), pending=out)
    return out


def pin_images(stack: dict[str, Any], current: dict[str, dict[str, Any] | None],
               resolve_image: str = "always") -> list[str]:
    """Each service's image pinned to its digest from this manager's image store (Docker's
    `--resolve-image always`, or the mode the CLI gives), so every node runs the bytes the
    manager has, whatever the tag points at later; a node lacking the image pulls exactly that
    digest from the manager. The registry is not asked here (a deploy must not wait on one;
    see docs/architecture.md). Returns Docker's warnings, for updates only, as `stack deploy`
    prints them."""
    from shoal.image.store import ImageStore
    from shoal.manager.imagepin import deploy_image
    from shoal.model.stack import LABEL_IMAGE

    images = ImageStore()
    warnings: list[str] = []
    for spec in stack.get("services", {}).values():
        image = spec.get("image") or ""
        if not image:
            continue
        old = (current.get(spec["name"]) or {}).get("spec")
        pinned = deploy_image(images, image, resolve_image=resolve_image,
                              existing_image=old.get("image") if old else None,
                              existing_label=(old.get("labels") or {}).get(LABEL_IMAGE) if old else None,
                              query_registry=False)
        spec["image"] = pinned.image
        if pinned.warning:
            warnings.append(pinned.warning)
    return warnings


def remove_stack(store: Store, name: str) -> list[str]:
    """`stack rm`: everything labelled with the stack, in one write; then the services'
    endpoints freed. Docker's lines; empty when the stack has nothing."""
    from shoal.manager import endpoints
    from shoal.manager.stacks import remove_stack as remove_all, stack_of

    with store.transaction() as tx:
        gone = [s["id"] for s in tx.list("service") if stack_of(s) == name]
        lines = remove_all(tx, name)
    for service_id in gone:
        endpoints.remove_service(service_id)
    return lines
