"""An external CA: node certificates signed by a CFSSL server that holds the root's key, as
swarmkit's ca/external.go (`swarm ca --rotate --ca-cert FILE --external-ca
protocol=cfssl,url=https://HOST:PORT/api/v1/cfssl/sign`).

The manager sends CFSSL's sign request (`certificate_request`, `subject` with the node's CN, O
and OU, `hosts` the SANs, as swarmkit's PrepareCSR) over HTTPS, presenting its own node
certificate; the CFSSL server's certificate must chain to the external root (swarmkit's
validateExternalCAURL), so nobody else can sign for the cluster. What comes back is checked
before it is used: issued by the root for the key of the CSR, with the subject asked for.
Calls are blocking (urllib): the CA routes and the manager's own renewal run them in a thread."""

from __future__ import annotations

import csv
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import InvalidArgument, ShoalError

PROTOCOL = "cfssl"
TIMEOUT = 10.0  # seconds for one signing request
MAX_ANSWER = 256 * 1024


@dataclass(frozen=True)
class ExternalCASpec:
    """One `--external-ca` flag: protocol, url, options (docker/cli's swarm.ExternalCA)."""

    protocol: str
    url: str


def parse_spec(spec: str) -> ExternalCASpec:
    """docker/cli's parseExternalCA: `protocol=cfssl,url=https://...` (CSV), its words."""
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise InvalidArgument(f"invalid external CA specification {spec!r}") from None
    protocol = url = None
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep:
            raise InvalidArgument(f"invalid field '{field}' must be a key=value pair")
        key = key.lower()
        if key == "protocol":
            if value.lower() != PROTOCOL:
                raise InvalidArgument(f"unrecognized external CA protocol {value}")
            protocol = PROTOCOL
        elif key == "url":
            url = value
        elif key == "cacert":
            raise InvalidArgument("cacert= is not supported: the external CA's certificate is --ca-cert")
    if protocol is None:
        raise InvalidArgument("the external-ca option needs a protocol= parameter")
    if url is None:
        raise InvalidArgument("the external-ca option needs a url= parameter")
    return spec_of(protocol, url)


def spec_of(protocol: str, url: str) -> ExternalCASpec:
    """An ExternalCAs entry of the API ({"Protocol", "URL"}), checked."""
    if protocol.lower() != PROTOCOL:
        raise InvalidArgument(f"unrecognized external CA protocol {protocol}")
    check_url(url)
    return ExternalCASpec(PROTOCOL, url)


def check_url(url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise InvalidArgument(f"invalid external CA URL {url!r}: invalid HTTP scheme (https:// is required)")


class ExternalCA:
    """CFSSL signing endpoints for one root. `cert_path`/`key_path`: the manager's node
    certificate, presented to the CFSSL server (read at each call: it renews)."""

    def __init__(self, urls: list[str], cert_path: Path, key_path: Path) -> None:
        if not urls:
            raise ShoalError("no external CA URLs")
        for url in urls:
            check_url(url)
        self.urls = list(urls)
        self.cert_path = cert_path
        self.key_path = key_path

    def _context(self, trust_pem: bytes) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=trust_pem.decode())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_path.exists() and self.key_path.exists():
            ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def reachable(self, trust_pem: bytes) -> bool:
        """validateHasAtLeastOneExternalCA: a TLS handshake with one of the URLs succeeds and
        its certificate chains to `trust_pem` (the root whose key the server must hold)."""
        ctx = self._context(trust_pem)
        for url in self.urls:
            parsed = urllib.parse.urlsplit(url)
            try:
                with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname=parsed.hostname):
                        return True
            except (OSError, ssl.SSLError):
                continue
        return False

    def sign(self, csr_pem: bytes, common_name: str, role: str, cluster_id: str, hosts: list[str],
             trust_pem: bytes) -> bytes:
        """The certificate PEM CFSSL signs for `csr_pem` (subject and SANs from the arguments,
        whatever the CSR says). Each URL is tried in turn; the last error is raised."""
        body = json.dumps({"certificate_request": csr_pem.decode(), "hosts": hosts,
                           "subject": {"CN": common_name, "names": [{"O": cluster_id, "OU": role}]}}).encode()
        ctx = self._context(trust_pem)
        error = "no external CA URLs"
        for url in self.urls:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=TIMEOUT) as resp:
                    data = resp.read(MAX_ANSWER + 1)
            except urllib.error.HTTPError as exc:
                error = f"unexpected status code in CSR response: {exc.code} - {exc.read(4096).decode('utf-8', 'replace')}"
                continue
            except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
                error = f"unable to perform certificate signing request: {getattr(exc, 'reason', exc)}"
                continue
            if len(data) > MAX_ANSWER:
                error = "the external CA's answer is too large"
                continue
            try:
                answer = json.loads(data)
            except ValueError:
                error = "unable to parse JSON response"
                continue
            if not isinstance(answer, dict) or not answer.get("success") or not isinstance(answer.get("result"), dict):
                errors = answer.get("errors") if isinstance(answer, dict) else None
                error = f"response errors: {errors}" if errors else "certificate signing request failed"
                continue
            cert = answer["result"].get("certificate")
            if not isinstance(cert, str):
                error = f"invalid result certificate field type: {type(cert).__name__}"
                continue
            return cert.encode()
        raise ShoalError(f"the external CA could not sign: {error}")
