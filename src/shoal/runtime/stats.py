"""`docker stats` figures from the cgroup, computed as docker/cli does
(cli/command/container/stats_helpers.go): CPU % = container CPU delta / host CPU delta x CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shoal.runtime import cgroups
from shoal.runtime.state import Container

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_cpu_ns() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            return sum(int(v) for v in line.split()[1:8]) * 1_000_000_000 // _CLK_TCK
    return 0


def host_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def net_io(pid: int) -> tuple[int, int]:
    rx = tx = 0
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = rest.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


@dataclass
class Sample:
    cpu_ns: int
    system_ns: int
    usage: cgroups.Usage
    net: tuple[int, int]


def sample(c: Container) -> Sample:
    return Sample(system_ns=system_cpu_ns(), usage=cgroups.read_usage(c.id), cpu_ns=0,
                  net=net_io(c.state.pid) if c.state.status == "running" else (0, 0))


@dataclass
class Figures:
    cpu_percent: float
    memory: int
    memory_limit: int
    memory_percent: float
    net_rx: int
    net_tx: int
    blk_read: int
    blk_write: int
    pids: int


def figures(before: Sample, after: Sample) -> Figures:
    cpu_delta = after.usage.cpu_ns - before.usage.cpu_ns
    system_delta = after.system_ns - before.system_ns
    online = os.cpu_count() or 1
    cpu = (cpu_delta / system_delta) * online * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0
    limit = after.usage.memory_limit or host_memory()
    mem = after.usage.memory
    return Figures(cpu, mem, limit, mem / limit * 100.0 if limit else 0.0, after.net[0], after.net[1],
                   after.usage.blk_read, after.usage.blk_write, after.usage.pids)
