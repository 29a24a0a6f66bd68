"""The cluster PKI without a network: root CA, node certificates, join tokens, renewal moment,
the certificates directory on disk, and the texts the CLI prints."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.cli import swarmtext
from shoal.errors import ShoalError
from shoal.manager import ca
from shoal.store.secretbox import FileKeys

ID_RE = re.compile(r"^[0-9a-z]{25}$")
TOKEN_RE = re.compile(r"^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$")


@pytest.fixture(scope="module")
def root() -> ca.RootCA:
    return ca.RootCA.create()


def _cert(pem: bytes) -> x509.Certificate:
    return ca.load_certificates(pem)[0]


def test_root_ca_as_swarmkit_makes_it(root: ca.RootCA) -> None:
    cert = root.cert
    assert cert.subject.rfc4514_string() == "CN=swarm-ca" == cert.issuer.rfc4514_string()
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=7300) <= life <= dt.timedelta(days=7300, hours=1)  # 630720000 s
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.digest == hashlib.sha256(root.cert_pem).hexdigest()
    assert root.key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")


def test_node_certificate_subject_sans_and_expiry(root: ca.RootCA) -> None:
    csr, _ = ca.generate_csr()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    node_id, cluster_id = ca.new_node_id(), ca.new_node_id()
    cert = _cert(root.sign_csr(csr, node_id, ca.WORKER_ROLE, cluster_id, now=now))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node_id
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-worker"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == cluster_id
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["swarm-worker", node_id]
    # 90 days from now, backdated 1 h
    assert cert.not_valid_before_utc == now - dt.timedelta(hours=1)
    assert cert.not_valid_after_utc == now + dt.timedelta(hours=2160)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(root.cert)
    # managers also answer to "swarm-ca", so a joining node can ask for the CA by that name
    mgr = _cert(root.sign_csr(csr, node_id, ca.MANAGER_ROLE, cluster_id))
    assert mgr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["swarm-manager", node_id, "swarm-ca"]
    assert root.verify_node_cert(mgr.public_bytes(serialization.Encoding.PEM)).role == ca.MANAGER_ROLE


def test_csr_subject_is_ignored(root: ca.RootCA) -> None:
    """A CSR asking for a manager's subject and SANs gets only what the CA decides."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil"),
                                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("swarm-manager")]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    ident = root.verify_node_cert(root.sign_csr(csr, "n" * 25, ca.WORKER_ROLE, "c" * 25))
    assert (ident.node_id, ident.role) == ("n" * 25, ca.WORKER_ROLE)


def test_bad_csrs_refused(root: ca.RootCA) -> None:
    with pytest.raises(ShoalError, match="not a PEM certificate request"):
        root.sign_csr(b"hello", "n" * 25, ca.WORKER_ROLE, "c" * 25)
    csr, _ = ca.generate_csr()
    body = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    body[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(body)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ShoalError, match="signature does not match"):
        root.sign_csr(tampered, "n" * 25, ca.WORKER_ROLE, "c" * 25)
    with pytest.raises(ShoalError, match="unknown node role"):
        root.sign_csr(csr, "n" * 25, "swarm-ca", "c" * 25)


def test_cert_expiry_settable_with_a_minimum(root: ca.RootCA) -> None:
    short = root.with_expiry(dt.timedelta(hours=2))
    cert = _cert(short.issue("n" * 25, ca.WORKER_ROLE, "c" * 25)[0])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=3)
    with pytest.raises(ShoalError, match=r"^minimum certificate expiry time is: 1h0m0s$"):
        root.with_expiry(dt.timedelta(minutes=59))


def test_certificate_of_another_ca_refused(root: ca.RootCA) -> None:
    other = ca.RootCA.create()
    cert, _ = other.issue("n" * 25, ca.MANAGER_ROLE, "c" * 25)
    with pytest.raises(ShoalError, match="not issued by this cluster's CA"):
        root.verify_node_cert(cert)


def test_renewal_moment_between_half_and_eighty_percent() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(hours=2161)
    rng = random.Random(7)
    delays = [ca.renewal_delay(start, end, now=start, rng=rng) for _ in range(500)]
    life = end - start
    assert all(life * 0.5 <= d < life * 0.8 for d in delays)
    assert len(set(delays)) > 400  # spread out, not one moment for every node
    assert max(delays) - min(delays) > life * 0.25
    # once past the moment: renew now
    assert ca.renewal_delay(start, end, now=end) == dt.timedelta(0)


def test_node_ids() -> None:
    ids = {ca.new_node_id() for _ in range(200)}
    assert len(ids) == 200 and all(ID_RE.match(i) for i in ids)


