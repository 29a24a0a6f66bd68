"""Healthchecks of running tasks, as dockerd runs them: the test runs inside the container every
`interval` (every `start_interval` during `start_period`, where failures do not count), with a
`timeout`; `retries` failures in a row make the container unhealthy, and swarm then kills it.

A task with a healthcheck stays STARTING (out of the load-balancer rotation) until its first
successful probe."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

# dockerd's defaults (daemon/health.go)
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_START_INTERVAL = 5.0
_NS = 1e9

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthConfig:
    argv: list[str]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = 0.0
    start_interval: float = DEFAULT_START_INTERVAL


def _argv(test: list[str], shell: list[str]) -> list[str] | None:
    """moby's getProbe and cmdProbe: CMD runs its arguments, CMD-SHELL its arguments after the
    image's SHELL (/bin/sh -c by default); NONE, nothing, and any other first word is not a
    probe at all (dockerd logs `Unknown healthcheck type` and never checks the container)."""
    if not test:
        return None
    if test[0] == "CMD-SHELL":
        return [*(shell or ["/bin/sh", "-c"]), *test[1:]]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] != "NONE":
        log.warning("Unknown healthcheck type '%s' (expected 'CMD'): not checked", test[0])
    return None


def config_for(task_spec: dict[str, Any], image_config: dict[str, Any]) -> HealthConfig | None:
    """The service's healthcheck, each unset value taken from the image's HEALTHCHECK, then the
    engine defaults; None when there is none or it is disabled."""
    image = (image_config.get("config") or {}).get("Healthcheck") or {}
    svc = task_spec.get("healthcheck") or {}
    test = svc.get("test") or image.get("Test") or []
    argv = _argv(list(test), list((image_config.get("config") or {}).get("Shell") or []))
    if argv is None:
        return None

    def pick(key: str, image_key: str, default: float) -> float:
        if svc.get(key):
            return float(svc[key])
        if image.get(image_key):
            return float(image[image_key]) / _NS
        return default

    return HealthConfig(
        argv=argv,
        interval=pick("interval", "Interval", DEFAULT_INTERVAL),
        timeout=pick("timeout", "Timeout", DEFAULT_TIMEOUT),
        retries=int(svc.get("retries") or image.get("Retries") or DEFAULT_RETRIES),
        start_period=pick("start_period", "StartPeriod", 0.0),
        start_interval=pick("start_interval", "StartInterval", DEFAULT_START_INTERVAL),
    )


@dataclass
class Probe:
    """One task's health: when to probe next, the failure streak, the verdict so far."""

    config: HealthConfig
    started: float
    next_at: float = 0.0
    failures: int = 0
    healthy: bool = False
    unhealthy: bool = False
    last_output: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.next_at = self.started + self._gap(self.started)

    def _in_start_period(self, now: float) -> bool:
        return now < self.started + self.config.start_period

    def _gap(self, now: float) -> float:
        return self.config.start_interval if self._in_start_period(now) else self.config.interval

    def due(self, now: float) -> bool:
        return not self.unhealthy and now >= self.next_at

    def record(self, ok: bool, now: float, output: str = "") -> None:
        self.last_output = output
        if ok:
            self.failures = 0
            self.healthy = True
        elif not (self._in_start_period(now) and not self.healthy):
            self.failures += 1
            if self.failures >= self.config.retries:
                self.unhealthy = True
                self.healthy = False
        self.next_at = now + self._gap(now)


def run_probe(exec_argv: list[str], timeout: float) -> tuple[bool, str]:
    """Run the test through the runtime's exec; a timeout is a failure, as in dockerd."""
    try:
        proc = subprocess.run(exec_argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"Health check exceeded timeout ({timeout:g}s)"
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")[-4096:]
    return proc.returncode == 0, output


def now() -> float:
    return time.time()
