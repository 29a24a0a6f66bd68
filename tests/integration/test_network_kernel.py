"""Networks in the real kernel: namespaces, bridges, veths, nftables DNAT, load balancing,
published ports, hairpin, bad input leaving nothing behind, and crash reconcile.

Every test runs with a private SHOAL_ROOT (so kernel objects carry that root's names and tags)
and address pools inside 10.213.0.0/16; the fixture removes every namespace, link, nft table and
server thread even when the test fails. Backends are tiny socket servers whose listening sockets
are made inside the namespaces; clients connect from sockets made inside other namespaces."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.root]

from shoal.errors import Conflict, NotFound, ShoalError  # noqa: E402
from shoal.network import attach, bridge, cleanup, lb, netns, nft  # noqa: E402
from shoal.network.store import NetworkStore  # noqa: E402
from shoal.runtime.spec import ContainerSpec, PortMapping  # noqa: E402


class Servers:
    """Tiny TCP/UDP servers answering `<name> <client ip>` from sockets inside namespaces."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stopping = False

    def tcp(self, ns: Path, port: int, name: str) -> None:
        sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(128)
        self.socks.append(sock)

        def loop() -> None:
            while not self.stopping:
                try:
                    conn, addr = sock.accept()
                except OSError:
                    return
                with conn:
                    try:
                        conn.recv(1024)
                        conn.sendall(f"{name} {addr[0]}".encode())
                    except OSError:
                        pass

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.threads.append(t)

    def udp(self, ns: Path, port: int, name: str) -> None:
        sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        self.socks.append(sock)

        def loop() -> None:
            while not self.stopping:
                try:
                    _, addr = sock.recvfrom(1024)
                    if not addr:  # shut down
                        return
                    sock.sendto(f"{name} {addr[0]}".encode(), addr)
                except OSError:
                    return

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        self.stopping = True
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=2)


