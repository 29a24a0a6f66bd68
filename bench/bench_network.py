"""Benchmark: shoal's kernel networking.

    sudo .venv/bin/python bench/bench_network.py [--seconds 3] [--rounds 3]

Prints:
 1. requests/s through a published port (nftables DNAT) to one backend, divided by requests/s
    straight to that backend's IP (target >= 0.9); ApacheBench (ab), keep-alive and one
    connection per request, measured as bench_mesh.py does (bounded runs, alternated, pauses,
    several client namespaces as sources, and a loopback client); bench_mesh.py adds a
    sustained minute;
 2. the spread of 1,000 new connections over 5 backends (each should be within 10% of a fifth);
 3. the time to apply a rule change (one `nft -f` transaction of the whole table), with 5 and
    with 1,000 backends;
 4. DNS answers per second from the embedded resolver (127.0.0.11 inside a namespace);
 5. attach/detach time per container with --scale containers on one network.

Backends are small asyncio HTTP/1.1 keep-alive servers, one process per namespace. Everything
runs under a private SHOAL_ROOT with pools in 10.213.0.0/16 and is removed at the end."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BACKEND = r"""
import asyncio, sys
name = sys.argv[1].encode()
body = name + b"\n"
def resp(connection):
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\nConnection: %s\r\n\r\n%s"
            % (len(body), connection, body))
KEEP, CLOSE = resp(b"keep-alive"), resp(b"close")
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            keep = b"keep-alive" in head.lower()
            w.write(KEEP if keep else CLOSE)
            await w.drain()
            if not keep:
                break
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", 80, backlog=1024)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""

DNS_CLIENT = r"""
import socket, sys, time, os
from dnslib import DNSRecord
seconds = float(sys.argv[1]); window = 64
q = [DNSRecord.question(n).pack() for n in ("web", "tasks.web", "db", "frontdoor")]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.11", 53)); s.settimeout(1)
sent = got = 0
for i in range(window):
    s.send(q[i % 4]); sent += 1
end = time.time() + seconds
while time.time() < end:
    try:
        s.recv(512); got += 1
    except socket.timeout:
        for i in range(window):
            s.send(q[i % 4]); sent += 1
        continue
    s.send(q[sent % 4]); sent += 1
print(got / seconds)
"""


