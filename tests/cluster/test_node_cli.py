"""`node ls|ps|inspect|update|rm|promote|demote`, `swarm join-token|update|leave|ca` and `info`
as a user types them, against real shoalds in network namespaces (tests/cluster/conftest.py),
with Docker's columns and words."""

from __future__ import annotations

import json
import time

from cluster.conftest import NetnsCluster, NetnsNode

WAIT = 30.0


def rows(node: NetnsNode) -> dict[str, list[str]]:
    """`node ls` by hostname: [ID, (*), HOSTNAME, STATUS, AVAILABILITY, MANAGER STATUS...]."""
    lines = node.shoal("node", "ls").stdout.splitlines()
    assert lines[0].startswith("ID ") and "HOSTNAME" in lines[0] and lines[0].rstrip().endswith("ENGINE VERSION")
    found = {}
    for line in lines[1:]:
        parts = line.split()
        if parts[1] != "*":
            parts.insert(1, "")
        found[parts[2]] = parts
    return found


def wait_for(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def fails(node: NetnsNode, *args: str) -> str:
    result = node.shoal(*args, check=False)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_one_node_default_needs_no_init(netns_cluster: NetnsCluster) -> None:
    """A shoald that never ran `swarm init` is a one-node manager, as shoal always was."""
    node = netns_cluster.add()
    table = rows(node)
    assert list(table) == [node.name]
    assert table[node.name][1:6] == ["*", node.name, "Ready", "Active", "Leader"]
    info = node.shoal("info").stdout
    assert " Swarm: active\n" in info and "  Is Manager: true\n" in info and "  Nodes: 1\n" in info
    assert fails(node, "swarm", "join-token", "worker") == (
        'Error response from daemon: This node is not a swarm manager. Use "shoal swarm init" or '
        '"shoal swarm join" to connect this node to swarm and try again.')
    assert fails(node, "swarm", "leave") == "Error response from daemon: This node is not part of a swarm"
    # The last manager leaves only with --force (Docker's words).
    # Bad input: one line naming the flag, and no swarm half made.
    bad = node.shoal("swarm", "init", "--cert-expiry", "soon", check=False)
    assert (bad.returncode, bad.stderr) == (125, 'invalid argument "soon" for "--cert-expiry" flag: time: invalid '
                                            'duration "soon"\n\nUsage:  shoal swarm init [OPTIONS]\n\n'
                                            "Run 'shoal swarm init --help' for more information\n")
    assert "minimum certificate expiry time is: 1h0m0s" in fails(node, "swarm", "init", "--cert-expiry", "59m")
    assert "invalid --listen-addr 'somewhere'" in fails(node, "swarm", "init", "--listen-addr", "somewhere")
    assert "task history limit -1" in fails(node, "swarm", "init", "--task-history-limit", "-1")
    assert not (node.root / "certificates" / "swarm-root-ca.crt").exists()
    assert "This node is not a swarm manager." in fails(node, "swarm", "join-token", "worker")
    # No --advertise-addr: the node's only address is taken (a 0.0.0.0 one is refused).
    assert "advertise address must be a non-zero IP address" in fails(node, "swarm", "init", "--advertise-addr",
                                                                       "0.0.0.0")
    node.shoal("swarm", "init")
    assert f"  Manager Addresses:\n   {node.addr}:2377\n" in node.shoal("info").stdout
    assert fails(node, "swarm", "init") == (
        'Error response from daemon: This node is already part of a swarm. Use "shoal swarm leave" to leave '
        'this swarm and join another one.')
    assert "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message." \
        in fails(node, "swarm", "leave")
    assert node.shoal("swarm", "ca").stdout.startswith("-----BEGIN CERTIFICATE-----\n")
    assert node.shoal("swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    assert not (node.root / "certificates" / "swarm-root-ca.key").exists()
    assert list(rows(node)) == [node.name]  # a one-node manager again


def test_node_commands_on_a_two_node_swarm(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    manager.shoal("swarm", "init", "--advertise-addr", manager.addr)
    token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    text = manager.shoal("swarm", "join-token", "worker").stdout
    assert text == (f"To add a worker to this swarm, run the following command:\n\n"
                    f"    shoal swarm join --token {token} {manager.addr}:2377\n\n")
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_for(lambda: rows(manager).get(worker.name, [""] * 4)[3] == "Ready", "the worker Ready")
    table = rows(manager)
    assert table[worker.name][1] == "" and table[worker.name][4] == "Active" and len(table[worker.name]) == 6

    # update: availability and labels, with Docker's refusals
    assert manager.shoal("node", "update", "--availability", "drain", worker.name).stdout == worker.name + "\n"
    assert rows(manager)[worker.name][4] == "Drain"
    manager.shoal("node", "update", "--label-add", "zone=a", "--label-add", "ssd", worker.name)
    inspected = json.loads(manager.shoal("node", "inspect", worker.name).stdout)[0]
    assert inspected["Spec"]["Labels"] == {"zone": "a", "ssd": ""} and inspected["Spec"]["Role"] == "worker"
    assert fails(manager, "node", "update", "--label-rm", "nope", worker.name) == \
        "Error: key nope doesn't exist in node's labels"
    manager.shoal("node", "update", "--label-rm", "ssd", worker.name)
    # ls filters, as Docker's
    listed = lambda *f: [l.split()[0] for l in manager.shoal("node", "ls", *f).stdout.splitlines()[1:]]  # noqa: E731
    assert listed("-f", "role=worker") == listed("-f", "node.label=zone=a") == [inspected["ID"]]
    assert listed("-f", "node.label=zone=b") == [] and len(listed("-f", "role=manager", "-f", "role=worker")) == 2
    assert listed("-f", f"name={manager.name}") == [json.loads(manager.shoal("node", "inspect", "self").stdout)[0]["ID"]]
    assert fails(manager, "node", "ls", "-f", "colour=red") == "Error response from daemon: invalid filter 'colour'"
    assert fails(manager, "node", "update", "--availability", "sideways", worker.name) == \
        'Error response from daemon: invalid Availability: "sideways"'
    pretty = manager.shoal("node", "inspect", "--pretty", worker.name).stdout
    assert f"Hostname:              \t{worker.name}\n" in pretty
    assert "Status:\n State:\t\t\tReady\n Availability:         \tDrain\n" in pretty
    assert "Labels:\n - zone=a\n" in pretty and "TLS Info:" not in pretty.split("Engine Version")[0]
    assert fails(manager, "node", "inspect", "nosuch") == "Error response from daemon: node nosuch not found"

    # roles: one manager only, said plainly
    assert fails(manager, "node", "demote", manager.name) == ("Error response from daemon: rpc error: code = "
                                                              "FailedPrecondition desc = attempting to demote the "
                                                              "last manager of the swarm")
    assert "promoting a node to manager is not supported yet" in fails(manager, "node", "promote", worker.name)
    assert "promoting a node to manager is not supported yet" in fails(manager, "node", "update", "--role", "manager",
                                                                       worker.name)
    assert json.loads(manager.shoal("node", "inspect", worker.name).stdout)[0]["Spec"]["Role"] == "worker"
    # No change asked: docker/cli names the node by its ID and asks the daemon nothing.
    manager_id = json.loads(manager.shoal("node", "inspect", "self").stdout)[0]["ID"]
    assert manager.shoal("node", "promote", manager.name).stdout == f"Node {manager_id} is already a manager.\n"
    assert manager.shoal("node", "demote", worker.name).stdout == f"Node {inspected['ID']} is already a worker.\n"

    # rm: a Ready node needs --force, a manager cannot go
    assert fails(manager, "node", "rm", worker.name).endswith(f"is not down and can't be removed")
    assert "is a cluster manager" in fails(manager, "node", "rm", manager.name)

    # node ps: the tasks of the node (none here), Docker's header
    assert manager.shoal("node", "ps").stdout.split() == \
        ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]

    # swarm update reaches info
    assert manager.shoal("swarm", "update", "--dispatcher-heartbeat", "2s").stdout == "Swarm updated.\n"
    info = manager.shoal("info").stdout
    assert "   Heartbeat Period: 2 seconds\n" in info and "  Nodes: 2\n" in info and "  Managers: 1\n" in info
    assert f"  Manager Addresses:\n   {manager.addr}:2377\n" in info
    assert "minimum certificate expiry time is: 1h0m0s" in fails(manager, "swarm", "update", "--cert-expiry", "30m")

    # A worker's `info` says where its manager is; cluster commands are refused there.
    info = worker.shoal("info").stdout
    assert "  Is Manager: false\n" in info and f"   {manager.addr}:2377\n" in info
    # docker/cli's node ls asks NodeList first: the daemon's refusal, in its words.
    assert fails(worker, "node", "ls") == "Error response from daemon: " + (
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
        "Please run this command on a manager node or promote the current node to a manager.")

    # Nor does its API take what only a manager may (a deploy there would reach no node).
    assert fails(worker, "service", "ls") == "Error response from daemon: " + (
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
        "Please run this command on a manager node or promote the current node to a manager.")

    # The worker leaves: Down on the manager, then removable; the worker is a one-node manager again.
    assert worker.shoal("swarm", "leave").stdout == "Node left the swarm.\n"
    wait_for(lambda: rows(manager)[worker.name][3] == "Down", "the worker Down")
    worker.wait_api()
    wait_for(lambda: worker.shoal("node", "ls", check=False).returncode == 0, "the worker's own shoald back")
    own = worker.shoal("node", "ls").stdout.splitlines()[1:]
    assert len(own) == 1 and own[0].split()[1:3] == ["*", worker.name]  # nothing of its swarm past
    worker_id = inspected["ID"]
    assert manager.shoal("node", "rm", worker_id[:10]).stdout == worker_id[:10] + "\n"
    assert list(rows(manager)) == [manager.name]
