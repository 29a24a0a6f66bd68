"""Encrypted overlay networks across nodes (issue 12 item 2) on a three-node local cluster: a
service on an encrypted network (compose `driver_opts: encrypted: ""`) and on a plain one, a
task on each node serving a page with a marker; a task fetches the other node's page by task
address and by VIP over each network, while the test captures every frame on the node link
(AF_PACKET on the host side of node 2's eth0 veth):

- over the encrypted network the marker never appears on the link, no VXLAN packet of its VNI
  does either, and WireGuard packets (UDP 51820) do: the VXLAN traffic is inside WireGuard;
- over the plain network, between the same nodes, the marker is on the link in clear inside
  VXLAN (the control: the capture does see what crosses the link);
- a plain VXLAN packet with the encrypted network's VNI forged on the link is dropped;
- a node's shoald killed: the next one replaces the wireguard-go left behind, with a new key,
  and the encrypted network carries again;
- each node has one WireGuard interface (wireguard-go here: this kernel has no WireGuard) with
  the other nodes as its peers and a tunnel address from 240.83.0.0/16, its key never in a file
  of the node's state;
- `stack rm` removes the WireGuard interface and its wireguard-go from every node, and `cluster
  rm` leaves no process, link or socket.

Real processes, real WireGuard (wireguard-go, wg), real VXLAN between network namespaces."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.network import wireguard

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(bool(wireguard.unavailable()), reason=wireguard.unavailable() or "ok")]

NODES = 3  # two peers per node: their order, their union (one node's peers are a list, not one)
STACK = "enc"
SERVICE = f"{STACK}_web"
MARKER = f"SHOALMARK{secrets.token_hex(8)}"
# The page: the marker (several times, so a packet's split cannot hide it) and the task's hostname.
WEB = ["sh", "-c", "mkdir -p /www && for i in 1 2 3 4; do echo $MARKER; done > /www/index.html "
       "&& hostname >> /www/index.html && exec httpd -f -p 80 -h /www"]
SUBNETS = {"secure": "10.213.81.0/24", "plain": "10.213.82.0/24"}

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402


def _wireguard_go_pids(names: set[str]) -> set[int]:
    """wireguard-go processes serving one of these interfaces, anywhere on the machine."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"wireguard-go") and {n.encode() for n in names} & set(cmd):
            found.add(int(proc.name))
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalenc{os.getpid() % 10000}"
    base = tmp_path_factory.mktemp("encrypted")
    names: set[str] = set()
    with cluster_with_web_image(base, name, NODES, busybox_tar) as c:
        names = {wireguard.interface_name(Path(c.node(k)["root"])) for k in range(1, NODES + 1)}
        yield c
    # `cluster rm` left no wireguard-go and no socket of these nodes.
    assert not _wireguard_go_pids(names)
    assert not [n for n in names if (wireguard.SOCKET_DIR / f"{n}.sock").exists()]


def compose(base: Path) -> Path:
    def esc(v: Any) -> Any:
        return [esc(x) for x in v] if isinstance(v, list) else v.replace("$", "$$")

    data = {"version": "3.8",
            "services": {"web": {"image": "web:v1", "command": esc(WEB), "environment": {"MARKER": MARKER},
                                 "stop_grace_period": "1s",
                                 "deploy": {"replicas": NODES, "placement": {"max_replicas_per_node": 1}},
                                 "networks": ["secure", "plain"]}},
            "networks": {"secure": {"driver": "overlay", "driver_opts": {"encrypted": ""},
                                    "ipam": {"config": [{"subnet": SUBNETS["secure"]}]}},
                         "plain": {"driver": "overlay", "ipam": {"config": [{"subnet": SUBNETS["plain"]}]}}}}
    path = base / "enc.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def network_file(c: Any, k: int, name: str) -> dict[str, Any] | None:
    for f in (Path(c.node(k)["root"]) / "networks").glob("*.json"):
        net = json.loads(f.read_text())
        if net["name"] == name:
            return net
    return None


def task_pids(c: Any) -> dict[int, int]:
    """node -> pid of its task's httpd (in the task's namespaces)."""
    out: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "httpd":
                continue
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        for k in range(1, NODES + 1):
            if f"/shoal-{c.name}-{k}/" in cgroup:
                out[k] = int(proc.name)
    return out


