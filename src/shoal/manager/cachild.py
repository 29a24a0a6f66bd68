"""The certificate authority work of a manager's shoald, run in a child process so that the
long-lived daemon never imports cryptography (its Rust extension and OpenSSL bindings: about
10 MiB of the manager's RSS, for work done at `swarm init`, at each join and at each renewal),
as a worker's shoald leaves its own renewal to agent/certchild.py.

    python -m shoal.manager.cachild STATE_ROOT

The child reads one JSON request per line on stdin and answers one JSON line on stdout:

    {"op": "init", "expiry": S, "node_id": ID, "cluster_id": ID}  the root CA and the manager's
        certificate made and written (tokens, desired and node TLSInfo answered)
    {"op": "view", "expiry": S}         the root CA as the daemon keeps it (CAView)
    {"op": "check_csr", "csr": PEM}     a joining node's CSR parsed and checked
    {"op": "sign", "csr": PEM, "node_id": ID, "role": R, "cluster_id": ID, "expiry": S}
        the certificate (from the root's key, or the external CA) and its TLSInfo
    {"op": "renew_own", "expiry": S}    the manager's own new key and certificate, written
    {"op": "facts"}                     the node certificate's NodeFacts written beside it

Every request reads the certificates directory afresh (<root>/certificates, the CA key sealed
with <root>/keys), so the child holds nothing the daemon changed since: a `swarm update
--cert-expiry` or a root rotation is on disk (or in the request) before the next signature. A
failure answers {"error": message, "kind": ShoalError subclass}. The child lingers LINGER
seconds after its last answer, so the joins of a new cluster's nodes (and the daemon's own start)
pay one Python start, then exits; the daemon starts it again on demand (CAChild)."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shoal import errors
from shoal.errors import ShoalError

LINGER = 10.0  # seconds the child waits for another request before it exits
CALL_TIMEOUT = 90.0  # a Python start with cryptography, and an external CA's answer (its own timeouts)


@dataclass(frozen=True)
class CAView:
    """What the daemon keeps of its root CA, plain data (the child parsed it): enough for the CA
    routes, the heartbeats' TLSInfo digest and the rotation reconciler. Signing goes to the
    child (CAChild.call("sign")), which loads the key itself."""

    cert_pem: bytes
    signing_cert_pem: bytes | None
    cert_expiry: dt.timedelta
    desired: dict[str, str]  # ca.desired_tls_info of this root
    can_sign: bool = True
    external: None = None  # never an ExternalCA here: the child calls it when it signs

    @property
    def rotating(self) -> bool:
        return self.signing_cert_pem is not None

    @property
    def digest(self) -> str:
        from shoal.manager.ca import pem_digest

        return pem_digest(self.cert_pem)

    def with_expiry(self, cert_expiry: dt.timedelta) -> CAView:
        from shoal.manager.ca import check_cert_expiry

        return replace(self, cert_expiry=check_cert_expiry(cert_expiry))

    @classmethod
    def from_answer(cls, answer: dict[str, Any], cert_expiry: dt.timedelta) -> CAView:
        signer = answer.get("signing_cert_pem")
        return cls(str(answer["cert_pem"]).encode(), signer.encode() if isinstance(signer, str) else None,
                   cert_expiry, dict(answer["desired"]), bool(answer["can_sign"]))


class CAChild:
    """The daemon's side: one child at a time, started on demand, one request at a time. Called
    from worker threads (asyncio.to_thread): every call blocks until the answer."""

    def __init__(self, state_root: Path) -> None:
        self.state_root = Path(state_root)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "shoal.manager.cachild", str(self.state_root)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        # reaped as soon as it exits (after LINGER idle seconds), not at the next call weeks later
        threading.Thread(target=proc.wait, name="cachild-reaper", daemon=True).start()
        self._proc = proc
        return proc

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        request = json.dumps({"op": op, **args}).encode() + b"\n"
        with self._lock:
            for attempt in range(2):
                proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
                line = self._ask(proc, request)
                if line is not None:
                    break
                # No answer: the child's idle time ran out as the request went in (it exits
                # without reading), or it died. Once more with a new child.
                self._proc = None
                if attempt:
                    raise ShoalError(f"certificate authority: the child process ended without answering ({op})")
        answer = json.loads(line)
        if "error" in answer:
            kind = getattr(errors, str(answer.get("kind")), ShoalError)
            if not (isinstance(kind, type) and issubclass(kind, ShoalError)):
                kind = ShoalError
            raise kind(str(answer["error"]))
        return dict(answer)

    def _ask(self, proc: subprocess.Popen[bytes], request: bytes) -> bytes | None:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        fd, data = proc.stdout.fileno(), b""
        deadline = time.monotonic() + CALL_TIMEOUT
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                proc.kill()
                raise ShoalError(f"certificate authority: no answer in {CALL_TIMEOUT:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            data += chunk
        return data

    def view(self, cert_expiry: dt.timedelta) -> CAView:
        return CAView.from_answer(self.call("view", expiry=cert_expiry.total_seconds()), cert_expiry)

    def stop(self) -> None:
        """Close the child's stdin: it exits at once (the reaper thread collects it)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass


