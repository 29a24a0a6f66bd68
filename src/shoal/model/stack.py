"""A stack: the services, networks, volumes, secrets and configs one compose deploy creates.
Plain data; names are the full Swarm names (webapp_webnet), keys of the dicts too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.model._serde import from_dict, to_dict
from shoal.model.service import ServiceSpec

LABEL_NAMESPACE = "com.docker.stack.namespace"
LABEL_IMAGE = "com.docker.stack.image"


@dataclass
class IPAMPool:
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""


@dataclass
class IPAM:
    driver: str = ""  # empty = default
    config: list[IPAMPool] = field(default_factory=list)


@dataclass
class NetworkSpec:
    name: str  # webapp_webnet, the `name:` given, or the external network's name
    compose_name: str = ""  # webnet; "default" for the implicit one; "" for `network create`
    driver: str = "overlay"
    driver_opts: dict[str, str] = field(default_factory=dict)
    ipam: IPAM = field(default_factory=IPAM)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)  # includes the stack namespace
    external: bool = False  # must exist already; never created or removed by the stack
    ingress: bool = False  # Swarm's routing-mesh network (manager/ingress.py), `Ingress: true`


@dataclass
class VolumeSpec:
    """A named volume; the node creates it when a task first mounts it."""

    name: str
    compose_name: str
    driver: str = ""  # empty = local
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    external: bool = False


@dataclass
class SecretSpec:
    """A secret or config object. `file` is an absolute path read by the client at deploy."""

    name: str
    compose_name: str
    file: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    external: bool = False
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)
    template_driver: str = ""


@dataclass
class StackSpec:
    name: str
    services: dict[str, ServiceSpec] = field(default_factory=dict)  # by full name (webapp_web)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)  # only referenced ones
    volumes: dict[str, VolumeSpec] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    configs: dict[str, SecretSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackSpec:
        return from_dict(cls, data)
