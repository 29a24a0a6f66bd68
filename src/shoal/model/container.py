"""Pieces of a container's spec that a service's spec carries too (ServiceSpec.mounts,
ServiceSpec.ulimits). They live in the model, which imports nothing but the model, so that the
manager's records never reach into the runtime; shoal.runtime.spec re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Mount:
    """`-v`/`--mount`/`--tmpfs`. type is bind, volume or tmpfs; source is a host path (bind) or
    a volume name (volume; empty = anonymous)."""

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    options: list[str] = field(default_factory=list)  # e.g. tmpfs size=64m, bind propagation


@dataclass
class Ulimit:
    name: str  # e.g. nofile
    soft: int
    hard: int
