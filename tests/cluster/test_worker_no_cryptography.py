"""A worker's shoald never maps cryptography (its Rust extension and OpenSSL bindings, about
11 MiB of every node's memory): not after `swarm join` in a local cluster (the supervisor's
zygote must not pre-import it for every node), and not after its certificate was renewed, which
runs in a short-lived child (agent/certchild.py). A root rotation makes the worker renew twice
(from the new key, then for the new root) without restarting it.

Nor does a manager's, on its common paths (`swarm init`, a join, `info`, `join-token
--rotate`): it signs in a child that lingers a few seconds (manager/cachild.py), started again
when one is needed, and reaped once it leaves. (A root rotation still parses the roots in the
manager's own process: the first test's rotation is run after its checks.)"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.test_local_cluster import LocalCluster
from shoal.manager.ca import CertStore
from shoal.manager.cachild import LINGER

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def crypto_maps(pid: int) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/cryptography/" in line]


def ca_children(pid: int) -> list[int]:
    """The manager's CA child processes (python -m shoal.manager.cachild) among pid's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"shoal.manager.cachild" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                pass  # it just left
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path)
    c.name = f"nocry{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", "2", c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def test_worker_maps_no_cryptography_after_join_and_renewal(cluster: LocalCluster) -> None:
    worker = cluster.pid(2)
    assert worker is not None
    certs = CertStore(Path(cluster.node(2)["root"]) / "certificates")
    facts = certs.facts()  # written at join, for the worker's own process to read
    assert facts is not None and facts.identity.role == "swarm-worker"
    assert crypto_maps(worker) == []
    manager = cluster.pid(1)
    assert manager is not None
    cluster.shoal("node", "ls")
    assert crypto_maps(manager) == []  # it signed the join in its child

    old_cert = certs.cert_path.read_bytes()
    # On the manager's own socket: the cluster context's client certificate is from the old root.
    out = cluster.on_node(1, "swarm", "ca", "--rotate").stdout
    assert any(line.startswith("  rotated CA certificates:  [") and line.endswith("] 2/2 nodes")
               for line in out.splitlines()), out
    new_root = cluster.on_node(1, "swarm", "ca").stdout.encode()
    deadline = time.monotonic() + 30
    while certs.root_cert_path.read_bytes() != new_root:  # the last renewal, for the new root
        assert time.monotonic() < deadline, "the worker did not take the new root"
        time.sleep(0.3)

    assert cluster.pid(2) == worker, "the worker's shoald was restarted"
    assert certs.cert_path.read_bytes() != old_cert
    renewed = certs.facts()  # the child stored the facts of what it wrote
    assert renewed is not None and renewed.identity.node_id == facts.identity.node_id
    assert renewed.tls_digest != facts.tls_digest
    assert crypto_maps(worker) == []
    assert cluster.on_node(1, "node", "ls").stdout.count(" Ready ") == 2


def test_manager_signs_in_a_child(cluster: LocalCluster) -> None:
    manager = cluster.pid(1)
    assert manager is not None
    assert crypto_maps(manager) == []  # after swarm init, the listener's start and a join
    for child in ca_children(manager):  # a child that died: the next signature starts another
        os.kill(child, signal.SIGKILL)

    worker = cluster.pid(2)
    assert cluster.on_node(2, "swarm", "leave", "--force").stdout.strip() == "Node left the swarm."
    deadline = time.monotonic() + 30
    while cluster.pid(2) in (None, worker) or not cluster.answers(2):  # restarted as a one-node manager
        assert time.monotonic() < deadline, "node 2 did not start again after leaving"
        time.sleep(0.2)
    hostname = cluster.node(2)["hostname"]
    # its old identity Down first: the manager refuses a second live node with its hostname
    while f"{hostname} Down" not in cluster.on_node(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout:
        assert time.monotonic() < deadline, cluster.on_node(1, "node", "ls").stdout
        time.sleep(0.3)
    token = cluster.on_node(1, "swarm", "join-token", "-q", "worker").stdout.strip()
    cluster.on_node(2, "swarm", "join", "--token", token, f"{cluster.node(1)['address']}:2377")
    children = ca_children(manager)
    assert len(children) == 1, children  # the join was signed there (it lingers LINGER seconds)
    assert crypto_maps(children[0]) != []  # the check sees cryptography where it is loaded

    # what a user asks of a manager every day: answered without cryptography in shoald
    assert "Is Manager: true" in cluster.on_node(1, "info").stdout
    cluster.on_node(1, "node", "ls")
    assert cluster.on_node(1, "swarm", "join-token", "-q", "--rotate", "worker").stdout.strip() != token
    assert cluster.on_node(1, "swarm", "ca").stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert crypto_maps(manager) == []

    deadline = time.monotonic() + LINGER + 15
    while Path(f"/proc/{children[0]}").exists():  # gone once idle, and reaped: no zombie
        assert time.monotonic() < deadline, "the CA child did not leave once idle"
        time.sleep(0.3)
    assert ca_children(manager) == []
    deadline = time.monotonic() + 30
    while cluster.on_node(1, "node", "ls").stdout.count(" Ready ") != 2:
        assert time.monotonic() < deadline, cluster.on_node(1, "node", "ls").stdout
        time.sleep(0.3)
    assert cluster.pid(1) == manager
