"""A node's VXLAN devices in the real kernel (network/overlay.py, vxlan.py, rtnl.py), inside a
network namespace this test makes: the device's settings (VNI, UDP 4789, the node's address,
no learning, ARP proxy, the network's MTU, in the bridge), its entries made exactly the
manager's view (a stale entry removed, a moved task's entry replaced), a device left by a crash
removed by the next sync and by reconcile, and everything removed with its network.

Each step is a new process (the module's cache of what it made starts empty, as after a
restart), run in the namespace with nsenter --net (the host's mounts stay)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.root]

LOCAL = "198.18.250.1"
VNI = 4321


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = f"shoalvx{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{LOCAL}/32", "dev", "lo"], check=True)
        env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"),
                   SHOAL_DEFAULT_ADDRESS_POOLS="10.213.0.0/16:24")
        yield {"name": name, "env": env}
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)  # its links and entries with it


def step(ns: dict[str, Any], code: str) -> Any:
    script = ("import json, sys\n"
              "from shoal.network import bridge, cleanup, overlay, vxlan\n"
              "from shoal.network.store import NetworkStore\n"
              "store = NetworkStore()\n" + code)
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{ns['name']}", sys.executable, "-c", script],
                          env=ns["env"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def ip(ns: dict[str, Any], *args: str) -> str:
    return subprocess.run(["ip", "-n", ns["name"], *args], capture_output=True, text=True, check=True).stdout


def entries(ns: dict[str, Any], dev: str) -> tuple[dict[str, str], dict[str, str]]:
    neigh = {}
    for line in ip(ns, "neigh", "show", "dev", dev).splitlines():
        parts = line.split()
        neigh[parts[0]] = parts[parts.index("lladdr") + 1]
    fdb = {}
    out = subprocess.run(["bridge", "-n", ns["name"], "fdb", "show", "dev", dev], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "dst" in parts:
            fdb[parts[0]] = parts[parts.index("dst") + 1]
    return neigh, fdb


def records(net_id: str, peers: list[tuple[str, str]]) -> str:
    return json.dumps({"s_net": {"id": net_id, "name": "s_net", "overlay": {
        "local": LOCAL, "peers": [{"ip": a, "node": n, "name": n} for a, n in peers]}}})


def mac(addr: str) -> str:
    return "02:5a:" + ":".join(f"{int(o):02x}" for o in addr.split("."))


def test_device_and_entries_follow_the_managers_view(ns: dict[str, Any]) -> None:
    net = step(ns, f"net = store.create('s_net', driver='overlay', options={{overlay.VXLANID_OPTION: '{VNI}', "
                   "'com.docker.network.driver.mtu': '1400'})\n"
                   "bridge.ensure_bridge(net)\n"
                   "print(json.dumps({'id': net.id, 'bridge': net.bridge}))\n")
    dev = f"vx-{VNI:06x}-{net['id'][:5]}"
    view = [("10.213.0.5", "198.18.250.2"), ("10.213.0.6", "198.18.250.3")]
    step(ns, f"overlay.sync(json.loads({records(net['id'], view)!r}))\n")
    detail = ip(ns, "-d", "link", "show", dev)
    assert f"vxlan id {VNI} local {LOCAL} " in detail and "dstport 4789" in detail, detail
    assert "nolearning" in detail and "proxy" in detail and "mtu 1400" in detail, detail
    assert f"master {net['bridge']}" in detail, detail
    assert entries(ns, dev) == ({a: mac(a) for a, _ in view}, {mac(a): n for a, n in view})

    # Someone's stale entries, a task gone (.5), one moved to another node (.6), a new one (.7):
    # the next sync (a new process, as after a restart or a healed partition) makes it exact.
    ip(ns, "neigh", "replace", "10.213.0.9", "lladdr", mac("10.213.0.9"), "dev", dev, "nud", "permanent")
    subprocess.run(["bridge", "-n", ns["name"], "fdb", "append", mac("10.213.0.9"), "dev", dev, "dst",
                    "198.18.250.9", "self", "permanent"], check=True)
    view = [("10.213.0.6", "198.18.250.4"), ("10.213.0.7", "198.18.250.2")]
    step(ns, f"overlay.sync(json.loads({records(net['id'], view)!r}))\n")
    assert entries(ns, dev) == ({a: mac(a) for a, _ in view}, {mac(a): n for a, n in view})

    # The bridge gone (its last task left): the device goes at the next sync.
    ip(ns, "link", "del", net["bridge"])
    step(ns, f"overlay.sync(json.loads({records(net['id'], view)!r}))\n")
    assert dev not in ip(ns, "-o", "link", "show")

    # `network rm` (or the stack's removal) takes the device with the bridge.
    step(ns, "bridge.ensure_bridge(store.get('s_net'))\n"
             f"overlay.sync(json.loads({records(net['id'], view)!r}))\n")
    assert dev in ip(ns, "-o", "link", "show")
    step(ns, "cleanup.remove_network('s_net')\n")
    links = ip(ns, "-o", "link", "show")
    assert dev not in links and net["bridge"] not in links, links


def test_devices_left_by_a_crash_are_removed(ns: dict[str, Any]) -> None:
    net = step(ns, f"net = store.create('s_net', driver='overlay', options={{overlay.VXLANID_OPTION: '{VNI}'}})\n"
                   "bridge.ensure_bridge(net)\n"
                   "print(json.dumps({'id': net.id, 'bridge': net.bridge}))\n")
    dev = f"vx-{VNI:06x}-{net['id'][:5]}"
    # A crash between making the device and tagging it left it untagged: made again, tagged.
    ip(ns, "link", "add", dev, "type", "vxlan", "id", str(VNI), "dstport", "4789", "local", LOCAL)
    step(ns, f"overlay.sync(json.loads({records(net['id'], [('10.213.0.5', '198.18.250.2')])!r}))\n")
    detail = ip(ns, "-d", "link", "show", dev)
    assert "alias shoal:" in detail and "proxy" in detail and f"master {net['bridge']}" in detail, detail
    # Another root's device (a real installation beside the tests) is never touched.
    ip(ns, "link", "add", "vx-00ffff-other", "type", "vxlan", "id", "65535", "dstport", "4789", "local", LOCAL)
    # shoald restarted, its manager gone: nothing is wanted here any more.
    step(ns, "overlay.sync({})\n")
    assert dev not in ip(ns, "-o", "link", "show")
    # A device whose network record was removed while shoald was down: reconcile takes it.
    step(ns, f"overlay.sync(json.loads({records(net['id'], [])!r}))\n")
    assert dev in ip(ns, "-o", "link", "show")
    done = step(ns, "net = store.get('s_net')\nstore.delete(net)\nprint(json.dumps(cleanup.reconcile()))\n")
    assert f"removed vxlan {dev}" in done, done
    assert dev not in ip(ns, "-o", "link", "show")
    # remove_everything (a reset) takes every device of the root, and only those.
    step(ns, f"net = store.create('s_two', driver='overlay', options={{overlay.VXLANID_OPTION: '{VNI + 1}'}})\n"
             "bridge.ensure_bridge(net)\n"
             "overlay.sync({'s_two': {'id': net.id, 'overlay': {'local': '" + LOCAL + "', 'peers': []}}})\n"
             "cleanup.remove_everything()\n")
    links = ip(ns, "-o", "link", "show")
    assert f"vx-{VNI + 1:06x}" not in links and "vx-00ffff-other" in links, links