def addresses(c: Any, k: int, pid: int) -> dict[str, str]:
    """The task's address on each network, from its namespace."""
    got = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "-4", "addr"], capture_output=True,
                         text=True, check=True).stdout
    out = {}
    for net, subnet in SUBNETS.items():
        prefix = subnet.rsplit(".", 1)[0] + "."
        out[net] = next(w.split("/")[0] for w in got.split() if w.startswith(prefix))
    return out


def fetch(pid: int, ip: str) -> str:
    got = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-s", "-m", "5", f"http://{ip}/"],
                         capture_output=True, text=True, timeout=20, check=False)
    assert got.returncode == 0, (pid, ip, got)
    return got.stdout


class Capture:
    """Every frame on a host link (AF_PACKET, both directions), as tcpdump would see them."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last replies
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def udp(self) -> list[tuple[int, int, bytes]]:
        """(source port, destination port, payload) of every IPv4 UDP datagram captured."""
        out = []
        for frame in self.frames:
            if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
            out.append((sport, dport, frame[14 + ihl + 8:]))
        return out


def vni(c: Any, name: str) -> int:
    net = network_file(c, 1, f"{STACK}_{name}")
    assert net is not None
    return int(net["options"]["com.docker.network.driver.overlay.vxlanid_list"])


def vip(c: Any, name: str) -> str:
    out = c.shoal("service", "inspect", SERVICE, "--format", "{{json .Endpoint.VirtualIPs}}").stdout
    subnet = SUBNETS[name].rsplit(".", 1)[0] + "."
    return next(v["Addr"].split("/")[0] for v in json.loads(out) if v["Addr"].startswith(subnet))


def wait_reachable(pid: int, ip: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-s", "-m", "2", f"http://{ip}/"],
                             capture_output=True, text=True, timeout=20, check=False)
        if got.returncode == 0:
            return got.stdout
        assert time.monotonic() < deadline, f"{ip} not reachable from pid {pid}: {got}"
        time.sleep(0.3)


def test_encrypted_network_carries_nothing_in_clear(cluster: Any) -> None:
    c = cluster
    c.shoal("stack", "deploy", "--detach", "-c", str(compose(c.base)), STACK)
    deadline = time.monotonic() + 90
    while len(pids := task_pids(c)) < NODES:
        assert time.monotonic() < deadline, c.shoal("service", "ps", SERVICE, "--no-trunc").stdout
        time.sleep(0.3)
    addrs = {k: addresses(c, k, pid) for k, pid in pids.items()}
    hostname2 = subprocess.run(["nsenter", "-t", str(pids[2]), "-u", "hostname"], capture_output=True,
                               text=True, check=True).stdout.strip()

    # One WireGuard interface per node, the other node its peer, a tunnel address of the range;
    # the encrypted network's MTU leaves room for WireGuard and VXLAN (1420 - 50).
    for k in range(1, NODES + 1):
        ns, name = c.node(k)["hostname"], wireguard.interface_name(Path(c.node(k)["root"]))
        deadline = time.monotonic() + 20
        while (dump := in_netns(ns, "wg", "show", name, "dump")).returncode != 0 or \
                len(dump.stdout.splitlines()) != NODES:
            assert time.monotonic() < deadline, (k, dump)
            time.sleep(0.2)
        peers = [line.split("\t") for line in dump.stdout.splitlines()[1:]]
        others = {f"{c.node(j)['address']}:{wireguard.WG_PORT}" for j in range(1, NODES + 1) if j != k}
        assert {p[2] for p in peers} == others, peers
        assert all(p[3].startswith("240.83.") and p[3].endswith("/32") for p in peers), peers
        assert network_file(c, k, f"{STACK}_secure")["mtu"] == wireguard.ENCRYPTED_MTU == 1370
        assert network_file(c, k, f"{STACK}_plain")["mtu"] == 1450
        # The private key is in no file of the node's state.
        private = in_netns(ns, "wg", "show", name, "private-key").stdout.strip()
        assert len(private) == 44
        hits = subprocess.run(["grep", "-rlF", private, c.node(k)["root"], c.node(k)["run"]],
                              capture_output=True, text=True)
        assert hits.stdout == "", hits.stdout

    wait_reachable(pids[1], addrs[2]["secure"])
    wait_reachable(pids[1], addrs[2]["plain"])
    link = c.node(2)["host_veth"]
    secure_vni, plain_vni = vni(c, "secure"), vni(c, "plain")

    # Encrypted: by task address, and by VIP until the other node's task answered it.
    with Capture(link) as cap:
        page = fetch(pids[1], addrs[2]["secure"])
        assert MARKER in page and hostname2 in page, page
        secure_vip = vip(c, "secure")
        seen = set()
        for _ in range(20):
            seen.add(fetch(pids[1], secure_vip).split()[-1])
            if hostname2 in seen:
                break
        assert hostname2 in seen, seen
    udp = cap.udp()
    assert cap.frames and not any(MARKER.encode() in f for f in cap.frames), "the marker crossed the link in clear"
    wg = [p for s, d, p in udp if wireguard.WG_PORT in (s, d)]
    assert len(wg) >= 4 and all(p[0] in (1, 2, 3, 4) for p in wg), "no WireGuard packets on the link"
    vxlan = [p for s, d, p in udp if d == 4789]
    assert not [p for p in vxlan if int.from_bytes(p[4:7], "big") == secure_vni], "encrypted VNI in clear"

    # The control: the plain network between the same nodes is seen in clear.
    with Capture(link) as cap:
        assert MARKER in fetch(pids[1], addrs[2]["plain"])
    assert any(MARKER.encode() in f for f in cap.frames), "the capture did not see the plain network"
    assert [p for s, d, p in cap.udp() if d == 4789 and int.from_bytes(p[4:7], "big") == plain_vni]

    # A VXLAN packet with the encrypted network's VNI forged on the link (from node 1's address,
    # in clear) is dropped by node 2 before it reaches its VXLAN device.
    name2 = wireguard.interface_name(Path(c.node(2)["root"]))
    rule = re.compile(rf'@th,96,24 {secure_vni:#x} iifname != "{name2}" counter packets (\d+)')

    def dropped() -> int:
        found = rule.search(in_netns(c.node(2)["hostname"], "nft", "list", "ruleset").stdout)
        assert found, "no guard for the encrypted VNI"
        return int(found[1])

    before = dropped()
    forged = b"\x08\0\0\0" + secure_vni.to_bytes(3, "big") + b"\0" + b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    send = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto({forged!r}, ('{c.node(2)['address']}', 4789))")
    assert in_netns(c.node(1)["hostname"], sys.executable, "-c", send).returncode == 0
    deadline = time.monotonic() + 5
    while dropped() <= before:
        assert time.monotonic() < deadline, "the forged packet was not dropped"
        time.sleep(0.1)

    # Node 2's shoald killed (-9): its supervisor starts it again, and the new shoald replaces
    # the wireguard-go the old one left (whose key died with it) by its own, with a new key
    # that node 1 is sent: the encrypted network carries again.
    old_go = _wireguard_go_pids({name2})
    old_key = in_netns(c.node(2)["hostname"], "wg", "show", name2, "public-key").stdout.strip()
    os.kill(c.pid(2), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not ((new_go := _wireguard_go_pids({name2})) and not new_go & old_go):
        assert time.monotonic() < deadline, f"wireguard-go of node 2 not replaced: {old_go} -> {new_go}"
        time.sleep(0.2)
    assert len(new_go) == 1
    assert in_netns(c.node(2)["hostname"], "wg", "show", name2, "public-key").stdout.strip() != old_key
    assert MARKER in wait_reachable(pids[1], addrs[2]["secure"])

    # `stack rm`: the networks leave every node, and with the last encrypted one the WireGuard
    # interface and its wireguard-go.
    names = {wireguard.interface_name(Path(c.node(k)["root"])) for k in range(1, NODES + 1)}
    assert len(_wireguard_go_pids(names)) == NODES
    c.shoal("stack", "rm", STACK)
    deadline = time.monotonic() + 60
    while True:
        left = [k for k in range(1, NODES + 1)
                if in_netns(c.node(k)["hostname"], "ip", "link", "show", "type", "vxlan").stdout.strip()
                or in_netns(c.node(k)["hostname"], "ip", "link", "show", "dev",
                            wireguard.interface_name(Path(c.node(k)["root"]))).returncode == 0]
        if not left and not _wireguard_go_pids(names):
            break
        assert time.monotonic() < deadline, f"nodes {left} keep VXLAN or WireGuard after stack rm"
        time.sleep(0.3)
