"""An encrypted overlay network's tasks are placed only on nodes that can make a WireGuard
interface (issue 12): a two-node swarm of real shoalds in network namespaces, the worker started
with SHOAL_WIREGUARD_GO empty (the ops/test override for a machine where wireguard-go must not be
used; this kernel has no WireGuard of its own, so the worker cannot encrypt):

- `node inspect` shows the manager's Encryption plugin (wireguard-go) and none on the worker;
- `network create --opt encrypted` on the manager succeeds (as Docker's: the network is the
  cluster's, the manager can carry it);
- a service on that network constrained to the worker stays Pending, with swarmkit's kind of
  explanation in `service ps`; the same service on a plain network is assigned to the worker.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from cluster.conftest import NetnsCluster, NetnsNode
from shoal.network import wireguard

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(bool(wireguard.unavailable()), reason=wireguard.unavailable() or "ok"),
              pytest.mark.skipif(wireguard.kernel_has_wireguard(),
                                 reason="the kernel has WireGuard: no node here can be made unable to encrypt")]

WAIT = 30.0


def wait_for(check, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ps(manager: NetnsNode, service: str) -> list[list[str]]:
    out = manager.shoal("service", "ps", service, "--no-trunc", "--format",
                        "{{.Node}}\t{{.CurrentState}}\t{{.Error}}").stdout
    return [line.split("\t") for line in out.splitlines() if line]


def plugins(manager: NetnsNode, node: str) -> list[dict[str, str]]:
    return json.loads(manager.shoal("node", "inspect", node).stdout)[0]["Description"]["Engine"].get("Plugins") or []


def test_encrypted_network_tasks_avoid_nodes_without_wireguard(netns_cluster: NetnsCluster,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    manager = netns_cluster.add()
    manager.shoal("swarm", "init", "--advertise-addr", manager.addr)
    token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    with monkeypatch.context() as m:
        m.setenv("SHOAL_WIREGUARD_GO", "")  # this node's shoald (and its CLI) only
        worker = netns_cluster.add()
        worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_for(lambda: "Ready" in manager.shoal("node", "ls", "-f", f"name={worker.name}").stdout, "the worker Ready")

    assert plugins(manager, "self") == [{"Type": "Encryption", "Name": "wireguard-go"}]
    assert plugins(manager, worker.name) == []
    pretty = manager.shoal("node", "inspect", "--pretty", "self").stdout
    assert "Plugins:\n Encryption:\t\twireguard-go\n" in pretty

    manager.shoal("network", "create", "-d", "overlay", "--opt", "encrypted", "--subnet", "10.213.95.0/24", "sec")
    manager.shoal("network", "create", "-d", "overlay", "--subnet", "10.213.96.0/24", "plain")
    on_worker = f"node.hostname=={worker.hostname}"
    for name, net in (("secure", "sec"), ("clear", "plain")):
        manager.shoal("service", "create", "--detach", "--name", name, "--network", net, "--constraint", on_worker,
                      "--no-resolve-image", "busybox:none", "sleep", "60")
    # The plain one goes to the worker (whether its image is there is another matter) ...
    wait_for(lambda: any(row[0] == worker.hostname for row in ps(manager, "clear")), "the plain task assigned")
    # ... the encrypted one waits, saying why (`{{.Error}}` quotes it, as docker/cli's task formatter).
    want = "no suitable node (encrypted networks unsupported on 1 node; scheduling constraints not satisfied on 1 node)"
    rows = wait_for(lambda: [r for r in ps(manager, "secure") if len(r) == 3 and r[2]], "the pending task's reason")
    assert rows[0][0] == "" and rows[0][1].startswith("Pending") and rows[0][2] == f'"{want}"', rows
