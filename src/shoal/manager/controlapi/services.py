"""Services in the control API (swarmkit manager/controlapi/service.go): create, update (and
roll back), scale, remove, list and inspect, each validated as swarmkit's validateServiceSpec
and written in one store transaction.

Around the write, two things the store cannot undo are done first and undone on failure, as a
stack deploy does them: the image pinned to the manager's digest (manager/imagepin.py) and the
service's endpoint in the kernel (VIPs and published ports, manager/endpoints.py), so a port
clash fails the request with nothing stored."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.ids import new_swarm_id
from shoal.manager.controlapi import resolve, rpc
from shoal.model._serde import from_dict
from shoal.model.records import Endpoint, Service, UpdateStatus
from shoal.model.service import FileReference, ServiceSpec
from shoal.store.base import Store, Transaction, VersionConflict

log = logging.getLogger("shoald.controlapi")

MODES = ("replicated", "global", "replicated-job", "global-job")
ROLLBACK_PREVIOUS = "previous"
# swarmkit common.go isValidDNSName: a service's name is a DNS label (its tasks resolve by it).
_DNS_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_MIN_HEALTH_DURATION = 0.001  # swarmkit's minimumDuration (1ms)
# Networks every node has: a service on them needs no swarm network (stacks.NODE_NETWORKS).
NODE_NETWORKS = ("host", "none")


def _invalid(text: str) -> InvalidArgument:
    return InvalidArgument(rpc("InvalidArgument", text))


def validate_name(name: str) -> None:
    """swarmkit validateAnnotations."""
    if not name:
        raise _invalid("meta: name must be provided")
    if not _DNS_NAME.fullmatch(name):
        raise _invalid("name must be valid as a DNS name component")
    if len(name) > 63:
        raise _invalid("name must be 63 characters or fewer")


def _validate_resources(limits_cpu: int, limits_memory: int) -> None:
    if limits_cpu != 0 and limits_cpu < 1_000_000:
        raise _invalid(f"invalid cpu value {limits_cpu / 1e9:g}: Must be at least {1e6 / 1e9:g}")
    if limits_memory != 0 and limits_memory < 4 * 1024 * 1024:
        raise _invalid(f"invalid memory value {limits_memory}: Must be at least 4MiB")


def _validate_image(image: str) -> None:
    from shoal.image import reference as refs

    if not image:
        raise _invalid("ContainerSpec: image reference must be provided")
    if refs.is_identifier(image) or refs.ANCHORED_DIGEST_RE.match(image):
        return
    try:
        refs.parse_normalized(image)
    except ShoalError:
        raise _invalid(f'ContainerSpec: "{image}" is not a valid repository/tag') from None


def _validate_files(kind: str, refs: list[FileReference]) -> None:
    """swarmkit validateSecretRefsSpec / validateConfigRefsSpec: two files on one target."""
    seen: dict[str, str] = {}
    for ref in refs:
        if not ref.source:
            raise _invalid(f"malformed {kind} reference")
        if not ref.target:
            raise _invalid(f"malformed {kind} reference, no target provided")
        if ref.target in seen:
            raise _invalid(f"{kind} references '{seen[ref.target]}' and '{ref.source}' have a conflicting "
                           f"target: '{ref.target}'")
        seen[ref.target] = ref.source


def validate_service_spec(spec: ServiceSpec) -> None:
    """swarmkit validateServiceSpec: the refusals that need no store."""
    validate_name(spec.name)
    _validate_resources(spec.resources.limits.nano_cpus, spec.resources.limits.memory_bytes)
    _validate_resources(spec.resources.reservations.nano_cpus, spec.resources.reservations.memory_bytes)
    if spec.restart_policy.delay < 0:
        raise _invalid("TaskSpec: restart-delay cannot be negative")
    if spec.restart_policy.window < 0:
        raise _invalid("TaskSpec: restart-window cannot be negative")
    if spec.restart_policy.condition not in ("none", "on-failure", "any"):
        raise _invalid(f"TaskSpec: invalid restart condition {spec.restart_policy.condition!r}")
    if spec.placement.constraints:
        from shoal.manager import constraints

        try:
            constraints.parse_all(spec.placement.constraints)
        except InvalidArgument as exc:
            raise _invalid(str(exc)) from None
    _validate_image(spec.image)
    targets: set[str] = set()
    for mount in spec.mounts:
        if mount.target in targets:
            raise _invalid(f"ContainerSpec: duplicate mount point: {mount.target}")
        targets.add(mount.target)
    health = spec.healthcheck
    if health is not None:
        for label, value in (("Interval", health.interval), ("Timeout", health.timeout),
                             ("StartPeriod", health.start_period), ("StartInterval", health.start_interval)):
            if value != 0 and value < _MIN_HEALTH_DURATION:
                raise _invalid(f"ContainerSpec: {label} in HealthConfig cannot be less than 1ms")
        if health.retries < 0:
            raise _invalid("ContainerSpec: Retries in HealthConfig cannot be negative")
    for which, cfg in (("update", spec.update_config), ("rollback", spec.rollback_config)):
        if cfg.delay < 0:
            raise _invalid(f"TaskSpec: {which}-delay cannot be negative")
        if cfg.monitor < 0:
            raise _invalid(f"TaskSpec: {which}-monitor cannot be negative")
        if not 0 <= cfg.max_failure_ratio <= 1:
            raise _invalid(f"TaskSpec: {which}-maxfailureratio cannot be less than 0 or bigger than 1")
        if cfg.parallelism < 0:
            raise _invalid(f"TaskSpec: {which}-parallelism cannot be negative")
    ports = spec.endpoint.ports
    if spec.endpoint.mode not in ("vip", "dnsrr"):
        raise _invalid(f"EndpointSpec: invalid endpoint mode {spec.endpoint.mode!r}")
    if spec.endpoint.mode == "dnsrr" and any(p.publish_mode == "ingress" for p in ports):
        raise _invalid("EndpointSpec: port published with ingress mode can't be used with dnsrr mode")
    published: set[tuple[int, str]] = set()
    for port in ports:
        if port.published == 0:
            continue
        if (port.published, port.protocol) in published:
            raise _invalid("EndpointSpec: duplicate published ports provided")
        published.add((port.published, port.protocol))
    _validate_files("secret", spec.secrets)
    _validate_files("config", spec.configs)
    if spec.mode not in MODES:
        raise _invalid("Unrecognized service mode")
    if spec.replicas < 0:
        raise _invalid("Number of replicas must be non-negative")
    if spec.max_concurrent is not None and spec.max_concurrent < 0:
        raise _invalid("Maximum concurrent jobs must not be negative")
    if spec.force_update < 0:
        raise _invalid("TaskSpec: ForceUpdate cannot be negative")


def check_references(tx: Transaction, spec: ServiceSpec) -> None:
    """What must exist for the service to run: its networks, secrets and configs (swarmkit's
    checkSecretExistence / checkConfigExistence; dockerd's `network x not found`). Each file
    reference is stamped with the content's digest, so a changed secret rolls the service."""
    networks = {n["name"] for n in tx.list("network")}
    ingress = {n["name"] for n in tx.list("network") if (n.get("spec") or {}).get("ingress")}
    for attachment in spec.networks:
        if attachment.target not in networks and attachment.target not in NODE_NETWORKS:
            raise NotFound(f"network {attachment.target} not found")
        if attachment.target in ingress:  # swarmkit validateNetworks (manager/ingress.py attaches it)
            raise _invalid(f'Service cannot be explicitly attached to the ingress network "{attachment.target}"')
    for kind, refs in (("secret", spec.secrets), ("config", spec.configs)):
        if not refs:
            continue
        stored = {o["name"]: o for o in tx.list(kind)}
        missing = [r.source for r in refs if r.source not in stored]
        if missing:
            plural = kind + ("s" if len(missing) > 1 else "")
            raise _invalid(f"{plural} not found: {', '.join(missing)}")
        for ref in refs:
            ref.digest = stored[ref.source]["digest"]


def check_port_conflicts(tx: Transaction, spec: ServiceSpec, service_id: str = "",
                         others: list[dict[str, Any]] | None = None) -> None:
    """swarmkit checkPortConflicts: a published port another service holds, named by how that
    service publishes it. Two services may publish one port in host mode (the scheduler keeps
    their tasks on different nodes: traefik and another global proxy on `mode: host` 80); an
    ingress port clashes with either. `others`: the services to look at, if not the store's."""
    ingress = {(p.published, p.protocol) for p in spec.endpoint.ports if p.published and p.publish_mode != "host"}
    host = {(p.published, p.protocol) for p in spec.endpoint.ports if p.published and p.publish_mode == "host"}
    if not ingress and not host:
        return
    for other in tx.list("service") if others is None else others:
        if other["id"] == service_id:
            continue
        # Its spec's ports and the ones the allocator gave it (a port published as 0 got one
        # of 30000-32767), as swarmkit looks at Spec.Endpoint and Endpoint both.
        for port in [*((other.get("spec") or {}).get("endpoint", {}).get("ports") or ()),
                     *((other.get("endpoint") or {}).get("ports") or ())]:
            published = int(port.get("published") or 0)
            key = (published, port.get("protocol", "tcp"))
            if port.get("publish_mode", port.get("mode")) == "host":
                clash, how = key in ingress, "a host-published port"
            else:
                clash, how = key in ingress or key in host, "an ingress port"
            if published and clash:
                raise _invalid(f"port '{published}' is already in use by service '{other['name']}' "
                               f"({other['id']}) as {how}")


def _pin(spec: ServiceSpec, old: ServiceSpec | None, resolve_image: str) -> list[str]:
    """The image pinned to the manager's digest (moby pins on create and update when the
    client asks, `--resolve-image always` being the default). Docker's warnings."""
    from shoal.image.store import ImageStore
    from shoal.manager.imagepin import deploy_image, pin_image

    if old is None and resolve_image != "never":
        # moby's CreateService answers the digest warning too (docker/cli's `service create`
        # prints it); deploy_image keeps it back on a create, as only `stack deploy` drops it.
        pinned = pin_image(ImageStore(), spec.image, query_registry=False)
    else:
        pinned = deploy_image(ImageStore(), spec.image, resolve_image=resolve_image,
                              existing_image=old.image if old else None,
                              existing_label=old.image if old else None, query_registry=False)
    spec.image = pinned.image
    return [pinned.warning] if pinned.warning else []


def _ensure_ingress(store: Store, spec: ServiceSpec) -> None:
    """A service whose tasks attach to the ingress network has it made first if it is not
    there yet (its own transaction: the network stays, as Docker's, if the service fails)."""
    from shoal.manager import ingress

    if ingress.attaches(spec.to_dict()):
        ingress.ensure(store)


def _make_endpoint(tx: Transaction, service_id: str, spec: ServiceSpec,
                   current: dict[str, Any] | None = None) -> Endpoint:
    """The allocator's endpoint (VIPs, ports) for the service, in the transaction that writes
    it, and this node's copy of it in the kernel (a port held here fails the write)."""
    from shoal.manager import allocator, endpoints, ingress

    raw = ingress.effective(spec.to_dict())
    made = allocator.allocate_endpoint(tx, service_id, raw, current)
    endpoints.apply_service(service_id, raw, made, allocator.node_records(tx.list("network")))
    return from_dict(Endpoint, made)


def create_service(store: Store, spec: ServiceSpec, resolve_image: str = "always",
                   registry_auth: str | None = None) -> tuple[str, list[str]]:
    """`service create`: returns the new service's ID and Docker's warnings. `registry_auth`:
    the client's encoded credentials (--with-registry-auth), stored sealed beside the record."""
    from shoal.manager import endpoints, registryauth

    spec = deepcopy(spec)
    validate_service_spec(spec)
    with store.transaction() as tx:
        if any(s["name"] == spec.name for s in tx.list("service")):
            raise _exists(spec.name)
        check_references(tx, spec)
        check_port_conflicts(tx, spec)
    warnings = _pin(spec, None, resolve_image)
    service_id = new_swarm_id()
    now = time.time()
    _ensure_ingress(store, spec)
    try:
        with store.transaction() as tx:
            # Again inside the write: another client may have taken the name meanwhile.
            if any(s["name"] == spec.name for s in tx.list("service")):
                raise _exists(spec.name)
            check_references(tx, spec)
            endpoint = _make_endpoint(tx, service_id, spec)
            record = Service(id=service_id, name=spec.name, spec=spec, spec_version=1, stack=spec.stack,
                             created_at=now, updated_at=now, endpoint=endpoint)
            tx.create("service", record.to_dict())
            registryauth.put(tx, service_id, registry_auth)
    except BaseException:
        endpoints.remove_service(service_id)
        raise
    return service_id, warnings


def _exists(name: str) -> Conflict:
    # swarmkit: the store's ErrNameConflict text, then the name (kept for string-matching clients).
    return Conflict(rpc("AlreadyExists", f"name conflicts with an existing object: service {name} already exists"))


def update_service(store: Store, ref: str, version: int, spec: ServiceSpec | None,
                   rollback: str | None = None, resolve_image: str = "changed",
                   registry_auth: str | None = None) -> list[str]:
    """`service update` / `service rollback`: `version` is the spec_version the client read
    (a stale one is swarmkit's `update out of sequence`); rollback="previous" swaps the spec
    and the previous spec, as swarmkit does. The image is pinned again only when it changed
    ("changed", the default: docker/cli's update sets QueryRegistry only for `--image`), on
    every update with "always", never with "never". `registry_auth` None keeps the service's
    credentials (the previous spec's on a rollback), as moby does without X-Registry-Auth.
    Returns Docker's warnings."""
    from shoal.manager import endpoints, registryauth

    if rollback not in (None, "", ROLLBACK_PREVIOUS):
        raise InvalidArgument(f"rollback: {rollback!r} is not one of \"previous\" or null")
    with store.transaction() as tx:
        current = Service.from_dict(resolve(tx.list("service"), ref, "service"))
    if version != current.spec_version:
        raise VersionConflict(rpc("Unknown", "update out of sequence"))
    warnings: list[str] = []
    if rollback:
        if current.previous_spec is None:
            raise InvalidArgument(rpc("FailedPrecondition", f"service {current.id} does not have a previous spec"))
        new_spec = deepcopy(current.previous_spec)
    else:
        if spec is None:
            raise InvalidArgument("spec: missing")
        new_spec = deepcopy(spec)
        validate_service_spec(new_spec)
        if new_spec.name != current.name:
            raise InvalidArgument(rpc("Unimplemented", "renaming services is not supported"))
        if new_spec.mode != current.spec.mode:
            raise InvalidArgument(rpc("Unimplemented", "service mode change is not allowed"))
        warnings = _pin(new_spec, current.spec, resolve_image)
    with store.transaction() as tx:
        check_references(tx, new_spec)
        check_port_conflicts(tx, new_spec, current.id)
    _ensure_ingress(store, new_spec)
    try:
        with store.transaction() as tx:
            raw = tx.get("service", current.id)
            if raw is None:
                raise NotFound(f"service {current.id} not found")
            record = Service.from_dict(raw)
            if record.spec_version != version:
                raise VersionConflict(rpc("Unknown", "update out of sequence"))
            check_references(tx, new_spec)
            endpoint = _make_endpoint(tx, current.id, new_spec, raw.get("endpoint"))
            now = time.time()
            record.previous_spec, record.spec = record.spec, new_spec
            record.spec_version += 1
            record.updated_at = now
            record.endpoint = endpoint
            if rollback:
                record.rolling_back = True
                record.update_status = UpdateStatus(state="rollback_started", started_at=now,
                                                    spec_version=record.spec_version,
                                                    message="manually requested rollback")
            else:
                record.rolling_back = False
                record.update_status = None  # swarmkit: "Reset update status"
            tx.update("service", record.to_dict())
            registryauth.put(tx, current.id, registry_auth, rollback=bool(rollback))
    except BaseException:
        # The endpoint as the stored spec wants it again: read now, as a concurrent update
        # that won the race (ours failing `out of sequence`) has changed it since.
        stored = store.get("service", current.id)
        try:
            if stored is None:  # removed meanwhile: its endpoint goes too
                endpoints.remove_service(current.id)
            else:
                from shoal.manager import allocator, ingress

                endpoints.apply_service(current.id, ingress.effective(stored["spec"]), stored.get("endpoint") or {},
                                        allocator.node_records(store.list("network")))
        except ShoalError as exc:
            log.warning("could not restore the endpoint of service %s: %s", current.name, exc)
        raise
    return warnings


def scale_service(store: Store, ref: str, replicas: int) -> Service:
    """`service scale`: a new spec version with `replicas` changed, nothing else."""
    if replicas < 0:
        raise _invalid("Number of replicas must be non-negative")
    with store.transaction() as tx:
        raw = resolve(tx.list("service"), ref, "service")
        if (raw.get("spec") or {}).get("mode", "replicated") not in ("replicated", "replicated-job"):
            raise InvalidArgument(f"{ref}: scale can only be used with replicated or replicated-job mode")
        # The stored spec as it is, replicas changed: a record written by an older shoald keeps
        # its shape, so its running tasks are not taken for out of date.
        raw = dict(raw, spec=dict(raw["spec"], replicas=replicas), spec_version=raw["spec_version"] + 1,
                   updated_at=time.time())
        tx.update("service", raw)
    return Service.from_dict(raw)


def remove_service(store: Store, ref: str) -> Service:
    """`service rm`: gone from the store in one write; then its VIPs and ports are freed (its
    tasks leave the rotation as the orchestrator stops them)."""
    from shoal.manager import endpoints, registryauth

    with store.transaction() as tx:
        raw = resolve(tx.list("service"), ref, "service")
        tx.delete("service", raw["id"])
        registryauth.remove(tx, raw["id"])
    endpoints.remove_service(raw["id"])
    return Service.from_dict(raw)


def inspect_service(store: Store, ref: str) -> Service:
    return Service.from_dict(resolve(store.list("service"), ref, "service"))


def list_services(store: Store, keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """The stored records, as stored (a listing reads every service: no decoding)."""
    return [s for s in store.list("service") if keep is None or keep(s)]


def up_to_date(task: dict[str, Any], service: dict[str, Any]) -> bool:
    """swarmkit ListTasks' UpToDate filter (docker/cli's `_up-to-date`, what its progress
    display counts): the task runs the service's current spec. A task the last change did not
    touch (a scale, a label) keeps its older spec_version and is up to date all the same, as
    swarmkit's !IsTaskDirty."""
    from shoal.manager.orchestrator import task_spec

    if task.get("spec_version") == service.get("spec_version"):
        return True
    return task.get("spec") == task_spec(service.get("spec") or {})
