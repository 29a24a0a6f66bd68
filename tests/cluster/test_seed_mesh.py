"""The seed's walkthrough through the routing mesh on a four-node local cluster (issue 12 items
4-5): `curl` to each node's address on port 4000 answers from the tasks of other nodes too, each
task sees the client's own address (no SNAT, moby#25526), and the visit counter on the manager
counts up from every node, 127.0.0.1 on a node included (a client that is a node of the cluster, sent by another node to a
task on its own node, shows as the entry node); with one task left, every node's port still reaches it (a node with
no task publishes the port too); `stack rm` takes every mesh rule, ip rule and route table away.

The web tasks are busybox httpd with a CGI that prints the task's hostname, the client's address
(REMOTE_ADDR) and the visit count, which it asks of `redis`: a busybox stand-in for the seed's
redis (the seed's own images need a Python build), pinned to the manager as in the seed.

Real processes over real TLS and VXLAN in network namespaces, as test_seed_cluster.py."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 4
STACK = "seedmesh"

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402

CGI = ("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
       "echo \"$(hostname) $REMOTE_ADDR $(nc -w 3 redis 6379 </dev/null)\"\n")
WEB = ["sh", "-c", "mkdir -p /www/cgi-bin && printf '%s' \"$CGI\" > /www/cgi-bin/visit "
       "&& chmod 755 /www/cgi-bin/visit && exec httpd -f -p 80 -h /www"]
COUNT = "#!/bin/sh\nn=$(cat /data/visits 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/visits; echo $n\n"
REDIS = ["sh", "-c", "mkdir -p /data && printf '%s' \"$COUNT\" > /count && chmod 755 /count "
         "&& exec nc -ll -p 6379 -e /count"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalmesh{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("seedmesh"), name, NODES, busybox_tar) as c:
        yield c


def compose(base: Path) -> Path:
    """The seed's shape: web (5 replicas, 4000:80, webnet) and the counter on the manager
    (`$` doubled: compose interpolates the file)."""
    def esc(v: Any) -> Any:
        return [esc(x) for x in v] if isinstance(v, list) else v.replace("$", "$$")

    data = {"version": "3.8",
            "services": {
                "web": {"image": "web:v1", "command": esc(WEB), "environment": {"CGI": esc(CGI)}, "stop_grace_period": "1s",
                        "deploy": {"replicas": 5}, "ports": ["4000:80"], "networks": ["webnet"]},
                "redis": {"image": "web:v1", "command": esc(REDIS), "environment": {"COUNT": esc(COUNT)},
                          "stop_grace_period": "1s", "networks": ["webnet"],
                          "deploy": {"placement": {"constraints": ["node.role == manager"]}}}},
            "networks": {"webnet": {}}}
    path = base / "seedmesh.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def running(c: Any, service: str) -> list[tuple[str, str]]:
    """(task container's hostname, node) of the service's running tasks."""
    out = c.shoal("service", "ps", service, "--no-trunc", "--format",
                  "{{.ID}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}").stdout
    rows = []
    for line in out.splitlines():
        tid, node, desired, current = (line.split("\t") + [""] * 4)[:4]
        if desired == "Running" and current.startswith("Running"):
            rows.append((tid, node))
    return rows


def hostnames(c: Any) -> dict[str, str]:
    """Each web task container's hostname (its ID's first 12 characters) -> its node's name."""
    out = {}
    for k in range(1, NODES + 1):
        node = c.node(k)
        for d in (Path(node["root"]) / "containers").iterdir():
            if len(d.name) == 64:
                out[d.name[:12]] = node["hostname"]
    return out


