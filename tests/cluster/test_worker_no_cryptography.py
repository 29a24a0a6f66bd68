"""A worker's shoald never maps cryptography (its Rust extension and OpenSSL bindings, about
11 MiB of every node's memory): not after `swarm join` in a local cluster (the supervisor's
zygote must not pre-import it for every node), and not after its certificate was renewed, which
runs in a short-lived child (agent/certchild.py). A root rotation makes the worker renew twice
(from the new key, then for the new root) without restarting it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.test_local_cluster import LocalCluster
from shoal.manager.ca import CertStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def crypto_maps(pid: int) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/cryptography/" in line]


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
    # the manager is a fork of the same zygote, and signs: it does load it (so the check sees it)
    manager = cluster.pid(1)
    assert manager is not None
    cluster.shoal("node", "ls")
    assert crypto_maps(manager) != []

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
