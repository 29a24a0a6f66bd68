"""`swarm ca --rotate` on a 3-node cluster of real shoalds in network namespaces over mutual TLS
(tests/cluster/conftest.py): the rotation converges (every node renews from the new key at
once, then the new root is the only trusted one), nodes stay Ready and tasks keep running, the
join tokens change to the new root's digest: the old token joins nobody, the new one does."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cluster.conftest import NetnsCluster
from cluster.test_swarm_join import init, not_joined, wait_ready
from shoal.manager.ca import load_certificates, parse_join_token, pem_digest

ROTATION_WAIT = 120.0


def running_tasks(manager: object, service: str) -> int:
    lines = manager.shoal("service", "ps", "--format", "{{json .}}", service).stdout.splitlines()  # type: ignore[attr-defined]
    tasks = [json.loads(line) for line in lines if line.strip()]
    return sum(1 for t in tasks if t["DesiredState"] == "Running" and t["CurrentState"].startswith("Running"))


def wait_running(manager: object, service: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while running_tasks(manager, service) != count:
        assert time.monotonic() < deadline, f"{service}: not {count} tasks running"
        time.sleep(0.3)


def test_rotate_root_ca_on_three_nodes(netns_cluster: NetnsCluster, busybox_tar: Path) -> None:
    manager = netns_cluster.add()
    old_token = init(manager)
    workers = [netns_cluster.add(), netns_cluster.add()]
    for worker in workers:
        worker.shoal("swarm", "join", "--token", old_token, f"{manager.addr}:2377")
    wait_ready(manager, 3)
    for node in (manager, *workers):
        node.wait_api()
        node.shoal("import", str(busybox_tar), "localhost/busybox:test")
    compose = netns_cluster.base / "stack.yml"
    compose.write_text("services:\n  s:\n    image: localhost/busybox:test\n    command: ['sleep', '1000']\n"
                       "    deploy:\n      replicas: 3\n")
    manager.shoal("stack", "deploy", "--detach", "-c", str(compose), "rot")
    wait_running(manager, "rot_s", 3)
    old_root = manager.shoal("swarm", "ca").stdout
    old_manager_token = manager.shoal("swarm", "join-token", "-q", "manager").stdout.strip()

    started = time.monotonic()
    out = manager.shoal("swarm", "ca", "--rotate", timeout=ROTATION_WAIT).stdout
    took = time.monotonic() - started
    print(f"rotation converged in {took:.1f} s")
    lines = out.splitlines()
    assert lines[0].startswith("desired root digest: sha256:")
    assert any(l.startswith("  rotated TLS certificates: [") and l.endswith("] 3/3 nodes") for l in lines), out
    assert any(l.startswith("  rotated CA certificates:  [") and l.endswith("] 3/3 nodes") for l in lines), out
    new_root = out[out.index("-----BEGIN CERTIFICATE-----"):]
    assert new_root != old_root and len(load_certificates(new_root.encode())) == 1
    assert manager.shoal("swarm", "ca").stdout == new_root
    assert lines[-1] == "-----END CERTIFICATE-----"

    # Every node now trusts only the new root, on disk and in its record.
    root_file = (manager.root / "certificates" / "swarm-root-ca.crt").read_bytes()
    assert root_file.decode() == new_root
    for node in (manager, *workers):
        assert (node.root / "certificates" / "swarm-root-ca.crt").read_bytes() == root_file, node.name
        assert not (node.root / "certificates" / "swarm-root-ca-rotation.json").exists()
        info = json.loads(manager.shoal("node", "inspect", node.name).stdout)[0]["Description"]["TLSInfo"]
        assert info["TrustRoot"] == new_root, node.name

    # Nodes stay Ready (their sessions go on over the new certificates) and the tasks still run.
    time.sleep(3)
    wait_ready(manager, 3)
    wait_running(manager, "rot_s", 3)

    # The tokens changed and carry the new root's digest.
    new_token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new_token != old_token
    assert parse_join_token(new_token).root_digest == pem_digest(root_file)
    assert manager.shoal("swarm", "join-token", "-q", "manager").stdout.strip() != old_manager_token

    # Bad use: one clear line, nothing rotated.
    result = workers[0].shoal("swarm", "ca", "--rotate", check=False)
    assert result.returncode != 0 and "This node is not a swarm manager." in result.stderr, result.stderr
    result = manager.shoal("swarm", "ca", "--cert-expiry", "48h", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().endswith("`--cert-expiry` flag requires the `--rotate` flag to update the CA")
    assert manager.shoal("swarm", "ca").stdout == new_root

    # -d: no output, the rotation goes on in the background; another, started while it may
    # still run (-q: no output either), replaces it, and the cluster ends on the last root.
    assert manager.shoal("swarm", "ca", "--rotate", "-d").stdout == ""
    assert manager.shoal("swarm", "ca", "--rotate", "-q", timeout=ROTATION_WAIT).stdout == ""
    deadline = time.monotonic() + ROTATION_WAIT
    while "Root Rotation In Progress: false" not in manager.shoal("info").stdout:
        assert time.monotonic() < deadline, "the detached rotation did not finish"
        time.sleep(0.3)
    third_root = manager.shoal("swarm", "ca").stdout
    assert third_root != new_root
    # The manager finished; the workers fetch the new root at their next look (every 2 s).
    deadline = time.monotonic() + 30
    while any((n.root / "certificates" / "swarm-root-ca.crt").read_text() != third_root for n in workers):
        assert time.monotonic() < deadline, "the workers did not take the new root"
        time.sleep(0.3)
    wait_ready(manager, 3)
    root_file = third_root.encode()
    assert parse_join_token(manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()).root_digest \
        == pem_digest(root_file)
    new_token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()

    # The old token joins nobody; the new one does.
    late = netns_cluster.add()
    result = late.shoal("swarm", "join", "--token", old_token, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and "remote CA does not match fingerprint" in result.stderr, result.stderr
    not_joined(late)
    late.shoal("swarm", "join", "--token", new_token, f"{manager.addr}:2377")
    wait_ready(manager, 4)
    manager.shoal("stack", "rm", "rot", check=False)