def ask(ns: Path | None, host: str, port: int, proto: str = "tcp", timeout: float = 3) -> str:
    """One request from inside namespace `ns` (None: the host); returns `<name> <client ip>`."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = netns.socket_in(ns, socket.AF_INET, kind) if ns else socket.socket(socket.AF_INET, kind)
    with sock:
        sock.settimeout(timeout)
        if proto == "tcp":
            sock.connect((host, port))
            sock.sendall(b"hi")
            return sock.recv(1024).decode()
        sock.sendto(b"hi", (host, port))
        return sock.recv(1024).decode()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[NetworkStore]:
    old = {k: os.environ.get(k) for k in ("SHOAL_ROOT", "SHOAL_RUN", "SHOAL_DEFAULT_ADDRESS_POOLS")}
    os.environ["SHOAL_ROOT"] = str(tmp_path / "root")
    os.environ["SHOAL_RUN"] = str(tmp_path / "root" / "run")
    os.environ["SHOAL_DEFAULT_ADDRESS_POOLS"] = "10.213.0.0/16:20"
    store = NetworkStore()
    try:
        yield store
    finally:
        try:
            cleanup.remove_everything(store)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    assert not any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()


def cid(n: int) -> str:
    return f"{n:02d}" * 32


def spec(network: str, *ports: PortMapping, name: str = "") -> ContainerSpec:
    return ContainerSpec(image="none", network=network, ports=list(ports), name=name)


def leftovers(store: NetworkStore) -> tuple[list[str], list[Path], list[str]]:
    endpoints = [c for n in store.list() for c in n.endpoints]
    return endpoints, netns.list_pinned(), [n for n, k in bridge.shoal_links().items() if k == "veth"]


def test_attach_gives_namespace_interface_route_and_egress_nat(env: NetworkStore) -> None:
    net = env.create("front", driver="overlay", attachable=True)
    a = attach.attach(cid(1), spec("front"))
    assert a is not None
    assert a.ip_addresses == [str(ipaddress.IPv4Network(net.subnet)[2])]
    out = subprocess.run(["nsenter", f"--net={a.netns_path}", "ip", "-o", "link", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    assert "mtu 1450" in out  # overlay: room for VXLAN
    routes = subprocess.run(["nsenter", f"--net={a.netns_path}", "ip", "route"], capture_output=True, text=True).stdout
    assert f"default via {net.gateway} dev eth0" in routes
    table = subprocess.run(["nft", "list", "table", "ip", nft.table_name()], capture_output=True, text=True).stdout
    assert f'ip saddr {net.subnet} oifname != "shoal*" masquerade' in table
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    # A second network: eth1, no second default route.
    second = env.create("second")
    ep = attach.connect(cid(1), "second")
    links = subprocess.run(["nsenter", f"--net={a.netns_path}", "ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    assert f"eth1    inet {ep.ip}/20" in links and ep.ip.startswith(second.subnet.rsplit(".", 2)[0])
    with pytest.raises(ShoalError, match="already exists in network second"):
        attach.connect(cid(1), "second")
    attach.detach(cid(1))
    attach.detach(cid(1))  # idempotent
    assert leftovers(env) == ([], [], [])
    assert not nft.table_exists()
    assert not bridge.link_exists(net.bridge)  # made again by the next attach


def test_published_port_from_loopback_host_address_other_network_and_hairpin(env: NetworkStore, servers: Servers) -> None:
    env.create("web")
    env.create("clients")
    a = attach.attach(cid(1), spec("web", PortMapping(target=80, published=18081), PortMapping(target=53, published=18081, protocol="udp")))
    c = attach.attach(cid(2), spec("clients"))
    assert a is not None and c is not None
    servers.tcp(a.netns_path, 80, "backend")
    servers.udp(a.netns_path, 53, "backend-udp")
    assert ask(None, "127.0.0.1", 18081).startswith("backend ")
    assert ask(None, a.gateway, 18081).startswith("backend ")  # an address of the node
    assert ask(None, "127.0.0.1", 18081, "udp").startswith("backend-udp ")
    # From another network: the client's own address reaches the backend (no masquerade).
    assert ask(c.netns_path, c.gateway, 18081) == f"backend {c.ip_addresses[0]}"
    # Hairpin: the container calling its own published port through the node.
    assert ask(a.netns_path, a.gateway, 18081).startswith("backend ")
    attach.detach(cid(1))
    with pytest.raises(OSError):
        ask(None, "127.0.0.1", 18081)
    attach.detach(cid(2))


def test_keep_client_ip_false_masquerades(env: NetworkStore, servers: Servers) -> None:
    env.create("web")
    env.create("clients")
    a = attach.attach(cid(1), spec("web"))
    c = attach.attach(cid(2), spec("clients"))
    assert a is not None and c is not None
    servers.tcp(a.netns_path, 80, "b")
    svc = lb.Service(id="svc1", name="web", ports=[lb.ServicePort("tcp", 80, 18082, keep_client_ip=False)],
                     backends=[lb.Backend("t1", {env.get("web").id: a.ip_addresses[0]})])
    lb.set_service(svc, env)
    assert ask(c.netns_path, c.gateway, 18082) == f"b {a.gateway}"  # the backend sees the gateway
    lb.remove_service("svc1", env)
    attach.detach(cid(1))
    attach.detach(cid(2))


def test_service_vip_balances_evenly_removes_backends_and_hairpins(env: NetworkStore, servers: Servers) -> None:
    net = env.create("back")
    tasks = []
    for i in range(5):
        a = attach.attach(cid(10 + i), spec("back"))
        assert a is not None
        servers.tcp(a.netns_path, 8000, f"task{i}")
        tasks.append(a)
    client = attach.attach(cid(20), spec("back"))
    assert client is not None
    vip = lb.allocate_vip("back", "svc")
    svc = lb.Service(id="svc", name="web", vips={net.id: vip}, ports=[lb.ServicePort("tcp", 8000, 18083)],
                     backends=[lb.Backend(f"t{i}", {net.id: t.ip_addresses[0]}) for i, t in enumerate(tasks)])
    lb.set_service(svc, env)
    with pytest.raises(Conflict, match="port 18083/tcp is already published by service web"):
        lb.set_service(lb.Service(id="other", name="api", ports=[lb.ServicePort("tcp", 80, 18083)]), env)
    assert [s.id for s in lb.load_services()] == ["svc"]
    answers = [ask(client.netns_path, vip, 8000).split() for _ in range(100)]
    seen = Counter(name for name, _ in answers)
    assert sorted(seen) == [f"task{i}" for i in range(5)]
    assert all(18 <= n <= 22 for n in seen.values()), seen
    # Every backend, on the client's own network and node, sees the client's own address (not
    # the bridge's gateway): the reply is bridged and un-DNATed by the bridge's conntrack.
    assert {addr for _, addr in answers} == {client.ip_addresses[0]}
    published = Counter(ask(None, "127.0.0.1", 18083).split()[0] for _ in range(50))
    assert len(published) == 5
    # A task on the network through the node's published port: its own address too.
    through_port = [ask(client.netns_path, client.gateway, 18083).split() for _ in range(10)]
    assert len({name for name, _ in through_port}) == 5
    assert {addr for _, addr in through_port} == {client.ip_addresses[0]}
    # A task reaching its own service through the VIP (hairpin) gets an answer; the others see
    # its address, itself (landing on itself) the gateway: a packet from its own address would
    # be dropped as martian.
    hairpin = {tuple(ask(tasks[0].netns_path, vip, 8000).split()) for _ in range(10)}
    assert hairpin == {("task0", net.gateway), *((f"task{i}", tasks[0].ip_addresses[0]) for i in range(1, 5))}
    port_self = {tuple(ask(tasks[0].netns_path, tasks[0].gateway, 18083).split()) for _ in range(10)}
    assert port_self == hairpin
    # A backend leaving the rotation receives no new connection.
    lb.remove_backend("svc", "t0", env)
    after = Counter(ask(client.netns_path, vip, 8000).split()[0] for _ in range(40))
    assert "task0" not in after and len(after) == 4
    lb.remove_service("svc", env)
    assert env.get("back").reserved == {}
    for i in range(5):
        attach.detach(cid(10 + i))
    attach.detach(cid(20))


def test_bad_input_leaves_nothing_behind(env: NetworkStore) -> None:
    env.create("web")
    a = attach.attach(cid(1), spec("web", PortMapping(target=80, published=18084)))
    assert a is not None
    with pytest.raises(Conflict, match="port 18084/tcp is already published by container"):
        attach.attach(cid(2), spec("web", PortMapping(target=80, published=18084)))
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(Conflict, match=f"0.0.0.0:{port} failed: port is already allocated"):
            attach.attach(cid(3), spec("web", PortMapping(target=80, published=port)))
    with pytest.raises(NotFound, match="network nowhere not found"):
        attach.attach(cid(4), spec("nowhere"))
    env.create("swarmonly", driver="overlay")
    with pytest.raises(ShoalError, match="network swarmonly not manually attachable"):
        attach.attach(cid(4), spec("swarmonly"))
    assert leftovers(env) == ([cid(1)], [a.netns_path], [bridge.veth_name(cid(1), env.get("web").id)])
    # A full network: a /30 holds one container besides its gateway.
    env.create("tiny", subnet="10.213.250.0/30")
    attach.attach(cid(5), spec("tiny"))
    with pytest.raises(ShoalError, match=r"no available IPv4 addresses on network tiny \(10.213.250.0/30 is full\)"):
        attach.attach(cid(6), spec("tiny"))
    assert sorted(p.name for p in netns.list_pinned()) == sorted([cid(1), cid(5)])
    attach.detach(cid(1))
    attach.detach(cid(5))


def test_full_pool_and_overlap(env: NetworkStore) -> None:
    os.environ["SHOAL_DEFAULT_ADDRESS_POOLS"] = "10.213.200.0/24:25"
    env.create("one")  # the predefined bridge network took the first /25
    with pytest.raises(ShoalError, match="could not find an available, non-overlapping IPv4 address pool"):
        env.create("two")
    with pytest.raises(Conflict, match=r"subnet 10.213.200.0/26 overlaps with network"):
        env.create("three", subnet="10.213.200.0/26")
    assert {n.name for n in env.list()} == {"bridge", "host", "none", "one"}


def test_rm_removes_bridge_and_refuses_busy_network(env: NetworkStore) -> None:
    net = env.create("gone")
    attach.attach(cid(1), spec("gone"))
    assert bridge.link_exists(net.bridge)
    with pytest.raises(Conflict, match="has active endpoints"):
        cleanup.remove_network("gone", env)
    attach.detach(cid(1))
    bridge.ensure_bridge(net)  # as if a crash left it
    cleanup.remove_network("gone", env)
    assert not bridge.link_exists(net.bridge)
    assert env.find("gone") is None


def test_reconcile_after_crash(env: NetworkStore) -> None:
    net = env.create("crashy")
    a = attach.attach(cid(1), spec("crashy", PortMapping(target=80, published=18085)))
    b = attach.attach(cid(2), spec("crashy"))
    assert a is not None and b is not None
    # Crash 1: the namespace of container 1 vanished (reboot, runtime removed it) but the state
    # still lists its endpoint and published port.
    netns.remove(a.netns_path)
    # Crash 2: a namespace and a veth made for a container the state never recorded.
    orphan = netns.create(netns.netns_path(cid(3)))
    bridge.add_interface(env.get("crashy"), orphan, bridge.veth_name(cid(3), net.id), "eth0", "10.213.31.250",
                         bridge.mac_for("10.213.31.250"), True)
    # Crash 3: a bridge whose network file is gone.
    ghost = env.create("ghost")
    bridge.ensure_bridge(ghost)
    env.delete(ghost)
    done = cleanup.reconcile(env)
    text = "\n".join(done)
    assert f"removed stale endpoint {cid(1)[:12]}" in text
    assert f"removed namespace {orphan}" in text
    assert f"removed bridge {ghost.bridge}" in text
    assert [c for n in env.list() for c in n.endpoints] == [cid(2)]
    table = subprocess.run(["nft", "list", "table", "ip", nft.table_name()], capture_output=True, text=True).stdout
    assert "18085" not in table
    assert cleanup.reconcile(env) == []  # nothing left to do
    attach.detach(cid(2))


def test_internal_network_has_no_way_out(env: NetworkStore) -> None:
    env.create("private", internal=True)
    a = attach.attach(cid(1), spec("private"))
    assert a is not None and a.gateway == ""
    routes = subprocess.run(["nsenter", f"--net={a.netns_path}", "ip", "route"], capture_output=True, text=True).stdout
    assert "default" not in routes
    with pytest.raises(ShoalError, match="cannot publish ports on internal network private"):
        attach.attach(cid(2), spec("private", PortMapping(target=80, published=18086)))
    assert [p.name for p in netns.list_pinned()] == [cid(1)]
    attach.detach(cid(1))


CONCURRENT = """
import sys
from shoal.network import attach
from shoal.runtime.spec import ContainerSpec
for n in range(int(sys.argv[1]), int(sys.argv[1]) + 5):
    attach.attach(f"{n:02d}" * 32, ContainerSpec(image="none", network="busy"))
