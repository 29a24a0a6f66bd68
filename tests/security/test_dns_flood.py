"""One container flooding the embedded resolver must not exhaust the process serving every
container (shoald): thousands of questions forwarded to an upstream that never answers, and
hundreds of idle TCP connections. The resolver runs as its own process (with shoald's default
soft limit of 1,024 descriptors) in a namespace this test makes, with the never-answering
upstream on that namespace's loopback; its descriptor count is read from /proc while another
container's questions keep being answered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT_ONLY, terminate
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from shoal.network import dns, netns

pytestmark = [ROOT_ONLY, pytest.mark.root]

RESOLVER = """
import asyncio, json, resource, sys
from shoal.network import dns

cfg = json.loads(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # shoald's soft limit under systemd

async def main():
    server = dns.EmbeddedDNS(upstreams=[cfg["upstream"]])
    server.set_records("front", dns.service_records("shop_web", "10.222.0.2", ["10.222.0.5"], aliases=["web"]))
    await server.serve("attacker", cfg["a"], ["front"], [])  # [] : the server's own upstreams
    await server.serve("victim", cfg["b"], ["front"], [])
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def spaces(tmp_path: Path) -> Iterator[dict[str, Path]]:
    made: dict[str, Path] = {}
    try:
        for name in ("host", "a", "b"):
            made[name] = netns.create(tmp_path / f"shoal-flood-{name}")
        yield made
    finally:
        for p in made.values():
            netns.remove(p)


@pytest.fixture
def upstream(spaces: dict[str, Path]) -> Iterator[str]:
    """On the resolver's namespace's loopback: answers names under ok.test, never anything else."""
    sock = netns.run_in(spaces["host"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
                request = DNSRecord.parse(data)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - closed, or not DNS
                if stop.is_set():
                    return
                continue
            if str(request.q.qname).endswith("ok.test."):
                reply = request.reply()
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=5))
                sock.sendto(reply.pack(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.fixture
def resolver(spaces: dict[str, Path], upstream: str, tmp_path: Path) -> Iterator[int]:
    cfg = json.dumps({"upstream": upstream, "a": str(spaces["a"]), "b": str(spaces["b"])})
    log = tmp_path / "resolver.log"
    proc = subprocess.Popen(["nsenter", f"--net={spaces['host']}", sys.executable, "-c", RESOLVER, cfg],
                            stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", log.read_text()
        yield proc.pid
        assert proc.poll() is None, "the resolver died:\n" + log.read_text()[-3000:]
    finally:
        terminate(proc, 5)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """The highest descriptor count of a process, read every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, fds(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, fds(self.pid))
            except FileNotFoundError:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def ask(ns: Path, name: str, tcp: bool = False) -> DNSRecord:
    def inside() -> DNSRecord:
        return DNSRecord.parse(DNSRecord.question(name).send(dns.LISTEN_ADDR, 53, tcp=tcp, timeout=3))

    return netns.run_in(ns, inside)


def addrs(record: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in record.rr if rr.rtype == QTYPE.A)


def test_a_flood_of_forwarded_questions_stays_bounded_and_others_are_answered(spaces, resolver: int) -> None:
    baseline = fds(resolver)
    bound = baseline + dns.MAX_FORWARDS_PER_CONTAINER + 16
    flood = netns.run_in(spaces["a"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sampler = Sampler(resolver)
    refused = 0
    try:
        flood.setblocking(False)
        for i in range(5000):
            packet = DNSRecord.question(f"q{i}.flood.test").pack()
            try:
                flood.sendto(packet, (dns.LISTEN_ADDR, 53))
            except BlockingIOError:
                time.sleep(0.001)
            if i % 500 == 499:
                # While the flood is under way, the other container is answered: its service
                # names (from the tables) and its forwarded names (a share of its own).
                assert addrs(ask(spaces["b"], "web")) == ["10.222.0.2"]
                assert addrs(ask(spaces["b"], f"n{i}.ok.test")) == ["192.0.2.7"]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                refused += DNSRecord.parse(flood.recv(4096)).header.rcode == RCODE.REFUSED
            except BlockingIOError:
                time.sleep(0.01)
    finally:
        flood.close()
        peak = sampler.stop()
    assert peak <= bound, f"{peak} descriptors open at the peak (started with {baseline})"
    assert refused > 100  # over its share: REFUSED at once, as Docker's resolver answers
    time.sleep(dns.UPSTREAM_TIMEOUT + 1)
    assert fds(resolver) <= baseline + 2  # every forward gave its socket back
    assert addrs(ask(spaces["b"], "web")) == ["10.222.0.2"]
    assert addrs(ask(spaces["a"], "web")) == ["10.222.0.2"]  # the flooder too, once it stops


def test_idle_tcp_clients_are_capped_and_timed_out(spaces, resolver: int) -> None:
    baseline = fds(resolver)
    bound = baseline + dns.MAX_TCP_CLIENTS_PER_CONTAINER + 16

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((dns.LISTEN_ADDR, 53))
        return s

    sampler = Sampler(resolver)
    held: list[socket.socket] = []
    try:
        for _ in range(400):
            held.append(netns.run_in(spaces["a"], connect))
        time.sleep(1)
        # The other container still gets its answers over TCP (and the attacker is within its cap).
        assert addrs(ask(spaces["b"], "web", tcp=True)) == ["10.222.0.2"]
        assert fds(resolver) <= bound
        # Idle connections are closed by the resolver after TCP_IDLE_TIMEOUT.
        time.sleep(dns.TCP_IDLE_TIMEOUT + 2)
        assert fds(resolver) <= baseline + 2
        closed = 0
        for s in held:
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(held)
    finally:
        for s in held:
            s.close()
        peak = sampler.stop()
    assert peak <= bound, f"{peak} descriptors open at the peak (started with {baseline})"
