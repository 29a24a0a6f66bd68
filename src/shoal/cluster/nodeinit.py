"""A local cluster node's shoald, started by the supervisor as

    nsenter --net=/run/netns/NAME-K unshare --mount --uts --propagation private -- \\
        python -m shoal.cluster.nodeinit NAME-K

with SHOAL_ROOT, SHOAL_RUN and SHOAL_CGROUP_PARENT naming the node's own directories and
cgroup. nsenter and unshare exec without forking, and this module runs shoald in its own
process, so the pid the supervisor watches is shoald's.

By the time this runs the process is in the node's network namespace and in a fresh mount
namespace whose mounts are all private (nothing mounted here reaches the host, and it all goes
when the namespace's last process exits), and a UTS namespace of its own. What it still does
(the tricks ../shared/reference/swarm-multinode found for dockerd, the same here):
- the hostname NAME-K, so `node ls` tells the nodes apart (shoald registers gethostname());
- a sysfs of this network namespace over /sys (so /sys/class/net shows eth0, not the host's
  links) with the host's cgroup hierarchies carried across: a fresh sysfs has an empty
  /sys/fs/cgroup, where the runtimes would find no controllers (why not `ip netns exec`).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from pathlib import Path

_READY = "SHOAL_CLUSTER_NODE_READY"
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _sysfs_of_this_netns(stash: Path) -> None:
    stash.mkdir(parents=True, exist_ok=True)
    _mount("/sys/fs/cgroup", str(stash), None, MS_BIND | MS_REC)
    _mount("sysfs", "/sys", "sysfs", 0)  # sysfs takes the mounting process's netns
    _mount(str(stash), "/sys/fs/cgroup", None, MS_MOVE)
    stash.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shoal.cluster.nodeinit HOSTNAME", file=sys.stderr)
        return 2
    hostname = argv[0]
    run = Path(os.environ["SHOAL_RUN"])
    # shoald execs itself after `swarm join` (same argv, same namespaces): set up only once.
    if os.environ.get(_READY) != hostname:
        socket.sethostname(hostname)
        _sysfs_of_this_netns(run.parent / f".{run.name}.cgroup-stash")
        os.environ[_READY] = hostname
    from shoal.daemon import run as run_daemon  # after the environment and namespaces are set

    code = run_daemon()
    # After `swarm join` shoald stops to start again in its new role by exec'ing itself (same
    # argv: this module, whose set-up above is then skipped); if daemon.run() did not, do it.
    from shoal.api.swarmapi import restart_if_requested

    restart_if_requested()
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
