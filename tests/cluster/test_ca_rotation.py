"""`swarm ca --rotate` on a 3-node cluster of real shoalds in network namespaces over mutual TLS
(tests/cluster/conftest.py): the rotation converges (told in the heartbeats' answers, every
node renews from the new key at once, then the new root is the only trusted one), nodes stay
Ready and tasks keep running, the join tokens change to the new root's digest: the old token
joins nobody, the new one does. Then to a root the user brings (--ca-cert/--ca-key)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import cfssl_helpers
from cluster.conftest import NetnsCluster, NetnsNode
from cluster.test_swarm_join import init, not_joined, wait_ready
from shoal.manager.ca import load_certificates, parse_join_token, pem_digest

ROTATION_WAIT = 120.0


def user_root(cn: str = "my-own-ca") -> tuple[bytes, bytes]:
    """A self-signed RSA root CA and its key, as `openssl req -x509 -newkey rsa:2048` makes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


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
    # The manager finished; its next heartbeat answers tell the workers, which renew for the root.
    deadline = time.monotonic() + 30
    while any((n.root / "certificates" / "swarm-root-ca.crt").read_text() != third_root for n in workers):
        assert time.monotonic() < deadline, "the workers did not take the new root"
        time.sleep(0.3)
    wait_ready(manager, 3)

    # A root the user brings (RSA, as openssl makes one): a bad key is one line and nothing
    # changes; with its own key, the same rotation, and the cluster ends on that root.
    cert_pem, key_pem = user_root()
    (netns_cluster.base / "ca.crt").write_bytes(cert_pem)
    (netns_cluster.base / "ca.key").write_bytes(key_pem)
    (netns_cluster.base / "other.key").write_bytes(user_root()[1])
    ca_cert, ca_key = str(netns_cluster.base / "ca.crt"), str(netns_cluster.base / "ca.key")
    result = manager.shoal("swarm", "ca", "--rotate", "--ca-cert", ca_cert, "--ca-key",
                           str(netns_cluster.base / "other.key"), check=False)
    assert result.returncode != 0 and result.stderr.strip().endswith("certificate key mismatch"), result.stderr
    assert "Root Rotation In Progress: false" in manager.shoal("info").stdout
    out = manager.shoal("swarm", "ca", "--rotate", "--ca-cert", ca_cert, "--ca-key", ca_key,
                        timeout=ROTATION_WAIT).stdout
    assert out.endswith(cert_pem.decode()) and "3/3 nodes" in out, out
    for node in (manager, *workers):
        assert (node.root / "certificates" / "swarm-root-ca.crt").read_bytes() == cert_pem, node.name
    wait_ready(manager, 3)
    wait_running(manager, "rot_s", 3)

    # An external CA: a root whose key only a CFSSL server holds (`cfssl serve` in the manager's
    # namespace, on its loopback). A URL nobody answers on is refused; the rotation converges
    # with node certificates signed by CFSSL; the manager keeps no key of it.
    ext_root = user_root("external-ca")
    ext_dir = netns_cluster.base / "cfssl"
    cfssl, url = start_cfssl(manager, ext_dir, ext_root)
    try:
        (ext_dir / "root.crt").write_bytes(ext_root[0])
        result = manager.shoal("swarm", "ca", "--rotate", "--ca-cert", str(ext_dir / "root.crt"), "--external-ca",
                               "protocol=cfssl,url=https://127.0.0.1:9/api/v1/cfssl/sign", check=False)
        assert result.returncode != 0 and result.stderr.strip().endswith(
            "there must be at least one valid, reachable external CA corresponding to the desired CA certificate"), \
            result.stderr
        out = manager.shoal("swarm", "ca", "--rotate", "--ca-cert", str(ext_dir / "root.crt"), "--external-ca",
                            f"protocol=cfssl,url={url}", timeout=ROTATION_WAIT).stdout
        assert out.endswith(ext_root[0].decode()) and "3/3 nodes" in out, out
        certs_dir = manager.root / "certificates"
        assert not (certs_dir / "swarm-root-ca.key").exists()
        assert f"   External CAs:\n     cfssl: {url}\n" in manager.shoal("info").stdout
        for node in (manager, *workers):
            assert (node.root / "certificates" / "swarm-root-ca.crt").read_bytes() == ext_root[0], node.name
            leaf = load_certificates((node.root / "certificates" / "swarm-node.crt").read_bytes())[0]
            assert leaf.issuer == load_certificates(ext_root[0])[0].subject, node.name
        wait_ready(manager, 3)
        wait_running(manager, "rot_s", 3)
        root_file = ext_root[0]
        assert parse_join_token(manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()).root_digest \
            == pem_digest(root_file)
        new_token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()

        # The old token joins nobody; the new one does (its certificate from CFSSL).
        late = netns_cluster.add()
        result = late.shoal("swarm", "join", "--token", old_token, f"{manager.addr}:2377", check=False)
        assert result.returncode != 0 and "remote CA does not match fingerprint" in result.stderr, result.stderr
        not_joined(late)
        late.shoal("swarm", "join", "--token", new_token, f"{manager.addr}:2377")
        wait_ready(manager, 4)
    finally:
        cfssl.kill()
        cfssl.wait()
    manager.shoal("stack", "rm", "rot", check=False)


def start_cfssl(node: NetnsNode, directory: Path, root: tuple[bytes, bytes]) -> tuple[subprocess.Popen[bytes], str]:
    """`cfssl serve` in `node`'s namespace on 127.0.0.1, signing with `root`; its TLS
    certificate is issued by that root (what the manager checks: swarmkit's validateExternalCAURL)."""
    port = 8888
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 0.5).close()"
    return cfssl_helpers.start_cfssl(directory, root, root, port,
                                     lambda: node.exec(sys.executable, "-c", probe).returncode == 0,
                                     prefix=("ip", "netns", "exec", node.name))

