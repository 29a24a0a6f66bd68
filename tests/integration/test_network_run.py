"""`shoal run --network NAME -p` end to end: real containers (crun, busybox httpd and wget) on a
user-defined network, a published port answering on 127.0.0.1, container-to-container traffic,
port conflicts, and nothing left behind after `rm -f` and `network rm`."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.root,
              pytest.mark.skipif(importlib.util.find_spec("shoal.runtime.manager") is None,
                                 reason="the runtime (shoal run) is not there yet")]

SUBNET = "10.213.160.0/24"


def fetch(url: str, deadline: float = 10) -> str:
    end = time.time() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)


def test_run_on_a_network_with_a_published_port(shoal, busybox_image: str, shoal_root: Path) -> None:
    net = "shoal_e2e_net"
    shoal("network", "create", "--subnet", SUBNET, net, check=True)
    try:
        web = shoal("run", "-d", "--name", "e2eweb", "--network", net, "-p", "18091:80", busybox_image,
                    "httpd", "-f", "-p", "80", "-h", "/etc", check=True).stdout.strip()
        assert fetch("http://127.0.0.1:18091/hostname").strip() == web[:12]
        [info] = json.loads(shoal("network", "inspect", net, check=True).stdout)
        ip = info["Containers"][web]["IPv4Address"].split("/")[0]
        assert ip.startswith("10.213.160.")
        # Another container on the network reaches it directly, and through the published port
        # on the node's gateway address (hairpin through the host).
        out = shoal("run", "--rm", "--network", net, busybox_image, "sh", "-c",
                    f"wget -qO- http://{ip}/hostname && wget -qO- http://10.213.160.1:18091/hostname",
                    check=True).stdout.split()
        assert out == [web[:12], web[:12]]
        # --dns on a user-defined network: the embedded resolver stays the nameserver (names on
        # the network still resolve) and the server asked for is where it forwards the rest, as
        # libnetwork's resolv.conf says (shoal made 192.0.2.53 the nameserver: no name resolved).
        conf = shoal("run", "--rm", "--network", net, "--dns", "192.0.2.53", busybox_image, "sh", "-c",
                     f"grep -E '^nameserver|ExtServers' /etc/resolv.conf && nslookup e2eweb 127.0.0.11",
                     check=True).stdout
        assert conf.splitlines()[:2] == ["nameserver 127.0.0.11", "# ExtServers: [192.0.2.53]"]
        assert f"Address: {ip}" in conf or f"Address 1: {ip}" in conf
        busy = shoal("network", "rm", net)
        assert busy.returncode == 1 and "has active endpoints" in busy.stderr
        # The port is taken: a second publisher gets a clear error naming it.
        clash = shoal("run", "-d", "--name", "e2eclash", "--network", net, "-p", "18091:80", busybox_image, "true")
        assert clash.returncode != 0 and "18091" in clash.stderr and "already" in clash.stderr
    finally:
        for name in ("e2eweb", "e2eclash"):  # only what this test made (rm -f of a missing one is harmless)
            shoal("rm", "-f", name)
    with pytest.raises(OSError):
        with socket.create_connection(("127.0.0.1", 18091), timeout=1):
            pass
    netns_dir = Path(os.environ.get("SHOAL_RUN", shoal_root / "run")) / "netns"
    assert not netns_dir.exists() or list(netns_dir.iterdir()) == []
    shoal("network", "rm", net, check=True)
    assert "10.213.160." not in os.popen("ip -br addr").read()
