"""The cluster's PKI, as swarmkit's ca/ package: a root CA, node certificates whose subject says
who a node is (CN = node ID, OU = role, O = cluster ID), join tokens that carry the root CA's
digest, and the on-disk store of keys and certificates.

What swarmkit does and shoal copies (ca/certificates.go, ca/config.go, ca/server.go):
- the root CA is ECDSA P-256, self-signed, CN `swarm-ca`, valid 20 years;
- a node certificate is signed from the node's CSR, of which only the public key is used; the
  subject and SANs come from the CA (SANs: the role, the node ID, and `swarm-ca` for managers, so
  a client can ask for "swarm-manager" as the TLS server name and get only a manager);
- node certificates last 90 days by default (minimum 1 h), backdated by 1 h, and are renewed at a
  random point between 50% and 80% of their validity so that nodes do not all renew at once;
- a join token is `SWMTKN-1-<sha256 of the CA certificate PEM, base 36, 50 digits>-<128-bit
  secret, base 36, 25 digits>`; the role a joining node gets is the token it presented, compared
  in constant time against the worker and the manager token;
- a root rotation (`swarm ca --rotate`, manager/controlapi/ca_rotation.go): a new root's key
  signs, its certificate cross-signed by the old root travels with every certificate, the
  trusted root and the tokens change only when the rotation finishes.

This module is pure PKI: it does no networking (caserver.py serves it, agent/join.py uses it)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal import ids, paths
from shoal.errors import InvalidArgument, ShoalError
from shoal.store import secretbox

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography import exceptions as _exceptions
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
else:
    class _Deferred:
        """A cryptography module imported at its first use, not at this module's import: a worker
        imports this module for its names, paths and CertStore but never signs or parses a
        certificate in-process (agent/certchild.py does, in a short-lived child), and so never
        maps cryptography's Rust extension and OpenSSL bindings (about 11 MiB per node)."""

        def __init__(self, name: str, attr: str | None = None) -> None:
            self._name, self._attr = name, attr

        def __getattr__(self, attr: str) -> Any:
            import importlib

            module = importlib.import_module(self._name)
            return getattr(getattr(module, self._attr) if self._attr else module, attr)

    x509 = _Deferred("cryptography.x509")
    hashes = _Deferred("cryptography.hazmat.primitives.hashes")
    serialization = _Deferred("cryptography.hazmat.primitives.serialization")
    ec = _Deferred("cryptography.hazmat.primitives.asymmetric.ec")
    rsa = _Deferred("cryptography.hazmat.primitives.asymmetric.rsa")
    ExtendedKeyUsageOID = _Deferred("cryptography.x509.oid", "ExtendedKeyUsageOID")
    NameOID = _Deferred("cryptography.x509.oid", "NameOID")
    _exceptions = _Deferred("cryptography.exceptions")

ROOT_CN = "swarm-ca"
MANAGER_ROLE = "swarm-manager"
WORKER_ROLE = "swarm-worker"
CA_ROLE = "swarm-ca"
ROLES = (MANAGER_ROLE, WORKER_ROLE)

ROOT_CA_EXPIRY = dt.timedelta(seconds=630720000)  # cfssl's "630720000s": 20 years of 365 days
DEFAULT_NODE_CERT_EXPIRY = dt.timedelta(hours=2160)  # 90 days
MIN_NODE_CERT_EXPIRY = dt.timedelta(hours=1)
CERT_BACKDATE = dt.timedelta(hours=1)  # clocks between nodes may disagree by this much
RENEW_LOWER, RENEW_UPPER = 0.5, 0.8

TOKEN_PREFIX = "SWMTKN"
TOKEN_BASE = 36
DIGEST_LEN = 50  # 2^256 in base 36 is 50 digits
SECRET_LEN = 25  # 2^128 in base 36 is 25 digits
SECRET_BYTES = 16
INVALID_TOKEN = "invalid join token"  # swarmkit's errInvalidJoinToken, word for word
BAD_TOKEN = "A valid join token is necessary to join this cluster"  # ca/server.go