def wait_running(c: Any, service: str, count: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(running(c, service)) != count:
        assert time.monotonic() < deadline, c.shoal("service", "ps", service).stdout + "".join(
            f"\n--- node {k}:\n" + "\n".join((Path(c.node(k)["root"]) / "shoald.log").read_text().splitlines()[-15:])
            for k in range(1, NODES + 1))
        time.sleep(0.2)


def visit(c: Any, client: int, entry: int) -> tuple[str, str, int]:
    """From node `client`'s namespace to node `entry`'s address: (hostname, client address the
    task saw, visits)."""
    got = in_netns(c.node(client)["hostname"], "curl", "-s", "-m", "5",
                   f"http://{c.node(entry)['address']}:4000/cgi-bin/visit")
    assert got.returncode == 0, (client, entry, got.returncode, got.stderr)
    host, addr, visits = got.stdout.split()
    # busybox httpd listens on :: and writes an IPv4 client as [::ffff:a.b.c.d]
    return host, addr.removeprefix("[::ffff:").removesuffix("]"), int(visits)


def mesh_state(c: Any, k: int) -> tuple[str, str]:
    """Node k's mesh ip rules and the mesh rules of its nft tables."""
    hostname = c.node(k)["hostname"]
    rules = in_netns(hostname, "ip", "rule", "show", "priority", "19781").stdout.strip()
    nft = in_netns(hostname, "nft", "list", "ruleset").stdout
    return rules, "\n".join(line for line in nft.splitlines() if "0x4d45" in line)


def test_seed_through_the_mesh_on_every_node(cluster: Any) -> None:
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose(cluster.base)), STACK)
    wait_running(cluster, f"{STACK}_web", 5)
    wait_running(cluster, f"{STACK}_redis", 1)
    where = hostnames(cluster)
    web_nodes = {node for _, node in running(cluster, f"{STACK}_web")}
    assert len(web_nodes) >= 3, web_nodes

    last = 0
    deadline = time.monotonic() + 30  # every node's view of the other nodes' tasks
    for entry in range(1, NODES + 1):
        entry_name = cluster.node(entry)["hostname"]
        while True:
            seen: set[str] = set()
            for i in range(10):
                client = (entry + i) % NODES + 1  # from every node, its own address included
                host, addr, visits = visit(cluster, client, entry)
                # The client's own address reached the task, whichever node it runs on; only a
                # client that is itself the node of the task, through another node, shows as
                # that entry node (its reply would stay on its own node: network/mesh.py).
                task_node = where.get(host, host)
                want = cluster.node(client)
                if task_node == want["hostname"] and client != entry:
                    want = cluster.node(entry)
                assert addr == want["address"], (entry, client, host, task_node, addr)
                # One counter on the manager, counting up from every node.
                assert visits == last + 1, (entry, client, visits, last)
                last = visits
                seen.add(where.get(host, host))
            if seen - {entry_name} or time.monotonic() > deadline:
                break
        # Node `entry`'s port answers from tasks of other nodes (the mesh), not its own only.
        assert seen - {entry_name}, (entry_name, seen)
    for k in range(1, NODES + 1):
        rules, marks = mesh_state(cluster, k)
        assert rules.count("fwmark") >= NODES - 1 and marks, (k, rules, marks)

    # 127.0.0.1 on a node is in the mesh too: a loopback client (mapped onto 169.254.0.0/16 with
    # its port, network/nft.py) reaches the tasks of other nodes, the reply back the same way.
    seen = set()
    for _ in range(12):
        got = in_netns(cluster.node(2)["hostname"], "curl", "-s", "-m", "5", "http://127.0.0.1:4000/cgi-bin/visit")
        assert got.returncode == 0, got
        host, addr, _visits = got.stdout.split()
        assert addr.removeprefix("[::ffff:").removesuffix("]") == "169.254.0.1", got.stdout
        seen.add(where.get(host, host))
    assert seen - {cluster.node(2)["hostname"]}, seen

    # One task left: every node's port 4000 reaches it, nodes with no task of web included.
    cluster.shoal("service", "scale", "--detach", f"{STACK}_web=1")
    wait_running(cluster, f"{STACK}_web", 1)
    (_, only_node), = running(cluster, f"{STACK}_web")
    deadline = time.monotonic() + 20
    for entry in range(1, NODES + 1):
        while True:
            hosts = {where.get(h, h) for h, _, _ in (visit(cluster, entry, entry) for _ in range(3))}
            if hosts == {only_node} or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # a stopped task leaves the other nodes' rotation with the manager's view
        assert hosts == {only_node}, (entry, hosts, only_node)

    # stack rm: no mesh rule, ip rule or table is left on any node.
    cluster.shoal("stack", "rm", STACK)
    deadline = time.monotonic() + 30
    while True:
        left = {k: mesh_state(cluster, k) for k in range(1, NODES + 1)}
        left = {k: v for k, v in left.items() if v[0] or v[1]}
        if not left:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.3)