"""


def test_concurrent_processes_get_distinct_addresses(env: NetworkStore) -> None:
    """Four shoal processes attaching at once: the file lock keeps IPAM consistent."""
    import sys

    env.create("busy")
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(10 + 5 * i)], env=dict(os.environ))
             for i in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    eps = env.get("busy").endpoints
    assert len(eps) == 20 and len({e.ip for e in eps.values()}) == 20
    assert len(bridge.bridge_ports(env.get("busy").bridge)) == 20
    for c in eps:
        attach.detach(c)


DOCKER_LIKE = """table ip filter {
    chain DOCKER-USER {
    }
    chain FORWARD {
        type filter hook forward priority filter; policy accept;
        jump DOCKER-USER
        ip saddr 10.213.0.0/16 drop
        ip daddr 10.213.0.0/16 drop
    }
}
"""


def test_coexists_with_dockers_forward_drop(env: NetworkStore, servers: Servers) -> None:
    """Docker's iptables-nft FORWARD drops what DOCKER-USER does not accept (here only for the
    test's subnets, so nothing else on the host is affected)."""
    if subprocess.run(["nft", "list", "table", "ip", "filter"], capture_output=True).returncode == 0:
        pytest.skip("an ip filter table exists already (Docker or iptables in use): not touching it")
    subprocess.run(["nft", "-f", "-"], input=DOCKER_LIKE, text=True, check=True)
    try:
        env.create("web")
        env.create("clients")
        a = attach.attach(cid(1), spec("web", PortMapping(target=80, published=18087)))
        c = attach.attach(cid(2), spec("clients"))
        assert a is not None and c is not None
        servers.tcp(a.netns_path, 80, "backend")
        rules = subprocess.run(["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True).stdout
        assert rules.count('"shoal*"') == 2
        assert ask(c.netns_path, c.gateway, 18087) == f"backend {c.ip_addresses[0]}"
        nft.docker_user_accept(False)  # without them, Docker's drop wins: the test can fail
        with pytest.raises(OSError):
            ask(c.netns_path, c.gateway, 18087, timeout=0.5)
        cleanup.reconcile(env)  # a reconcile puts them back (Docker started after shoal)
        assert ask(c.netns_path, c.gateway, 18087) == f"backend {c.ip_addresses[0]}"
        attach.detach(cid(1))
        attach.detach(cid(2))
        rules = subprocess.run(["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True).stdout
        assert "shoal" not in rules
    finally:
        subprocess.run(["nft", "delete", "table", "ip", "filter"], capture_output=True)


def _udp_frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, dport: int, payload: bytes) -> bytes:
    import struct

    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload  # checksum 0: none
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                         socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return dst_mac + src_mac + b"\x08\x00" + header + udp


def test_tasks_cannot_reach_host_loopback_services(env: NetworkStore) -> None:
    """route_localnet is on for the bridges (127.0.0.1 -> task DNAT); a task forging a packet to
    the host's 127.0.0.1 must still not reach a loopback-only service (CVE-2020-8558)."""
    net = env.create("web")
    a = attach.attach(cid(1), spec("web", PortMapping(target=80, published=18088)))
    assert a is not None
    bridge_mac = bytes.fromhex(Path(f"/sys/class/net/{net.bridge}/address").read_text().strip().replace(":", ""))
    task_mac = bytes.fromhex(a.mac_addresses[0].replace(":", ""))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.5)
        frame = _udp_frame(task_mac, bridge_mac, a.ip_addresses[0], "127.0.0.1", listener.getsockname()[1], b"forged")

        def send() -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
                raw.bind(("eth0", 0))
                raw.send(frame)

        netns.run_in(a.netns_path, send)
        with pytest.raises(TimeoutError):
            listener.recvfrom(100)
        # Without shoal's input rule the forged packet does arrive: the check above can fail.
        subprocess.run(["nft", "flush", "chain", "ip", nft.table_name(), "input"], check=True)
        try:
            netns.run_in(a.netns_path, send)
            assert listener.recvfrom(100)[0] == b"forged"
        finally:
            cleanup.reconcile(env)
    assert "127.0.0.0/8" in subprocess.run(["nft", "list", "chain", "ip", nft.table_name(), "input"],
                                           capture_output=True, text=True).stdout
    attach.detach(cid(1))


def test_raw_rtnetlink_requests_make_what_pyroute2_reads_back(env: NetworkStore) -> None:
    from pyroute2 import IPRoute

    from shoal.network import rtnl

    br, host, ns = "shoaltestbr0", "shoaltestv0", netns.netns_path(cid(9))
    netns.create(ns)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=br, kind="bridge")
        fd = os.open(ns, os.O_RDONLY)
        try:
            with rtnl.Rtnl() as nl:
                nl.add_veth(host, "eth0", peer_netns_fd=fd, peer_mac="02:5a:0a:d5:63:02", mtu=1400,
                            master=rtnl.index(br) or 0)
                with pytest.raises(OSError) as exists:
                    nl.add_veth(host, "eth0", peer_netns_fd=fd, peer_mac="02:5a:0a:d5:63:02", mtu=1400,
                                master=rtnl.index(br) or 0)
                assert exists.value.errno == 17 and host in str(exists.value)
                nl.set_alias(rtnl.index(host) or 0, "shoal:test")
        finally:
            os.close(fd)
        with IPRoute() as ipr:
            link = ipr.link("get", ifname=host)[0]
            assert link.get_attr("IFLA_MASTER") == rtnl.index(br)
            assert link.get_attr("IFLA_IFALIAS") == "shoal:test" and link.get_attr("IFLA_MTU") == 1400
            assert link["flags"] & rtnl.IFF_UP

        def inside() -> tuple[str, list[tuple[str, int]], str | None, bool, bool]:
            idx = rtnl.index("eth0")
            assert idx is not None
            with rtnl.Rtnl() as nl:
                nl.add_address(idx, "10.213.99.2", 24)
                nl.set_up(idx)
                nl.add_default_route("10.213.99.1", idx)
            with IPRoute() as ipr:
                link = ipr.link("get", index=idx)[0]
                addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)]
                gw = next((r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2, table=254)
                           if r["dst_len"] == 0), None)
                lo_up = bool(ipr.link("get", index=rtnl.LOOPBACK_INDEX)[0]["flags"] & rtnl.IFF_UP)
                return link.get_attr("IFLA_ADDRESS"), addrs, gw, bool(link["flags"] & rtnl.IFF_UP), lo_up

        mac, addrs, gw, up, lo_up = netns.run_in(ns, inside)
        assert (mac, addrs, gw, up, lo_up) == ("02:5a:0a:d5:63:02", [("10.213.99.2", 24)], "10.213.99.1", True, True)
        with rtnl.Rtnl() as nl:
            assert nl.delete(host) is True
            assert nl.delete(host) is False  # gone already: not an error
        assert rtnl.index(host) is None
    finally:
        bridge.delete_link(host)
        bridge.delete_link(br)
        netns.remove(ns)


