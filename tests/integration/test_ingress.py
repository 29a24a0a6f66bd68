"""Swarm's ingress network against a real shoald (one node): `service create -p` without
--network attaches the tasks to `ingress` (made with the first such service: overlay, scope
swarm, Ingress true) and the published port answers; `service inspect` keeps the spec as given
and shows the ingress VIP in the endpoint; `network rm ingress` is refused with swarmkit's error
while a service needs it, and succeeds once none does."""

from __future__ import annotations

import ipaddress
import json
import urllib.request

from shoal.api.client import connect
from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY

PORT = 28517  # published by the test's service; nothing else here uses it


def _get(path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _rows(shoal) -> list[list[str]]:
    return [line.split()[1:] for line in shoal("network", "ls", check=True).stdout.splitlines()[1:]]


def test_published_port_without_a_network_answers_through_ingress(shoal, busybox_image: str) -> None:
    assert ["ingress", "overlay", "swarm"] not in _rows(shoal)
    try:
        made = shoal("service", "create", "--name", "h10_ing", "--replicas", "2", "-p", f"{PORT}:80",
                     "--stop-grace-period", "1s", busybox_image, "httpd", "-f", "-p", "80", "-h", "/etc",
                     check=True, timeout=120)
        service_id = made.stdout.splitlines()[0]
        assert "root:x:0:0" in poll(lambda: _get("/passwd"), 30, "the published port")

        # `docker network ls`: ingress  overlay  swarm
        assert ["ingress", "overlay", "swarm"] in _rows(shoal)
        [net] = json.loads(shoal("network", "inspect", "ingress", check=True).stdout)
        assert (net["Ingress"], net["Scope"], net["Driver"]) == (True, "swarm", "overlay")
        subnet = net["IPAM"]["Config"][0]["Subnet"]

        # The spec as given; the endpoint has a VIP on ingress; every task an address there.
        svc = json.loads(shoal("service", "inspect", "h10_ing", check=True).stdout)[0]
        assert "Networks" not in svc["Spec"]["TaskTemplate"]
        [vip] = svc["Endpoint"]["VirtualIPs"]
        assert vip["NetworkID"] == net["Id"]
        assert ipaddress.ip_address(vip["Addr"].split("/")[0]) in ipaddress.ip_network(subnet)
        with connect() as client:  # the tasks' attachments, as the manager's API gives them
            running = [t for t in client.get("/tasks") if t["service_id"] == service_id
                       and t["desired_state"] == "running"]
        assert len(running) == 2
        for task in running:
            [attachment] = task["networks"]
            assert attachment["network"] == "ingress"
            assert ipaddress.ip_address(attachment["addresses"][0].split("/")[0]) in ipaddress.ip_network(subnet)

        # Explicitly attaching a service to it: swarmkit's refusal.
        explicit = shoal("service", "create", "--detach", "--name", "h10_ing2", "--network", "ingress", busybox_image)
        assert explicit.returncode != 0  # the CLI's exit code for a daemon's 400 is service create's own
        assert ('Service cannot be explicitly attached to the ingress network "ingress"'
                in explicit.stderr), explicit.stderr

        # docker/cli asks first; "N" (or no answer) leaves it alone.
        kept = shoal("network", "rm", "ingress", input="n\n", check=True)
        assert kept.stdout.startswith("WARNING! Before removing the routing-mesh network, make sure all the nodes")
        assert kept.stdout.endswith("Are you sure you want to continue? [y/N] ")
        # swarmkit's removeIngressNetwork refusal, the network kept.
        refused = shoal("network", "rm", "ingress", input="y\n")
        assert refused.returncode == 1
        assert (f"ingress network cannot be removed because service {service_id} depends on it"
                in refused.stderr), refused.stderr
        assert ["ingress", "overlay", "swarm"] in _rows(shoal)
    finally:
        shoal("service", "rm", "h10_ing")
    # No service needs it any more: removed (this node's copy once the tasks have stopped).
    assert shoal("network", "rm", "ingress", input="y\n", check=True).stdout.endswith("[y/N] ingress\n")
    poll(lambda: ["ingress", "overlay", "swarm"] not in _rows(shoal), 30, "the node's copy of ingress to go")
