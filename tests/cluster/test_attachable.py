"""Containers on attachable swarm networks take their address from the manager (issues 11 and
12), as Docker's AttachNetwork: on a two-node local cluster, an attachable overlay network with
a service task on node 1, and `run -d --network X` containers on node 1 (through the cluster's
context: node 1's node API) and on node 2 (its own CLI, in its namespaces: a worker listens on
no port, as in Swarm, so the CLI runs there as a user on that machine would):

- no address twice: every container's address is the one the manager's allocator recorded
  for it (its attachment), none equal to a task's, the VIP's or another container's;
- a container on node 2 reaches the task on node 1 and a container on node 1 by address, and
  they reach it back (over VXLAN, forwarding entries from the manager's view); names resolve
  across nodes (the container on node 1 by its name from node 2, the service by its VIP);
- `network inspect` on node 2 lists its containers;
- `rm` frees the address (the allocator's record goes); a container stopped frees it too;
- a network that is not attachable is refused with Docker's words, nothing attached; an
  unknown network is `network X not found`.

Real processes, real VXLAN between network namespaces, as tests/cluster/test_overlay.py."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import LocalCluster, cluster_with_web_image  # noqa: E402

NETWORK = "att"
SUBNET = "10.213.91.0/24"
HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[LocalCluster]:
    with cluster_with_web_image(tmp_path_factory.mktemp("attachable"), f"shoalat{os.getpid() % 10000}", 2,
                                busybox_tar) as c:
        c.on_node(2, "import", str(busybox_tar), "web:v1")  # a `run` there uses the node's own store
        yield c


def on_node_ns(c: LocalCluster, k: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI on node K as that machine's user runs it: in the node's network, mount and UTS
    namespaces (those of its shoald), with its roots and cgroup parent."""
    node = c.node(k)
    pid = c.pid(k)
    assert pid, f"node {k} has no shoald"
    env = dict(c.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"], SHOAL_CGROUP_PARENT=node["cgroup_parent"])
    proc = subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "-u", sys.executable, "-m", "shoal", "-c",
                           "default", *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"{args} on node {k}: {proc.stdout}\n{proc.stderr}"
    return proc


def attachments(c: LocalCluster) -> dict[str, dict[str, Any]]:
    """The manager's allocator records (controlapi/attachments.py), by container ID."""
    db = sqlite3.connect(f"file:{Path(c.node(1)['root']) / 'shoald.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT data FROM objects WHERE kind='attachment'").fetchall()
    finally:
        db.close()
    return {r["container_id"]: r for r in (json.loads(row[0]) for row in rows)}


def network_file(c: LocalCluster, k: int) -> dict[str, Any] | None:
    for f in (Path(c.node(k)["root"]) / "networks").glob("*.json"):
        net = json.loads(f.read_text())
        if net["name"] == NETWORK:
            return net
    return None


def endpoints(c: LocalCluster, k: int) -> dict[str, str]:
    """container ID -> its address on the network, from node K's own network state."""
    net = network_file(c, k)
    return {} if net is None else {e["container_id"]: e["ip"] for e in net["endpoints"].values()}


def container(c: LocalCluster, k: int, name: str) -> tuple[str, int]:
    got = c.on_node(k, "inspect", "-f", "{{.Id}} {{.State.Pid}}", name).stdout.split()
    return got[0], int(got[1])


def wait_for(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def fetch(pid: int, ip: str) -> str:
    got = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-s", "-m", "5", f"http://{ip}/"],
                         capture_output=True, text=True, timeout=20, check=False)
    assert got.returncode == 0, (pid, ip, got)
    return got.stdout.strip()


def resolve(pid: int, name: str) -> list[str]:
    got = subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "nslookup", name], capture_output=True, text=True,
                         timeout=20, check=False)
    assert got.returncode == 0, got
    return sorted(set(re.findall(r"Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)(?![\d:])", got.stdout)) - {"127.0.0.11"})