def test_join_token_format_and_parse(root: ca.RootCA) -> None:
    token = ca.generate_join_token(root)
    assert TOKEN_RE.match(token), token
    parsed = ca.parse_join_token(token)
    assert parsed.version == 1 and parsed.root_digest == root.digest and len(parsed.secret) == 25
    # the digest is the CA's sha256 in base 36, zero-padded to 50, as Go's %0*s
    assert int(token.split("-")[2], 36) == int(root.digest, 16)
    secrets_ = {ca.generate_join_token(root).split("-")[3] for _ in range(50)}
    assert len(secrets_) == 50 and all(len(s) == 25 for s in secrets_)
    # a FIPS (v2) token of the same CA parses too
    fips = f"SWMTKN-2-1-{token.split('-')[2]}-{token.split('-')[3]}"
    assert ca.parse_join_token(fips).fips


@pytest.mark.parametrize("bad", [
    "", "SWMTKN", "SWMTKN-1-abc-def", "SWMTKN-3-" + "a" * 50 + "-" + "b" * 25,
    "SWMTKN-1-" + "a" * 49 + "-" + "b" * 25, "SWMTKN-1-" + "a" * 50 + "-" + "b" * 26,
    "XXMTKN-1-" + "a" * 50 + "-" + "b" * 25, "SWMTKN-1-" + "!" * 50 + "-" + "b" * 25,
    "SWMTKN-1-" + "z" * 50 + "-" + "b" * 25,  # above 2^256
    "SWMTKN-2-7-" + "a" * 50 + "-" + "b" * 25, "SWMTKN-1-x-" + "a" * 50 + "-" + "b" * 25,
])
def test_invalid_join_tokens(bad: str) -> None:
    with pytest.raises(ShoalError, match="^invalid join token$"):
        ca.parse_join_token(bad)


def test_join_tokens_roles_and_rotation(root: ca.RootCA) -> None:
    tokens = ca.JoinTokens.create(root)
    assert tokens.worker != tokens.manager
    assert tokens.role_for(tokens.worker) == ca.WORKER_ROLE
    assert tokens.role_for(tokens.manager) == ca.MANAGER_ROLE
    assert tokens.role_for(tokens.worker[:-1]) is None
    assert tokens.role_for("") is None
    old_worker, manager = tokens.worker, tokens.manager
    new = tokens.rotate("worker", root)
    assert new != old_worker and tokens.role_for(old_worker) is None
    assert tokens.role_for(new) == ca.WORKER_ROLE and tokens.manager == manager
    assert ca.JoinTokens.from_dict(tokens.to_dict()).to_dict() == tokens.to_dict()
    with pytest.raises(ShoalError, match="^unknown role boss$"):
        tokens.rotate("boss", root)


def test_store_modes_and_atomic_files(tmp_path: Path) -> None:
    old = os.umask(0)  # a careless umask must not widen anything
    try:
        store = ca.CertStore(tmp_path / "state" / "certificates")
        root_ca, tokens, ident = ca.init_cluster(store)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.root_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.cert_path).st_mode) == 0o644
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt", "swarm-root-ca.key"]
    assert ident.role == ca.MANAGER_ROLE and store.identity() == ident
    loaded = store.load_root_ca()
    assert loaded.can_sign and loaded.digest == root_ca.digest
    assert ca.parse_join_token(tokens.worker).root_digest == root_ca.digest
    # a key someone made readable is refused, not used
    os.chmod(store.key_path, 0o644)
    with pytest.raises(ShoalError, match="mode 0644, a private key must be 0600"):
        store.load_node()
    os.chmod(store.key_path, 0o600)
    # a node certificate and a key that do not belong together are refused
    other_cert, _ = root_ca.issue("n" * 25, ca.WORKER_ROLE, "c" * 25)
    with pytest.raises(ShoalError, match="does not match its key"):
        store.save_node(other_cert, store.key_path.read_bytes())
    assert store.identity() == ident  # the pair on disk is untouched
    # a directory made earlier with a wide mode is tightened
    os.chmod(store.directory, 0o755)
    store.save_root_ca(root_ca)
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert [p for p in store.directory.iterdir() if p.name.startswith(".")] == []


def test_ca_key_sealed_at_rest(tmp_path: Path) -> None:
    keys = FileKeys(tmp_path / "keys")
    store = ca.CertStore(tmp_path / "certificates", keys=keys)
    root_ca, _, _ = ca.init_cluster(store)
    raw = store.root_key_path.read_bytes()
    assert b"PRIVATE KEY" not in raw and b"AES-256-GCM" in raw
    assert stat.S_IMODE(os.stat(store.root_key_path).st_mode) == 0o600
    assert store.load_root_ca().key_pem == root_ca.key_pem
    with pytest.raises(ShoalError, match="no key to open it"):
        ca.CertStore(store.directory).load_root_ca()
    with pytest.raises(ShoalError, match="does not open"):
        ca.CertStore(store.directory, keys=FileKeys(tmp_path / "other-keys")).load_root_ca()
    # the sealed key is bound to its CA certificate: put beside another CA's, it does not open
    other = ca.CertStore(tmp_path / "other", keys=keys)
    ca.init_cluster(other)
    (other.directory / "swarm-root-ca.key").write_bytes(raw)
    with pytest.raises(ShoalError, match="does not open"):
        other.load_root_ca()