# ---- the child ------------------------------------------------------------------------------

def _serve(state_root: Path, request: dict[str, Any]) -> dict[str, Any]:
    from shoal.manager import ca
    from shoal.store.secretbox import FileKeys

    certs = ca.CertStore(state_root / "certificates", FileKeys(state_root / "keys"))
    op = request.get("op")
    expiry = dt.timedelta(seconds=float(request.get("expiry", ca.DEFAULT_NODE_CERT_EXPIRY.total_seconds())))
    if op == "init":
        root_ca = ca.RootCA.create(ca.check_cert_expiry(expiry))
        cert, key = root_ca.issue(str(request["node_id"]), ca.MANAGER_ROLE, str(request["cluster_id"]))
        tokens = ca.JoinTokens.create(root_ca)
        certs.save_root_ca(root_ca)
        certs.save_node(cert, key)
        certs.write_facts()
        return {"tokens": tokens.to_dict(), "desired": ca.desired_tls_info(root_ca),
                "tls_info": ca.node_tls_info(cert, root_ca.cert_pem)}
    if op == "view":
        root_ca = certs.load_root_ca(expiry)
        return {"cert_pem": root_ca.cert_pem.decode(), "can_sign": root_ca.can_sign,
                "signing_cert_pem": root_ca.signing_cert_pem.decode() if root_ca.signing_cert_pem else None,
                "desired": ca.desired_tls_info(root_ca)}
    if op == "check_csr":
        ca.parse_csr(str(request["csr"]).encode())
        return {}
    if op == "sign":
        root_ca = certs.load_root_ca(expiry)
        cert = root_ca.sign_csr(str(request["csr"]).encode(), str(request["node_id"]), str(request["role"]),
                                str(request["cluster_id"]))
        return {"cert": cert.decode(), "tls_info": ca.node_tls_info(cert, root_ca.cert_pem)}
    if op == "renew_own":
        # the old pair stays until the new one is checked and written (SwarmNode.renew_own_certificate)
        current = certs.identity()
        root_ca = certs.load_root_ca(expiry)
        cert, key = root_ca.issue(current.node_id, str(request.get("role") or current.role), current.cluster_id)
        root_ca.verify_node_cert(cert)
        certs.save_node(cert, key)
        return {"facts": certs.write_facts().to_json().decode()}
    if op == "facts":
        return {"facts": certs.write_facts().to_json().decode()}
    raise errors.InvalidArgument(f"certificate authority: unknown request {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shoal.manager.cachild STATE_ROOT", file=sys.stderr)
        return 2
    state_root = Path(argv[0])
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        if not select.select([stdin], [], [], LINGER)[0]:
            return 0  # idle: the daemon starts another when it needs one
        line = stdin.readline()
        if not line:
            return 0  # the daemon closed the pipe, or exited
        try:
            request = json.loads(line)
            answer = _serve(state_root, request if isinstance(request, dict) else {})
        except ShoalError as exc:
            answer = {"error": str(exc), "kind": type(exc).__name__}
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"error": f"certificate authority: bad request ({exc})", "kind": "ShoalError"}
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
