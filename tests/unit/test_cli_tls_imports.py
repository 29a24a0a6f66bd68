"""A CLI command on a tcp:// context builds its TLS client context from the standard library
alone: tlsconfig's aiohttp and cryptography cost every such command about 0.3 s of imports
before it sent a byte (bench/bench_cluster_deploy.py polls `service ps` as a user would). The
listener's side still finds the same contexts in tlsconfig."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from shoal import tlsconfig, tlscontext
from shoal.manager.ca import MANAGER_ROLE, RootCA, new_node_id

# In a fresh interpreter: the client's TLS path up to the connection (refused: nothing listens),
# then which of the heavy modules it loaded.
PROBE = """
import sys
from pathlib import Path
from shoal.api.client import Client
from shoal.api.contexts import Endpoint
from shoal.errors import ShoalError
d = Path(sys.argv[1])
c = Client(endpoint=Endpoint(host=sys.argv[2], context="probe", ca=d / "ca.pem", cert=d / "cert.pem", key=d / "key.pem"))
try:
    c._connect_tls(2.0)
except ShoalError as exc:
    assert "Cannot connect" in str(exc), exc
assert c._ssl is not None
print(sorted(m for m in ("aiohttp", "cryptography", "shoal.tlsconfig") if m in sys.modules))
"""


def test_a_remote_cli_connection_loads_neither_aiohttp_nor_cryptography(tmp_path: Path) -> None:
    root = RootCA.create()
    cert, key = root.issue(new_node_id(), MANAGER_ROLE, new_node_id())
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), f"tcp://127.0.0.1:{port}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tlsconfig_reexports_the_same_contexts() -> None:
    assert tlsconfig.client_context is tlscontext.client_context
    assert tlsconfig.server_context is tlscontext.server_context
    assert tlsconfig.bootstrap_context is tlscontext.bootstrap_context
