"""The embedded resolver for real: 127.0.0.11:53 inside namespaces, queried with dnslib's client
from inside those namespaces; other names forwarded to an upstream (a dnslib server on the
host's loopback), answers scoped by network."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT_ONLY
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from shoal.agent.netglue import container_upstreams
from shoal.network import dns, netns

pytestmark = [ROOT_ONLY, pytest.mark.root]


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[list[Path]]:
    made: list[Path] = []
    try:
        for name in ("shoal-dns-a", "shoal-dns-b"):
            made.append(netns.create(tmp_path / name))
        yield made
    finally:
        for p in made:
            netns.remove(p)


@pytest.fixture
def upstream() -> Iterator[str]:
    """A resolver in the host namespace that answers every A question with 192.0.2.99."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            req = DNSRecord.parse(data)
            reply = req.reply()
            reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.99"), ttl=5))
            sock.sendto(reply.pack(), addr)

    port = sock.getsockname()[1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))  # the same port over TCP: a big answer (50 records)
    listener.listen()
    listener.settimeout(0.1)

    def serve_tcp() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                size = struct.unpack("!H", conn.recv(2))[0]
                req = DNSRecord.parse(conn.recv(size))
                reply = req.reply()
                for i in range(50):
                    reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A(f"192.0.2.{i + 1}"), ttl=5))
                packed = reply.pack()
                conn.sendall(struct.pack("!H", len(packed)) + packed)

    threads = [threading.Thread(target=serve, daemon=True), threading.Thread(target=serve_tcp, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2)
        sock.close()
        listener.close()


def query(ns: Path, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    def inside() -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        return DNSRecord.parse(q.send(dns.LISTEN_ADDR, 53, tcp=tcp, timeout=3))

    return netns.run_in(ns, inside)


def addrs(record: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in record.rr if rr.rtype == QTYPE.A)


def test_resolver_answers_services_tasks_containers_and_forwards(namespaces: list[Path], upstream: str) -> None:
    a_ns, b_ns = namespaces

    async def scenario() -> None:
        server = dns.EmbeddedDNS(upstreams=[upstream])
        front = dns.merge(
            dns.service_records("webapp_web", "10.213.0.2", ["10.213.0.5", "10.213.0.4"], aliases=["web"]),
            dns.service_records("webapp_db", None, ["10.213.0.9", "10.213.0.8"], aliases=["db"], endpoint_mode="dnsrr"),
            dns.container_records("10.213.0.5", ["webapp_web.1.abc", "c0ffee000001", "frontdoor"]),
        )
        back = dns.service_records("webapp_cache", "10.213.16.2", ["10.213.16.3"], aliases=["cache"])
        server.set_records("front", front)
        server.set_records("back", back)
        await server.serve("a", a_ns, ["front"], [])
        await server.serve("b", b_ns, ["back"], [])
        try:
            run = asyncio.to_thread
            assert addrs(await run(query, a_ns, "web")) == ["10.213.0.2"]  # VIP
            assert addrs(await run(query, a_ns, "webapp_web.")) == ["10.213.0.2"]
            assert addrs(await run(query, a_ns, "WEB")) == ["10.213.0.2"]  # case-insensitive
            assert addrs(await run(query, a_ns, "tasks.web")) == ["10.213.0.4", "10.213.0.5"]
            assert addrs(await run(query, a_ns, "db")) == ["10.213.0.8", "10.213.0.9"]  # dnsrr: tasks
            assert addrs(await run(query, a_ns, "frontdoor")) == ["10.213.0.5"]
            assert addrs(await run(query, a_ns, "c0ffee000001", tcp=True)) == ["10.213.0.5"]
            ptr = await run(query, a_ns, "5.0.213.10.in-addr.arpa", "PTR")
            assert str(ptr.rr[0].rdata) in ("c0ffee000001.", "frontdoor.", "webapp_web.1.abc.")
            aaaa = await run(query, a_ns, "web", "AAAA")
            assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
            # Forwarded: any other name, from the host namespace to the host's resolvers.
            assert addrs(await run(query, a_ns, "deb.debian.org")) == ["192.0.2.99"]
            # Over TCP, forwarded over TCP: an answer far bigger than 512 bytes arrives whole.
            assert len(addrs(await run(query, a_ns, "big.example.org", "A", True))) == 50
            # Scoped: b shares no network with web, so `web` is not shoal's to answer.
            assert addrs(await run(query, b_ns, "web")) == ["192.0.2.99"]
            assert addrs(await run(query, b_ns, "cache")) == ["10.213.16.2"]
            assert addrs(await run(query, a_ns, "cache")) == ["192.0.2.99"]
            # Records change live (a task left): the next answer shows it.
            server.set_records("front", dns.service_records("webapp_web", "10.213.0.2", ["10.213.0.4"], aliases=["web"]))
            assert addrs(await run(query, a_ns, "tasks.web")) == ["10.213.0.4"]
            # A container joining a second network sees both.
            await server.serve("b", b_ns, ["back", "front"], [])
            assert addrs(await run(query, b_ns, "web")) == ["10.213.0.2"]
        finally:
            await server.close()
        assert server.serving() == []

    asyncio.run(scenario())

    # The sockets are gone with the server: nothing listens on 127.0.0.11 any more.
    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            return s.connect_ex((dns.LISTEN_ADDR, 53)) == 0

    assert netns.run_in(a_ns, probe) is False


def test_forwards_are_capped_per_container_and_in_all(namespaces: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions waiting on an upstream each hold a socket: past a container's share, or past the
    cap of every container together, they are REFUSED at once (as Docker's resolver answers),
    and the slots come back when the upstream times out."""
    a_ns, b_ns = namespaces
    monkeypatch.setattr(dns, "MAX_FORWARDS_PER_CONTAINER", 3)
    monkeypatch.setattr(dns, "MAX_FORWARDS", 5)
    monkeypatch.setattr(dns, "UPSTREAM_TIMEOUT", 1.0)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # reads nothing, answers nothing
    blackhole.bind(("127.0.0.1", 0))

    def client(ns: Path) -> socket.socket:
        s = netns.run_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        s.settimeout(3)
        return s

    def rcodes(s: socket.socket, n: int) -> list[int]:
        return sorted(DNSRecord.parse(s.recv(4096)).header.rcode for _ in range(n))

    async def scenario() -> None:
        server = dns.EmbeddedDNS(upstreams=[f"127.0.0.1:{blackhole.getsockname()[1]}"])
        server.set_records("front", dns.service_records("webapp_web", "10.213.0.2", [], aliases=["web"]))
        await server.serve("a", a_ns, ["front"], [])
        await server.serve("b", b_ns, ["front"], [])
        a, b = client(a_ns), client(b_ns)
        try:
            run = asyncio.to_thread
            for i in range(4):
                a.sendto(DNSRecord.question(f"a{i}.example.org").pack(), (dns.LISTEN_ADDR, 53))
            assert await run(rcodes, a, 1) == [RCODE.REFUSED]  # the 4th, at once
            for i in range(3):
                b.sendto(DNSRecord.question(f"b{i}.example.org").pack(), (dns.LISTEN_ADDR, 53))
            assert await run(rcodes, b, 1) == [RCODE.REFUSED]  # 3 + 2 in flight: the cap of all
            assert server.forwards == 5
            assert addrs(await run(query, b_ns, "web")) == ["10.213.0.2"]  # names of ours: no forward
            # The upstream never answers: SERVFAIL after the timeout, and the slots are free again.
            assert await run(rcodes, a, 3) == [RCODE.SERVFAIL] * 3
            assert await run(rcodes, b, 2) == [RCODE.SERVFAIL] * 2
            assert server.forwards == 0
        finally:
            a.close()
            b.close()
            await server.close()

    try:
        asyncio.run(scenario())
    finally:
        blackhole.close()


def test_a_containers_own_servers_get_its_other_names(namespaces: list[Path], upstream: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container that asked for servers (`--dns`, a service's `dns:`) keeps the embedded
    resolver, as libnetwork keeps it on a user-defined network: service names still answer,
    and only its other names go to its servers (recorded in its resolv.conf as Docker's
    `# ExtServers:`; the resolver reads them from its record), not the host's. Shoal wrote
    those servers in as the nameservers, and the dns_hook then opened no resolver at all: `db`
    no longer resolved in a stack with `dns:`."""
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind(("127.0.0.1", 0))
    own.settimeout(5)

    def answer_once() -> None:
        data, addr = own.recvfrom(4096)
        req = DNSRecord.parse(data)
        reply = req.reply()
        reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.77"), ttl=5))
        own.sendto(reply.pack(), addr)

    container_id = "c" * 64
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    (tmp_path / "containers" / container_id).mkdir(parents=True)
    own_server = f"127.0.0.1:{own.getsockname()[1]}"
    (tmp_path / "containers" / container_id / "container.json").write_text(
        json.dumps({"spec": {"dns": [own_server]}}))
    a_ns, b_ns = namespaces

    async def scenario() -> None:
        server = dns.EmbeddedDNS(upstreams=[upstream])
        server.set_records("front", dns.service_records("webapp_db", "10.213.0.7", ["10.213.0.8"], aliases=["db"]))
        # the servers the container's record asks for (not its resolv.conf, which it can write)
        await server.serve(container_id, a_ns, ["front"], container_upstreams(container_id))
        await server.serve("b", b_ns, ["front"], container_upstreams("b"))
        try:
            run = asyncio.to_thread
            assert addrs(await run(query, a_ns, "db")) == ["10.213.0.7"]
            answering = threading.Thread(target=answer_once, daemon=True)
            answering.start()
            assert addrs(await run(query, a_ns, "deb.debian.org")) == ["192.0.2.77"]
            answering.join()
            assert addrs(await run(query, b_ns, "deb.debian.org")) == ["192.0.2.99"]  # the host's
        finally:
            await server.close()
            own.close()

    asyncio.run(scenario())
