"""Plain-data model shared by the compose loader, the store, the API and the manager.

The names below are loaded on first use (PEP 562): `shoal.model.cluster`, which every listing
command needs, must not pay for the compose model's ~60 dataclasses."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ below hands out, for type checkers
    from shoal.model.service import (  # noqa: F401
        BuildSpec, DependsOn, EndpointSpec, FileReference, GenericResource, Healthcheck, LogDriver,
        NetworkAttachment, Placement, PortConfig, ResourceLimits, ResourceReservations, Resources,
        RestartPolicy, ServiceSpec, UpdateConfig)
    from shoal.model.stack import (  # noqa: F401
        IPAM, LABEL_IMAGE, LABEL_NAMESPACE, IPAMPool, NetworkSpec, SecretSpec, StackSpec, VolumeSpec)

_HOME = {
    **{name: "shoal.model.service" for name in (
        "BuildSpec", "DependsOn", "EndpointSpec", "FileReference", "GenericResource", "Healthcheck",
        "LogDriver", "NetworkAttachment", "Placement", "PortConfig", "ResourceLimits",
        "ResourceReservations", "Resources", "RestartPolicy", "ServiceSpec", "UpdateConfig")},
    **{name: "shoal.model.stack" for name in (
        "IPAM", "LABEL_IMAGE", "LABEL_NAMESPACE", "IPAMPool", "NetworkSpec", "SecretSpec", "StackSpec",
        "VolumeSpec")},
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