def test_init_and_join_token_texts() -> None:
    token = "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25
    assert swarmtext.init_text("abcdefghijklmnopqrstuvwxy", token, "10.0.0.1:2377") == (
        "Swarm initialized: current node (abcdefghijklmnopqrstuvwxy) is now a manager.\n\n"
        "To add a worker to this swarm, run the following command:\n\n"
        f"    shoal swarm join --token {token} 10.0.0.1:2377\n\n"
        "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n")
    assert swarmtext.join_token_text("manager", token, "10.0.0.1:2377", rotated=True) == (
        "Successfully rotated manager join token.\n\n"
        "To add a manager to this swarm, run the following command:\n\n"
        f"    shoal swarm join --token {token} 10.0.0.1:2377\n\n")
    assert swarmtext.join_token_text("worker", token, "x:2377", quiet=True) == token + "\n"
    assert swarmtext.joined_text(False) == "This node joined a swarm as a worker.\n"
    with pytest.raises(ShoalError, match="^unknown role boss$"):
        swarmtext.join_token_text("boss", token, "x")


def test_root_rotation_chain(tmp_path: Path) -> None:
    """During a rotation, certificates from the new key lead to the old root through the
    cross-signed certificate; without it they do not; after it, to the new root alone."""
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    assert rotating.rotating and rotating.digest == old.digest  # tokens unchanged meanwhile
    cross = ca.load_certificates(rotating.intermediates_pem)[0]
    assert cross.issuer == old.cert.subject and cross.public_key() == rotating.signer_cert.public_key()
    pem = rotating.issue("n" * 25, ca.WORKER_ROLE, "c" * 25)[0]
    assert len(ca.load_certificates(pem)) == 2
    assert old.verify_node_cert(pem).node_id == "n" * 25
    leaf_only = ca.load_certificates(pem)[0].public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ShoalError, match="not issued by this cluster's CA"):
        old.verify_node_cert(leaf_only)
    new, tokens = ca.finish_rotation(rotating)
    assert not new.rotating and new.cert_pem == rotating.signing_cert_pem
    assert ca.parse_join_token(tokens.worker).root_digest == new.digest != old.digest
    assert new.verify_node_cert(pem).node_id == new.verify_node_cert(leaf_only).node_id
    with pytest.raises(ShoalError, match="not issued by this cluster's CA"):
        new.verify_node_cert(old.issue("m" * 25, ca.WORKER_ROLE, "c" * 25)[0])
    # a CA certificate is never accepted as a node's
    with pytest.raises(ShoalError):
        old.verify_node_cert(rotating.intermediates_pem)
    with pytest.raises(ShoalError, match="no root CA rotation is in progress"):
        ca.finish_rotation(new)


def test_root_rotation_persisted(tmp_path: Path) -> None:
    keys = FileKeys(tmp_path / "keys")
    store = ca.CertStore(tmp_path / "certificates", keys=keys)
    old, _, _ = ca.init_cluster(store)
    rotating = ca.begin_rotation(old)
    store.save_root_ca(rotating)
    assert stat.S_IMODE(os.stat(store.rotation_path).st_mode) == 0o600
    assert b"PRIVATE KEY" not in store.rotation_path.read_bytes()  # sealed like the CA key
    loaded = store.load_root_ca()
    assert loaded.rotating and loaded.digest == old.digest and loaded.key_pem == rotating.key_pem
    assert store.root_cert_path.read_bytes() == old.cert_pem
    new, _ = ca.finish_rotation(loaded)
    store.save_root_ca(new)
    assert not store.rotation_path.exists()
    again = store.load_root_ca()
    assert not again.rotating and again.digest == new.digest and again.key_pem == new.key_pem


def test_tls_info_tracks_rotation_convergence() -> None:
    """What `swarm ca --rotate` watches: a node has converged when its certificate's issuer is
    the cluster's current issuer and its trusted root the cluster's."""
    old = ca.RootCA.create()
    before = old.issue("n" * 25, ca.WORKER_ROLE, "c" * 25)[0]
    assert ca.node_tls_info(before, old.cert_pem) == ca.desired_tls_info(old)
    rotating = ca.begin_rotation(old)
    want = ca.desired_tls_info(rotating)
    assert want["TrustRoot"] == old.cert_pem.decode()
    assert want["CertIssuerPublicKey"] != ca.desired_tls_info(old)["CertIssuerPublicKey"]
    assert ca.node_tls_info(before, old.cert_pem) != want
    during = rotating.issue("n" * 25, ca.WORKER_ROLE, "c" * 25)[0]
    assert ca.node_tls_info(during, old.cert_pem) == want
    new, _ = ca.finish_rotation(rotating)
    assert ca.node_tls_info(during, new.cert_pem) == ca.desired_tls_info(new)
