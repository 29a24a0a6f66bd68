"""A local cluster node's shoald. The supervisor forks it (serve_forked, which enters the
namespaces itself); the same node can be started by hand, or by shoald exec'ing itself, as

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


CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_PRIVATE = 1 << 18
# A forked node asks its supervisor for a new start (after `swarm join`) with this exit status,
# instead of exec'ing a fresh Python: the supervisor forks it again, modules already imported.
RESTART_EXIT = 75
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setup(hostname: str) -> None:
    run = Path(os.environ["SHOAL_RUN"])
    socket.sethostname(hostname)
    _sysfs_of_this_netns(run.parent / f".{run.name}.cgroup-stash")
    os.environ[_READY] = hostname


def serve_forked(hostname: str, netns: str, env: dict[str, str], namespaces: tuple[int, int] | None = None,
                 ready: int | None = None) -> int:
    """In a child the supervisor forked (shoal.daemon already imported there): what nsenter and
    unshare do for the exec'd form (this netns; new mount and UTS namespaces, every mount
    private), the same set-up, then shoald in this process. `namespaces`: the node's mount and
    UTS namespaces from its first start (file descriptors the supervisor holds), entered instead
    of new ones: a machine's shoald restarted by systemd finds its mounts where it left them
    (the tasks' network namespaces are pinned there; in a new namespace they were empty files,
    and the restarted shoald could neither serve their DNS nor take them down). `ready`: a pipe
    written once the namespaces are this node's, so the supervisor may take them."""
    try:  # `ps -o comm`/top tell the nodes apart (the command line is still the supervisor's)
        Path("/proc/self/comm").write_text(f"shoald-{hostname}"[:15])
    except OSError:
        pass
    for key in [k for k in os.environ if k.startswith("SHOAL_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    # If shoald execs itself (daemon.run() may), it starts as this module, not as the supervisor.
    sys.orig_argv = [sys.executable, "-m", "shoal.cluster.nodeinit", hostname]
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {netns}")
    finally:
        os.close(fd)
    if namespaces is not None:
        for ns_fd, kind in zip(namespaces, (CLONE_NEWNS, CLONE_NEWUTS)):
            _check(_libc.setns(ns_fd, kind), f"setns {netns} ({'mount' if kind == CLONE_NEWNS else 'uts'})")
            os.close(ns_fd)
        os.environ[_READY] = hostname  # set up by the first start: hostname, sysfs
    else:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        _setup(hostname)
    if ready is not None:
        os.write(ready, b"1")
        os.close(ready)
    from shoal.runtime import cgroups

    cgroups.PARENT = env["SHOAL_CGROUP_PARENT"]  # read from the environment at import, in the supervisor
    import logging

    logging.root.handlers.clear()  # the supervisor's; shoald configures its own
    from shoal.api import swarmapi
    from shoal.daemon import run as run_daemon

    # daemon.run() ends a `swarm join` by exec'ing a fresh Python (swarmapi.restart_if_requested):
    # here the supervisor forks a new one at once instead, its modules already imported. This
    # only replaces the function in this child's own copy of the module.
    swarmapi.restart_if_requested = lambda: None
    code = run_daemon()
    return RESTART_EXIT if swarmapi.RESTART_REQUESTED else code


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shoal.cluster.nodeinit HOSTNAME", file=sys.stderr)
        return 2
    hostname = argv[0]
    # shoald execs itself after `swarm join` (same argv, same namespaces): set up only once.
    if os.environ.get(_READY) != hostname:
        _setup(hostname)
    from shoal.daemon import run as run_daemon  # after the environment and namespaces are set

    code = run_daemon()
    # After `swarm join` shoald stops to start again in its new role by exec'ing itself (same
    # argv: this module, whose set-up above is then skipped); if daemon.run() did not, do it.
    from shoal.api.swarmapi import restart_if_requested

    restart_if_requested()
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
