"""Read what the manager needs from a stored service record.

A service record in the store is `{"id", "name", "spec": <ServiceSpec dict>, "spec_version",
"created_at", "updated_at", ...}`. The loops read the spec only through this view, with Swarm's
defaults applied here once (shared/reference/swarm-inventory.md 1.4, 3.3, 3.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_RESTART_DELAY = 5.0
DEFAULT_HISTORY_LIMIT = 5
DEFAULT_STOP_GRACE = 10.0


@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"  # none, on-failure, any
    delay: float = DEFAULT_RESTART_DELAY
    max_attempts: int = 0  # 0 = unlimited
    window: float = 0.0  # 0 = every restart since the spec version counts


@dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    mode: str  # replicated, global
    replicas: int
    spec_version: int
    restart: RestartPolicy
    max_replicas_per_node: int
    constraints: tuple[str, ...]
    spec: dict[str, Any]

    @property
    def history_limit(self) -> int:
        """Tasks kept per slot; max_attempts+1 replaces the cluster limit when set (3.4)."""
        if self.restart.max_attempts > 0:
            return self.restart.max_attempts + 1
        return DEFAULT_HISTORY_LIMIT


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    return float(value)


def view(service: dict[str, Any]) -> ServiceView:
    spec = service.get("spec", {})
    policy = spec.get("restart_policy") or {}
    placement = spec.get("placement") or {}
    mode = spec.get("mode", "replicated") or "replicated"
    replicas = spec.get("replicas")
    return ServiceView(
        id=service["id"],
        name=service["name"],
        mode=mode,
        replicas=1 if replicas is None else int(replicas),
        spec_version=int(service.get("spec_version", 0)),
        restart=RestartPolicy(
            condition=policy.get("condition") or "any",
            delay=_seconds(policy.get("delay"), DEFAULT_RESTART_DELAY),
            max_attempts=int(policy.get("max_attempts") or 0),
            window=_seconds(policy.get("window"), 0.0),
        ),
        max_replicas_per_node=int(placement.get("max_replicas_per_node") or 0),
        constraints=tuple(placement.get("constraints") or ()),
        spec=spec,
    )
