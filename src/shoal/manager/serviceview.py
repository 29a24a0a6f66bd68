"""Read what the manager's loops need from a stored service record.

A service record in the store is `{"id", "name", "spec": <ServiceSpec dict>, "spec_version",
"created_at", "updated_at", ...}` (model/records.py types it). The loops read every service on
every pass, so they read the spec dict through this view instead of decoding a whole
ServiceSpec; Swarm's defaults (shared/reference/swarm-inventory.md 1.4, 3.3, 3.4) come from the
model's dataclasses, the one place they are written, for a key a record does not hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.model.service import (DEFAULT_REPLICAS, DEFAULT_TASK_HISTORY_LIMIT, RestartPolicy, ServiceSpec,
                                 UpdateConfig)

# Kept under its old name: swarmnode and the reaper import it from here.
DEFAULT_HISTORY_LIMIT = DEFAULT_TASK_HISTORY_LIMIT

_RESTART = RestartPolicy()
_UPDATE = UpdateConfig()
_MODE = ServiceSpec.__dataclass_fields__["mode"].default


@dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    mode: str  # replicated, global, replicated-job, global-job
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

    def update_config(self, rolling_back: bool = False) -> UpdateConfig:
        """update_config (or rollback_config while rolling back) with Swarm's defaults."""
        return update_config(self.spec.get("rollback_config" if rolling_back else "update_config"))


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


def restart_policy(raw: dict[str, Any] | None) -> RestartPolicy:
    raw = raw or {}
    return RestartPolicy(
        condition=raw.get("condition") or _RESTART.condition,
        delay=_number(raw.get("delay"), _RESTART.delay),
        max_attempts=int(raw.get("max_attempts") or _RESTART.max_attempts),
        window=_number(raw.get("window"), _RESTART.window),
    )


def update_config(raw: dict[str, Any] | None) -> UpdateConfig:
    raw = raw or {}
    return UpdateConfig(
        parallelism=int(_number(raw.get("parallelism"), _UPDATE.parallelism)),
        delay=_number(raw.get("delay"), _UPDATE.delay),
        failure_action=raw.get("failure_action") or _UPDATE.failure_action,
        monitor=_number(raw.get("monitor"), _UPDATE.monitor),
        max_failure_ratio=_number(raw.get("max_failure_ratio"), _UPDATE.max_failure_ratio),
        order=raw.get("order") or _UPDATE.order,
    )


def replicas(spec: dict[str, Any]) -> int:
    value = spec.get("replicas")
    return DEFAULT_REPLICAS if value is None else int(value)


def mode(spec: dict[str, Any]) -> str:
    return spec.get("mode") or _MODE


def view(service: dict[str, Any]) -> ServiceView:
    spec = service.get("spec", {})
    placement = spec.get("placement") or {}
    return ServiceView(
        id=service["id"],
        name=service["name"],
        mode=mode(spec),
        replicas=replicas(spec),
        spec_version=int(service.get("spec_version", 0)),
        restart=restart_policy(spec.get("restart_policy")),
        max_replicas_per_node=int(placement.get("max_replicas_per_node") or 0),
        constraints=tuple(placement.get("constraints") or ()),
        spec=spec,
    )
