"""Nodes for cluster tests: each a real shoald in a network namespace of its own (one eth0 on a
bridge the fixture makes, an address from 198.18.0.0/24), with its own mount and UTS namespaces
(so its hostname is its own and nothing it mounts reaches the host), state root and run root.
The CLI runs on the host and reaches a node's shoald through its unix socket (SHOAL_RUN), as a
user on that machine would. Everything is removed afterwards, even when a test fails.

The namespace setup is the one ../shared/reference/swarm-multinode/swarm-node.sh found for
dockerd: not `ip netns exec` (its fresh sysfs has an empty /sys/fs/cgroup on a cgroup v1 host),
but nsenter --net + unshare --mount --uts, and a sysfs for the netns with the host's cgroup
hierarchies moved onto it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest



from conftest import shoald_pid, teardown_root  # noqa: E402,F401 - tests/conftest.py (this one is cluster.conftest)

SUBNET = "198.18.0"  # RFC 2544 benchmarking range: no real network uses it

_NODE_SCRIPT = r"""
set -eu
hostname "$NODE_NAME"
mkdir -p "$NODE_PRIV"
mount --rbind /sys/fs/cgroup "$NODE_PRIV"
mount -t sysfs sysfs /sys
mount --move "$NODE_PRIV" /sys/fs/cgroup
exec "$@"
"""


class NetnsNode:
    """One machine of a test cluster."""

    def __init__(self, tag: str, index: int, base: Path, bridge: str, hostname: str | None = None) -> None:
        self.index = index
        self.name = f"{tag}-{index}"
        self.hostname = hostname or self.name
        self.addr = f"{SUBNET}.{index}"
        self.root = base / f"node{index}" / "root"
        self.run = base / f"node{index}" / "run"
        self.bridge = bridge
        self.veth = f"{tag}v{index}"[-15:]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / f"node{index}" / "shoald.log"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, SHOAL_ROOT=str(self.root), SHOAL_RUN=str(self.run))
        env.pop("SHOAL_SOCKET", None)
        env.pop("SHOAL_HOST", None)
        # This node's own socket, whatever context another test made current in ~/.shoal.
        env["SHOAL_CONTEXT"] = "default"
        return env

    def make_netns(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name],
                       check=True)
        subprocess.run(["ip", "link", "set", self.veth, "master", self.bridge, "up"], check=True)
        for cmd in (["addr", "add", f"{self.addr}/24", "dev", "eth0"], ["link", "set", "lo", "up"],
                    ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", self.name, *cmd], check=True)

    def start(self) -> None:
        """shoald in the node's namespaces; returns when its API answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.run.mkdir(parents=True, exist_ok=True)
        env = dict(self.env, NODE_NAME=self.hostname, NODE_PRIV=str(self.run.parent / "cgstash"))
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.name}", "unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", _NODE_SCRIPT, "node", sys.executable, "-m", "shoal", "daemon"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.wait_api()

    def wait_api(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"shoald of {self.name} exited: {self.log.read_text()[-3000:]}")
            if self.shoal("version", check=False).returncode == 0 and self._ping():
                return
            time.sleep(0.1)
        raise AssertionError(f"shoald of {self.name} did not answer: {self.log.read_text()[-3000:]}")

    def _ping(self) -> bool:
        sock = self.run / "shoal.sock"
        if not sock.exists():
            return False
        code = ("import sys\nfrom shoal.api.client import Client\nsys.exit(0 if Client().ping() else 1)\n")
        return subprocess.run([sys.executable, "-c", code], env=self.env, check=False,
                              capture_output=True).returncode == 0

    def shoal(self, *args: str, check: bool = True, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """The CLI, talking to this node's shoald."""
        result = subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} on {self.name} failed ({result.returncode}): "
                                 f"{result.stderr}{result.stdout}")
        return result

    def exec(self, *cmd: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A command in the node's network namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              check=False, **kwargs)

    def daemon_pid(self) -> int | None:
        return shoald_pid(self.run)  # the running one's, never a stale pid another process now has

    def stop(self) -> None:
        import signal

        pid = self.daemon_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.pid != pid:
            self.proc.send_signal(signal.SIGTERM)  # Popen's: nothing if it was reaped already
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # A shoald that execs itself (swarm join) keeps the pid; one started again by hand not.
        if pid and self.daemon_pid() == pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        self.stop()
        teardown_root(self.root, self.run)
        # Anything left in the namespace (a process the daemon started) goes with it.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True)


class NetnsCluster:
    def __init__(self, base: Path) -> None:
        self.tag = f"shoal{os.getpid() % 100000}"[:10]
        self.bridge = f"{self.tag}br"[-15:]
        self.base = base
        self.nodes: list[NetnsNode] = []
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def add(self, start: bool = True, hostname: str | None = None) -> NetnsNode:
        node = NetnsNode(self.tag, len(self.nodes) + 1, self.base, self.bridge, hostname)
        self.nodes.append(node)
        node.make_netns()
        if start:
            node.start()
        return node

    def remove(self) -> None:
        """Every node at once: stopped, its containers, namespace and links removed. One after
        the other, each node's stop and teardown (a Python process of its own) added up."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            futures = [(node, pool.submit(node.remove)) for node in self.nodes]
        for node, future in futures:
            exc = future.exception()
            if exc is not None:  # the other nodes went all the same
                print(f"cleanup of {node.name}: {exc}", file=sys.stderr)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    """An empty cluster (a bridge); `cluster.add()` starts a node."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cluster = NetnsCluster(tmp_path_factory.mktemp("netns-cluster"))
    try:
        yield cluster
    finally:
        cluster.remove()


# ---- helpers shared by cluster tests (kernel objects seen from the host) ------------------------

def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def link_names() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def host_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def nft_tables() -> set[str]:
    """The host namespace's nftables tables ("family name")."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")}


def cgroup_dirs_named(name: str) -> list[Path]:
    """`name` at the top of every mounted cgroup hierarchy, where it exists."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2") and (Path(parts[1]) / name).is_dir():
            found.append(Path(parts[1]) / name)
    return found


def ns_inode(pid: int | str, kind: str) -> int | None:
    """The inode of a process's namespace of `kind` (net, mnt, uts...); "self" works."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def in_netns(netns: str, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """A command in a network namespace only (nsenter --net: the host's mounts and /sys stay)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *cmd], capture_output=True, text=True,
                          check=False, timeout=timeout)
