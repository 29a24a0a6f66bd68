"""What a node says of itself in `info` (moby's system.Info fields): its containers and
images, storage, cgroups, runtime, kernel, OS, CPUs, memory, name and state root. Computed by
the shoald that answers /info, so a remote context's `info` describes that node."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def engine_info(node_id: str) -> dict[str, Any]:
    from shoal import __version__
    from shoal.paths import state_root

    info: dict[str, Any] = {"ID": node_id, **_containers(), "Images": _images(),
                            "Driver": "overlayfs", "LoggingDriver": "k8s-file", "CgroupDriver": "cgroupfs",
                            "CgroupVersion": _cgroup_version(),
                            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null", "overlay"],
                                        "Authorization": None, "Log": ["k8s-file"]},
                            **_runtimes(), "InitBinary": "tini-static",
                            "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
                            "OSType": "linux", "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1,
                            "MemTotal": _mem_total(), "Name": socket.gethostname(),
                            "DockerRootDir": str(state_root()), "Debug": False, "ExperimentalBuild": False,
                            "LiveRestoreEnabled": False, "ServerVersion": __version__}
    return info


def _containers() -> dict[str, int]:
    from shoal.runtime.inspect import is_paused
    from shoal.runtime.manager import ContainerManager

    counts = {"Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0}
    for c in ContainerManager().list(all=True):
        counts["Containers"] += 1
        if c.state.status == "running":
            counts["ContainersPaused" if is_paused(c) else "ContainersRunning"] += 1
        else:  # moby counts created and exited containers as stopped
            counts["ContainersStopped"] += 1
    return counts


def _images() -> int:
    from shoal.image.store import ImageStore

    return len(ImageStore().list())


def _runtimes() -> dict[str, Any]:
    from shoal.errors import ShoalError
    from shoal.runtime import engine

    try:
        runtime = engine.select()
    except ShoalError:
        return {"Runtimes": {}, "DefaultRuntime": ""}
    return {"Runtimes": {runtime.name: {"path": runtime.binary}}, "DefaultRuntime": runtime.name}


def _cgroup_version() -> str:
    from shoal.runtime import cgroups

    return "2" if cgroups.is_v2() else "1"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
