"""A worker's shoald reads what it needs of its own certificate from the NodeFacts stored beside
it (manager/ca.py), written by a child process that parses it (agent/certchild.py), and a
listener reads a peer's identity from ssl's decoded certificate (tlsconfig.py): none of the
three loads cryptography in the long-lived process. Real certificates, a real child process."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.agent import certchild
from shoal.errors import ShoalError
from shoal.manager.ca import (WORKER_ROLE, CertStore, NodeFacts, RootCA, begin_rotation, new_node_id,
                              node_tls_info, tls_digest)
from shoal.tlsconfig import identity_of_peercert

# In a fresh interpreter: what a worker's shoald imports for its cluster layer and uses in steady
# state (its TLS client context from the stored root, its facts), then whether cryptography came.
PROBE = """
import sys
from pathlib import Path
import shoal.daemon
from shoal.agent import join, session_https, imagefetch
from shoal.api import tcp, swarmapi
from shoal.cluster.supervisor import PRELOAD
import importlib
for m in PRELOAD:
    importlib.import_module(m)
from shoal.manager.ca import CertStore
from shoal.tlscontext import client_context
store = CertStore(Path(sys.argv[1]))
client_context(store.root_pem(), store.cert_path, store.key_path)
assert store.facts() is not None
print(sorted(m for m in sys.modules if m.split(".")[0] == "cryptography")[:3])
"""


def worker_certs(directory: Path) -> tuple[RootCA, CertStore]:
    root = RootCA.create()
    store = CertStore(directory)
    store.save_root_ca(RootCA(root.cert_pem))
    cert, key = root.issue(new_node_id(), WORKER_ROLE, new_node_id())
    store.save_node(cert, key)
    return root, store


def test_facts_come_from_a_child_and_name_their_files(tmp_path: Path) -> None:
    root, store = worker_certs(tmp_path / "certs")
    assert store.facts() is None  # never written
    facts = asyncio.run(certchild.run("facts", str(store.directory)))
    assert facts == store.facts()
    assert facts.identity == store.identity()
    cert, _ = store.load_node()
    assert facts.tls_digest == tls_digest(node_tls_info(cert, root.cert_pem))
    assert store.facts_path.stat().st_mode & 0o777 == 0o644

    # a new certificate (from a rotating root: another issuer) makes the stored facts stale
    rotating = begin_rotation(root)
    cert2, key2 = rotating.issue(facts.identity.node_id, WORKER_ROLE, facts.identity.cluster_id)
    store.save_node(cert2, key2)
    assert store.facts() is None
    again = store.write_facts()
    assert again.tls_digest != facts.tls_digest and store.facts() == again

    # so does another root beside the same certificate
    store.save_root_ca(RootCA(rotating.signing_cert_pem or b""))
    assert store.facts() is None

    store.remove()
    assert not store.facts_path.exists()


def test_child_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ShoalError, match="swarm-node.crt: not found; this node is not part of a swarm"):
        asyncio.run(certchild.run("facts", str(tmp_path / "none")))
    out = subprocess.run([sys.executable, "-m", "shoal.agent.certchild", "bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("usage: ")
    _, store = worker_certs(tmp_path / "certs")
    # renewal against a manager that is not there: the child's one line, nothing replaced
    before = store.cert_path.read_bytes()
    with pytest.raises(ShoalError, match="could not reach the manager at 127.0.0.1:9"):
        asyncio.run(certchild.run("renew", "127.0.0.1:9", str(store.directory)))
    assert store.cert_path.read_bytes() == before


def test_facts_json_refuses_garbage() -> None:
    with pytest.raises(ShoalError, match="not the facts of a node certificate"):
        NodeFacts.from_json(b'{"NodeID": "x"}')


def test_peer_identity_from_the_decoded_certificate(tmp_path: Path) -> None:
    root, store = worker_certs(tmp_path / "certs")
    decoded = ssl._ssl._test_decode_cert(str(store.cert_path))  # type: ignore[attr-defined]  # getpeercert()'s decoder
    assert identity_of_peercert(decoded) == store.identity()
    assert identity_of_peercert({}) is None  # what getpeercert() gives for an unverified peer
    assert identity_of_peercert({"subject": ((("commonName", "n"),), (("organizationalUnitName", "admin"),),
                                             (("organizationName", "c"),)),
                                 "notBefore": "Jan  1 00:00:00 2026 GMT",
                                 "notAfter": "Jan  1 00:00:00 2027 GMT"}) is None  # not a node role
    two_cn = dict(decoded, subject=decoded["subject"] + ((("commonName", "other"),),))
    assert identity_of_peercert(two_cn) is None


def test_a_workers_steady_state_loads_no_cryptography(tmp_path: Path) -> None:
    _, store = worker_certs(tmp_path / "certs")
    store.write_facts()
    out = subprocess.run([sys.executable, "-c", PROBE, str(store.directory)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
