"""Network attachments on the manager (manager/controlapi/attachments.py, swarmkit's
ResourceAllocator): a container attaching to an attachable swarm network gets an address no
task, VIP or other container holds, in the manager's transaction; a task allocated afterwards
avoids it; a network not manually attachable or unknown is refused with Docker's words; only
the node that holds an attachment detaches it; a removed node's attachments are freed; and the
dispatcher sends each node the attachments on its networks and the peers they make."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.session import NodeDescription
from shoal.errors import NotFound
from shoal.manager import allocator
from shoal.manager.controlapi import attachments
from shoal.manager.dispatcher import Dispatcher
from shoal.model.cluster import Task, TaskState, TaskStatus
from shoal.model.records import Network
from shoal.model.stack import IPAM, IPAMPool, NetworkSpec
from shoal.store import SQLiteStore


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    db = SQLiteStore(tmp_path / "shoald.db")
    try:
        yield db
    finally:
        db.close()


def _network(store: SQLiteStore, name: str, subnet: str, attachable: bool) -> dict[str, Any]:
    spec = NetworkSpec(name=name, driver="overlay", attachable=attachable, ipam=IPAM(config=[IPAMPool(subnet=subnet)]))
    with store.transaction() as tx:
        record = Network(id=f"id-{name}", name=name, spec=spec, allocation=allocator.allocate_network(tx, spec))
        return tx.create("network", record.to_dict())


def _service_with_task(store: SQLiteStore, network: str) -> str:
    spec = {"name": "web", "image": "web:v1", "networks": [{"target": network, "aliases": []}],
            "endpoint": {"mode": "vip", "ports": []}}
    now = time.time()
    with store.transaction() as tx:
        endpoint = allocator.allocate_endpoint(tx, "id-web", spec)
        tx.create("service", {"id": "id-web", "name": "web", "spec": spec, "spec_version": 1, "endpoint": endpoint})
        task = Task(id="t1", service_id="id-web", service_name="web", slot=1, spec_version=1,
                    status=TaskStatus(state=TaskState.NEW, timestamp=now), created_at=now,
                    spec={"networks": [{"target": network, "aliases": []}]})
        tx.create("task", task.to_dict())
        allocator.reconcile(tx, now, allocator.store_networks(tx))
    return str(endpoint["vips"][0]["addr"])


def _ip(record: dict[str, Any]) -> str:
    return str(record["addresses"][0]).split("/")[0]


def test_attachments_take_addresses_nothing_else_holds(store: SQLiteStore) -> None:
    _network(store, "att", "10.213.5.0/24", attachable=True)
    with store.transaction() as tx:
        for node_id in ("node-a", "node-b"):
            tx.create("node", {"id": node_id, "hostname": node_id})
    vip = _service_with_task(store, "att")
    (task,) = store.list("task")
    task_ip = task["networks"][0]["addresses"][0].split("/")[0]
    assert (vip, task_ip) == ("10.213.5.2", "10.213.5.3")

    a = attachments.attach(store, "node-a", "att", "c" * 64, "a1", ["al"])
    b = attachments.attach(store, "node-b", "id-att", "d" * 64, "a1")  # by ID; a name of another node's too
    assert (_ip(a), _ip(b)) == ("10.213.5.4", "10.213.5.5")
    assert a["addresses"] == ["10.213.5.4/24"] and a["aliases"] == ["al"] and a["network"] == "att"
    # Asked again for the same container (a restart): the same attachment, no new address.
    assert attachments.attach(store, "node-a", "att", "c" * 64, "a1")["id"] == a["id"]

    # A task allocated later, and a VIP, avoid the containers' addresses.
    now = time.time()
    with store.transaction() as tx:
        t2 = Task(id="t2", service_id="id-web", service_name="web", slot=2, spec_version=1,
                  status=TaskStatus(state=TaskState.NEW, timestamp=now), created_at=now,
                  spec={"networks": [{"target": "att", "aliases": []}]})
        tx.create("task", t2.to_dict())
        allocator.reconcile(tx, now, allocator.store_networks(tx))
        assert "10.213.5.4" in allocator.held_addresses(tx)["att"]
    assert store.get("task", "t2")["networks"][0]["addresses"] == ["10.213.5.6/24"]

    # Only the node that holds it detaches it; then its address is free (given last: serial).
    with pytest.raises(attachments.PermissionDenied, match="doesn't belong to this node"):
        attachments.detach(store, "node-b", a["id"])
    attachments.detach(store, "node-a", a["id"])
    with pytest.raises(NotFound):
        attachments.detach(store, "node-a", a["id"])
    assert [r["id"] for r in store.list("attachment")] == [b["id"]]
    assert _ip(attachments.attach(store, "node-a", "att", "e" * 64)) == "10.213.5.7"
    # The serial place outlives the records: b freed, the next is .8, not b's .5 again.
    attachments.detach(store, "node-b", b["id"])
    assert _ip(attachments.attach(store, "node-b", "att", "f" * 64)) == "10.213.5.8"


def test_refusals_in_dockers_words(store: SQLiteStore) -> None:
    _network(store, "plain", "10.213.6.0/24", attachable=False)
    with pytest.raises(attachments.PermissionDenied) as refused:
        attachments.attach(store, "node-a", "plain", "c" * 64)
    assert str(refused.value) == ("Could not attach to network plain: rpc error: code = PermissionDenied desc = "
                                  "network plain not manually attachable")
    with pytest.raises(NotFound, match="^network nope not found$"):
        attachments.attach(store, "node-a", "nope", "c" * 64)
    assert store.list("attachment") == []


def test_network_rm_refused_while_attached_and_removed_nodes_freed(store: SQLiteStore) -> None:
    from shoal.manager.controlapi import networks

    net = _network(store, "att", "10.213.7.0/24", attachable=True)
    with store.transaction() as tx:
        tx.create("node", {"id": "node-a", "hostname": "a"})
    a = attachments.attach(store, "node-a", "att", "c" * 64)
    attachments.attach(store, "node-gone", "att", "d" * 64)
    with store.transaction() as tx:
        allocator.collect_attachments(tx)  # the manager's pass: node-gone is not in the store
    assert [r["id"] for r in store.list("attachment")] == [a["id"]]
    assert [r["id"] for r in store.list(allocator.CURSOR_KIND)] == [net["id"]]
    with store.transaction() as tx:
        assert networks._in_use(tx, net) == f"network {net['id']} is in use by task {a['id']}"
    attachments.detach(store, "node-a", a["id"])
    with store.transaction() as tx:
        assert networks._in_use(tx, net) is None
        tx.delete("network", net["id"])
        allocator.collect_attachments(tx)
    assert store.list(allocator.CURSOR_KIND) == []


def test_the_dispatcher_sends_attachments_and_their_peers(store: SQLiteStore) -> None:
    _network(store, "att", "10.213.8.0/24", attachable=True)
    dispatcher = Dispatcher(store, network_records=lambda: allocator.node_records(store.list("network")))
    one = dispatcher.register(NodeDescription(hostname="one", advertise_addr="198.18.0.1", node_id="n1"))
    two = dispatcher.register(NodeDescription(hostname="two", advertise_addr="198.18.0.2", node_id="n2"))
    for info in (one, two):
        assert dispatcher.assignments(info.node_id, info.session_id).attachments == []
    answer = dispatcher.attach_network("n2", two.session_id, "att", "c" * 64, "c2")
    assert answer["network"]["name"] == "att" and answer["network"]["overlay"]["local"] == "198.18.0.2"
    ip = _ip(answer["attachment"])

    # Node 2 gets the network (no task of it there) and its attachment; node 1, once it has the
    # network, the container as a peer behind node 2 and its record for its resolver.
    got = dispatcher.assignments("n2", two.session_id)
    assert got is not None and [n["name"] for n in got.networks or []] == ["att"]
    assert [a["container_id"] for a in got.attachments or []] == ["c" * 64]
    dispatcher.attach_network("n1", one.session_id, "att", "d" * 64, "c1")
    got = dispatcher.assignments("n1", one.session_id)
    assert got is not None
    (net,) = got.networks or []
    assert net["overlay"]["peers"] == [{"ip": ip, "node": "198.18.0.2", "name": "two"}]
    assert sorted(a["container_name"] for a in got.attachments or []) == ["c1", "c2"]
    assert dispatcher.network_state("att")["peers"] == [{"Name": "one", "IP": "198.18.0.1"},
                                                         {"Name": "two", "IP": "198.18.0.2"}]

    # Detached: gone from every node's set; a detach again is no error (a retried call).
    dispatcher.detach_network("n2", two.session_id, answer["attachment"]["id"])
    dispatcher.detach_network("n2", two.session_id, answer["attachment"]["id"])
    got = dispatcher.assignments("n1", one.session_id)
    assert got is not None and [a["container_name"] for a in got.attachments or []] == ["c1"]
