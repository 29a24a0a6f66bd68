"""Encrypted overlay networks are scheduled only where WireGuard can run: each node says in its
description (Description.Engine.Plugins, type Encryption) whether it can make a WireGuard
interface, and the scheduler's EncryptionFilter keeps a task attached to an encrypted network off
the nodes that cannot (there it would be cut off from its network: never in clear, never
working), explained in swarmkit's words ("no suitable node (encrypted networks unsupported on 1
node)"). From the core, through the store pass, to the node's own description and `node inspect`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.session import EngineInfo, NodeDescription, Resources
from shoal.cli import dockerjson
from shoal.cli.node import pretty
from shoal.daemon import describe_node
from shoal.manager import allocator, scheduler
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.scheduling import Scheduler, TaskInfo, describe_spec
from shoal.model.cluster import EngineDescription, Node, NodeStatus, Task, TaskState
from shoal.model.records import Network, NetworkAllocation
from shoal.model.stack import NetworkSpec
from shoal.network import wireguard
from shoal.store import SQLiteStore

PENDING, ASSIGNED, RUNNING = int(TaskState.PENDING), int(TaskState.ASSIGNED), int(TaskState.RUNNING)
WG = [{"type": "Encryption", "name": "wireguard-go"}]
SECURE = frozenset({"app_secure"})


def mknode(node_id: str, plugins: list[dict[str, str]] | None = None, state: str = "ready") -> Node:
    return Node(id=node_id, hostname=f"host-{node_id}", role="worker",
                engine=EngineDescription(plugins=list(plugins or [])), status=NodeStatus(state=state))


def mktask(task_id: str, networks: list[str], encrypted: frozenset[str] = SECURE, service: str = "svc") -> TaskInfo:
    spec = describe_spec({"networks": [{"target": n} for n in networks]}, encrypted)
    return TaskInfo(task_id, service, 1, "", PENDING, RUNNING, spec, (task_id,))


def schedule(nodes: list[Node], tasks: list[TaskInfo]) -> dict[str, TaskInfo]:
    s = Scheduler()
    s.load(nodes, tasks)
    return {d.new.id: d.new for d in s.process_preassigned() + s.tick()}


# -- the filter in the core ---------------------------------------------------------------------------

def test_encrypted_tasks_go_only_to_nodes_that_can_encrypt() -> None:
    nodes = [mknode("a"), mknode("b", WG), mknode("c")]
    out = schedule(nodes, [mktask(f"t{i}", ["app_plain", "app_secure"]) for i in range(3)])
    assert {t.node_id for t in out.values()} == {"b"} and all(t.state == ASSIGNED for t in out.values())
    # A task on plain networks only is not filtered: spread over every node.
    out = schedule(nodes, [mktask(f"p{i}", ["app_plain"]) for i in range(3)])
    assert {t.node_id for t in out.values()} == {"a", "b", "c"}


def test_no_node_can_encrypt_explains_why() -> None:
    out = schedule([mknode("a"), mknode("c")], [mktask("t1", ["app_secure"])])
    assert out["t1"].state == PENDING and not out["t1"].node_id
    assert out["t1"].err == "no suitable node (encrypted networks unsupported on 2 nodes)"
    # One node down, one without WireGuard: both reasons, most failures first (ties in filter order).
    out = schedule([mknode("a"), mknode("b", WG, state="down")], [mktask("t1", ["app_secure"])])
    assert out["t1"].err == ("no suitable node (1 node not available for new tasks; "
                             "encrypted networks unsupported on 1 node)")


def test_preassigned_global_task_on_a_node_without_wireguard_stays_pending() -> None:
    s = Scheduler()
    t = TaskInfo("g1", "glob", 1, "a", PENDING, RUNNING, describe_spec({"networks": [{"target": "app_secure"}]}, SECURE),
                 ("g1",))
    s.load([mknode("a")], [t])
    (d,) = s.process_preassigned()
    assert d.new.state == PENDING and d.new.err == "encrypted networks unsupported on 1 node"


def test_describe_spec_marks_only_encrypted_attachments() -> None:
    assert describe_spec({"networks": [{"target": "app_secure"}]}, SECURE).encrypted
    assert not describe_spec({"networks": [{"target": "app_plain"}]}, SECURE).encrypted
    assert not describe_spec({"networks": [{"target": "app_secure"}]}).encrypted  # no encrypted networks known
    assert not describe_spec({}, SECURE).encrypted


# -- the node's description --------------------------------------------------------------------------

def test_node_describes_whether_it_can_encrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    if wireguard.kernel_has_wireguard():
        pytest.skip("this kernel has WireGuard: the override of wireguard-go cannot take the capability away")
    # The ops/test override: wireguard-go must not be used on this machine.
    monkeypatch.setenv("SHOAL_WIREGUARD_GO", "")
    assert wireguard.plugins() == [] and describe_node("n").engine.plugins == []
    if shutil.which("wg") is None or shutil.which("wireguard-go") is None or not wireguard.TUN.exists():
        pytest.skip("wireguard-go, wg or /dev/net/tun missing: no capability to report")
    monkeypatch.delenv("SHOAL_WIREGUARD_GO")
    assert describe_node("n").engine.plugins == [{"type": "Encryption", "name": "wireguard-go"}]


def test_node_inspect_shows_the_capability() -> None:
    record = mknode("a", WG).to_dict()
    assert dockerjson.node(record)["Description"]["Engine"]["Plugins"] == [{"Type": "Encryption", "Name": "wireguard-go"}]
    lines = pretty(record).splitlines()
    at = lines.index("Plugins:")
    assert lines[at + 1] == " Encryption:\t\twireguard-go"
    assert "Plugins:" not in pretty(mknode("b").to_dict())


# -- registration to placement: the dispatcher, the store pass -------------------------------------------

def _network(name: str, encrypted: bool, subnet: str) -> dict[str, Any]:
    opts = {"encrypted": ""} if encrypted else {}
    return Network(id=f"id-{name}", name=name, spec=NetworkSpec(name=name, driver="overlay", driver_opts=opts),
                   allocation=NetworkAllocation(network_id=f"nid-{name}", subnet=subnet, gateway=subnet[:-4] + "1",
                                                options={**opts, "com.docker.network.driver.overlay.vxlanid_list": "4097"},
                                                mtu=1370 if encrypted else 1450)).to_dict()


def _service(tx: Any, service: str, network: str, replicas: int) -> None:
    spec = {"networks": [{"target": network}]}
    tx.create("service", {"id": service, "name": service, "spec": spec, "spec_version": 1})
    for i in range(replicas):
        t = Task(id=f"{service}-{i}", service_id=service, service_name=service, slot=i + 1, spec_version=1, spec=spec,
                 created_at=float(i))
        tx.create("task", t.to_dict())


def test_registered_nodes_and_the_store_pass(tmp_path: Path) -> None:
    scheduler.reset()
    store = SQLiteStore(tmp_path / "shoald.db")
    try:
        d = Dispatcher(store)
        res = Resources(nano_cpus=2_000_000_000, memory_bytes=2 << 30)
        d.register(NodeDescription(hostname="plain", node_id="A", resources=res), addr="198.18.0.1")
        d.register(NodeDescription(hostname="wg", node_id="B", resources=res, engine=EngineInfo(plugins=WG)),
                   addr="198.18.0.2")
        assert Node.from_dict(store.get("node", "B")).engine.plugins == WG  # as the node described itself
        with store.transaction() as tx:
            tx.create("network", _network("app_secure", True, "10.213.90.0/24"))
            tx.create("network", _network("app_plain", False, "10.213.91.0/24"))
            assert scheduler.encrypted_networks(tx) == SECURE
            _service(tx, "sec", "app_secure", 2)
            _service(tx, "pln", "app_plain", 2)
        with store.transaction() as tx:
            allocator.reconcile(tx, 100.0, allocator.store_networks(tx))
            scheduler.reconcile(tx, 100.0)
        tasks = {raw["id"]: Task.from_dict(raw) for raw in store.list("task")}
        assert [tasks[f"sec-{i}"].node_id for i in range(2)] == ["B", "B"]
        assert {tasks[f"pln-{i}"].node_id for i in range(2)} == {"A", "B"}
        # The node that could encrypt is drained: the encrypted service's new task waits, saying why.
        with store.transaction() as tx:
            raw = tx.get("node", "B")
            tx.update("node", {**raw, "availability": "drain"})
            _service(tx, "late", "app_secure", 1)
        with store.transaction() as tx:
            allocator.reconcile(tx, 101.0, allocator.store_networks(tx))
            scheduler.reconcile(tx, 101.0)
        late = Task.from_dict(store.get("task", "late-0"))
        assert late.status.state == TaskState.PENDING and not late.node_id
        assert late.status.err == ("no suitable node (1 node not available for new tasks; "
                                   "encrypted networks unsupported on 1 node)")
    finally:
        store.close()
        scheduler.reset()
