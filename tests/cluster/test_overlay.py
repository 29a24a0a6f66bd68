"""Overlay networks across nodes (issue 12 items 1-3) on a three-node local cluster
(`shoal cluster create --nodes 3`): a stack's network spans every node that runs one of its
tasks through a VXLAN device per node (the manager's VNI, UDP 4789, the node's address, MTU
1450), with one neighbour and one forwarding entry per task on another node, from the
manager's view:

- a task on one node reaches the tasks of every other node by address, and by name (`tasks.web`
  lists every node's tasks, the service's VIP answers from tasks on other nodes);
- endpoint_mode dnsrr: the name gives the tasks of every node, each reached;
- a node drained: its task runs elsewhere and no node keeps an entry for the old address, every
  node's entries are exactly the tasks on the other nodes;
- a node partitioned while the view changes keeps its stale entries, and healed is brought back
  to exactly the manager's view;
- `stack rm` takes every VXLAN device away, and `cluster rm` leaves nothing (encrypted
  networks: tests/cluster/test_overlay_encrypted.py).

Real processes, real VXLAN between network namespaces, as tests/cluster/test_seed_cluster.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 3
STACK = "ov"
SERVICE = f"{STACK}_web"
NETWORK = f"{STACK}_net"
# The page is the task's hostname; /cgi-bin/who also prints the client's address as the task
# saw it (`$` doubled: compose interpolates the file).
WHO = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$$(hostname) $$REMOTE_ADDR\"\n"
HTTPD = ["sh", "-c", "mkdir -p /www/cgi-bin && hostname > /www/index.html && printf '%s' \"$$WHO\" > /www/cgi-bin/who "
         "&& chmod 755 /www/cgi-bin/who && exec httpd -f -p 80 -h /www"]
_CGROUP = re.compile(r"/shoal-(?P<cluster>[^/]+)-(?P<node>\d+)/(?P<cid>[0-9a-f]{64})$")


from cluster.conftest import in_netns, link_names, netns_names
from cluster.test_local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    before = {"netns": netns_names(), "links": link_names()}
    c = LocalCluster(tmp_path_factory.mktemp("overlay"))
    c.name = f"shoalov{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", str(NODES), c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        node = c.node(1)
        subprocess.run([sys.executable, "-m", "shoal", "-c", "default", "import",
                        str(busybox_tar), "web:v1"], env=dict(c.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"]),
                       check=True, capture_output=True, timeout=120)
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)
    # `cluster rm` took the nodes' namespaces, and every VXLAN device in them, away.
    assert not {n for n in netns_names() - before["netns"] if n.startswith(c.name)}
    assert not {n for n in link_names() - before["links"] if n.startswith(("vx-", c.name))}


SUBNET = "10.213.77.0/24"  # the stack network's, given (the default pool's first is others' too)
SUBNET_PREFIX = "10.213.77."


def compose(base: Path, replicas: int, **net: Any) -> Path:
    data = {"version": "3.8",
            "services": {"web": {"image": "web:v1", "command": HTTPD, "environment": {"WHO": WHO},
                                 "stop_grace_period": "1s",
                                 "deploy": {"replicas": replicas, "placement": {"max_replicas_per_node": 1}},
                                 "networks": ["net"]}},
            "networks": {"net": net or {"ipam": {"config": [{"subnet": SUBNET}]}}}}
    path = base / f"ov-{replicas}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def tasks(c: Any) -> list[dict[str, str]]:
    out = c.shoal("service", "ps", SERVICE, "--no-trunc", "--format",
                  "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}").stdout
    rows = []
    for line in out.splitlines():
        node, desired, current = (line.split("\t") + [""] * 3)[:3]
        rows.append({"node": node, "desired": desired, "current": current})
    return rows


def wait_running(c: Any, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = tasks(c)
        running = [r for r in rows if r["desired"] == "Running" and r["current"].startswith("Running")]
        stopping = [r for r in rows if r["desired"] != "Running" and r["current"].startswith("Running")]
        if len(running) == count and not stopping:
            return
        assert time.monotonic() < deadline, f"not {count} running: {rows}"
        time.sleep(0.2)


def httpds(c: Any) -> dict[int, list[tuple[str, int]]]:
    """node -> (container ID, pid) of each httpd of this cluster really running on the machine."""
    found: dict[int, list[tuple[str, int]]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "httpd":
                continue
            lines = (proc / "cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            m = _CGROUP.search(line)
            if m and m["cluster"] == c.name:
                found.setdefault(int(m["node"]), []).append((m["cid"], int(proc.name)))
                break
    return found


def network_file(c: Any, k: int) -> dict[str, Any] | None:
    for f in (Path(c.node(k)["root"]) / "networks").glob("*.json"):
        net = json.loads(f.read_text())
        if net["name"] == NETWORK:
            return net
    return None


def placed(c: Any) -> dict[int, dict[str, str]]:
    """node -> {container ID: its address on the network} of the tasks really running (an httpd
    in the container's cgroup), from each node's own network state."""
    live = {cid for found in httpds(c).values() for cid, _pid in found}
    out: dict[int, dict[str, str]] = {}
    for k in range(1, NODES + 1):
        net = network_file(c, k)
        if net is not None:
            out[k] = {e["container_id"]: e["ip"] for e in net["endpoints"].values() if e["container_id"] in live}
    return out


def in_task(pid: int, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """A command of the image inside a task (its network and mount namespaces: its busybox, its
    resolv.conf naming the embedded resolver)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)