def ab(url: str, seconds: int, keepalive: bool, concurrency: int = 8) -> float:
    args = ["ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", str(concurrency)]
    if keepalive:
        args.append("-k")
    proc = subprocess.run(args + [url], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"ab failed against {url}:\n{out}")
    return float(m.group(1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=200, help="containers attached to one network in part 5")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, nftables)", file=sys.stderr)
        return 1
    if not shutil.which("ab"):
        print("needs ApacheBench (apt-get install apache2-utils)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-net-"))
    os.environ.update(SHOAL_ROOT=str(work / "root"), SHOAL_RUN=str(work / "root" / "run"),
                      SHOAL_DEFAULT_ADDRESS_POOLS="10.213.0.0/16:20")
    from shoal.network import attach, cleanup, dns, lb, netns
    from shoal.network.store import NetworkStore
    from shoal.runtime.spec import ContainerSpec, PortMapping

    store = NetworkStore()
    procs: list[subprocess.Popen[str]] = []
    try:
        net = store.create("bench")
        backends = []
        t0 = time.perf_counter()
        for i in range(5):
            cid = f"{i + 1:02d}" * 32
            ports = [PortMapping(target=80, published=18800)] if i == 0 else []
            a = attach.attach(cid, ContainerSpec(image="none", network="bench", ports=ports))
            assert a is not None
            backends.append(a)
        attach_ms = (time.perf_counter() - t0) / 5 * 1000
        for i, a in enumerate(backends):
            p = subprocess.Popen(["nsenter", f"--net={a.netns_path}", sys.executable, "-c", BACKEND, f"task{i}"],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        print(f"attach (netns + veth + address + route + nft apply): {attach_ms:.0f} ms per container")

        # 1. published port vs direct, one backend: bench_mesh.py's measurement (the mesh, not
        # the client: bounded alternated runs with pauses, several source addresses).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_mesh

        bench_mesh.SERVERS[:] = [procs[0].pid]  # the CPU per request counts the backend's (nsenter execs it)
        direct_ip = backends[0].ip_addresses[0]
        mesh_opts = argparse.Namespace(seconds=opts.seconds, rounds=opts.rounds, pause=1.0, sustain=0)
        # Direct and mesh from client addresses of their own: the mesh keeps the client's
        # address, so from one address both kinds reach the task as one 4-tuple with different
        # TCP timestamp offsets, and PAWS refuses SYNs that land on the other kind's TIME_WAIT
        # (bench_mesh.py's finding): that would measure the client, not the mesh.
        with bench_mesh.client_namespaces(8) as clients:
            direct_clients, mesh_clients = clients[:4], clients[4:]
            bench_mesh.compare(
                f"published port / direct, {len(mesh_clients)} client addresses each",
                lambda s, k: bench_mesh.ab_many([(c.ns, f"http://{direct_ip}:80/") for c in direct_clients], s, k),
                lambda s, k: bench_mesh.ab_many([(c.ns, f"http://{c.host_ip}:18800/") for c in mesh_clients], s, k),
                mesh_opts, sustain=False)
        bench_mesh.compare(
            "published port / direct, loopback client (127.0.0.1)",
            lambda s, k: bench_mesh.ab_many([(None, f"http://{direct_ip}:80/")], s, k),
            lambda s, k: bench_mesh.ab_many([(None, "http://127.0.0.1:18800/")], s, k),
            mesh_opts, sustain=False)

        # 2. spread over 5 backends through a service's published port.
        svc = lb.Service(id="bench", name="web", ports=[lb.ServicePort("tcp", 80, 18801)],
                         backends=[lb.Backend(f"t{i}", {net.id: a.ip_addresses[0]}) for i, a in enumerate(backends)])
        lb.set_service(svc, store)
        counts: Counter[str] = Counter()
        for _ in range(1000):
            with socket.create_connection(("127.0.0.1", 18801), timeout=3) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            counts[data.rsplit(b"\r\n\r\n", 1)[1].strip().decode()] += 1
        worst = max(abs(n - 200) / 200 for n in counts.values())
        print(f"spread of 1000 connections over 5 backends: {dict(sorted(counts.items()))} "
              f"(worst {worst:.0%} from a fifth)")
        spread_rps = ab("http://127.0.0.1:18801/", opts.seconds, True)
        print(f"published port to 5 backends (keep-alive): {spread_rps:,.0f} req/s")

        # 3. rule change time.
        for n in (5, 1000):
            many = [lb.Backend(f"x{i}", {net.id: f"10.213.{16 + i // 250}.{2 + i % 250}"}) for i in range(n)]
            times = []
            for k in range(15):
                t = time.perf_counter()
                lb.set_backends("bench", many[: n - (k % 2)], store)
                times.append(time.perf_counter() - t)
            print(f"apply a rule change with {n} backends: median {statistics.median(times) * 1000:.1f} ms "
                  f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), one nft transaction")
        lb.remove_service("bench", store)

        # 4. DNS answers per second.
        async def dns_bench() -> float:
            server = dns.EmbeddedDNS(upstreams=[])
            server.set_records(net.id, dns.merge(
                dns.service_records("webapp_web", "10.213.16.100", [a.ip_addresses[0] for a in backends], aliases=["web"]),
                dns.service_records("webapp_db", None, ["10.213.16.50", "10.213.16.51"], aliases=["db"], endpoint_mode="dnsrr"),
                dns.container_records(backends[0].ip_addresses[0], ["frontdoor"]),
            ))
            await server.serve("c", backends[1].netns_path, [net.id], [])
            try:
                proc = await asyncio.create_subprocess_exec(
                    "nsenter", f"--net={backends[1].netns_path}", sys.executable, "-c", DNS_CLIENT, str(opts.seconds),
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                return float(out.decode().strip())
            finally:
                await server.close()

        print(f"DNS answers per second (embedded resolver, one client, 64 in flight): {asyncio.run(dns_bench()):,.0f}")

        # 5. many containers on one network (a Linux bridge takes at most 1,024 ports).
        big = store.create("big")
        t = time.perf_counter()
        for i in range(opts.scale):
            attach.attach(f"{i:04x}" * 16, ContainerSpec(image="none", network="big"))
        per = (time.perf_counter() - t) / opts.scale * 1000
        t = time.perf_counter()
        for i in range(opts.scale):
            attach.detach(f"{i:04x}" * 16)
        per_detach = (time.perf_counter() - t) / opts.scale * 1000
        print(f"{opts.scale} containers on one network ({big.subnet}): attach {per:.0f} ms, detach {per_detach:.0f} ms each")
        return 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for i in range(5):
            attach.detach(f"{i + 1:02d}" * 32)
        for i in range(opts.scale):
            attach.detach(f"{i:04x}" * 16)
        cleanup.remove_everything(store)
        for path in netns.list_pinned():
            netns.remove(path)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
