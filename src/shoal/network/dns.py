"""The embedded DNS resolver tasks see at 127.0.0.11, as Docker's.

One asyncio loop serves every container: for each one, a UDP and a TCP socket bound to
127.0.0.11:53 are opened *inside* the container's network namespace (a thread setns()es, makes
the sockets and exits; sockets stay in the namespace they were made in), and the loop reads them
from the host namespace. Answers come from a table of records per network, so a container
resolves only names of the networks it is attached to; every other name is forwarded, from the
host namespace, to the servers the container asked for (`--dns`, a service's `dns:`), else the
host's resolvers.

Names served (built with service_records() / container_records()):
  <service> and its aliases (short name in a stack) -> the VIP (endpoint_mode vip) or the task IPs (dnsrr)
  tasks.<service>, tasks.<alias>                    -> every task IP
  container names, hostnames and network aliases    -> the container's IP
and PTR records for every address served.

One container must not be able to exhaust shoald, whose descriptors every stack shares: a
forwarded question holds a socket until the upstream answers (or UPSTREAM_TIMEOUT), so forwards
in flight are capped (MAX_FORWARDS, Docker's libnetwork maxConcurrent, for all containers
together) and so is each container's share (MAX_FORWARDS_PER_CONTAINER); a question over a cap
is answered REFUSED at once, as Docker's resolver answers when its semaphore is taken. TCP
clients are capped the same way and timed out as miekg/dns (Docker's DNS server) does: 8 s idle
between questions, 2 s to read or write one, 128 questions a connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.network import netns
from shoal.network.store import Network

if TYPE_CHECKING:
    from dnslib import DNSRecord

LISTEN_ADDR = "127.0.0.11"
TTL = 600  # what Docker's resolver gives its own records
UPSTREAM_TIMEOUT = 2.0
MAX_FORWARDS = 1024  # upstream sockets open at once, every container together (Docker: 1,024)
MAX_FORWARDS_PER_CONTAINER = 256  # so one container's flood leaves the others room
MAX_TCP_CLIENTS = 1024  # TCP connections held at once, every container together
MAX_TCP_CLIENTS_PER_CONTAINER = 32
TCP_IDLE_TIMEOUT = 8.0  # miekg/dns's idle timeout between questions on a connection
TCP_IO_TIMEOUT = 2.0  # miekg/dns's read and write timeouts, for one message
TCP_MAX_QUERIES = 128  # miekg/dns's MaxTCPQueries

log = logging.getLogger(__name__)

Records = dict[str, list[str]]  # lower-case name without the trailing dot -> IPv4 addresses


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def service_records(name: str, vip: str | None, task_ips: Iterable[str], aliases: Iterable[str] = (),
                    endpoint_mode: str = "vip") -> Records:
    """The names of one service (on one network)."""
    ips = sorted(task_ips, key=ipaddress.IPv4Address)
    main = [vip] if endpoint_mode == "vip" and vip else ips
    records: Records = {}
    for n in (name, *aliases):
        records[_key(n)] = list(main)
        records[_key(f"tasks.{n}")] = list(ips)
    return records


def container_records(ip: str, names: Iterable[str]) -> Records:
    """A container (or task) answers to its name, hostname and aliases."""
    return {_key(n): [ip] for n in names if n}


def endpoint_records(net: Network) -> Records:
    """Every container on a network by name, hostname, short ID and alias (from the store)."""
    return merge(*(container_records(ep.ip, [ep.name, ep.hostname, ep.container_id[:12], *ep.aliases])
                   for ep in net.endpoints.values()))


def merge(*tables: Records) -> Records:
    out: Records = {}
    for t in tables:
        for k, ips in t.items():
            have = out.setdefault(k, [])
            have.extend(ip for ip in ips if ip not in have)
    return out


@dataclass
class _Served:
    networks: list[str]
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    forwards: int = 0  # this container's questions waiting on an upstream
    tcp_clients: int = 0
    upstreams: list[str] = field(default_factory=list)  # its own (`dns:`), else the host's


def parse(data: bytes) -> DNSRecord:
    """dnslib (0.6 MiB of code) is imported at the first question that is not a cached answer,
    not with this module: every node's shoald has the resolver, and a local cluster's zygote
    preloads it, but a node whose tasks never ask a name never needs dnslib."""
    from dnslib import DNSRecord

    return DNSRecord.parse(data)


def refused(request: DNSRecord) -> bytes:
    from dnslib import RCODE

    reply = request.reply()
    reply.header.rcode = RCODE.REFUSED
    return reply.pack()


def servfail(request: DNSRecord) -> bytes:
    from dnslib import RCODE

    reply = request.reply()
    reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


class EmbeddedDNS:
    """Serve `records` per network to containers' namespaces; forward the rest upstream."""

    def __init__(self, upstreams: list[str] | None = None, port: int = 53,
                 run_blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread) -> None:
        from shoal.network.attach import host_resolvers

        self.upstreams = upstreams if upstreams is not None else host_resolvers()
        self.port = port
        # Where a namespace's sockets are made (a blocking setns): shoald gives its control
        # threads, so a task's resolver is never left waiting behind API requests.
        self._run_blocking = run_blocking
        self._tables: dict[str, Records] = {}
        self._reverse: dict[str, dict[str, str]] = {}
        self._served: dict[str, _Served] = {}
        # Packed local answers by (networks, query without its ID): dnslib costs ~0.2 ms a
        # message, a cache hit only the 2-byte ID splice. Cleared whenever a table changes.
        self._cache: dict[tuple[tuple[str, ...], bytes], bytes] = {}
        self.forwards = 0  # forwarded questions in flight, every container together
        self.tcp_clients = 0
        self._over_cap_logged = 0.0

    # --- records -------------------------------------------------------------------------------

    def set_records(self, network_id: str, records: Records) -> None:
        """Replace a network's whole table (cheap: the daemon re-derives it on every change)."""
        table = {_key(k): list(v) for k, v in records.items()}
        self._tables[network_id] = table
        reverse: dict[str, str] = {}
        for name, ips in sorted(table.items()):
            if name.startswith("tasks.") or len(ips) != 1:
                continue
            reverse.setdefault(ips[0], name)
        self._reverse[network_id] = reverse
        self._cache.clear()

    def drop_network(self, network_id: str) -> None:
        self._tables.pop(network_id, None)
        self._reverse.pop(network_id, None)
        self._cache.clear()

    def answer_cached(self, networks: list[str], data: bytes) -> bytes | None:
        """The packed local answer to a query asked before (None: not cached, or not local)."""
        hit = self._cache.get((tuple(networks), data[2:]))
        return data[:2] + hit if hit is not None else None

    def answer_packed(self, networks: list[str], data: bytes, request: DNSRecord) -> bytes | None:
        local = self.answer_local(networks, request)
        if local is None:
            return None
        packed = local.pack()
        if len(local.rr) > 1:
            return packed  # shuffled on every question (answer_local): never one order cached
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[(tuple(networks), data[2:])] = packed[2:]
        return packed

    def lookup(self, networks: Iterable[str], name: str) -> list[str] | None:
        """The addresses of `name` as seen from these networks; None if none of them knows it."""
        key = _key(name)
        found: list[str] | None = None
        for net in networks:
            ips = self._tables.get(net, {}).get(key)
            if ips is not None:
                found = (found or []) + [ip for ip in ips if ip not in (found or [])]
        return found

    def reverse(self, networks: Iterable[str], ip: str) -> str | None:
        for net in networks:
            name = self._reverse.get(net, {}).get(ip)
            if name:
                return name
        return None

    # --- answering -----------------------------------------------------------------------------

    def answer_local(self, networks: list[str], request: DNSRecord) -> DNSRecord | None:
        """An answer from the tables, or None when the question must go upstream."""
        from dnslib import PTR, QTYPE, RR, A

        q = request.q
        qname = str(q.qname)
        reply = request.reply()
        if q.qtype == QTYPE.PTR and qname.lower().endswith(".in-addr.arpa."):
            parts = qname.lower().split(".")[:4]
            ip = ".".join(reversed(parts))
            name = self.reverse(networks, ip)
            if name is None:
                return None
            reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(name + "."), ttl=TTL))
            return reply
        ips = self.lookup(networks, qname)
        if ips is None:
            return None
        if q.qtype in (QTYPE.A, QTYPE.ANY):
            if len(ips) > 1:
                # libnetwork's resolver shuffles every answer of several addresses (shuffleAddr):
                # a client that takes the first (tasks.<svc>, a dnsrr service) spreads over all.
                ips = random.sample(ips, len(ips))
            for ip in ips:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        # Other types of a name we own: NOERROR with no answer, as Docker (no AAAA, no MX...).
        return reply

    async def handle(self, networks: list[str], data: bytes, tcp: bool = False,
                     served: _Served | None = None) -> bytes | None:
        cached = self.answer_cached(networks, data)
        if cached is not None:
            return cached
        try:
            request = parse(data)
        except Exception:  # noqa: BLE001 - garbage on the wire is dropped, as any resolver does
            return None
        local = self.answer_packed(networks, data, request)
        if local is not None:
            return local
        served = served or _Served(networks)
        if not self.admit(served):
            return refused(request)
        try:
            upstreams = served.upstreams or None
            return await (self.forward_tcp(request, data, upstreams) if tcp
                          else self.forward(request, data, upstreams))
        finally:
            self.release(served)

    def admit(self, served: _Served) -> bool:
        """Take a forwarding slot for this container, or False when it (or everyone) is at the cap."""
        if served.forwards >= MAX_FORWARDS_PER_CONTAINER or self.forwards >= MAX_FORWARDS:
            now = time.monotonic()
            if now - self._over_cap_logged > 2.0:  # as Docker's logInterval: one line per burst
                self._over_cap_logged = now
                log.warning("embedded DNS: more than %d forwarded questions in flight (%d for one "
                            "container): answering REFUSED", MAX_FORWARDS, served.forwards)
            return False
        served.forwards += 1
        self.forwards += 1
        return True

    def release(self, served: _Served) -> None:
        served.forwards -= 1
        self.forwards -= 1

    async def forward(self, request: DNSRecord, data: bytes, upstreams: list[str] | None = None) -> bytes:
        loop = asyncio.get_running_loop()
        for server in upstreams or self.upstreams:
            host, _, port = server.partition(":")  # "ip" or "ip:port"
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError:  # out of descriptors: a SERVFAIL, not a dead task
                continue
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (host, int(port or 53)))
                await loop.sock_sendall(sock, data)
                return await asyncio.wait_for(loop.sock_recv(sock, 65535), UPSTREAM_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                continue
            finally:
                sock.close()
        return servfail(request)

    async def forward_tcp(self, request: DNSRecord, data: bytes, upstreams: list[str] | None = None) -> bytes:
        """A question that came over TCP goes upstream over TCP (answers too big for UDP)."""
        for server in upstreams or self.upstreams:
            host, _, port = server.partition(":")
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port or 53)), UPSTREAM_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                continue
            try:
                writer.write(struct.pack("!H", len(data)) + data)
                await writer.drain()
                head = await asyncio.wait_for(reader.readexactly(2), UPSTREAM_TIMEOUT)
                return await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), UPSTREAM_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                continue
            finally:
                writer.close()
        return servfail(request)

    # --- serving namespaces --------------------------------------------------------------------

    async def serve(self, container_id: str, netns_path: Path | str, networks: list[str],
                    upstreams: list[str]) -> None:
        """Listen on 127.0.0.11:53 (UDP and TCP) inside the container's namespace; `upstreams`:
        where its other names go, the servers the container asked for (agent/netglue.py
        container_upstreams), else (empty) the host's."""
        if container_id in self._served:
            self._served[container_id].networks[:] = list(networks)
            return

        def make() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                for s in (udp, tcp):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((LISTEN_ADDR, self.port))
                    s.setblocking(False)
                tcp.listen(64)
            except BaseException:
                udp.close()
                tcp.close()
                raise
            return udp, tcp

        udp, tcp = await self._run_blocking(netns.run_in, netns_path, make)
        served = _Served(list(networks), upstreams=list(upstreams))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self, served), sock=udp)
        served.transports.append(transport)
        server = await asyncio.start_server(lambda r, w: self._tcp(served, r, w), sock=tcp)
        served.servers.append(server)
        self._served[container_id] = served

    async def unserve(self, container_id: str) -> None:
        served = self._served.pop(container_id, None)
        if served is None:
            return
        for t in served.transports:
            t.close()
        for s in served.servers:
            s.close()
            await s.wait_closed()

    async def close(self) -> None:
        for cid in list(self._served):
            await self.unserve(cid)

    def serving(self) -> list[str]:
        return list(self._served)

    async def _tcp(self, served: _Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if served.tcp_clients >= MAX_TCP_CLIENTS_PER_CONTAINER or self.tcp_clients >= MAX_TCP_CLIENTS:
            writer.transport.abort()  # over the cap: the descriptor goes at once
            return
        served.tcp_clients += 1
        self.tcp_clients += 1
        try:
            for _ in range(TCP_MAX_QUERIES):
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    head = await reader.readexactly(2)
                async with asyncio.timeout(TCP_IO_TIMEOUT):
                    data = await reader.readexactly(struct.unpack("!H", head)[0])
                answer = await self.handle(served.networks, data, tcp=True, served=served)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                async with asyncio.timeout(TCP_IO_TIMEOUT):
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            served.tcp_clients -= 1
            self.tcp_clients -= 1
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that stopped reading holds nothing of ours
            else:
                writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, dns: EmbeddedDNS, served: _Served) -> None:
        self.dns = dns
        self.served = served
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Local names are answered synchronously: no task per query.
        local = self.dns.answer_cached(self.served.networks, data)
        if local is None:
            try:
                request = parse(data)
            except Exception:  # noqa: BLE001 - garbage on the wire is dropped
                return
            local = self.dns.answer_packed(self.served.networks, data, request)
        if local is not None:
            if self.transport is not None:
                self.transport.sendto(local, addr)
            return
        if not self.dns.admit(self.served):
            if self.transport is not None:
                self.transport.sendto(refused(request), addr)
            return
        task = asyncio.get_running_loop().create_task(self._forward(request, data, addr))
        _pending.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_pending.discard)

    async def _forward(self, request: DNSRecord, data: bytes, addr: tuple[str, int]) -> None:
        try:
            answer = await self.dns.forward(request, data, self.served.upstreams or None)
        finally:
            self.dns.release(self.served)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


_pending: set[asyncio.Task[None]] = set()