def fetch(pid: int, ip: str, path: str = "/") -> str:
    """The page at http://IP/ (or PATH there) fetched from inside the task's network namespace (the host's curl:
    this machine's static busybox wget crashes)."""
    got = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-s", "-m", "5", f"http://{ip}{path}"],
                         capture_output=True, text=True, timeout=20, check=False)
    assert got.returncode == 0, (pid, ip, got)
    return got.stdout.strip()


def resolve(pid: int, name: str) -> list[str]:
    """The addresses the task's resolver (127.0.0.11) gives for NAME."""
    got = in_task(pid, "nslookup", name)
    assert got.returncode == 0, got
    return sorted(set(re.findall(r"Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)(?![\d:])", got.stdout)) - {"127.0.0.11"})


def vxlan_state(c: Any, k: int) -> dict[str, Any]:
    """The node's VXLAN devices (name -> details line), and their neighbour and FDB entries for
    tasks (addresses of the network's subnet, their MACs derived from them; the routing mesh
    adds entries for the nodes' bridges, network/mesh.py)."""
    ns = c.node(k)["hostname"]
    links = in_netns(ns, "ip", "-d", "-o", "link", "show", "type", "vxlan").stdout.splitlines()
    devs = {ln.split(":")[1].strip().split("@")[0]: ln for ln in links if ln.strip()}
    neigh: dict[str, str] = {}
    fdb: dict[str, str] = {}
    for dev in devs:
        for ln in in_netns(ns, "ip", "neigh", "show", "dev", dev).stdout.splitlines():
            parts = ln.split()
            if "lladdr" in parts and parts[0].startswith(SUBNET_PREFIX):
                neigh[parts[0]] = parts[parts.index("lladdr") + 1]
        for ln in in_netns(ns, "bridge", "fdb", "show", "dev", dev).stdout.splitlines():
            parts = ln.split()
            if "dst" in parts and "self" in parts and parts[0].startswith("02:5a:"):
                fdb[parts[0]] = parts[parts.index("dst") + 1]
    return {"devices": devs, "neigh": neigh, "fdb": fdb}


def mac_for(ip: str) -> str:
    return "02:5a:" + ":".join(f"{int(o):02x}" for o in ip.split("."))


def expect_entries(c: Any, where: dict[int, dict[str, str]]) -> dict[int, dict[str, Any]]:
    """Each node with a running task has one VXLAN device, and every node's device has entries
    for exactly the tasks running on the other nodes (address -> derived MAC -> that node's
    address); {} while that is not so."""
    addrs = {k: c.node(k)["address"] for k in range(1, NODES + 1)}
    states = {}
    for k in range(1, NODES + 1):
        want_neigh = {ip: mac_for(ip) for j, eps in where.items() if j != k for ip in eps.values()}
        want_fdb = {mac_for(ip): addrs[j] for j, eps in where.items() if j != k for ip in eps.values()}
        state = vxlan_state(c, k)
        states[k] = state
        if not state["devices"] and not where.get(k):
            continue
        if len(state["devices"]) != 1 or state["neigh"] != want_neigh or state["fdb"] != want_fdb:
            return {}
    return states


