"""An external CA (manager/externalca.py, swarmkit's ca/external.go) against a real `cfssl serve`
(Debian's golang-cfssl) on loopback: the desired root is accepted only when a CFSSL server whose
TLS certificate it issued answers; node certificates are CFSSL's, checked; the rotation to it
is cross-signed by the old root's key; the store keeps the URLs in place of the key."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import cfssl_helpers
from shoal.errors import InvalidArgument, ShoalError
from shoal.manager import ca
from shoal.manager.externalca import ExternalCA, parse_spec

CFSSL = shutil.which("cfssl")
pytestmark = pytest.mark.skipif(CFSSL is None, reason="cfssl (golang-cfssl) is not installed")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


@dataclass
class Cfssl:
    url: str
    cert_pem: bytes  # the external root: cfssl holds its key, shoal never sees it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cfssl(directory: Path, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                tls_issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> tuple[subprocess.Popen[bytes], str]:
    """`cfssl serve` on the host's 127.0.0.1 signing with `root`, its TLS certificate from `tls_issuer`."""
    port = _free_port()

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def pem(pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> tuple[bytes, bytes]:
        return pair[0].public_bytes(serialization.Encoding.PEM), _pem_key(pair[1])

    return cfssl_helpers.start_cfssl(directory, pem((root, root_key)), pem(tls_issuer), port, listening)


@pytest.fixture
def cfssl(tmp_path: Path) -> Iterator[Cfssl]:
    root, root_key = make_ca("external-ca")
    proc, url = start_cfssl(tmp_path / "cfssl", root, root_key, (root, root_key))
    try:
        yield Cfssl(url, root.public_bytes(serialization.Encoding.PEM))
    finally:
        proc.kill()
        proc.wait()


def manager_store(tmp_path: Path) -> tuple[ca.CertStore, ca.RootCA]:
    """A manager's certificate directory after `swarm init` (its own node certificate)."""
    store = ca.CertStore(tmp_path / "certs")
    root, _, _ = ca.init_cluster(store)
    return store, root


def test_rotation_to_an_external_root_signs_through_cfssl_and_is_stored_as_urls(tmp_path: Path, cfssl: Cfssl) -> None:
    store, old = manager_store(tmp_path)
    external = ExternalCA([cfssl.url], store.cert_path, store.key_path)
    new = ca.desired_root(cfssl.cert_pem, b"", external=external)
    assert new.can_sign and new.key_pem_or_none is None
    rotating = ca.rotate_to(old, old, new)
    store.save_root_ca(rotating)
    loaded = store.load_root_ca()
    assert loaded.rotating and loaded.external is not None and loaded.external.urls == [cfssl.url]
    assert store.external_urls() == [cfssl.url]
    cert, _ = loaded.issue("node1", ca.WORKER_ROLE, "cluster1")
    ident = old.verify_node_cert(cert)  # cfssl's leaf, then the cross-signed root: the old root trusts it
    assert (ident.node_id, ident.role, ident.cluster_id) == ("node1", ca.WORKER_ROLE, "cluster1")
    leaf = ca.load_certificates(cert)[0]
    assert leaf.issuer == ca.load_certificates(cfssl.cert_pem)[0].subject
    assert {n.value for n in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value} == \
        {"swarm-worker", "node1"}

    finished, _ = ca.finish_rotation(loaded)
    store.save_root_ca(finished)
    assert not store.root_key_path.exists() and store.external_path.exists() and store.has_root_key()
    assert oct(store.external_path.stat().st_mode & 0o777) == "0o600"
    assert store.external_urls() == [cfssl.url]
    again = store.load_root_ca()
    assert not again.rotating and again.external is not None and again.cert_pem == cfssl.cert_pem
    manager_cert, _ = again.issue("mgr", ca.MANAGER_ROLE, "cluster1")
    assert again.verify_node_cert(manager_cert).role == ca.MANAGER_ROLE
    # away from it: refused (its key is cfssl's), and to another external root likewise
    with pytest.raises(InvalidArgument, match="external CA"):
        ca.begin_rotation(store.load_trusted_root_ca())
    other = ca.RootCA.create()
    fake_external = ca.RootCA(other.cert_pem, None, external=external)
    with pytest.raises(InvalidArgument, match="^rotating from one external CA to a different external CA is not supported$"):
        ca.rotate_to(again, store.load_trusted_root_ca(), fake_external)


def test_an_external_ca_must_answer_with_a_certificate_from_the_desired_root(tmp_path: Path, cfssl: Cfssl) -> None:
    store, _ = manager_store(tmp_path)
    reach = "there must be at least one valid, reachable external CA corresponding to the desired CA certificate"
    with pytest.raises(InvalidArgument, match=f"^{reach}$"):
        ca.desired_root(cfssl.cert_pem, b"")  # neither key nor external CA
    # a server that is not up
    nobody = ExternalCA([f"https://127.0.0.1:{_free_port()}/api/v1/cfssl/sign"], store.cert_path, store.key_path)
    with pytest.raises(InvalidArgument, match=f"^{reach}$"):
        ca.desired_root(cfssl.cert_pem, b"", external=nobody)
    # cfssl up, but the root given is another one: its TLS certificate does not chain to it
    other, other_key = make_ca("another-ca")
    other_pem = other.public_bytes(serialization.Encoding.PEM)
    external = ExternalCA([cfssl.url], store.cert_path, store.key_path)
    with pytest.raises(InvalidArgument, match=f"^{reach}$"):
        ca.desired_root(other_pem, b"", external=external)


def test_a_cfssl_that_signs_with_another_key_than_it_claims_is_caught(tmp_path: Path) -> None:
    """The TLS certificate is from the desired root, but the server signs with another CA: the
    manager refuses what comes back instead of handing it to a node."""
    store, old = manager_store(tmp_path)
    desired, desired_key = make_ca("desired-ca")
    wrong, wrong_key = make_ca("wrong-ca")
    proc, url = start_cfssl(tmp_path / "cfssl", wrong, wrong_key, (desired, desired_key))
    try:
        external = ExternalCA([url], store.cert_path, store.key_path)
        new = ca.desired_root(desired.public_bytes(serialization.Encoding.PEM), b"", external=external)
        rotating = ca.rotate_to(old, old, new)
        with pytest.raises(ShoalError, match="not from the root CA"):
            rotating.issue("node1", ca.WORKER_ROLE, "cluster1")
    finally:
        proc.kill()
        proc.wait()


def test_external_ca_flag_parsing_is_docker_clis() -> None:
    assert parse_spec("protocol=cfssl,url=https://ca.example:8888/api/v1/cfssl/sign").url == \
        "https://ca.example:8888/api/v1/cfssl/sign"
    assert parse_spec("PROTOCOL=CFSSL,url=https://x").protocol == "cfssl"
    for spec, error in (("url=https://x", "the external-ca option needs a protocol= parameter"),
                        ("protocol=cfssl", "the external-ca option needs a url= parameter"),
                        ("protocol=acme,url=https://x", "unrecognized external CA protocol acme"),
                        ("protocol", "invalid field 'protocol' must be a key=value pair")):
        with pytest.raises(InvalidArgument) as info:
            parse_spec(spec)
        assert str(info.value) == error
    with pytest.raises(InvalidArgument, match="invalid HTTP scheme"):
        parse_spec("protocol=cfssl,url=http://ca.example/api/v1/cfssl/sign")


def test_info_shows_the_external_cas_as_docker_cli() -> None:
    from shoal.cli.swarm import info_lines

    info = {"LocalNodeState": "active", "NodeID": "n1", "ControlAvailable": True, "ClusterID": "c1",
            "Managers": 1, "Nodes": 1, "Cluster": {
                "Spec": {"task_history_limit": 5, "heartbeat_period": 5.0, "cert_expiry": 7776000.0},
                "RootRotationInProgress": False,
                "ExternalCAs": [{"Protocol": "cfssl", "URL": "https://10.0.0.1:8888/api/v1/cfssl/sign"}]}}
    lines = info_lines(info)
    at = lines.index("  CA Configuration:")
    assert lines[at + 1].startswith("   Expiry Duration: ")
    assert lines[at + 2:at + 5] == ["   External CAs:", "     cfssl: https://10.0.0.1:8888/api/v1/cfssl/sign",
                                    "  Root Rotation In Progress: false"]
