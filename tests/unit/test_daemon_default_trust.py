"""shoald imports aiohttp with no CA file or directory (daemon._import_aiohttp_without_system_trust):
aiohttp's two import-time client contexts would otherwise hold the system's CA bundle, 2 MiB in
every shoald. Checked in a fresh interpreter against a real TLS server on loopback whose CA is
the one SSL_CERT_FILE names: aiohttp imported by shoal.daemon refuses it (fails closed), the
standard library's default context (httpx's registry pulls) still trusts it, and the same
client with aiohttp imported first trusts it (so the check can tell the two apart)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROBE = r"""
import asyncio, os, ssl, sys
cert, key, first = sys.argv[1], sys.argv[2], sys.argv[3]
if first == "aiohttp":
    import aiohttp
import shoal.daemon  # noqa: F401
import aiohttp

assert os.environ["SSL_CERT_FILE"] == cert, os.environ.get("SSL_CERT_FILE")
assert "SSL_CERT_DIR" not in os.environ


async def answer(reader, writer):
    try:  # the standard library's probe connects and leaves without a request
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    writer.close()


async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"https://127.0.0.1:{port}/") as resp:
                    print("aiohttp", resp.status)
        except aiohttp.ClientConnectorCertificateError:
            print("aiohttp refused")
        stdlib = ssl.create_default_context()
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=stdlib)
        print("stdlib trusted")
        w.close()


asyncio.run(main())
"""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ca.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _probe(tmp_path: Path, first: str) -> str:
    cert, key = _self_signed(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(cert)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(cert), str(key), first], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_shoald_aiohttp_trusts_no_system_ca(tmp_path: Path) -> None:
    assert _probe(tmp_path, "shoal") == "aiohttp refused\nstdlib trusted\n"


def test_aiohttp_imported_first_trusts_the_bundle(tmp_path: Path) -> None:
    # the control: the probe does see the difference the daemon's import makes
    assert _probe(tmp_path, "aiohttp") == "aiohttp 200\nstdlib trusted\n"
