"""`run`, `exec`, `ps`, `images` against a node's own shoald from the host, outside the node's
mount namespace (issue 13): through its unix socket with `-H unix:///<node run root>/shoal.sock`
(the CLI's own state root elsewhere, as `docker -H` names the daemon that acts), and with the
node's SHOAL_ROOT/SHOAL_RUN (as cluster tests and `cluster create`'s users do). Before, the
first ran the containers in the CLI's own store (`Unable to find image`), and the second mounted
their root filesystems in the host's mount namespace, where the node's shoald never sees them
(exec then failed: executable file not found). The node is a worker: its own containers and
images are its own to answer for (a worker's dockerd answers `docker -H` for them too)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cluster.conftest import NetnsCluster, NetnsNode, host_mounts

IMAGE = "localhost/busybox:test"


def _worker(netns_cluster: NetnsCluster) -> NetnsNode:
    manager = netns_cluster.add()
    manager.shoal("swarm", "init", "--advertise-addr", manager.addr)
    token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    # Its shoald execs itself again as a worker: waited for from the manager's side and by a ping
    # that starts nothing (a CLI command on the worker meanwhile would start a shoald of its own,
    # in the host's namespaces, when it finds none answering).
    deadline = time.monotonic() + 30
    while f" {worker.name} " not in manager.shoal("node", "ls", "--filter", "role=worker").stdout \
            or " Ready " not in manager.shoal("node", "ls", "--filter", "role=worker").stdout or not worker._ping():
        assert time.monotonic() < deadline, "the worker never came back as one"
        time.sleep(0.2)
    return worker


def test_run_through_a_nodes_socket_from_outside_its_mount_namespace(netns_cluster: NetnsCluster,
                                                                      busybox_tar: Path, tmp_path: Path) -> None:
    worker = _worker(netns_cluster)
    worker.shoal("import", str(busybox_tar), IMAGE)
    client_root = tmp_path / "client"
    env = dict(worker.env, SHOAL_ROOT=str(client_root), SHOAL_RUN=str(client_root / "run"))
    host = ["-H", f"unix://{worker.run}/shoal.sock"]

    def shoal(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "shoal", *host, *args], env=env, capture_output=True,
                              text=True, timeout=90)
        assert not check or done.returncode == 0, f"shoal {' '.join(args)}: {done.stderr}{done.stdout}"
        return done

    def not_mounted_here() -> None:
        assert not [m for m in host_mounts() if m.startswith(str(worker.root))]

    assert IMAGE.split(":")[0] in shoal("images").stdout
    kept = shoal("run", "-d", "--name", "kept", IMAGE, "sleep", "300").stdout.strip()
    assert len(kept) == 64
    assert shoal("ps", "--format", "{{.Names}} {{.State}}").stdout == "kept running\n"
    assert shoal("exec", "kept", "cat", "/etc/hostname").stdout == kept[:12] + "\n"
    # --rm, and a named volume made and kept on the node
    assert shoal("run", "--rm", "-v", "data:/data", IMAGE, "sh", "-c", "echo x > /data/f").returncode == 0
    assert shoal("run", "--rm", "-v", "data:/data", IMAGE, "cat", "/data/f").stdout == "x\n"
    failed = shoal("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    # -it on a terminal (script(1) gives the CLI a pty)
    typed = subprocess.run(["script", "-qec", " ".join([sys.executable, "-m", "shoal", *host, "run", "-it", "--rm",
                                                         IMAGE, "sh"]), "/dev/null"],
                           input="echo in-$((1+2))\nexit 4\n", env=env, capture_output=True, text=True, timeout=90)
    assert typed.returncode == 4 and "in-3" in typed.stdout, typed.stdout + typed.stderr
    assert shoal("ps", "-a", "--format", "{{.Names}}").stdout == "kept\n"
    not_mounted_here()
    assert not (client_root / "containers").exists() or not os.listdir(client_root / "containers")
    # The node's own state root and socket (no -H): run and exec are the node's shoald's too.
    worker.shoal("run", "-d", "--name", "second", IMAGE, "sleep", "300")
    assert worker.shoal("exec", "second", "echo", "in").stdout == "in\n"
    not_mounted_here()
    shoal("rm", "-f", "kept", "second")
    assert shoal("ps", "-a", "-q").stdout == ""
