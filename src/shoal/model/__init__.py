"""Plain-data model shared by the compose loader, the store, the API and the manager."""

from shoal.model.service import (
    BuildSpec,
    DependsOn,
    EndpointSpec,
    FileReference,
    GenericResource,
    Healthcheck,
    LogDriver,
    NetworkAttachment,
    Placement,
    PortConfig,
    ResourceLimits,
    ResourceReservations,
    Resources,
    RestartPolicy,
    ServiceSpec,
    UpdateConfig,
)
from shoal.model.stack import (
    IPAM,
    LABEL_IMAGE,
    LABEL_NAMESPACE,
    IPAMPool,
    NetworkSpec,
    SecretSpec,
    StackSpec,
    VolumeSpec,
)

__all__ = [
    "IPAM", "LABEL_IMAGE", "LABEL_NAMESPACE", "BuildSpec", "DependsOn", "EndpointSpec",
    "FileReference", "GenericResource", "Healthcheck", "IPAMPool", "LogDriver",
    "NetworkAttachment", "NetworkSpec", "Placement", "PortConfig", "ResourceLimits",
    "ResourceReservations", "Resources", "RestartPolicy", "SecretSpec", "ServiceSpec",
    "StackSpec", "UpdateConfig", "VolumeSpec",
]