def wait_entries(c: Any, timeout: float = 20) -> tuple[dict[int, dict[str, str]], dict[int, dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        where = {k: eps for k, eps in placed(c).items() if eps}
        states = expect_entries(c, where)
        if states:
            return where, states
        assert time.monotonic() < deadline, (
            f"entries not the manager's view: {where} {[vxlan_state(c, k) for k in range(1, NODES + 1)]}")
        time.sleep(0.2)


def test_tasks_reach_each_other_across_nodes(cluster: Any) -> None:
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose(cluster.base, NODES)), STACK)
    wait_running(cluster, NODES)
    where, states = wait_entries(cluster)
    assert len(where) == NODES, where  # one task per node (max_replicas_per_node)

    # The manager's VNI (Docker's first is 4096, its option shows it) on every node's device,
    # UDP 4789 from the node's own address, no learning, ARP proxy, MTU 1450.
    manager_net = network_file(cluster, 1)
    assert manager_net is not None
    vni = int(manager_net["options"]["com.docker.network.driver.overlay.vxlanid_list"])
    assert vni >= 4096
    for k, state in states.items():
        assert state["devices"], k
        (name, line), = state["devices"].items()
        assert name == f"vx-{vni:06x}-{manager_net['id'][:5]}", name
        assert f"vxlan id {vni} local {cluster.node(k)['address']} " in line, line
        assert "dstport 4789" in line and "nolearning" in line and "proxy" in line, line
        assert "mtu 1450" in line and "master shoal-" in line, line
        assert network_file(cluster, k)["mtu"] == 1450

    # `network inspect` on the manager: Docker's VNI option and the nodes that have the network.
    node1 = cluster.node(1)
    got = subprocess.run([sys.executable, "-m", "shoal", "-c", "default", "network", "inspect", NETWORK],
                         env=dict(cluster.env, SHOAL_ROOT=node1["root"], SHOAL_RUN=node1["run"]),
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    (inspected,) = json.loads(got.stdout)
    assert inspected["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == str(vni)
    assert inspected["Peers"] == [{"Name": cluster.node(k)["hostname"], "IP": cluster.node(k)["address"]}
                                  for k in range(1, NODES + 1)], inspected

    procs = httpds(cluster)
    # By address: a task on each node fetches the page of the task on every other node (its
    # container's hostname, the first 12 characters of its ID).
    for k, eps in where.items():
        (cid, pid), = procs[k]
        for j, other in where.items():
            if j == k:
                continue
            (ocid, oip), = other.items()
            assert fetch(pid, oip) == ocid[:12], (k, j)

    # By name, from node 1: tasks.<service> lists the tasks of every node.
    (cid1, pid1), = procs[1]
    all_ips = sorted(ip for eps in where.values() for ip in eps.values())
    assert resolve(pid1, f"tasks.{SERVICE}") == all_ips
    assert resolve(pid1, "tasks.web") == all_ips


def test_vip_rotation_spans_nodes(cluster: Any) -> None:
    """The short name is the service's VIP, whose rotation on each node holds the tasks of every
    node (remote ones reached over the overlay, the reply un-NATed on the way back)."""
    where, _ = wait_entries(cluster)
    all_ips = sorted(ip for eps in where.values() for ip in eps.values())
    (cid1, pid1), = httpds(cluster)[1]
    (vip,) = resolve(pid1, "web")
    assert vip not in all_ips
    seen = {fetch(pid1, vip) for _ in range(3 * NODES)}
    assert seen == {cid[:12] for eps in where.values() for cid in eps}, seen
    # Every task, on this node or another, sees the client's own address; the client landing on
    # itself (the one case masqueraded, network/nft.py) sees the network's gateway.
    (own,) = where[1].values()
    gateway = network_file(cluster, 1)["gateway"]
    want = {(cid[:12], gateway if k == 1 else own) for k, eps in where.items() for cid in eps}
    got = {tuple(fetch(pid1, vip, "/cgi-bin/who").split()) for _ in range(3 * NODES)}
    assert {(r[0], r[-1].removeprefix("[::ffff:").removesuffix("]")) for r in got} == want, (got, want)


def test_dnsrr_service_across_nodes(cluster: Any) -> None:
    """endpoint_mode dnsrr: the service's name gives the addresses of its tasks on every node,
    each reached over the overlay."""
    rr = cluster.base / "rr.yml"
    rr.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"web": {"image": "web:v1", "command": HTTPD, "stop_grace_period": "1s",
                             "deploy": {"replicas": 2, "endpoint_mode": "dnsrr",
                                        "placement": {"max_replicas_per_node": 1}},
                             "networks": ["shared"]}},
        "networks": {"shared": {"external": True, "name": NETWORK}}}))
    cluster.shoal("stack", "deploy", "--detach", "-c", str(rr), "rr")
    try:
        deadline = time.monotonic() + 60
        while True:
            found = {}  # address -> (node, container ID) of rr_web's tasks, from each node's network state
            live = {cid for procs in httpds(cluster).values() for cid, _pid in procs}
            for k in range(1, NODES + 1):
                net = network_file(cluster, k) or {"endpoints": {}}
                found.update({e["ip"]: (k, e["container_id"]) for e in net["endpoints"].values()
                              if e["name"].startswith("rr_web.") and e["container_id"] in live})
            if len(found) == 2:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.3)
        assert len({k for k, _ in found.values()}) == 2, found
        ov_pids = {cid: pid for procs in httpds(cluster).values() for cid, pid in procs}
        client_node = next(k for k in range(1, NODES + 1) if k not in {k for k, _ in found.values()})
        (client,) = [ov_pids[c] for c in placed(cluster)[client_node] if c in ov_pids]
        assert resolve(client, "rr_web") == sorted(found)  # no VIP: every task, wherever it runs
        for ip, (_k, cid) in found.items():
            assert fetch(client, ip) == cid[:12]
    finally:
        cluster.shoal("stack", "rm", "rr")
        deadline = time.monotonic() + 30
        while any(len(procs) > 1 for procs in httpds(cluster).values()):
            assert time.monotonic() < deadline, httpds(cluster)
            time.sleep(0.3)


