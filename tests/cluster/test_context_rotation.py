"""The context `cluster create` makes follows NAME-1's own certificates (issue 11 item 3): after
`swarm ca --rotate`, typed through that very context, the manager trusts only the new root and
NAME-1 holds a certificate from it; a copy made at create time would now fail at the TLS
handshake, the context goes on working. The rotation's progress poll itself runs through the
context while the files change under it.

Real shoalds in network namespaces over mutual TLS, under the machine-wide heavy lock."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.test_local_cluster import LocalCluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("ctxrot"))
    c.name = f"shoalcr{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", "2", c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def ready_nodes(c: LocalCluster) -> list[str]:
    out = c.shoal("--context", c.name, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.endswith(" Ready"))


def test_context_follows_the_manager_through_a_root_rotation(cluster: LocalCluster) -> None:
    certs = Path(cluster.node(1)["root"]) / "certificates"
    inspect = json.loads(cluster.shoal("context", "inspect", cluster.name).stdout)[0]
    # Docker's shape; the store holds no copy of the manager's key, the Metadata names its source.
    assert inspect["Metadata"] == {"Description": f"local cluster {cluster.name} (shoal cluster)",
                                   "NodeCertificates": str(certs)}
    assert inspect["TLSMaterial"] == {}
    assert inspect["Endpoints"]["docker"]["Host"].startswith("tcp://")
    assert not (Path(inspect["Storage"]["TLSPath"]) / "docker").exists()

    # A copy of the same files, as `cluster create` used to make: the control for the bug.
    copy_dir = cluster.base / "copy"
    copy_dir.mkdir(mode=0o700)
    for name, node_name in (("ca.pem", "swarm-root-ca.crt"), ("cert.pem", "swarm-node.crt"),
                            ("key.pem", "swarm-node.key")):
        (copy_dir / name).write_bytes((certs / node_name).read_bytes())
    cluster.shoal("context", "create", "copied", "--host", inspect["Endpoints"]["docker"]["Host"],
                  "--tls-ca", str(copy_dir / "ca.pem"), "--tls-cert", str(copy_dir / "cert.pem"),
                  "--tls-key", str(copy_dir / "key.pem"))
    deadline = time.monotonic() + 30
    while ready_nodes(cluster) != [f"{cluster.name}-1", f"{cluster.name}-2"]:
        assert time.monotonic() < deadline, cluster.shoal("--context", cluster.name, "node", "ls").stdout
        time.sleep(0.5)
    assert cluster.shoal("--context", "copied", "node", "ls", "-q").stdout.count("\n") == 2
    old_root = (certs / "swarm-root-ca.crt").read_bytes()

    out = cluster.shoal("--context", cluster.name, "swarm", "ca", "--rotate", timeout=120).stdout
    assert any(l.startswith("  rotated CA certificates:  [") and l.endswith("] 2/2 nodes") for l in out.splitlines()), out
    new_root = (certs / "swarm-root-ca.crt").read_bytes()
    assert new_root != old_root and new_root.decode().strip() in out

    # Through the context, at once: both nodes listed, both Ready.
    assert ready_nodes(cluster) == [f"{cluster.name}-1", f"{cluster.name}-2"]
    assert cluster.shoal("--context", cluster.name, "swarm", "ca").stdout.encode() == new_root
    # The copy is refused now, as it was before this fix for the context itself.
    refused = cluster.shoal("--context", "copied", "node", "ls", check=False)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "TLS to tcp://" in refused.stderr, refused.stderr

    # context rm takes the context, never the node's certificates it followed.
    cluster.shoal("context", "rm", "copied")
    assert all((certs / f).is_file() for f in ("swarm-root-ca.crt", "swarm-node.crt", "swarm-node.key"))

