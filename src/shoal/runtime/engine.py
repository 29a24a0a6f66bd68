"""Which OCI runtime binary runs containers: crun where it works, else runc; SHOAL_RUNTIME=crun|runc
chooses. crun 1.8 refuses a hybrid cgroup host while any controller is only in the v2 hierarchy
(here: hugetlb), so we mount such controllers as v1 hierarchies first (platform-notes)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from shoal.errors import ShoalError
from shoal.paths import run_root
from shoal.runtime import cgroups


@dataclass(frozen=True)
class Runtime:
    name: str  # "crun" | "runc"
    binary: str

    @property
    def root(self) -> Path:
        return run_root() / self.name

    def argv(self, *args: str) -> list[str]:
        return [self.binary, f"--root={self.root}", *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ShoalError(_runtime_message(proc.stderr) or f"{self.name} {args[0]} failed")
        return proc

    def start(self, container_id: str) -> None:
        """Let a created container's process run (`<runtime> start`). For crun, what its start
        does is done here: the container's init waits reading the exec fifo in the state
        directory, which `crun start` opens for writing, unlinks (the state is `running` from
        then on) and writes one byte to; it also runs poststart hooks and waits on a
        NOTIFY_SOCKET, neither of which shoal uses. A crun process per start was 30-55 ms of a
        task's start on 2 shared cores, most of it loading its libraries and config.json.
        When the fifo has no reader (the process is gone) or no fifo is there, `crun start`
        runs, for its own message."""
        if self.name == "crun":
            fifo = self.root / container_id / "exec.fifo"
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    os.unlink(fifo)
                    os.write(fd, b"\0")
                    return
                except OSError:
                    pass  # crun tells what went wrong
                finally:
                    os.close(fd)
        self.run("start", container_id)


def _runtime_message(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _mount_v1_controllers() -> bool:
    """On a hybrid host, give every controller still listed in the v2 hierarchy its own v1
    mount. Returns True when the v2 side is then empty."""
    unified = cgroups.CGROUP_ROOT / "unified" / "cgroup.controllers"
    if not unified.exists():
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    for controller in unified.read_text().split():
        target = cgroups.CGROUP_ROOT / controller
        target.mkdir(exist_ok=True)
        rc = libc.mount(b"cgroup", str(target).encode(), b"cgroup", 0, controller.encode())
        if rc != 0:
            return False
    return not unified.read_text().split()


@lru_cache(maxsize=1)
def select() -> Runtime:
    wanted = os.environ.get("SHOAL_RUNTIME", "").strip()
    crun, runc = shutil.which("crun"), shutil.which("runc")
    if wanted and wanted not in ("crun", "runc"):
        raise ShoalError(f"SHOAL_RUNTIME must be crun or runc, not {wanted!r}")
    if wanted == "runc" or (wanted != "crun" and not crun):
        if not runc:
            raise ShoalError("no OCI runtime found: install runc or crun")
        return Runtime("runc", runc)
    if not crun:
        raise ShoalError("SHOAL_RUNTIME=crun but crun is not installed")
    if cgroups.is_v2() or _mount_v1_controllers():
        return Runtime("crun", crun)
    if wanted == "crun":
        raise ShoalError("crun cannot run on this hybrid cgroup host (controllers left in cgroup v2)")
    if not runc:
        raise ShoalError("crun cannot run on this hybrid cgroup host and runc is not installed")
    return Runtime("runc", runc)


def by_name(name: str) -> Runtime:
    """The runtime a container was created with (kept in its state)."""
    binary = shutil.which(name)
    if not binary:
        raise ShoalError(f"OCI runtime {name} is not installed")
    return Runtime(name, binary)
