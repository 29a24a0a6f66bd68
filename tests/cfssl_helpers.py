"""A real `cfssl serve` (Debian's golang-cfssl) as the external CA of `swarm ca --external-ca`,
for the unit test (on the host's loopback) and the cluster test (in a node's namespace)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def tls_cert(issuer_pem: bytes, issuer_key_pem: bytes) -> tuple[bytes, bytes]:
    """cfssl's own TLS certificate for 127.0.0.1 and its key (PEM), issued by the given CA: what
    the manager checks of an external CA's URL (swarmkit's validateExternalCAURL)."""
    issuer = x509.load_pem_x509_certificate(issuer_pem)
    issuer_key = serialization.load_pem_private_key(issuer_key_pem, None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cfssl")]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())


def start_cfssl(directory: Path, root: tuple[bytes, bytes], tls_issuer: tuple[bytes, bytes], port: int,
                listening: Callable[[], bool], prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """`cfssl serve` on 127.0.0.1:`port` signing with `root` (certificate, key: PEM), its TLS
    certificate issued by `tls_issuer`; `prefix` runs it elsewhere (`ip netns exec NODE`),
    `listening` says when it answers. Returns the process and its sign URL."""
    directory.mkdir()
    (directory / "ca.pem").write_bytes(root[0])
    (directory / "ca-key.pem").write_bytes(root[1])
    srv, srv_key = tls_cert(*tls_issuer)
    (directory / "srv.pem").write_bytes(srv)
    (directory / "srv-key.pem").write_bytes(srv_key)
    (directory / "config.json").write_text(json.dumps({"signing": {"default": {
        "usages": ["signing", "key encipherment", "server auth", "client auth"], "expiry": "2160h"}}}))
    proc = subprocess.Popen([*prefix, "cfssl", "serve", "-address", "127.0.0.1", "-port", str(port),
                             "-ca", "ca.pem", "-ca-key", "ca-key.pem", "-tls-cert", "srv.pem",
                             "-tls-key", "srv-key.pem", "-config", "config.json"], cwd=directory,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not listening():
        assert proc.poll() is None and time.monotonic() < deadline, "cfssl serve did not start"
        time.sleep(0.05)
    return proc, f"https://127.0.0.1:{port}/api/v1/cfssl/sign"
