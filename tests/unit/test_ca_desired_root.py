"""`swarm ca --rotate --ca-cert FILE --ca-key FILE`: the checks a root the user brings passes
(swarmkit's validateCAConfig and NewRootCA, with their words), what a rotation to it is
(manager/ca.py rotate_to), the digest the dispatcher tells nodes in their heartbeats, and the
CLI's flag errors (docker/cli's ca.go and PEMFile), all over real certificates and keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shoal.cli.main import main
from shoal.cli.swarm import EXTERNAL_CA_UNSUPPORTED
from shoal.errors import InvalidArgument
from shoal.manager import ca


def make_root(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None, *, ca_flag: bool = True,
              days: int = 3650, start_days: int = -1, cn: str = "my-own-ca") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed root, as openssl req -x509 would make it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=start_days)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def error_of(cert: bytes, key: bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        ca.desired_root(cert, key)
    return str(info.value)


def test_a_good_root_is_taken_normalised_ecdsa_or_rsa() -> None:
    cert, key = make_root()
    root = ca.desired_root(b"# my CA\n" + cert + b"\n\n", key)
    assert root.cert_pem == cert and root.can_sign
    rsa_cert, rsa_key = make_root(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert ca.desired_root(rsa_cert, rsa_key).can_sign


def test_bad_roots_are_refused_with_swarmkits_words() -> None:
    cert, key = make_root()
    other_cert, other_key = make_root()
    assert error_of(b"", key) == "if a signing CA key is provided, the signing CA cert must also be provided"
    assert error_of(cert, b"") == ("there must be at least one valid, reachable external CA corresponding to "
                                   "the desired CA certificate")  # no key, no external CA
    assert error_of(cert + other_cert, key) == "the desired CA certificate cannot contain multiple certificates"
    assert error_of(cert, other_key) == "certificate key mismatch"
    assert error_of(cert, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").startswith(
        "malformed private key")
    assert error_of(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key).startswith(
        "invalid root certificates")
    assert error_of(*make_root(days=200)) == "CA certificate expires too soon"
    expired = error_of(*make_root(days=-1, start_days=-10))
    assert expired.startswith("error while validating Root CA Certificate: x509: certificate has expired")
    assert "is after" in expired
    assert "is before" in error_of(*make_root(start_days=2))
    not_ca = error_of(*make_root(ca_flag=False))
    assert not_ca.startswith("error while validating Root CA Certificate") and "not a CA" in not_ca
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert error_of(*make_root(weak)) == "unsupported RSA key parameters"
    assert error_of(*make_root(ec.generate_private_key(ec.SECP256K1()))) == "unsupported ECDSA key parameters"


def test_rotate_to_a_brought_root_cross_signs_it_and_node_certificates_chain_to_both() -> None:
    old = ca.RootCA.create()
    cert, key = make_root()
    new = ca.desired_root(cert, key)
    rotating = ca.rotate_to(old, old, new)
    assert rotating.rotating and rotating.cert_pem == old.cert_pem and rotating.signing_cert_pem == cert
    leaf, _ = rotating.issue("node1", ca.WORKER_ROLE, "cluster")
    assert old.verify_node_cert(leaf).node_id == "node1"  # through the cross-signed certificate
    finished, _ = ca.finish_rotation(rotating)
    assert finished.cert_pem == cert and finished.verify_node_cert(leaf).node_id == "node1"
    # the digest the heartbeats tell: a node on the new issuer matches it while the rotation runs
    assert ca.tls_digest(ca.node_tls_info(leaf, old.cert_pem)) == ca.tls_digest(ca.desired_tls_info(rotating))
    assert ca.tls_digest(ca.node_tls_info(leaf, old.cert_pem)) != ca.tls_digest(ca.desired_tls_info(finished))
    assert ca.tls_digest(ca.node_tls_info(leaf, cert)) == ca.tls_digest(ca.desired_tls_info(finished))


def test_rotate_to_the_trusted_root_the_same_root_or_its_key() -> None:
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    # the trusted root itself (its own key): the rotation under way is given up
    back = ca.rotate_to(rotating, old, ca.desired_root(old.cert_pem, old.key_pem))
    assert not back.rotating and back.cert_pem == old.cert_pem and back.can_sign
    # the root the rotation already goes to: the same rotation, same cross-signed certificate
    assert rotating.signing_cert_pem is not None
    again = ca.rotate_to(rotating, old, ca.desired_root(rotating.signing_cert_pem, rotating.key_pem))
    assert again.rotating and again.intermediates_pem == rotating.intermediates_pem
    # another certificate over the trusted root's key
    key = serialization.load_pem_private_key(old.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    with pytest.raises(InvalidArgument, match="^Cannot update to a cert with an identical key$"):
        ca.rotate_to(old, old, ca.desired_root(make_root(key, cn="swarm-ca")[0], old.key_pem))


# docker/cli's FlagErrorFunc after a flag's value is refused (cli/cobra.go)
USAGE = "\n\nUsage:  shoal swarm ca [OPTIONS]\n\nRun 'shoal swarm ca --help' for more information"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_cli_flag_errors_are_docker_clis(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOST", f"unix://{tmp_path}/nobody.sock")  # nothing may be reached
    cert, key = make_root()
    (tmp_path / "ca.crt").write_bytes(cert)
    (tmp_path / "ca.key").write_bytes(key)
    (tmp_path / "text").write_text("hello\n")
    crt, pem_key = str(tmp_path / "ca.crt"), str(tmp_path / "ca.key")
    code, err = run(["swarm", "ca", "--ca-cert", crt], capsys)
    assert code != 0 and err == "Error: `--ca-cert` flag requires the `--rotate` flag to update the CA"
    code, err = run(["swarm", "ca", "--rotate", "--ca-cert", crt], capsys)
    assert code != 0
    assert err == "Error: the --ca-cert flag requires that a --ca-key flag and/or --external-ca flag be provided as well"
    code, err = run(["swarm", "ca", "--rotate", "--ca-cert", str(tmp_path / "text"), "--ca-key", pem_key], capsys)
    assert code != 0
    assert err == f'invalid argument "{tmp_path}/text" for "--ca-cert" flag: file contents must be in PEM format' + USAGE
    code, err = run(["swarm", "ca", "--rotate", "--ca-key", str(tmp_path / "none")], capsys)
    assert code == 125 and err == (f'invalid argument "{tmp_path}/none" for "--ca-key" flag: '
                                   f"open {tmp_path}/none: no such file or directory" + USAGE)
    code, err = run(["swarm", "ca", "--rotate", "--external-ca", "protocol=cfssl,url=https://ca.example"], capsys)
    assert code != 0 and err.startswith("Error: rotating to an external CA requires the `--ca-cert` flag")
    code, err = run(["swarm", "ca", "--rotate", "--ca-cert", crt, "--external-ca", "url=https://x"], capsys)
    assert code == 125 and err == ('invalid argument "url=https://x" for "--external-ca" flag: '
                                   "the external-ca option needs a protocol= parameter" + USAGE)
    for argv in (["swarm", "init", "--external-ca", "protocol=cfssl,url=https://x"],
                 ["swarm", "update", "--external-ca", "protocol=cfssl,url=https://x"]):
        code, err = run(argv, capsys)
        assert code != 0 and err == f"Error: {EXTERNAL_CA_UNSUPPORTED}", argv
