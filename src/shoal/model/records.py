"""The manager's stored objects as typed records: one per kind the control API writes.

A record is what the store keeps under (kind, id): the user's spec (ServiceSpec, NetworkSpec)
plus what the manager adds (IDs, versions, the endpoint the allocator made, the rolling update's
status). to_dict/from_dict keep the JSON shape shoald has always stored, so an existing
shoald.db loads unchanged; keys this reader does not know (written by a newer shoald or by a
loop that keeps its own bookkeeping on the record) are carried in `extra` and written back as
they were, never dropped."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from shoal.model._serde import from_dict, to_dict
from shoal.model.service import ServiceSpec
from shoal.model.stack import NetworkSpec


@dataclass
class VirtualIP:
    network: str  # the network's name
    addr: str  # 10.0.1.2/24


@dataclass
class EndpointPort:
    """A published port as the manager made it (network.lb.ServicePort's fields)."""

    protocol: str = "tcp"
    target: int = 0
    published: int = 0  # 0: reachable through the VIP only
    mode: str = "ingress"  # ingress | host
    keep_client_ip: bool = True


@dataclass
class Endpoint:
    """Service.Endpoint in Swarm: what the allocator made for the spec's EndpointSpec."""

    mode: str = "vip"
    vips: list[VirtualIP] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)


@dataclass
class UpdateStatus:
    """Swarm's UpdateStatus; state is updating | paused | completed | rollback_started |
    rollback_paused | rollback_completed (written by the orchestrator and the control API)."""

    state: str = ""
    started_at: float | None = None
    completed_at: float | None = None
    spec_version: int = 0
    message: str = ""


def _split(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(cls)} - {"extra"}
    return ({k: v for k, v in data.items() if k in names},
            {k: v for k, v in data.items() if k not in names})


def _join(known: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, **known}


@dataclass
class Service:
    """A service as stored. spec_version counts the spec's changes (Swarm's SpecVersion; the
    `version` a `service update` must send); version is the store's revision of the object's
    last write (Swarm's Meta.Version), which every write moves, the orchestrator's too."""

    id: str
    name: str
    spec: ServiceSpec
    spec_version: int = 1
    previous_spec: ServiceSpec | None = None
    stack: str = ""  # the stack that made it ("" for `service create`)
    created_at: float = 0.0
    updated_at: float = 0.0
    endpoint: Endpoint = field(default_factory=Endpoint)
    update_status: UpdateStatus | None = None
    rolling_back: bool = False  # the orchestrator rolls back (rollback_config applies)
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        known = {
            "id": self.id, "name": self.name, "stack": self.stack, "spec": self.spec.to_dict(),
            "spec_version": self.spec_version,
            "previous_spec": self.previous_spec.to_dict() if self.previous_spec is not None else None,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "endpoint": to_dict(self.endpoint),
            "update_status": to_dict(self.update_status) if self.update_status is not None else None,
            "rolling_back": self.rolling_back,
        }
        if self.version:
            known["version"] = self.version
        return _join(known, self.extra)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Service:
        known, extra = _split(cls, data)
        endpoint = known.get("endpoint") or {}
        return cls(
            id=known["id"], name=known["name"], spec=ServiceSpec.from_dict(known["spec"]),
            spec_version=int(known.get("spec_version") or 1),
            previous_spec=ServiceSpec.from_dict(known["previous_spec"]) if known.get("previous_spec") else None,
            stack=known.get("stack") or "",
            created_at=float(known.get("created_at") or 0.0), updated_at=float(known.get("updated_at") or 0.0),
            # `{}` is what a service whose endpoint was never made stored.
            endpoint=from_dict(Endpoint, endpoint) if endpoint else Endpoint(),
            update_status=from_dict(UpdateStatus, known["update_status"]) if known.get("update_status") else None,
            rolling_back=bool(known.get("rolling_back")),
            version=int(known.get("version") or 0),
            extra=extra,
        )


@dataclass
class NetworkAllocation:
    """What the manager's allocator gave a swarm network, in the transaction that wrote it
    (swarmkit's Network.IPAM and DriverState): the ID every node's copy of it carries (its
    bridge and VXLAN device are named from it), its subnet, gateway and range, and the driver's
    options with the VNI (Docker's vxlanid_list option). A node makes its copy from this, the
    manager node's own included (network/store.py adopt)."""

    network_id: str
    subnet: str
    gateway: str
    ip_range: str = ""
    options: dict[str, str] = field(default_factory=dict)
    mtu: int = 1500
    created: str = ""  # RFC 3339, as the node's copy shows it


@dataclass
class Network:
    """A swarm-scoped network the manager made (`network create -d overlay`, or a stack's).
    `allocation` is None only for a record an older shoald wrote, until the manager's start
    moves its allocation in from that manager's network files (manager/endpoints.py)."""

    id: str
    name: str
    spec: NetworkSpec
    stack: str = ""
    created_at: float = 0.0
    allocation: NetworkAllocation | None = None
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        known = {"id": self.id, "name": self.name, "stack": self.stack, "spec": to_dict(self.spec),
                 "created_at": self.created_at}
        if self.allocation is not None:
            known["allocation"] = to_dict(self.allocation)
        if self.version:
            known["version"] = self.version
        return _join(known, self.extra)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        known, extra = _split(cls, data)
        allocation = known.get("allocation")
        return cls(id=known["id"], name=known["name"], spec=from_dict(NetworkSpec, known["spec"]),
                   stack=known.get("stack") or "", created_at=float(known.get("created_at") or 0.0),
                   allocation=from_dict(NetworkAllocation, allocation) if allocation else None,
                   version=int(known.get("version") or 0), extra=extra)