def task_of(c: LocalCluster) -> tuple[str, str, int]:
    """(container ID, address, pid) of the service's running task on node 1."""
    out = c.shoal("service", "ps", "web", "--no-trunc", "--filter", "desired-state=running",
                  "--format", "{{.ID}}\t{{.CurrentState}}").stdout
    assert out.strip().startswith(tuple("0123456789abcdefghijklmnopqrstuvwxyz")), out
    (task_id, state), = [line.split("\t") for line in out.splitlines() if line.strip()]
    assert state.startswith("Running"), state
    cid, pid = container(c, 1, f"web.1.{task_id}")
    return cid, endpoints(c, 1)[cid], pid


def test_containers_get_the_managers_addresses(cluster: LocalCluster) -> None:
    c = cluster
    # `network` runs on the node (not through a context), as the manager's own user.
    c.on_node(1, "network", "create", "-d", "overlay", "--attachable", "--subnet", SUBNET, NETWORK)
    c.on_node(1, "network", "create", "-d", "overlay", "--subnet", "10.213.92.0/24", "noatt")
    c.shoal("service", "create", "--detach", "--name", "web", "--network", NETWORK, "--stop-grace-period", "1s",
            "--constraint", "node.role==manager", "web:v1", *HTTPD)
    wait_for("the service's task", lambda: "Running" in c.shoal("service", "ps", "web", "--format",
                                                                 "{{.CurrentState}}").stdout, timeout=60)
    task_cid, task_ip, task_pid = task_of(c)

    # Node 1 through the cluster's context (its node API), node 2 from its own CLI.
    c.shoal("run", "-d", "--name", "a1", "--network", NETWORK, "web:v1", *HTTPD)
    # `network connect` of a running container on node 2, which has no copy of the network yet:
    # the manager's address, and the copy made from its record.
    on_node_ns(c, 2, "run", "-d", "--name", "a5", "web:v1", *HTTPD)
    on_node_ns(c, 2, "network", "connect", NETWORK, "a5")
    on_node_ns(c, 2, "run", "-d", "--name", "a2", "--network", NETWORK, "web:v1", *HTTPD)
    on_node_ns(c, 2, "run", "-d", "--name", "a3", "--network", NETWORK, "web:v1", *HTTPD)
    a1, a1_pid = container(c, 1, "a1")
    a2, a2_pid = container(c, 2, "a2")
    a3, _a3_pid = container(c, 2, "a3")
    a5, _a5_pid = container(c, 2, "a5")

    # Every container's address is the manager's record of it, and no address is there twice.
    records = attachments(c)
    assert set(records) == {a1, a2, a3, a5}, ({k[:12]: v["container_name"] for k, v in records.items()},
                                              dict(a1=a1[:12], a2=a2[:12], a3=a3[:12], a5=a5[:12]))
    assert {records[a1]["node_id"], records[a2]["node_id"]} == {r["node_id"] for r in records.values()}
    assert records[a1]["node_id"] != records[a2]["node_id"]
    local = {**endpoints(c, 1), **endpoints(c, 2)}
    for cid in (a1, a2, a3, a5):
        assert local[cid] == records[cid]["addresses"][0].split("/")[0], (cid, local, records)
        assert ipaddress.ip_address(local[cid]) in ipaddress.ip_network(SUBNET)
    vip = json.loads(c.shoal("service", "inspect", "web").stdout)[0]["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
    given = [local[a1], local[a2], local[a3], local[a5], task_ip, vip]
    assert len(set(given)) == len(given), given

    # Across nodes, both ways: a container on node 2 reaches the task and the container on
    # node 1; they reach it.
    assert fetch(a2_pid, task_ip) == task_cid[:12]  # each page is its container's hostname
    assert fetch(a2_pid, local[a1]) == a1[:12]
    assert fetch(task_pid, local[a2]) == a2[:12]
    assert fetch(a1_pid, local[a2]) == a2[:12]
    # Names across nodes: a container of node 1 by its name from node 2, the service's VIP.
    assert wait_for("a1's name on node 2", lambda: resolve(a2_pid, "a1") == [local[a1]] or None)
    assert resolve(a2_pid, "web") == [vip]
    assert resolve(task_pid, "a2") == [local[a2]]

    # `network inspect` on node 2 (a worker: its copy) and on the manager (the swarm's record):
    # each node's containers on the network, tasks and `run` ones.
    (inspected,) = json.loads(on_node_ns(c, 2, "network", "inspect", NETWORK).stdout)
    shown = {cid: e["IPv4Address"] for cid, e in (inspected["Containers"] or {}).items()}
    assert shown == {a2: f"{local[a2]}/24", a3: f"{local[a3]}/24", a5: f"{local[a5]}/24"}, inspected
    (inspected,) = json.loads(c.on_node(1, "network", "inspect", NETWORK).stdout)
    shown = {cid: e["IPv4Address"] for cid, e in (inspected["Containers"] or {}).items()}
    assert shown == {a1: f"{local[a1]}/24", task_cid: f"{task_ip}/24"}, inspected
    assert inspected["Attachable"] is True and {p["IP"] for p in inspected["Peers"]} == {
        c.node(1)["address"], c.node(2)["address"]}, inspected

    # rm frees the address: the allocator's record goes; the next container gets another.
    on_node_ns(c, 2, "rm", "-f", "a3")
    wait_for("a3's attachment freed", lambda: a3 not in attachments(c))
    on_node_ns(c, 2, "run", "-d", "--name", "a4", "--network", NETWORK, "web:v1", *HTTPD)
    a4, _ = container(c, 2, "a4")
    a4_ip = endpoints(c, 2)[a4]
    assert a4_ip not in {local[a1], local[a2], local[a5], task_ip, vip}
    assert attachments(c)[a4]["addresses"][0].split("/")[0] == a4_ip
    # A stopped container leaves the network, and the manager frees its address too (moby
    # detaches at stop); started again, it gets one again.
    on_node_ns(c, 2, "stop", "-t", "1", "a4")
    wait_for("a4's attachment freed at stop", lambda: a4 not in attachments(c))
    c.shoal("rm", "-f", "a1")
    wait_for("a1's attachment freed", lambda: a1 not in attachments(c))
    # `network disconnect` frees the connected container's address.
    on_node_ns(c, 2, "network", "disconnect", NETWORK, "a5")
    wait_for("a5's attachment freed", lambda: a5 not in attachments(c))

    # Not attachable: Docker's words, nothing attached, no address taken. Unknown: not found.
    refused = on_node_ns(c, 2, "run", "-d", "--name", "b1", "--network", "noatt", "web:v1", *HTTPD, check=False)
    assert refused.returncode != 0
    assert ("Could not attach to network noatt: rpc error: code = PermissionDenied desc = "
            "network noatt not manually attachable") in refused.stderr, refused.stderr
    unknown = on_node_ns(c, 2, "run", "-d", "--name", "b2", "--network", "nope", "web:v1", *HTTPD, check=False)
    assert unknown.returncode != 0 and "network nope not found" in unknown.stderr, unknown.stderr
    assert set(attachments(c)) == {a2}, attachments(c)

    # The network cannot go while a container is attached (swarmkit: in use by its task).
    c.shoal("service", "rm", "web")
    busy = c.on_node(1, "network", "rm", NETWORK, check=False)
    assert busy.returncode != 0 and "is in use by task" in busy.stderr, busy.stderr

    # The manager killed (-9) and restarted by its node's supervisor while node 2's last
    # container is removed: the attachment, kept in the manager's store, is freed once node 2
    # has a session again (its agent detaches what its manager lists and it no longer has).
    old = c.pid(1)
    assert old
    os.kill(old, signal.SIGKILL)
    on_node_ns(c, 2, "rm", "-f", "a2", "a4", "a5", "b1", "b2", check=False)
    wait_for("the manager back", lambda: c.pid(1) not in (None, old) and c.answers(1), timeout=30)
    wait_for("every attachment freed", lambda: not attachments(c), timeout=30)
    c.on_node(1, "network", "rm", NETWORK, "noatt")