MAX_PEM = 64 * 1024
CA_API_PREFIX = "/swarm/ca"  # where the manager's TCP listener mounts caserver.make_ca_app  # a CSR or certificate larger than this is not one swarmkit would make

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36_RE = re.compile(r"[0-9a-zA-Z]+")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _base36(number: int, width: int) -> str:
    """big.Int.Text(36), zero-padded on the left to `width` as Go's `%0*s` does."""
    digits = []
    while number:
        number, rem = divmod(number, TOKEN_BASE)
        digits.append(_B36[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def format_duration(delta: dt.timedelta) -> str:
    """Go's time.Duration.String() for whole seconds: `1h0m0s`, `2160h0m0s`, `30m0s`."""
    total = int(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def check_cert_expiry(expiry: dt.timedelta) -> dt.timedelta:
    """`--cert-expiry` as swarmkit's controlapi checks it."""
    if expiry < MIN_NODE_CERT_EXPIRY:
        raise InvalidArgument(f"minimum certificate expiry time is: {format_duration(MIN_NODE_CERT_EXPIRY)}")
    return expiry


def new_node_id() -> str:
    """identity.NewID: 25 base-36 characters."""
    return ids.new_swarm_id()


def pem_digest(cert_pem: bytes) -> str:
    """The root CA's digest as swarmkit computes it: sha256 of the PEM bytes (the whole bundle,
    so a man in the middle cannot add roots of his own beside a matching one)."""
    return hashlib.sha256(cert_pem).hexdigest()


@dataclass(frozen=True)
class RootPEM:
    """A root CA's certificate(s) as stored, unparsed: all a join token needs (its digest), with
    no cryptography loaded."""

    cert_pem: bytes

    @property
    def digest(self) -> str:
        return pem_digest(self.cert_pem)


# ---------------------------------------------------------------------------------------------
# Keys, CSRs, certificates



def _key_pem(key: PrivateKey) -> bytes:
    # "EC PRIVATE KEY" ("RSA PRIVATE KEY" for a root a user brought), as swarmkit (cfssl) writes keys
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def load_private_key(key_pem: bytes) -> PrivateKey:
    """An ECDSA key (every key shoal makes), or an RSA one (a root CA the user brings with
    `swarm ca --rotate --ca-cert --ca-key` may be either, as swarmkit's ensureCertKeyMatch)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ShoalError("not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ShoalError("the key is neither an ECDSA nor an RSA key")
    return key


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    if len(pem) > MAX_PEM:
        raise ShoalError("the certificate is too large")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ShoalError("not a PEM certificate") from None
    if not certs:
        raise ShoalError("no certificate found")
    return certs


def generate_csr() -> tuple[bytes, bytes]:
    """(CSR PEM, key PEM) for a new node key, ECDSA P-256 as cfssl's default key request. The
    subject is left empty: the CA fills it in, whatever a CSR says."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _check_public_key(public: Any) -> None:
    """The key types swarmkit's ensureCertKeyMatch accepts: ECDSA P-256/384/521, RSA >= 2048."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise ShoalError(f"unsupported key curve {public.curve.name}")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ShoalError("RSA keys must be at least 2048 bits")
    else:
        raise ShoalError("unsupported key type in the CSR")


def parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    if len(csr_pem) > MAX_PEM:
        raise ShoalError("the CSR is too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ShoalError("invalid CSR: not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise ShoalError("invalid CSR: its signature does not match its key")
    _check_public_key(csr.public_key())
    return csr


@dataclass(frozen=True)
class NodeIdentity:
    """Who a certificate says a node is."""

    node_id: str
    role: str
    cluster_id: str
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def is_manager(self) -> bool:
        return self.role == MANAGER_ROLE

    def renew_after(self, now: dt.datetime | None = None) -> dt.timedelta:
        return renewal_delay(self.not_before, self.not_after, now)


def identity_of(cert: x509.Certificate) -> NodeIdentity:
    """(node ID, role, cluster ID) from a node certificate's subject."""

    def one(oid: x509.ObjectIdentifier) -> str:
        found = cert.subject.get_attributes_for_oid(oid)
        if len(found) != 1:
            raise ShoalError("the certificate is not a node certificate of a swarm")
        value = found[0].value
        return value if isinstance(value, str) else value.decode()

    role = one(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if role not in ROLES:
        raise ShoalError(f"the certificate's role {role!r} is not a swarm node role")
    return NodeIdentity(one(NameOID.COMMON_NAME), role, one(NameOID.ORGANIZATION_NAME),
                        cert.not_valid_before_utc, cert.not_valid_after_utc)


def renewal_delay(not_before: dt.datetime, not_after: dt.datetime,
                  now: dt.datetime | None = None, rng: random.Random | None = None) -> dt.timedelta:
    """swarmkit's calculateRandomExpiry: how long from now until the certificate should be
    renewed, a random whole minute between 50% and 80% of its validity (0 when that is past).
    The spread keeps a cluster's nodes from all renewing in the same minute."""
    minutes = (not_after - not_before).total_seconds() / 60
    low, high = int(minutes * RENEW_LOWER), int(minutes * RENEW_UPPER)
    pick = low if high - low < 1 else (rng or random.SystemRandom()).randrange(low, high)
    delay = not_before + dt.timedelta(minutes=pick) - (now or _now())
    return max(delay, dt.timedelta(0))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, _exceptions.InvalidSignature):
        return False
    return True


class RootCA:
    """A cluster's root CA: the trusted root certificate(s), and the signing key when this node
    signs (a manager). During a root rotation (swarmkit's RootRotation) the trusted roots are
    still the old ones while the signer is the new root, and every certificate issued carries
    `intermediates` (the new root cross-signed by the old), so nodes that trust only the old root
    accept it until the rotation finishes."""

    def __init__(self, cert_pem: bytes, key_pem: bytes | None = None,
                 cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY, *,
                 signing_cert_pem: bytes | None = None, intermediates_pem: bytes = b"",
                 external: Any = None) -> None:
        roots = load_certificates(cert_pem)
        for cert in roots:
            # as NewRootCA: every certificate of the bundle is a valid self-signed CA
            if not _issued_by(cert, cert):
                raise ShoalError("invalid root CA certificate: it is not self-signed")
            if not _is_ca(cert):
                raise ShoalError("invalid root CA certificate: it is not a CA")
        self.cert_pem = cert_pem
        self.roots = roots
        self.cert = roots[0]
        self.digest = pem_digest(cert_pem)
        self.cert_expiry = check_cert_expiry(cert_expiry)
        self.signing_cert_pem = signing_cert_pem
        self.signer_cert = load_certificates(signing_cert_pem)[0] if signing_cert_pem else self.cert
        if signing_cert_pem and not (_is_ca(self.signer_cert) and _issued_by(self.signer_cert, self.signer_cert)):
            raise ShoalError("invalid signing CA certificate: it is not a self-signed CA")
        self.intermediates_pem = intermediates_pem
        self.intermediates = load_certificates(intermediates_pem) if intermediates_pem else []
        if self.intermediates:
            first = self.intermediates[0]
            # as NewRootCA: the first intermediate stands for the signer (same subject and key)
            if first.subject != self.signer_cert.subject or first.public_key() != self.signer_cert.public_key():
                raise ShoalError("invalid intermediate chain - the first intermediate must have the same "
                                 "subject and public key as the signing cert")
            if not all(_is_ca(c) for c in self.intermediates) or self._chain_to_root(self.intermediates) is None:
                raise ShoalError("invalid intermediate chain: it does not lead to the root CA")
        elif signing_cert_pem and not any(c.public_key() == self.signer_cert.public_key() for c in roots):
            raise ShoalError("the signing CA certificate needs an intermediate chain to the root CA")
        self._key: PrivateKey | None = None
        if key_pem is not None:
            key = load_private_key(key_pem)
            if key.public_key() != self.signer_cert.public_key():
                raise ShoalError("the root CA key does not match its certificate")
            self._key = key
        # manager/externalca.ExternalCA: a CFSSL server holds the signer's key (no key here)
        self.external = external if key_pem is None else None

    def _chain_to_root(self, chain: list[x509.Certificate], now: dt.datetime | None = None) -> int | None:
        """How many of `chain` (each issuing the one before) it takes to reach a trusted root
        from chain[0]'s issuer, or None when it does not; intermediates must be valid CAs now."""
        now = now or _now()
        current = chain[0]
        for used in range(len(chain)):
            if any(_issued_by(current, root) for root in self.roots):
                return used
            if used + 1 == len(chain):
                return None
            nxt = chain[used + 1]
            if not _is_ca(nxt) or not nxt.not_valid_before_utc <= now <= nxt.not_valid_after_utc:
                return None
            if not _issued_by(current, nxt):
                return None
            current = nxt
        return None

    @property
    def rotating(self) -> bool:
        return self.signing_cert_pem is not None

    @classmethod
    def create(cls, cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY) -> RootCA:
        """A new self-signed root, as swarmkit's CreateRootCA("swarm-ca")."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + ROOT_CA_EXPIRY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert_expiry)

    @property
    def can_sign(self) -> bool:
        return self._key is not None or self.external is not None

    @property
    def key_pem_or_none(self) -> bytes | None:
        return _key_pem(self._key) if self._key is not None else None

    @property
    def signer_pem(self) -> bytes:
        return self.signing_cert_pem or self.signer_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        if self._key is None:
            raise ShoalError("this node does not hold the root CA key")
        return _key_pem(self._key)

    def with_expiry(self, cert_expiry: dt.timedelta) -> RootCA:
        """The same CA signing with another `--cert-expiry` (swarm update)."""
        return RootCA(self.cert_pem, self.key_pem_or_none, cert_expiry, signing_cert_pem=self.signing_cert_pem,
                      intermediates_pem=self.intermediates_pem, external=self.external)

    def sign_csr(self, csr_pem: bytes, node_id: str, role: str, cluster_id: str,
                 now: dt.datetime | None = None) -> bytes:
        """swarmkit's ParseValidateAndSignCSR: only the CSR's public key is used; subject and
        SANs come from the arguments. Returns the certificate PEM. With an external CA, CFSSL
        signs (a blocking call: run it in a thread) and its answer is checked here."""
        if role not in ROLES:
            raise ShoalError(f"unknown node role {role!r}")
        csr = parse_csr(csr_pem)
        now = now or _now()
        hosts = [role, node_id] + ([CA_ROLE] if role == MANAGER_ROLE else [])
        if self._key is None and self.external is not None:
            return self._external_sign(csr_pem, csr, node_id, role, cluster_id, hosts)
        if self._key is None:
            raise ShoalError("this node does not hold the root CA key")
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.signer_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + self.cert_expiry)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.intermediates_pem

    def _external_sign(self, csr_pem: bytes, csr: x509.CertificateSigningRequest, node_id: str, role: str,
                       cluster_id: str, hosts: list[str]) -> bytes:
        """CFSSL's certificate, accepted only when it is what swarmkit would have signed: from
        the signer, for the CSR's key, with the subject asked for, not a CA."""
        pem = self.external.sign(csr_pem, node_id, role, cluster_id, hosts, trust_pem=self.signer_pem)
        try:
            leaf = load_certificates(pem)[0]
            ident = identity_of(leaf)
        except ShoalError as exc:
            raise ShoalError(f"the external CA signed a bad certificate: {exc}") from None
        if not _issued_by(leaf, self.signer_cert) or _is_ca(leaf):
            raise ShoalError("the external CA signed a certificate that is not from the root CA")
        if leaf.public_key() != csr.public_key() or (ident.node_id, ident.role, ident.cluster_id) != \
                (node_id, role, cluster_id):
            raise ShoalError("the external CA signed a certificate for another key or node")
        return leaf.public_bytes(serialization.Encoding.PEM) + self.intermediates_pem

    def issue(self, node_id: str, role: str, cluster_id: str) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a node whose key is made here: the first manager at
        `swarm init` (IssueAndSaveNewCertificates)."""
        csr, key = generate_csr()
        return self.sign_csr(csr, node_id, role, cluster_id), key

    def verify_node_cert(self, cert_pem: bytes, now: dt.datetime | None = None) -> NodeIdentity:
        """A node certificate (with the intermediates that came with it) that leads to one of
        this CA's roots and is valid now; its identity."""
        now = now or _now()
        chain = load_certificates(cert_pem)
        if _is_ca(chain[0]) or self._chain_to_root(chain, now) is None:
            raise ShoalError("the certificate was not issued by this cluster's CA")
        if not chain[0].not_valid_before_utc <= now <= chain[0].not_valid_after_utc:
            raise ShoalError("the certificate has expired or is not yet valid")
        return identity_of(chain[0])

    def cross_sign(self, other_ca_pem: bytes) -> bytes:
        """swarmkit's CrossSignCACertificate: `other_ca_pem`'s subject, key and dates, issued by
        this CA, so that what the other CA signs leads to this CA's root."""
        if self._key is None and self.external is not None:
            raise InvalidArgument("rotating away from a root whose key an external CA holds is not supported yet: "
                                  "bring that root's key with --ca-cert and --ca-key first")
        if self._key is None:
            raise ShoalError("this node does not hold the root CA key")
        other = load_certificates(other_ca_pem)[0]
        if not _is_ca(other):
            raise ShoalError("certificate not a CA")
        builder = (x509.CertificateBuilder()
                   .subject_name(other.subject).issuer_name(self.signer_cert.subject)
                   .public_key(other.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(other.not_valid_before_utc)
                   .not_valid_after(other.not_valid_after_utc))
        for ext in other.extensions:
            if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
                builder = builder.add_extension(ext.value, ext.critical)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                        critical=False)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def desired_tls_info(root_ca: RootCA) -> dict[str, str]:
    """The cluster's TLSInfo as the API shows it (`swarm inspect`): the trusted root, and the
    subject and public key that issue certificates now (the new root's during a rotation).
    A rotation has converged when every node's node_tls_info matches it."""
    return {"TrustRoot": root_ca.cert_pem.decode(),
            "CertIssuerSubject": base64.b64encode(root_ca.signer_cert.subject.public_bytes()).decode(),
            "CertIssuerPublicKey": base64.b64encode(_spki(root_ca.signer_cert)).decode()}


def node_tls_info(cert_pem: bytes, trust_root_pem: bytes) -> dict[str, str]:
    """A node's TLSInfo (`node inspect`): its trusted root, and who issued its certificate
    (found among the certificate's chain and the roots)."""
    chain = load_certificates(cert_pem)
    leaf = chain[0]
    issuer = next((c for c in chain[1:] + load_certificates(trust_root_pem) if _issued_by(leaf, c)), None)
    return {"TrustRoot": trust_root_pem.decode(),
            "CertIssuerSubject": base64.b64encode(leaf.issuer.public_bytes()).decode(),
            "CertIssuerPublicKey": base64.b64encode(_spki(issuer)).decode() if issuer else ""}


def begin_rotation(current: RootCA) -> RootCA:
    """`swarm ca --rotate`, first step: a new root whose key signs from now on, its certificate
    cross-signed by the current root; the trusted root (and so the join tokens) stay the same
    until every node holds a certificate from the new key."""
    new = RootCA.create(current.cert_expiry)
    return RootCA(current.cert_pem, new.key_pem, current.cert_expiry, signing_cert_pem=new.cert_pem,
                  intermediates_pem=current.cross_sign(new.cert_pem))


MIN_ROOT_EXPIRY = dt.timedelta(hours=8760)  # controlapi's minRootExpiration: cfssl's OneYear


def normalize_pem(pem: bytes) -> bytes:
    """swarmkit's NormalizePEMs: each certificate re-encoded, headers, comments and spacing
    dropped, so that the same certificate compares equal however its file was written."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in load_certificates(pem))


def desired_root(cert_pem: bytes, key_pem: bytes, cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
                 external: Any = None) -> RootCA:
    """A root CA a user brings (`swarm ca --rotate --ca-cert FILE --ca-key FILE`, or with
    `--external-ca` instead of the key: `external`, a manager/externalca.ExternalCA), checked as
    swarmkit's validateCAConfig and NewRootCA check it, with their words: one certificate, a
    self-signed CA valid now and for at least a year more, and the key that goes with it or an
    external CA reachable over TLS whose certificate it issued."""
    if not cert_pem.strip():
        if key_pem.strip():
            raise InvalidArgument("if a signing CA key is provided, the signing CA cert must also be provided")
        raise InvalidArgument("no valid root CA certificates found")
    if not key_pem.strip() and external is None:
        raise InvalidArgument("there must be at least one valid, reachable external CA corresponding to the "
                              "desired CA certificate")
    try:
        certs = load_certificates(cert_pem)
    except ShoalError as exc:
        raise InvalidArgument(f"invalid root certificates: {exc}") from None
    if len(certs) != 1:
        raise InvalidArgument("the desired CA certificate cannot contain multiple certificates")
    cert, now = certs[0], _now()
    if now < cert.not_valid_before_utc:
        raise InvalidArgument("error while validating Root CA Certificate: x509: certificate has expired or is "
                              f"not yet valid: current time {now:%Y-%m-%dT%H:%M:%SZ} is before "
                              f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}")
    if now > cert.not_valid_after_utc:
        raise InvalidArgument("error while validating Root CA Certificate: x509: certificate has expired or is "
                              f"not yet valid: current time {now:%Y-%m-%dT%H:%M:%SZ} is after "
                              f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048 or public.public_numbers().e == 1:
            raise InvalidArgument("unsupported RSA key parameters")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise InvalidArgument("unsupported ECDSA key parameters")
    else:
        raise InvalidArgument("unknown or unsupported certificate public key algorithm")
    key: PrivateKey | None = None
    if key_pem.strip():
        try:
            key = load_private_key(key_pem)
        except ShoalError as exc:
            raise InvalidArgument(f"malformed private key: {exc}") from None
        if key.public_key() != public:
            raise InvalidArgument("certificate key mismatch")
    if cert.not_valid_after_utc < now + MIN_ROOT_EXPIRY:
        raise InvalidArgument("CA certificate expires too soon")
    normalized = normalize_pem(cert_pem)
    if key is None and not external.reachable(normalized):
        raise InvalidArgument("there must be at least one valid, reachable external CA corresponding to the "
                              "desired CA certificate")
    try:
        return RootCA(normalized, _key_pem(key) if key is not None else None, cert_expiry,
                      external=external if key is None else None)
    except ShoalError as exc:
        raise InvalidArgument(f"error while validating Root CA Certificate: {exc}") from None


def rotate_to(current: RootCA, trusted: RootCA, new: RootCA) -> RootCA:
    """controlapi's validateCAConfig with a desired root: `current` is the CA as it is (maybe
    rotating), `trusted` the trusted root with its key, `new` a checked desired_root.
    - the trusted root itself: any rotation under way is given up, the root signs again;
    - the root a rotation under way already goes to: its key replaced, the rotation goes on;
    - else a new rotation to it, cross-signed by the trusted root (replacing one under way)."""
    key, external = new.key_pem_or_none, new.external
    if new.cert_pem == normalize_pem(trusted.cert_pem):
        return RootCA(trusted.cert_pem, key, current.cert_expiry, external=external)
    if new.cert.public_key() == trusted.cert.public_key():
        raise InvalidArgument("Cannot update to a cert with an identical key")
    if current.rotating and current.signing_cert_pem is not None \
            and normalize_pem(current.signing_cert_pem) == new.cert_pem:
        return RootCA(current.cert_pem, key, current.cert_expiry, signing_cert_pem=current.signing_cert_pem,
                      intermediates_pem=current.intermediates_pem, external=external)
    if not trusted.can_sign or (trusted.key_pem_or_none is None and key is None):
        raise InvalidArgument("rotating from one external CA to a different external CA is not supported")
    return RootCA(trusted.cert_pem, key, current.cert_expiry, signing_cert_pem=new.cert_pem,
                  intermediates_pem=trusted.cross_sign(new.cert_pem), external=external)


def tls_digest(info: dict[str, str]) -> str:
    """A short name for a TLSInfo (trusted root, issuer subject and key): what the dispatcher
    tells each node in its heartbeats, and what the node compares with its own to know that a
    root rotation wants it to renew (swarmkit sends the root CA and the node's certificate
    state in the session's messages)."""
    h = hashlib.sha256()
    for key in ("TrustRoot", "CertIssuerSubject", "CertIssuerPublicKey"):
        h.update(info[key].encode() + b"\0")
    return "sha256:" + h.hexdigest()


def finish_rotation(rotating: RootCA) -> tuple[RootCA, JoinTokens]:
    """The last step: the new root is the only one trusted, and both join tokens are made again
    (they carry the root's digest), as swarmkit's finishRootRotation."""
    if rotating.signing_cert_pem is None:
        raise ShoalError("no root CA rotation is in progress")
    new = RootCA(rotating.signing_cert_pem, rotating.key_pem_or_none, rotating.cert_expiry,
                 external=rotating.external)
    return new, JoinTokens.create(new)


# ---------------------------------------------------------------------------------------------
# Join tokens


@dataclass(frozen=True)
class ParsedJoinToken:
    version: int
    root_digest: str  # hex sha256 of the root CA PEM
    secret: str
    fips: bool = False


def generate_join_token(root_ca: RootCA | RootPEM) -> str:
    """GenerateJoinToken (the non-FIPS form)."""
    secret = int.from_bytes(secrets.token_bytes(SECRET_BYTES), "big")
    return (f"{TOKEN_PREFIX}-1-{_base36(int(root_ca.digest, 16), DIGEST_LEN)}"
            f"-{_base36(secret, SECRET_LEN)}")


def parse_join_token(token: str) -> ParsedJoinToken:
    """ParseJoinToken: `SWMTKN-1-<digest>-<secret>` or `SWMTKN-2-<0|1>-<digest>-<secret>`."""
    split = token.split("-")
    if len(split) < 4 or split[0] != TOKEN_PREFIX:
        raise InvalidArgument(INVALID_TOKEN)
    if split[1] == "1" and len(split) == 4:
        version, fips = 1, False
    elif split[1] == "2" and len(split) == 5 and split[2] in ("0", "1"):
        version, fips = 2, split[2] == "1"
    else:
        raise InvalidArgument(INVALID_TOKEN)
    root, secret = split[-2], split[-1]
    if len(root) != DIGEST_LEN or len(secret) != SECRET_LEN:
        raise InvalidArgument(INVALID_TOKEN)
    # swarmkit lets a digest with letters outside base 36 through as zero; refusing it is stricter
    if not _B36_RE.fullmatch(root) or not _B36_RE.fullmatch(secret):
        raise InvalidArgument(INVALID_TOKEN)
    value = int(root, TOKEN_BASE)
    if value >> 256:
        raise InvalidArgument(INVALID_TOKEN)
    return ParsedJoinToken(version, f"{value:064x}", secret, fips)


class JoinTokens:
    """The cluster's worker and manager tokens (RootCA.JoinTokens in the cluster object)."""

    def __init__(self, worker: str, manager: str) -> None:
        self.worker = worker
        self.manager = manager

    @classmethod
    def create(cls, root_ca: RootCA | RootPEM) -> JoinTokens:
        return cls(generate_join_token(root_ca), generate_join_token(root_ca))

    def get(self, role: str) -> str:
        if role == "worker":
            return self.worker
        if role == "manager":
            return self.manager
        raise InvalidArgument(f"unknown role {role}")

    def rotate(self, role: str, root_ca: RootCA | RootPEM) -> str:
        """`join-token --rotate worker|manager`: a new secret; the old token stops admitting
        new nodes at once (nodes that joined with it keep their certificates)."""
        token = generate_join_token(root_ca)
        if role == "worker":
            self.worker = token
        elif role == "manager":
            self.manager = token
        else:
            raise InvalidArgument(f"unknown role {role}")
        return token

    def role_for(self, token: str) -> str | None:
        """The role a token admits, or None. Both comparisons always run, each in constant time,
        so the time taken says nothing about which token, or how much of one, matched."""
        given = token.encode()
        manager = hmac.compare_digest(self.manager.encode(), given)
        worker = hmac.compare_digest(self.worker.encode(), given)
        if manager:
            return MANAGER_ROLE
        if worker:
            return WORKER_ROLE
        return None

    def to_dict(self) -> dict[str, str]:
        return {"Worker": self.worker, "Manager": self.manager}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JoinTokens:
        return cls(str(data["Worker"]), str(data["Manager"]))


# ---------------------------------------------------------------------------------------------
# On disk: <state root>/certificates, as swarmkit's swarm/certificates


ROOT_CERT_FILE = "swarm-root-ca.crt"
ROOT_KEY_FILE = "swarm-root-ca.key"
NODE_CERT_FILE = "swarm-node.crt"
NODE_KEY_FILE = "swarm-node.key"
ROTATION_FILE = "swarm-root-ca-rotation.json"  # the new root, its cross-signed cert and key (0600)
EXTERNAL_FILE = "swarm-root-ca-external.json"  # the CFSSL URLs that sign for a root without its key
FACTS_FILE = "swarm-node-facts.json"  # NodeFacts of the certificate and root beside it (public)
KEY_MODE = 0o600
CERT_MODE = 0o644  # public data, as swarmkit's certPerms; the directory itself is 0700
_SEALED_MARK = "shoal-sealed-key"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes, mode: int) -> Path:
    """`data` in a new file beside `path`, created with `mode` (never wider, whatever the umask)
    and flushed to disk; the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """tmp + fsync + rename + fsync of the directory: a reader sees the old file or the new one,
    never half of one, even across a crash."""
    tmp = _write_tmp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class NodeFacts:
    """What a node's long-lived process needs to know of its own certificate (who it says the
    node is, when it expires, its TLSInfo digest), found by parsing it once where cryptography
    is loaded anyway (join, renewal: agent/certchild.py) and stored beside it, so that a worker
    reads them with json alone. `cert_sha256`/`root_sha256` name the exact files they describe:
    facts of any other certificate or root are stale and never used."""

    identity: NodeIdentity
    tls_digest: str
    cert_sha256: str
    root_sha256: str

    def to_json(self) -> bytes:
        ident = self.identity
        return (json.dumps({"NodeID": ident.node_id, "Role": ident.role, "ClusterID": ident.cluster_id,
                            "NotBefore": ident.not_before.isoformat(), "NotAfter": ident.not_after.isoformat(),
                            "TLSDigest": self.tls_digest, "CertSHA256": self.cert_sha256,
                            "RootSHA256": self.root_sha256}, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeFacts:
        try:
            d = json.loads(data)
            ident = NodeIdentity(str(d["NodeID"]), str(d["Role"]), str(d["ClusterID"]),
                                 dt.datetime.fromisoformat(d["NotBefore"]), dt.datetime.fromisoformat(d["NotAfter"]))
            return cls(ident, str(d["TLSDigest"]), str(d["CertSHA256"]), str(d["RootSHA256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ShoalError(f"not the facts of a node certificate ({exc})") from None


class CertStore:
    """The node's certificates directory. Keys are 0600 and the directory 0700; the CA key may
    be sealed with the secret-box key (store/secretbox.py), so that a copy of this directory
    alone does not let anyone sign certificates for the cluster."""

    def __init__(self, directory: Path, keys: secretbox.KeySource | None = None) -> None:
        self.directory = Path(directory)
        self.keys = keys  # given: the CA key is sealed at rest with it
        self.root_cert_path = self.directory / ROOT_CERT_FILE
        self.root_key_path = self.directory / ROOT_KEY_FILE
        self.cert_path = self.directory / NODE_CERT_FILE
        self.key_path = self.directory / NODE_KEY_FILE
        self.rotation_path = self.directory / ROTATION_FILE
        self.external_path = self.directory / EXTERNAL_FILE
        self.facts_path = self.directory / FACTS_FILE

    def _external(self, urls: Any) -> Any:
        """manager/externalca.ExternalCA for stored URLs; it presents this node's certificate."""
        from shoal.manager.externalca import ExternalCA

        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ShoalError(f"{self.directory}: the external CA URLs are not a list of URLs")
        return ExternalCA(urls, self.cert_path, self.key_path)

    def _ensure_dir(self) -> None:
        paths.ensure_private_dir(self.directory)

    def _read(self, path: Path, private: bool) -> bytes:
        try:
            with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                data = f.read(MAX_PEM + 1)
        except FileNotFoundError:
            raise ShoalError(f"{path}: not found; this node is not part of a swarm") from None
        except OSError as exc:
            raise ShoalError(f"{path}: {exc.strerror}") from None
        if private and mode & 0o077:
            raise ShoalError(f"{path}: mode {mode:04o}, a private key must be 0600")
        if len(data) > MAX_PEM:
            raise ShoalError(f"{path}: too large for a key or certificate")
        return data

    def has_node_cert(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def has_root_key(self) -> bool:
        """This node signs: it holds the root's key, or the URLs of the CFSSL server that does."""
        return self.root_key_path.exists() or self.external_path.exists()

    def _seal_key(self, key: bytes, signer_pem: bytes) -> bytes:
        if self.keys is None:
            return key
        record = secretbox.seal(key, secretbox.binding("ca-key", pem_digest(signer_pem)), self.keys)
        return (json.dumps({_SEALED_MARK: 1, "sealed": record}) + "\n").encode()

    def _open_key(self, path: Path, key: bytes, signer_pem: bytes) -> bytes:
        """The CA key as stored: PEM, or sealed and bound to the certificate it signs with."""
        if not key.lstrip().startswith(b"{"):
            return key
        try:
            record = json.loads(key)["sealed"]
        except (ValueError, KeyError, TypeError):
            raise ShoalError(f"{path}: not a sealed key") from None
        if self.keys is None:
            raise ShoalError(f"{path}: the CA key is sealed and no key to open it was given")
        try:
            return secretbox.unseal(record, secretbox.binding("ca-key", pem_digest(signer_pem)), self.keys)
        except ShoalError as exc:
            raise ShoalError(f"{path}: the sealed CA key does not open ({exc})") from None

    def save_root_ca(self, root_ca: RootCA) -> None:
        """The root CA. During a rotation only the rotation file changes (one atomic write); when
        it finishes, the new root's key and certificate replace the old as a pair, then the
        rotation file goes."""
        self._ensure_dir()
        if root_ca.rotating:
            assert root_ca.signing_cert_pem is not None
            if not self.root_cert_path.exists():
                atomic_write(self.root_cert_path, root_ca.cert_pem, CERT_MODE)
            state: dict[str, Any] = {"Signer": root_ca.signing_cert_pem.decode(),
                                     "Intermediates": root_ca.intermediates_pem.decode()}
            if root_ca.key_pem_or_none is not None:
                state["Key"] = self._seal_key(root_ca.key_pem, root_ca.signing_cert_pem).decode()
            elif root_ca.external is not None:
                state["External"] = root_ca.external.urls
            atomic_write(self.rotation_path, json.dumps(state).encode(), KEY_MODE)
            return
        if root_ca.key_pem_or_none is None and root_ca.external is not None:
            # a root whose key the CFSSL server holds: its URLs take the place of the key file
            atomic_write(self.external_path, json.dumps(root_ca.external.urls).encode(), KEY_MODE)
            atomic_write(self.root_cert_path, root_ca.cert_pem, CERT_MODE)
            self.root_key_path.unlink(missing_ok=True)
        elif root_ca.can_sign:
            key_tmp = _write_tmp(self.root_key_path, self._seal_key(root_ca.key_pem, root_ca.cert_pem), KEY_MODE)
            try:
                cert_tmp = _write_tmp(self.root_cert_path, root_ca.cert_pem, CERT_MODE)
            except BaseException:
                key_tmp.unlink(missing_ok=True)
                raise
            os.replace(key_tmp, self.root_key_path)
            os.replace(cert_tmp, self.root_cert_path)
        else:
            atomic_write(self.root_cert_path, root_ca.cert_pem, CERT_MODE)
        if root_ca.external is None:
            self.external_path.unlink(missing_ok=True)
        self.rotation_path.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def load_root_ca(self, cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
                     with_key: bool = True) -> RootCA:
        cert = self._read(self.root_cert_path, private=False)
        key: bytes | None = None
        signer: bytes | None = None
        intermediates = b""
        external: Any = None
        if self.rotation_path.exists():
            try:
                state = json.loads(self._read(self.rotation_path, private=True))
                signer = state["Signer"].encode()
                intermediates = state["Intermediates"].encode()
                sealed_key = state.get("Key")
                urls = state.get("External")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ShoalError(f"{self.rotation_path}: not a root CA rotation state") from None
            if signer == cert:
                signer, intermediates = None, b""  # a finished rotation whose file was left behind
            elif with_key and sealed_key:
                key = self._open_key(self.rotation_path, sealed_key.encode(), signer)
            elif with_key and urls:
                external = self._external(urls)
        if signer is None and with_key:
            key, external = self._trusted_signer(cert)
        try:
            return RootCA(cert, key, cert_expiry, signing_cert_pem=signer, intermediates_pem=intermediates,
                          external=external)
        except ShoalError as exc:
            raise ShoalError(f"{self.directory}: {exc}") from None

    def load_trusted_root_ca(self, cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY) -> RootCA:
        """The trusted root with its own key, whatever rotation is under way: a rotation started
        during another is cross-signed by it, as swarmkit's (the middle root may never have
        been trusted by every node)."""
        cert = self._read(self.root_cert_path, private=False)
        key, external = self._trusted_signer(cert)
        return RootCA(cert, key, cert_expiry, external=external)

    def external_urls(self) -> list[str]:
        """The CFSSL URLs that sign for the root in use (the rotation's, during one): what
        `info` shows as its External CAs. Read without opening any key."""
        try:
            if self.rotation_path.exists():
                urls = json.loads(self._read(self.rotation_path, private=True)).get("External")
            elif self.external_path.exists():
                urls = json.loads(self._read(self.external_path, private=True))
            else:
                return []
        except (ValueError, AttributeError):
            return []
        return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []

    def rotating(self) -> bool:
        """Whether a root rotation is under way, read without parsing anything (as load_root_ca
        decides it: a rotation file whose signer is not the root itself)."""
        if not self.rotation_path.exists():
            return False
        try:
            signer = json.loads(self._read(self.rotation_path, private=True))["Signer"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ShoalError(f"{self.rotation_path}: not a root CA rotation state") from None
        return signer != self._read(self.root_cert_path, private=False)

    def _trusted_signer(self, cert: bytes) -> tuple[bytes | None, Any]:
        """(key, None) of the trusted root, or (None, ExternalCA) when a CFSSL server holds
        its key, or (None, None) on a node that does not sign."""
        if self.root_key_path.exists():
            return self._open_key(self.root_key_path, self._read(self.root_key_path, private=True), cert), None
        if self.external_path.exists():
            try:
                urls = json.loads(self._read(self.external_path, private=True))
            except ValueError:
                raise ShoalError(f"{self.external_path}: not a list of external CA URLs") from None
            return None, self._external(urls)
        return None, None

    def save_node(self, cert_pem: bytes, key_pem: bytes) -> None:
        """The node's certificate and key, replaced as a pair: both written to temporary files
        first, the key renamed into place before the certificate."""
        self._ensure_dir()
        cert = load_certificates(cert_pem)[0]
        if cert.public_key() != load_private_key(key_pem).public_key():
            raise ShoalError("the node certificate does not match its key")
        key_tmp = _write_tmp(self.key_path, key_pem, KEY_MODE)
        try:
            cert_tmp = _write_tmp(self.cert_path, cert_pem, CERT_MODE)
        except BaseException:
            key_tmp.unlink(missing_ok=True)
            raise
        os.replace(key_tmp, self.key_path)
        os.replace(cert_tmp, self.cert_path)
        _fsync_dir(self.directory)

    def load_node(self) -> tuple[bytes, bytes]:
        cert = self._read(self.cert_path, private=False)
        key = self._read(self.key_path, private=True)
        if load_certificates(cert)[0].public_key() != load_private_key(key).public_key():
            raise ShoalError(f"{self.cert_path}: does not match {self.key_path.name}")
        return cert, key

    def identity(self) -> NodeIdentity:
        cert, _ = self.load_node()
        return identity_of(load_certificates(cert)[0])

    def root_pem(self) -> bytes:
        """The trusted root certificate(s) as stored, unparsed: what a TLS context loads (the
        ssl module parses it there), with no cryptography loaded for it."""
        return self._read(self.root_cert_path, private=False)

    def write_facts(self) -> NodeFacts:
        """Parse the node certificate and the root on disk now (cryptography) and store their
        NodeFacts beside them."""
        cert, _ = self.load_node()
        root = self.root_pem()
        facts = NodeFacts(identity_of(load_certificates(cert)[0]), tls_digest(node_tls_info(cert, root)),
                          hashlib.sha256(cert).hexdigest(), hashlib.sha256(root).hexdigest())
        atomic_write(self.facts_path, facts.to_json(), CERT_MODE)
        return facts

    def facts(self) -> NodeFacts | None:
        """The stored NodeFacts if they describe the certificate and root on disk now, else None
        (never written, or the files changed since): read with the standard library alone."""
        try:
            facts = NodeFacts.from_json(self._read(self.facts_path, private=False))
            cert = self._read(self.cert_path, private=False)
            root = self.root_pem()
        except ShoalError:
            return None
        if (facts.cert_sha256, facts.root_sha256) != (hashlib.sha256(cert).hexdigest(),
                                                      hashlib.sha256(root).hexdigest()):
            return None
        return facts

    def remove(self) -> None:
        """`swarm leave`: the node's keys and certificates go."""
        for path in (self.cert_path, self.key_path, self.rotation_path, self.root_key_path, self.external_path,
                     self.root_cert_path, self.facts_path):
            path.unlink(missing_ok=True)


def init_cluster(store: CertStore, cert_expiry: dt.timedelta = DEFAULT_NODE_CERT_EXPIRY
                 ) -> tuple[RootCA, JoinTokens, NodeIdentity]:
    """`swarm init`'s PKI: a new root CA, a cluster ID, the first manager's certificate, both
    join tokens; written to `store`. The caller records the cluster and node in its store."""
    root_ca = RootCA.create(check_cert_expiry(cert_expiry))
    cluster_id, node_id = new_node_id(), new_node_id()
    cert, key = root_ca.issue(node_id, MANAGER_ROLE, cluster_id)
    store.save_root_ca(root_ca)
    store.save_node(cert, key)
    return root_ca, JoinTokens.create(root_ca), identity_of(load_certificates(cert)[0])
