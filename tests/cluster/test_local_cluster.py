"""`shoal cluster create|ls|rm` (cluster/): three real nodes, each a shoald in its own network,
mount and UTS namespaces with its own state, run root and cgroup parent, kept running by the
cluster's supervisor; NAME-1 inits a swarm the others join over TCP and TLS. The CLI is run as a
user runs it, and `cluster rm` is checked to leave nothing behind, kind by kind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


from cluster.conftest import (cgroup_dirs_named, host_mounts, in_netns, link_names, netns_names,
                              nft_tables, ns_inode)
from shoal.daemonenv import DAEMON_ENV, daemon_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 3


class LocalCluster:
    def __init__(self, base: Path) -> None:
        self.name = f"shoaltest{os.getpid() % 100000}"
        self.base = base
        self.env = dict(os.environ, SHOAL_ROOT=str(base / "root"), SHOAL_RUN=str(base / "root" / "run"),
                        SHOAL_CONFIG=str(base / "cfg" / "config.json"))
        for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_SOCKET", "SHOAL_CERT_PATH", "SHOAL_CGROUP_PARENT"):
            self.env.pop(k, None)
        self.record: dict[str, Any] = {}
        self.create_output = ""

    def shoal(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    @property
    def dir(self) -> Path:
        return self.base / "root" / "clusters" / self.name

    @property
    def run_dir(self) -> Path:
        return self.base / "root" / "run" / "clusters" / self.name

    def node(self, k: int) -> dict[str, Any]:
        return self.record["nodes"][k - 1]

    def pid(self, k: int) -> int | None:
        try:
            return int((self.run_dir / f"{k}.pid").read_text())
        except (OSError, ValueError):
            return None

    def supervisor_pid(self) -> int:
        return int((self.run_dir / "supervisor.pid").read_text())

    def answers(self, k: int) -> bool:
        sock = Path(self.node(k)["run"]) / "shoal.sock"
        return self.shoal("-H", f"unix://{sock}", "info", check=False, timeout=30).returncode == 0

    def on_node(self, k: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command on node K itself (its state root and socket), as its own user would run it."""
        node = self.node(k)
        proc = subprocess.run([sys.executable, "-m", "shoal", "-c", "default", *args],
                              env=dict(self.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"]),
                              capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc


@contextlib.contextmanager
def cluster_with_web_image(base: Path, name: str, nodes: int, busybox_tar: Path) -> Iterator[LocalCluster]:
    """`cluster create --nodes N NAME` with busybox imported as web:v1 on the manager only (as the
    seed built it there); removed after, and no namespace or link of it left."""
    before = {"netns": netns_names(), "links": link_names()}
    c = LocalCluster(base)
    c.name = name
    try:
        c.shoal("cluster", "create", "--nodes", str(nodes), c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        c.on_node(1, "import", str(busybox_tar), "web:v1")
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)
    assert not {n for n in netns_names() - before["netns"] if n.startswith(c.name)}
    assert not {n for n in link_names() - before["links"] if n.startswith(("vx-", c.name))}


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    return {"netns": netns_names(), "links": link_names(), "mounts": host_mounts(), "nft": nft_tables()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, before: dict[str, Any]) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("lcluster"))
    try:
        proc = c.shoal("cluster", "create", "--nodes", str(NODES), c.name)
        c.create_output = proc.stderr
        c.record = json.loads((c.dir / "cluster.json").read_text())
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def test_nodes_are_namespaces_with_their_own_shoald(cluster: LocalCluster) -> None:
    host_mnt, host_uts = ns_inode("self", "mnt"), ns_inode("self", "uts")
    seen_mnt = set()
    for k in range(1, NODES + 1):
        node = cluster.node(k)
        assert node["hostname"] == f"{cluster.name}-{k}"
        assert (Path("/run/netns") / node["hostname"]).exists()
        pid = cluster.pid(k)
        assert pid is not None and Path(f"/proc/{pid}").exists()
        # shoald itself runs in the node's network namespace, and mount and UTS namespaces of its own.
        assert ns_inode(pid, "net") == os.stat(f"/run/netns/{node['hostname']}").st_ino
        assert ns_inode(pid, "mnt") != host_mnt and ns_inode(pid, "uts") != host_uts
        seen_mnt.add(ns_inode(pid, "mnt"))
        hostname = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert hostname.stdout.strip() == node["hostname"]
        # Its own state: the store it holds open is the node's (its containers' cgroup parent,
        # shoal-NAME-K, is checked with real tasks in test_rm_leaves_nothing).
        open_files = {os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir() if f.is_symlink()}
        assert str(Path(node["root"]) / "shoald.db") in open_files
        assert cluster.node(k)["cgroup_parent"] == f"shoal-{cluster.name}-{k}"
        # Its API answers on its own socket, from the host.
        assert cluster.answers(k)
        # The node sees its own eth0 with its address in /sys and in its netns (sysfs of the netns).
        addrs = in_netns(node["hostname"], "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert f"{node['address']}/" in addrs
        sysnet = subprocess.run(["nsenter", "-t", str(pid), "-m", "ls", "/sys/class/net"], capture_output=True,
                                text=True).stdout.split()
        assert {"eth0", "lo"} <= set(sysnet) and cluster.record["bridge"] not in sysnet, sysnet
        cgroups_seen = subprocess.run(["nsenter", "-t", str(pid), "-m", "ls", "/sys/fs/cgroup"], capture_output=True,
                                      text=True).stdout.split()
        assert "memory" in cgroups_seen or "cgroup.controllers" in cgroups_seen  # the host's hierarchies carried over
        # One malloc arena, no column tables (daemonenv.py): read in the zygote, each node is its fork.
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for name, value in daemon_env(os.environ).items():
            if name in DAEMON_ENV:
                assert f"{name}={value}".encode() in environ
    assert len(seen_mnt) == NODES


def test_hostnames_differ_in_the_swarm(cluster: LocalCluster) -> None:
    """NAME-1 ran swarm init, the others joined over TCP and TLS: the manager lists every node
    by its own hostname, and the current context reaches the manager over TLS."""
    assert cluster.shoal("context", "show").stdout.strip() == cluster.name
    ctx = json.loads(cluster.shoal("context", "inspect", cluster.name).stdout)[0]
    assert ctx["Endpoints"]["docker"]["Host"] == f"tcp://{cluster.node(1)['address']}:2377"
    # It follows NAME-1's certificates where they are (renewed and rotated there), no copy.
    assert ctx["Metadata"]["NodeCertificates"] == str(Path(cluster.node(1)["root"]) / "certificates")
    assert ctx["TLSMaterial"] == {}
    out = cluster.shoal("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.splitlines()
    assert sorted(out) == [f"{cluster.name}-{k} Ready" for k in range(1, NODES + 1)]
    # Each worker's shoald started again in its new role as a fresh fork of the supervisor.
    log = (cluster.dir / "supervisor.log").read_text()
    for k in range(2, NODES + 1):
        assert f"{cluster.name}-{k}: shoald asked to start again" in log
    for k in range(2, NODES + 1):
        certs = Path(cluster.node(k)["root"]) / "certificates"
        assert (certs / "swarm-node.crt").is_file() and (certs / "swarm-root-ca.crt").is_file()
    assert "go back" in cluster.create_output.lower() and "shoal context use default" in cluster.create_output


def test_nodes_reach_each_other(cluster: LocalCluster) -> None:
    """A listener in NAME-3's namespace on its address, reached from NAME-1's and NAME-2's; and
    the manager's swarm port from every worker."""
    n3 = cluster.node(3)
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{n3['hostname']}", sys.executable, "-c",
         "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         f"s.bind(('{n3['address']}', 7799)); s.listen(); print('up', flush=True)\n"
         "for _ in range(2):\n    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        for k in (1, 2):
            probe = in_netns(cluster.node(k)["hostname"], sys.executable, "-c",
                             f"import socket\nc=socket.create_connection(('{n3['address']}', 7799), 5)\n"
                             "print(c.recv(100).decode())")
            assert probe.stdout.strip() == cluster.node(k)["address"], probe.stderr
        manager = cluster.node(1)["address"]
        for k in range(2, NODES + 1):
            probe = in_netns(cluster.node(k)["hostname"], sys.executable, "-c",
                             f"import socket\nsocket.create_connection(('{manager}', 2377), 5).close()")
            assert probe.returncode == 0, probe.stderr
    finally:
        server.kill()
        server.wait()
    # No default route in a node: nothing it does leaves the machine.
    routes = in_netns(cluster.node(2)["hostname"], "ip", "route").stdout
    assert "default" not in routes


def test_killed_shoald_is_restarted(cluster: LocalCluster) -> None:
    old = cluster.pid(2)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    new = None
    while time.monotonic() < deadline:
        new = cluster.pid(2)
        if new is not None and new != old and Path(f"/proc/{new}").exists() and cluster.answers(2):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"shoald of node 2 not restarted (pid {old} -> {new}): "
                             f"{(cluster.dir / 'supervisor.log').read_text()[-2000:]}")
    assert ns_inode(new, "net") == os.stat(f"/run/netns/{cluster.node(2)['hostname']}").st_ino
    log = (cluster.dir / "supervisor.log").read_text()
    assert f"{cluster.name}-2: shoald died (signal 9); restarting" in log


def test_cluster_ls(cluster: LocalCluster) -> None:
    lines = cluster.shoal("cluster", "ls").stdout.splitlines()
    assert lines[0].split() == ["NAME", "NODES", "STATUS", "SUBNET"]
    row = next(line for line in lines if line.startswith(cluster.name + " "))
    assert row.split()[1:3] == [str(NODES), "Running"]
    assert cluster.record["subnet"] in row
    assert cluster.record["subnet"].startswith(("198.18.", "198.19."))  # RFC 2544's range


def test_rm_leaves_nothing(cluster: LocalCluster, before: dict[str, Any], busybox_tar: Path) -> None:
    # Tasks running on the manager first: their containers, conmon, mounts and cgroups must go too.
    node1 = cluster.node(1)
    imp = subprocess.run([sys.executable, "-m", "shoal", "-c", "default", "import", str(busybox_tar), "localhost/bb:lc"],
                         env=dict(cluster.env, SHOAL_ROOT=node1["root"], SHOAL_RUN=node1["run"]),
                         capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    compose = cluster.base / "compose.yml"
    compose.write_text("services:\n  web:\n    image: localhost/bb:lc\n    command: [\"sleep\", \"3600\"]\n"
                       "    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.role == manager]\n")
    cluster.shoal("stack", "deploy", "-c", str(compose), "lc")
    deadline = time.monotonic() + 60
    while len([d for d in cgroup_dirs_named(f"shoal-{cluster.name}-1") if d.parent.name == "memory"
               for _ in d.iterdir() if _.is_dir()]) < 2:
        assert time.monotonic() < deadline, "the stack's containers did not start on the manager"
        time.sleep(0.2)
    pids = {cluster.supervisor_pid(), *(p for k in range(1, NODES + 1) if (p := cluster.pid(k)))}
    for d in cgroup_dirs_named(f"shoal-{cluster.name}-1"):
        for procs in d.rglob("cgroup.procs"):
            pids.update(int(p) for p in procs.read_text().split())
    netns = {cluster.node(k)["hostname"] for k in range(1, NODES + 1)}
    links = {cluster.record["bridge"], *(cluster.node(k)["host_veth"] for k in range(1, NODES + 1))}
    assert links <= link_names() and netns <= netns_names()
    # Processes of the nodes beyond shoald (conmon, tasks) are found by their namespace.
    inodes = {os.stat(f"/run/netns/{n}").st_ino for n in netns}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ns_inode(entry, "net") in inodes:
            pids.add(int(entry))

    proc = cluster.shoal("cluster", "rm", cluster.name)
    assert proc.stdout == f"{cluster.name}\n"

    assert not [p for p in pids if Path(f"/proc/{p}").exists()
                and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"], "processes left"
    assert not (netns & netns_names()), "network namespaces left"
    assert not (links & link_names()), "links left"
    assert not [m for m in host_mounts() if str(cluster.base) in m], "mounts left"
    assert not [m for m in host_mounts() if m in {f"/run/netns/{n}" for n in netns}], "netns mounts left"
    for k in range(1, NODES + 1):
        assert cgroup_dirs_named(f"shoal-{cluster.name}-{k}") == [], "cgroups left"
    # A node's shoald makes its tables in the node's namespace (gone with it), never in the host's.
    import hashlib

    suffixes = {hashlib.sha256(cluster.node(k)["root"].encode()).hexdigest()[:6] for k in range(1, NODES + 1)}
    assert not [t for t in nft_tables() if any(sfx in t for sfx in suffixes)], "nftables tables left"
    assert not cluster.dir.exists() and not cluster.run_dir.exists(), "state left"
    assert cluster.shoal("context", "show").stdout.strip() == "default"
    assert cluster.name not in cluster.shoal("context", "ls", "-q").stdout.split()
    assert cluster.name not in cluster.shoal("cluster", "ls", "-q").stdout.split()


@pytest.mark.parametrize("args,message", [
    (["Bad_Name"], 'invalid cluster name "Bad_Name"'),
    (["--nodes", "0", "okname"], "--nodes 0"),
    (["--subnet", "10.0.0.0/30", "--nodes", "3", "okname"], "too small for 3 nodes"),
    (["--subnet", "not-a-net", "okname"], "--subnet not-a-net"),
    (["--subnet", "127.0.0.0/24", "okname"], "not usable"),
    (["--subnet", "HOSTROUTE", "okname"], "already in use on this host"),
])
def test_bad_input_creates_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "root" / "run"),
               SHOAL_CONFIG=str(tmp_path / "cfg" / "config.json"))
    dummy = ""
    if "HOSTROUTE" in args:
        # A route of the test's own (another test's network may go away meanwhile: the create
        # then found no clash, and failed later on that network's address, in a CI run).
        dummy = f"shoalrt{os.getpid() % 100000}"
        subprocess.run(["ip", "link", "add", dummy, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "198.19.251.1/24", "dev", dummy], check=True)
        subprocess.run(["ip", "link", "set", dummy, "up"], check=True)
        assert any(str(r) == "198.19.251.0/24" for r in _host_routes())
        args = ["198.19.251.0/24" if a == "HOSTROUTE" else a for a in args]
    before_netns, before_links = netns_names(), link_names()
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "cluster", "create", *args], env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        if dummy:
            subprocess.run(["ip", "link", "del", dummy], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "root" / "clusters").exists() or not list((tmp_path / "root" / "clusters").iterdir())
    # Only what this create would have made is looked for: others' tests add links meanwhile.
    from shoal.cluster import state

    name = args[-1]
    assert not [n for n in netns_names() - before_netns if n.startswith(f"{name}-")]
    made = {state.bridge_name(name), *(state.veth_name(name, k) for k in range(1, 5))}
    assert not (made & (link_names() - before_links))


def _host_routes() -> list[Any]:
    import ipaddress

    out = []
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        parts = line.split()
        mask = int(parts[7], 16)
        if mask:
            dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
            out.append(ipaddress.ip_network(f"{dest}/{ipaddress.IPv4Address(mask.to_bytes(4, 'little'))}", strict=False))
    return out


def test_rm_after_the_supervisor_was_killed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A supervisor killed -9 leaves its shoalds running, unsupervised: `cluster ls` says so and
    `cluster rm` still finds and stops them (by namespace and cgroup), and removes everything."""
    c = LocalCluster(tmp_path_factory.mktemp("lk"))  # short: a unix socket path has 107 bytes
    c.name = f"shoalkill{os.getpid() % 100000}"
    try:
        c.shoal("cluster", "create", "--nodes", "2", "--no-swarm", c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        shoalds = [c.pid(1), c.pid(2)]
        assert all(shoalds)
        os.kill(c.supervisor_pid(), signal.SIGKILL)
        time.sleep(0.3)
        row = next(line for line in c.shoal("cluster", "ls").stdout.splitlines() if line.startswith(c.name + " "))
        assert "Unsupervised (2/2 answering)" in row
        assert all(Path(f"/proc/{p}").exists() for p in shoalds)
        # Without a swarm, the context points at NAME-1's unix socket.
        assert c.shoal("context", "inspect").stdout.count(f"unix://{c.node(1)['run']}/shoal.sock") == 1
        c.shoal("cluster", "rm", c.name)
        assert not [p for p in shoalds if Path(f"/proc/{p}").exists()
                    and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert not ({f"{c.name}-1", f"{c.name}-2"} & netns_names())
        assert c.record["bridge"] not in link_names()
        assert not c.dir.exists() and not c.run_dir.exists()
        assert cgroup_dirs_named(f"shoal-{c.name}-1") == []
        assert c.shoal("context", "show").stdout.strip() == "default"
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)
