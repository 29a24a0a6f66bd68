"""A global service when its nodes fail or change availability, as a Swarm user meets it, on a
three-node local cluster (`shoal cluster create --nodes 3`, busybox `sleep` as web:v1, on the
manager only), checked against swarmkit's global orchestrator (reconcileOneNode on a node's
update):

- a worker cut off (Down): its task is desired Shutdown; back (Ready): it gets a new task, so
  each node runs exactly one, and `service ps` shows the node's new task with the old one under
  it (` \\_ `, Shutdown). (The returning node got none: its only task was shut down, and a node
  that had any task, live or not, was never given another; drain then active likewise.)
- the service updated while a node is Down: back, the node gets one task, of the new spec.
- a worker cut off across a kill -9 of the manager's shoald: Unknown, then Down.
- `node update --availability pause`: the node keeps its task running (same task, same
  process); cut off while paused, its task is shut down and, back but still paused, it gets no
  new one; `--availability active`: it gets one. (Pause shut the task down, as drain does.)
- a replicated service scaled down takes its copies from the nodes that have the most.
- `stack rm`, then another stack at once on the freed subnet, its old overlay still held by
  the workers (a meshed port; an old task's container kept as history after a partition): no
  new task is REJECTED for the old copy (overlap, "still being removed").

Copies are counted from /proc (processes in each node's cgroups). Real processes over real TLS,
as test_node_failure.py. SHOAL_TEST_SUBNET, when set, is the clusters' subnet (a helper's own
range on a shared machine); SHOAL_TEST_CLUSTER_PREFIX their names' start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import LocalCluster  # noqa: E402
from cluster.test_node_failure import node_status, process_copies, wait_for  # noqa: E402

NODES = 3
SERVICE = "gl_g"


def cluster_args(name: str, nodes: int) -> list[str]:
    subnet = os.environ.get("SHOAL_TEST_SUBNET")
    return ["cluster", "create", "--nodes", str(nodes), *(["--subnet", subnet] if subnet else []), name]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    c = LocalCluster(tmp_path_factory.mktemp("failglobal"))
    c.name = f"{os.environ.get('SHOAL_TEST_CLUSTER_PREFIX', 'shoal')}gl{os.getpid() % 10000}"
    try:
        c.shoal(*cluster_args(c.name, NODES))
        c.record = json.loads((c.dir / "cluster.json").read_text())
        c.on_node(1, "import", str(busybox_tar), "web:v1")
        compose = c.base / "global.yml"
        compose.write_text(yaml.safe_dump({"services": {"g": {
            "image": "web:v1", "command": ["sleep", "100000"], "stop_grace_period": "1s",
            "deploy": {"mode": "global"}}}}))
        c.shoal("stack", "deploy", "--detach", "-c", str(compose), "gl")
        wait_for("one task running on each node", lambda: one_each(c), 60)
        yield c
    finally:
        for k in range(2, NODES + 1):
            subprocess.run(["ip", "-n", f"{c.name}-{k}", "link", "set", "eth0", "up"], capture_output=True)
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def rows(c: Any) -> list[dict[str, str]]:
    out = c.shoal("service", "ps", SERVICE, "--no-trunc", "--format",
                  "{{.ID}}\t{{.Name}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}", timeout=60).stdout
    keys = ("id", "name", "node", "desired", "current")
    return [dict(zip(keys, ln.split("\t"))) for ln in out.splitlines() if ln.count("\t") == 4]


def live(r: dict[str, str]) -> bool:
    return r["desired"] == "Running" and r["current"].startswith("Running")


def on_node(c: Any, k: int) -> list[dict[str, str]]:
    return [r for r in rows(c) if r["node"] == f"{c.name}-{k}"]


def sleeps_on(c: Any, k: int) -> list[int]:
    return [pid for node, _cid, pid in process_copies(c.name, "sleep") if node == k]


def one_each(c: Any) -> bool:
    got = rows(c)
    return all(len([r for r in got if live(r) and r["node"] == f"{c.name}-{k}"]) == 1 for k in range(1, NODES + 1)) \
        and all(len(sleeps_on(c, k)) == 1 for k in range(1, NODES + 1))


def link(c: Any, k: int, state: str, status: str) -> None:
    host = f"{c.name}-{k}"
    subprocess.run(["ip", "-n", host, "link", "set", "eth0", state], check=True)
    wait_for(f"{host} {status}", lambda: node_status(c).get(host, ("",))[0] == status, 30)


def test_a_node_down_then_back_gets_one_new_task(cluster: Any) -> None:
    k = 3
    (old,) = on_node(cluster, k)
    link(cluster, k, "down", "Down")
    try:
        wait_for("its task desired Shutdown", lambda: on_node(cluster, k)[0]["desired"] == "Shutdown", 30)
    finally:
        link(cluster, k, "up", "Ready")
    wait_for("one task running on each node again", lambda: one_each(cluster), 30)
    history = on_node(cluster, k)
    # Swarm's history: the new task first, the old one under it, told to stop and stopped.
    assert [r["id"] for r in history] == [history[0]["id"], old["id"]] and history[0]["id"] != old["id"]
    assert history[1]["name"] == history[0]["name"] == old["name"]
    table = cluster.shoal("service", "ps", SERVICE).stdout.splitlines()
    assert [ln.split()[:2] for ln in table if old["id"][:12] in ln] == [[old["id"][:12], "\\_"]]
    wait_for("the old task Shutdown", lambda: on_node(cluster, k)[1]["current"].startswith("Shutdown"), 30)
    assert on_node(cluster, k)[1]["desired"] == "Shutdown"


def test_a_node_down_during_an_update_gets_one_task_of_the_new_spec(cluster: Any) -> None:
    """The service updated while a node is Down: the update completes on the others; back,
    the node gets one task, of the new spec. (It got two: the node's new task, and a second
    from the updater, which took the node's shut-down old-spec task for a slot to update.)"""
    k = 3
    link(cluster, k, "down", "Down")
    try:
        cluster.shoal("service", "update", "--detach", "--env-add", "WAVE=2", SERVICE)
        wait_for("the update completed", lambda: cluster.shoal(
            "service", "inspect", SERVICE, "--format", "{{.UpdateStatus.State}}").stdout.strip() == "completed", 30)
    finally:
        link(cluster, k, "up", "Ready")
    wait_for("one task running on each node again", lambda: one_each(cluster), 30)
    time.sleep(2)  # a second task, made in the same pass, would be running by now
    assert one_each(cluster)
    wanted = [r for r in on_node(cluster, k) if r["desired"] == "Running"]
    assert len(wanted) == 1, wanted
    env = cluster.shoal("inspect", "--type", "task", "--format", "{{json .Spec.ContainerSpec.Env}}",
                        wanted[0]["id"]).stdout
    assert "WAVE=2" in env, env


def status_of(c: Any, host: str) -> str:
    """The node's STATUS in `node ls`; "" while the manager's API does not answer (restarting)."""
    out = c.shoal("node", "ls", "--format", "{{.Hostname}} {{.Status}}", check=False, timeout=60).stdout
    return dict(ln.split(" ", 1) for ln in out.splitlines() if " " in ln).get(host, "")


def test_a_node_cut_off_across_a_manager_restart_is_unknown_then_down(cluster: Any) -> None:
    """kill -9 of the manager's shoald just after a worker is cut off: the restarted manager
    shows the worker Unknown (swarmkit's markNodesUnknown) and keeps its task, then, when it
    has not registered again, Down ('heartbeat failure for node in "unknown" state') and its
    task is shut down; back, one task per node again. (It showed the node Ready for 20 s.)"""
    k = 3
    host = f"{cluster.name}-{k}"
    (task,) = [r for r in on_node(cluster, k) if live(r)]
    subprocess.run(["ip", "-n", host, "link", "set", "eth0", "down"], check=True)
    try:
        pid = cluster.pid(1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for("a new shoald on the manager", lambda: (p := cluster.pid(1)) is not None and p != pid, 30)
        wait_for(f"{host} Unknown", lambda: status_of(cluster, host) == "Unknown", 30)
        assert [r["id"] for r in on_node(cluster, k) if r["desired"] == "Running"] == [task["id"]]
        wait_for(f"{host} Down", lambda: status_of(cluster, host) == "Down", 40)
        message = cluster.shoal("node", "inspect", host, "--format", "{{.Status.Message}}").stdout.strip()
        assert message == 'heartbeat failure for node in "unknown" state'
        wait_for("its task desired Shutdown", lambda: on_node(cluster, k)[0]["desired"] == "Shutdown", 30)
    finally:
        link(cluster, k, "up", "Ready")
    wait_for("one task running on each node again", lambda: one_each(cluster), 30)


def test_a_paused_node_keeps_its_task_and_gets_none_while_paused(cluster: Any) -> None:
    k = 2
    host = f"{cluster.name}-{k}"
    (task,) = [r for r in on_node(cluster, k) if live(r)]
    (pid,) = sleeps_on(cluster, k)
    cluster.shoal("node", "update", "--availability", "pause", host)
    wait_for(f"{host} Pause", lambda: node_status(cluster).get(host, ("", ""))[1] == "Pause", 30)
    time.sleep(3)  # a few orchestrator passes with the node paused
    assert [r["id"] for r in on_node(cluster, k) if live(r)] == [task["id"]] and sleeps_on(cluster, k) == [pid]
    # Lost while paused: its task is shut down; back, still paused, it is given no new one.
    link(cluster, k, "down", "Down")
    try:
        wait_for("its task desired Shutdown", lambda: on_node(cluster, k)[0]["desired"] == "Shutdown", 30)
    finally:
        link(cluster, k, "up", "Ready")
    wait_for(f"no task left on {host}", lambda: not sleeps_on(cluster, k), 30)
    time.sleep(3)
    assert not [r for r in on_node(cluster, k) if r["desired"] == "Running"]
    cluster.shoal("node", "update", "--availability", "active", host)
    wait_for("one task running on each node again", lambda: one_each(cluster), 30)


def test_a_stack_removed_then_another_deployed_on_its_freed_subnet(cluster: Any) -> None:
    """`stack rm` of a stack whose overlay every worker holds (its port published through the
    mesh, no task), then at once a stack whose network the manager gives the freed subnet: no
    worker rejects the new tasks ("subnet ... overlaps with network ... on this node"; the old
    copy went only at the worker's next collect)."""
    meshed = cluster.base / "meshed.yml"
    meshed.write_text(yaml.safe_dump({"services": {"web": {
        "image": "web:v1", "command": ["sleep", "100000"], "ports": ["4100:80"],
        "deploy": {"replicas": 0}}}}))
    later = cluster.base / "later.yml"
    later.write_text(yaml.safe_dump({"services": {"g": {
        "image": "web:v1", "command": ["sleep", "100000"], "stop_grace_period": "1s",
        "deploy": {"mode": "global"}}}}))

    def vxlan_devices(k: int) -> int:
        return len([ln for ln in in_netns(f"{cluster.name}-{k}", "ip", "-br", "link").stdout.splitlines()
                    if ln.startswith("vx-")])

    for _ in range(2):
        held = {k: vxlan_devices(k) for k in range(2, NODES + 1)}
        cluster.shoal("stack", "deploy", "--detach", "-c", str(meshed), "meshed")
        wait_for("the mesh's overlay on every worker",
                 lambda h=held: all(vxlan_devices(k) == h[k] + 1 for k in h), 30)
        cluster.shoal("stack", "rm", "meshed")
        cluster.shoal("stack", "deploy", "--detach", "-c", str(later), "later")
        out = lambda: cluster.shoal("service", "ps", "later_g", "--no-trunc", "--format",  # noqa: E731
                                    "{{.Node}}\t{{.CurrentState}}\t{{.Error}}").stdout.splitlines()
        wait_for("later_g running on every node",
                 lambda: len([ln for ln in out() if "\tRunning" in ln]) == NODES, 30)
        assert not [ln for ln in out() if "Rejected" in ln or "Failed" in ln], out()
        cluster.shoal("stack", "rm", "later")
        wait_for("later_g's copies gone", lambda: len(process_copies(cluster.name, "sleep")) == NODES, 30)



def test_a_stack_whose_old_tasks_a_healed_node_keeps_removed_then_another_deployed(cluster: Any) -> None:
    """The same after a partition: the cut-off worker's task, shut down once it is back, keeps
    its container (history), so that worker's copy of the stack's network still has an
    endpoint when `stack rm` and the next deploy come; its new tasks wait for the copy to go
    instead of being REJECTED ("network ... is still being removed on this node", then again
    while parked for the restart delay)."""
    k = 3
    first = cluster.base / "first.yml"
    first.write_text(yaml.safe_dump({"services": {"web": {
        "image": "web:v1", "command": ["sleep", "100000"], "stop_grace_period": "1s",
        "deploy": {"replicas": 2, "placement": {"constraints": ["node.role==worker"]}}}}}))
    later = cluster.base / "later.yml"
    later.write_text(yaml.safe_dump({"services": {"g": {
        "image": "web:v1", "command": ["sleep", "100000"], "stop_grace_period": "1s",
        "deploy": {"mode": "global"}}}}))
    cluster.shoal("stack", "deploy", "--detach", "-c", str(first), "first")
    ps = lambda svc: cluster.shoal("service", "ps", svc, "--no-trunc", "--format",  # noqa: E731
                                   "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}").stdout.splitlines()
    host = f"{cluster.name}-{k}"
    wait_for(f"first_web running on {host}",
             lambda: [ln for ln in ps("first_web") if ln.startswith(f"{host}\tRunning\tRunning")], 30)
    link(cluster, k, "down", "Down")
    link(cluster, k, "up", "Ready")
    wait_for(f"its task on {host} shut down",
             lambda: [ln for ln in ps("first_web") if ln.startswith(f"{host}\tShutdown\tShutdown")], 30)
    cluster.shoal("stack", "rm", "first")
    cluster.shoal("stack", "deploy", "--detach", "-c", str(later), "later")
    wait_for("later_g running on every node",
             lambda: len([ln for ln in ps("later_g") if "\tRunning\tRunning" in ln]) == NODES, 30)
    assert not [ln for ln in ps("later_g") if "Rejected" in ln or "Failed" in ln], ps("later_g")
    cluster.shoal("stack", "rm", "later")


def test_scale_down_takes_copies_from_the_nodes_with_the_most(cluster: Any) -> None:
    """A replicated service's scale-down as swarmkit's: each slot ranked as the nth copy on its
    node, the lowest ranks kept (after a node failure, the survivors hold the most copies).
    Slots 1 and 2 on one node, 3 and 4 one on each other node: scaled to 2, one copy stays on
    each of two nodes. (The lowest slots were kept: both on the same node.)"""
    hosts = [f"{cluster.name}-{k}" for k in range(1, NODES + 1)]
    spread = cluster.base / "spread.yml"
    spread.write_text(yaml.safe_dump({"services": {"web": {
        "image": "web:v1", "command": ["sleep", "100000"], "stop_grace_period": "1s",
        "deploy": {"replicas": 2}}}}))
    ps = lambda: cluster.shoal("service", "ps", "spread_web", "--filter", "desired-state=running",  # noqa: E731
                               "--format", "{{.Name}} {{.Node}} {{.CurrentState}}").stdout.splitlines()
    try:
        for host in (hosts[0], hosts[2]):
            cluster.shoal("node", "update", "--availability", "drain", host)
        cluster.shoal("stack", "deploy", "--detach", "-c", str(spread), "spread")
        wait_for("slots 1 and 2 running on the one active node",
                 lambda: len([ln for ln in ps() if f" {hosts[1]} Running" in ln]) == 2, 30)
    finally:
        for host in (hosts[0], hosts[2]):
            cluster.shoal("node", "update", "--availability", "active", host)
    cluster.shoal("service", "scale", "--detach", "spread_web=4")
    wait_for("four running, one on each other node", lambda: sorted(
        ln.split()[1] for ln in ps() if ln.split()[2:3] == ["Running"]) == [hosts[0], hosts[1], hosts[1], hosts[2]], 30)
    cluster.shoal("service", "scale", "--detach", "spread_web=2")
    wait_for("two left", lambda: len(ps()) == 2, 30)
    nodes = sorted(ln.split()[1] for ln in ps())
    assert len(set(nodes)) == 2, ps()
    cluster.shoal("stack", "rm", "spread")
    wait_for("one task running on each node again", lambda: one_each(cluster), 30)
