"""What every node's shoald has loaded before any request: a local cluster's supervisor is the
nodes' zygote (cluster/supervisor.py preload()), and each node maps all it imported, so all of
it counts in every node's RSS. A module only some request needs is imported at that request:
dnslib (about 0.6 MiB) at the embedded resolver's first question that is not a cached answer
(network/dns.py). In a fresh interpreter, as the zygote does it."""

from __future__ import annotations

import subprocess
import sys

# Imported only by the request that needs it, never by shoald's start or the zygote.
LAZY = ("dnslib",)

PROBE = """
import sys
from shoal.cluster.supervisor import preload
preload()
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])))
"""

ASK = """
import asyncio, sys
from shoal.network.dns import EmbeddedDNS
dns = EmbeddedDNS(upstreams=[])
dns.set_records("n1", {"web": ["10.0.0.2"]})
print("dnslib" in sys.modules)
from dnslib import DNSRecord
answer = asyncio.run(dns.handle(["n1"], bytes(DNSRecord.question("web").pack())))
print(" ".join(str(rr.rdata) for rr in DNSRecord.parse(answer).rr))
"""


# A worker's shoald as daemon.run() makes it (its session HTTPS to a manager), with its API app:
# none of the manager's modules is imported, in the zygote or after.
WORKER = """
import sys, tempfile
from pathlib import Path
from shoal.cluster.supervisor import MANAGER_ONLY, preload
preload()
zygote = [m for m in MANAGER_ONLY if m in sys.modules]
from shoal.agent.session_https import HTTPSSession
from shoal.api.server import make_app
from shoal.daemon import Daemon
root = Path(tempfile.mkdtemp())
daemon = Daemon(root=root, session_factory=lambda d: HTTPSSession(["192.0.2.1:2377"], root / "certificates"),
                worker=True)
app = make_app(daemon)
routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
print(" ".join(zygote) or "-")
print(" ".join(m for m in MANAGER_ONLY if m in sys.modules) or "-")
print(daemon.dispatcher is None, "/v1/services" in routes, "/v1/containers/{id}/attach" in routes)
"""


def run(code: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_zygote_imports_no_module_that_only_a_request_needs() -> None:
    assert run(PROBE, *LAZY).split() == []


def test_the_resolver_answers_with_dnslib_imported_at_the_question() -> None:
    assert run(ASK).split("\n")[:2] == ["False", "10.0.0.2"]


def test_a_worker_imports_none_of_the_managers_modules() -> None:
    assert run(WORKER).split("\n")[:3] == ["-", "-", "True False True"]