def test_detach_removes_the_veth_even_when_something_still_holds_the_namespace(env: NetworkStore) -> None:
    env.create("held")
    a = attach.attach(cid(7), spec("held"))
    b = attach.attach(cid(8), spec("held"))
    assert a is not None and b is not None
    veth_a, veth_b = (bridge.veth_name(cid(n), env.get("held").id) for n in (7, 8))
    holder = netns.socket_in(a.netns_path)  # as a resolver socket would: the namespace lives on
    try:
        attach.detach(cid(7))
        attach.detach(cid(8))  # nothing holds this one: the kernel destroys it with its veth
        assert not bridge.link_exists(veth_a) and not bridge.link_exists(veth_b)
        assert leftovers(env) == ([], [], [])
    finally:
        holder.close()


def test_raw_rtnetlink_lists_what_pyroute2_lists(env: NetworkStore) -> None:
    """The bridge, address and route listings shoald makes without pyroute2 agree with it, in a
    namespace of the test's own."""
    from pyroute2 import IPRoute

    from shoal.network import rtnl

    ns = netns.netns_path(cid(6))
    netns.create(ns)
    try:
        def inside() -> tuple[list[tuple[str, int]], list[tuple[str, int, int]], list[tuple[str, int]],
                              list[tuple[str, int, int]], int]:
            with rtnl.Rtnl() as nl:
                nl.add_bridge("shoaltbr9", 1400)
                idx = rtnl.index("shoaltbr9") or 0
                nl.add_address(idx, "10.213.77.1", 24)
                nl.add_address(idx, "10.213.77.9", 32)
                nl.set_up(idx)
                nl.delete_address(idx, "10.213.77.9", 32)
                nl.add_address(idx, "10.213.77.10", 32)
                mine = sorted(nl.addresses(idx)), sorted(nl.routes())
            with IPRoute() as ipr:
                theirs_addr = sorted((a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2))
                theirs_routes = sorted((r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_OIF") or 0)
                                       for r in ipr.get_routes(family=2, table=254) if r.get_attr("RTA_DST"))
                mtu = ipr.link("get", index=idx)[0].get_attr("IFLA_MTU")
            return mine[0], mine[1], theirs_addr, theirs_routes, mtu

        addrs, routes, their_addrs, their_routes, mtu = netns.run_in(ns, inside)
        assert addrs == their_addrs == [("10.213.77.1", 24), ("10.213.77.10", 32)]
        assert routes == their_routes and ("10.213.77.0", 24, routes[0][2]) in routes
        assert mtu == 1400
    finally:
        netns.remove(ns)
