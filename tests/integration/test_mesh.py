"""The routing mesh on one node, in the real kernel: what a task sees of a loopback client of a
published port, and short connections through it not stalling.

A loopback client (127.a.b.c) is mapped 1:1 onto 169.254.b.c with its port, so it shares no
(address, port) space with the host's own connections from the bridge's gateway; before, every
loopback client was masqueraded to the gateway and, under short connections, SYNs met TIME_WAIT
sockets of other connections at the task and waited a second for their resend (issue 12 item 6).

Private SHOAL_ROOT, pools in 10.216.0.0/16; the fixture removes every namespace, link and nft
table even when a test fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.root]

from shoal.network import attach, cleanup, netns, nft  # noqa: E402
from shoal.network.store import NetworkStore  # noqa: E402
from shoal.runtime.spec import ContainerSpec, PortMapping  # noqa: E402

CID = "4d" * 32


class PeerServer:
    """A TCP server inside a namespace answering each connection with `<client ip>:<port>`
    and closing first (as an HTTP server without keep-alive: the TIME_WAIT is at the task)."""

    def __init__(self, ns: Path, port: int) -> None:
        self.sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(1024)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(f"{addr[0]}:{addr[1]}".encode())
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)


def peer_seen(host: str, port: int, source: tuple[str, int] = ("", 0)) -> str:
    with socket.socket() as s:
        s.settimeout(3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if source != ("", 0):
            s.bind(source)
        s.connect((host, port))
        data = b""
        while chunk := s.recv(64):
            data += chunk
        return data.decode()


def ns_counter(ns: Path, name: str) -> int:
    """An absolute TCP counter of the namespace (nstat -a -s: no history file touched)."""
    out = subprocess.run(["nsenter", f"--net={ns}", "nstat", "-a", "-s", "-z", name],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(fields[1])
    raise AssertionError(f"{name} missing from nstat:\n{out}")


@pytest.fixture
def task(tmp_path: Path) -> Iterator[tuple[attach.Attachment, PeerServer]]:
    old = {k: os.environ.get(k) for k in ("SHOAL_ROOT", "SHOAL_RUN", "SHOAL_DEFAULT_ADDRESS_POOLS")}
    os.environ["SHOAL_ROOT"] = str(tmp_path / "root")
    os.environ["SHOAL_RUN"] = str(tmp_path / "root" / "run")
    os.environ["SHOAL_DEFAULT_ADDRESS_POOLS"] = "10.216.0.0/16:24"
    store = NetworkStore()
    server = None
    try:
        store.create("mesh")
        a = attach.attach(CID, ContainerSpec(image="none", network="mesh",
                                             ports=[PortMapping(target=80, published=18931)]))
        assert a is not None
        server = PeerServer(Path(a.netns_path), 80)
        yield a, server
    finally:
        try:
            if server is not None:
                server.close()
            cleanup.remove_everything(store)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    assert not any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loopback_clients_keep_their_own_address_and_port(task: tuple[attach.Attachment, PeerServer]) -> None:
    a, _ = task
    table = subprocess.run(["nft", "list", "chain", "ip", nft.table_name(), "postrouting"],
                           capture_output=True, text=True, check=True).stdout
    assert f"ip saddr 127.0.0.0/8 snat prefix to {nft.LOOPBACK_CLIENTS}" in table
    # Two loopback clients are two clients at the task, each with its own port.
    for client, seen in (("127.0.0.1", "169.254.0.1"), ("127.0.3.7", "169.254.3.7")):
        port = free_port()
        assert peer_seen("127.0.0.1", 18931, (client, port)) == f"{seen}:{port}"
    # A direct connection from the host leaves a TIME_WAIT for (gateway, port) at the task; a
    # loopback client with the same port is not squeezed into that space: port kept, answered.
    port = free_port()
    assert peer_seen(a.ip_addresses[0], 80, (a.gateway, port)) == f"{a.gateway}:{port}"
    assert peer_seen("127.0.0.1", 18931, ("127.0.0.1", port)) == f"169.254.0.1:{port}"


def test_short_connections_through_the_published_port_never_wait_for_a_resent_syn(
        task: tuple[attach.Attachment, PeerServer]) -> None:
    """Direct and published connections reusing the same client ports, alternated: every SYN
    is answered at once (none refused by a TIME_WAIT socket at the task, none resent)."""
    a, _ = task
    ns = Path(a.netns_path)
    refused = ns_counter(ns, "TcpExtPAWSTimewait")
    ports = [free_port() for _ in range(300)]
    slowest = 0.0
    for _ in range(2):
        for port in ports:
            for dest, source in (((a.ip_addresses[0], 80), (a.gateway, port)),
                                 (("127.0.0.1", 18931), ("127.0.0.1", port))):
                t = time.monotonic()
                peer_seen(*dest, source)
                slowest = max(slowest, time.monotonic() - t)
    assert ns_counter(ns, "TcpExtPAWSTimewait") == refused
    assert slowest < 0.9, f"a connection took {slowest:.2f} s (a resent SYN waits 1 s)"


def test_mesh_rules_are_made_exactly_the_view_and_removed(tmp_path: Path) -> None:
    """The routing mesh's kernel side on a node (in a namespace of its own): the bridge's MAC
    derived from the node's address, one ip rule and one route table per other node, stale ones
    (a view from before, a crash) removed, nothing left once no bridge is in the mesh."""
    from shoal.network import mesh

    ns = netns.create(tmp_path / "node")
    try:
        def inside() -> dict[str, str]:
            subprocess.run(["ip", "link", "add", "shoalmt0", "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "10.218.0.1/24", "dev", "shoalmt0"], check=True)
            subprocess.run(["ip", "link", "set", "shoalmt0", "up"], check=True)
            # A rule of ours from a view that is gone (the node 198.18.7.7 left) must go.
            stale = mesh.table_id("shoalmt0", "198.18.7.7")
            subprocess.run(["ip", "rule", "add", "priority", str(mesh.RULE_PRIORITY), "fwmark",
                            hex(mesh.node_mark("198.18.7.7")), "iif", "shoalmt0", "table", str(stale)], check=True)
            mesh.apply_kernel([mesh.MeshBridge("shoalmt0", "198.18.0.2", ["198.18.0.3", "198.18.0.4"])])
            shown = subprocess.run(["ip", "-j", "link", "show", "dev", "shoalmt0"], capture_output=True, text=True,
                                   check=True).stdout
            out = {"mac": json.loads(shown)[0]["address"],
                   # so the tasks already there learn the new MAC (gratuitous ARP)
                   "arp_notify": Path("/proc/sys/net/ipv4/conf/shoalmt0/arp_notify").read_text().strip(),
                   "rules": subprocess.run(["ip", "rule", "show", "priority", str(mesh.RULE_PRIORITY)],
                                           capture_output=True, text=True, check=True).stdout,
                   "route": subprocess.run(["ip", "route", "show", "table", str(mesh.table_id("shoalmt0", "198.18.0.3"))],
                                           capture_output=True, text=True, check=True).stdout}
            mesh.apply_kernel([mesh.MeshBridge("shoalmt0", "198.18.0.2", ["198.18.0.3", "198.18.0.4"])])  # idempotent
            out["again"] = subprocess.run(["ip", "rule", "show", "priority", str(mesh.RULE_PRIORITY)],
                                          capture_output=True, text=True, check=True).stdout
            mesh.apply_kernel([])
            out["after"] = subprocess.run(["ip", "rule", "show", "priority", str(mesh.RULE_PRIORITY)],
                                          capture_output=True, text=True, check=True).stdout
            out["tables"] = subprocess.run(["ip", "route", "show", "table", "all"],
                                           capture_output=True, text=True, check=True).stdout
            return out

        got = netns.run_in(ns, inside)
    finally:
        netns.remove(ns)
    assert got["mac"] == "02:5b:c6:12:00:02" == mesh.node_mac("198.18.0.2")
    assert got["arp_notify"] == "1"
    rules = got["rules"].splitlines()
    assert len(rules) == 2, rules
    assert f"fwmark {mesh.node_mark('198.18.0.3'):#x} iif shoalmt0 lookup {mesh.table_id('shoalmt0', '198.18.0.3')}" \
        in got["rules"], got["rules"]
    assert "198.18.7.7" not in got["rules"] and hex(mesh.node_mark("198.18.7.7")) not in got["rules"]
    assert got["route"].split()[:6] == ["default", "via", "198.18.0.3", "dev", "shoalmt0", "onlink"], got["route"]
    assert got["again"] == got["rules"]
    assert got["after"] == ""
    assert "table" not in " ".join(line for line in got["tables"].splitlines() if "shoalmt0" in line and "default" in line)


def test_mesh_nft_rules_render_and_load() -> None:
    """The nft side: the mark of a connection entering from another node's bridge MAC, its
    replies' packet mark, and the SNAT of a node's own client sent to a task on that node."""
    from shoal.network import mesh

    bridges = [mesh.MeshBridge("shoalmt1", "198.18.0.2", ["198.18.0.3"], {"198.18.0.3": ["10.218.1.5"]})]
    script = nft.render([], [], [], mesh.render(bridges), mesh.render_snat(bridges))
    assert ('ct state new ct mark set iifname . ether saddr map { "shoalmt1" . 02:5b:c6:12:00:03 : 0x4d450003 }'
            in script)
    assert 'ct direction reply ct mark & 0xffff0000 == 0x4d450000 iifname { "shoalmt1" } meta mark set ct mark' in script
    assert ('oifname "shoalmt1" ip saddr 198.18.0.3 ip daddr { 10.218.1.5 } ct status dnat snat ip to 198.18.0.2'
            in script)
    check = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_published_port_rotation_holds_other_nodes_tasks_unless_mode_host(tmp_path: Path) -> None:
    """A published port in ingress mode balances over the local tasks and those of other nodes
    (reached over the overlay); `mode: host` only over the local ones; the VIP over both."""
    from shoal.network import lb

    old = {k: os.environ.get(k) for k in ("SHOAL_ROOT", "SHOAL_RUN")}
    os.environ["SHOAL_ROOT"] = str(tmp_path / "root")
    os.environ["SHOAL_RUN"] = str(tmp_path / "root" / "run")
    try:
        store = NetworkStore()
        svc = lb.Service(id="s1", name="web", vips={"n1": "10.218.2.2"},
                         ports=[lb.ServicePort("tcp", 80, 18941), lb.ServicePort("tcp", 81, 18942, mode="host")],
                         backends=[lb.Backend("t1", {"n1": "10.218.2.5"})],
                         remote={"n1": ["10.218.2.7", "10.218.2.9"]})
        lb._save(svc)
        _, vips, ports = nft.collect(store)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    by_port = {p.published: sorted(p.backends) for p in ports}
    assert by_port[18941] == [("10.218.2.5", 80), ("10.218.2.7", 80), ("10.218.2.9", 80)]
    assert by_port[18942] == [("10.218.2.5", 81)]