def test_drained_node_leaves_no_stale_entry(cluster: Any) -> None:
    cluster.shoal("service", "scale", "--detach", f"{SERVICE}={NODES - 1}")
    wait_running(cluster, NODES - 1)
    where, _ = wait_entries(cluster)
    free = next(k for k in range(1, NODES + 1) if k not in where)
    drained = max(where)
    old = next(iter(where[drained].values()))
    cluster.shoal("node", "update", "--availability", "drain", cluster.node(drained)["hostname"])
    try:
        # Its task moves to the node that had none (max_replicas_per_node 1), with a new address.
        deadline = time.monotonic() + 60
        while True:
            wait_running(cluster, NODES - 1)
            where, states = wait_entries(cluster)
            if free in where:
                break
            assert time.monotonic() < deadline, where
            time.sleep(0.2)
        assert drained not in where and old not in [ip for eps in where.values() for ip in eps.values()]
        # No node keeps an entry for the moved task's old address (the drained node's device is
        # there while its stopped task's container holds the network, with the others' tasks).
        for k, state in states.items():
            assert old not in state["neigh"] and mac_for(old) not in state["fdb"], (k, state)
        # The moved task is reached from the others through the overlay.
        procs = httpds(cluster)
        (new_ip,) = where[free].values()
        for k in where:
            if k != free:
                (cid, pid), = procs[k]
                assert fetch(pid, new_ip) == next(iter(where[free]))[:12]
    finally:
        cluster.shoal("node", "update", "--availability", "active", cluster.node(drained)["hostname"])


def test_partitioned_node_is_brought_back_to_the_managers_view(cluster: Any) -> None:
    """A node cut off keeps its entries (its tasks go on); the view changes meanwhile (a task of
    another node removed); healed, its entries are exactly the manager's view again."""
    cluster.shoal("service", "scale", "--detach", f"{SERVICE}={NODES}")
    wait_running(cluster, NODES)
    before, _ = wait_entries(cluster)
    assert len(before) == NODES, before
    cut = cluster.node(NODES)["hostname"]
    subprocess.run(["ip", "-n", cut, "link", "set", "eth0", "down"], check=True)
    try:
        deadline = time.monotonic() + 30
        while "Down" not in cluster.shoal("node", "ls", "--filter", f"name={cut}", "--format", "{{.Status}}").stdout:
            assert time.monotonic() < deadline, "the cut node is not Down"
            time.sleep(0.3)
        cluster.shoal("service", "scale", "--detach", f"{SERVICE}=1")
        deadline = time.monotonic() + 30
        while True:
            now = placed(cluster)
            gone = [ip for k in range(1, NODES) for ip in before[k].values() if ip not in now.get(k, {}).values()]
            if gone:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        # The cut node heard nothing: the removed task's entry is still there (stale).
        assert set(gone) <= set(vxlan_state(cluster, NODES)["neigh"]), (gone, vxlan_state(cluster, NODES))
    finally:
        subprocess.run(["ip", "-n", cut, "link", "set", "eth0", "up"], check=True)
    wait_running(cluster, 1, timeout=60)
    where, states = wait_entries(cluster, timeout=40)
    for k, state in states.items():
        assert not set(gone) & set(state["neigh"]), (k, gone, state)


def test_stack_rm_removes_every_vxlan_device(cluster: Any) -> None:
    cluster.shoal("stack", "rm", STACK)
    deadline = time.monotonic() + 30
    while any(vxlan_state(cluster, k)["devices"] for k in range(1, NODES + 1)):
        assert time.monotonic() < deadline, [vxlan_state(cluster, k) for k in range(1, NODES + 1)]
        time.sleep(0.2)
