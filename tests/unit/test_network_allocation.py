"""Swarm networks are allocated in the manager's store transactions, from the store alone: a
network's subnet, gateway and VNI, a service's VIP and a task's address. A transaction rolled
back leaves nothing allocated; no allocation reads or writes the manager node's network files
(<state_root>/networks: node-local state, made from the records); and a record an older
shoald wrote takes its allocation from that node's copy, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import Conflict, ShoalError
from shoal.manager import allocator
from shoal.model.cluster import Task, TaskState, TaskStatus
from shoal.model.records import Network
from shoal.model.stack import IPAM, IPAMPool, NetworkSpec
from shoal.network import overlay
from shoal.store import SQLiteStore


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_DEFAULT_ADDRESS_POOLS", "10.213.0.0/23:24")  # two /24s
    return tmp_path


@pytest.fixture
def store(root: Path) -> Iterator[SQLiteStore]:
    db = SQLiteStore(root / "shoald.db")
    try:
        yield db
    finally:
        db.close()


class Boom(Exception):
    pass


def _network(tx: Any, name: str, subnet: str = "") -> dict[str, Any]:
    spec = NetworkSpec(name=name, driver="overlay", ipam=IPAM(config=[IPAMPool(subnet=subnet)] if subnet else []))
    record = Network(id=f"id-{name}", name=name, spec=spec, allocation=allocator.allocate_network(tx, spec))
    return tx.create("network", record.to_dict())


def _service(tx: Any, name: str, network: str) -> dict[str, Any]:
    spec = {"name": name, "image": "web:v1", "networks": [{"target": network, "aliases": []}],
            "endpoint": {"mode": "vip", "ports": [{"target": 80, "published": 8080, "protocol": "tcp"}]}}
    endpoint = allocator.allocate_endpoint(tx, f"id-{name}", spec)
    return tx.create("service", {"id": f"id-{name}", "name": name, "spec": spec, "spec_version": 1,
                                 "endpoint": endpoint})


def _vip(service: dict[str, Any]) -> str:
    (vip,) = service["endpoint"]["vips"]
    return str(vip["addr"])


def test_a_rolled_back_allocation_leaves_nothing_allocated(root: Path, store: SQLiteStore) -> None:
    with pytest.raises(Boom):
        with store.transaction() as tx:
            net = _network(tx, "s_net")
            svc = _service(tx, "s_web", "s_net")
            assert overlay.vni_of(net["allocation"]["options"]) == 4096
            assert (net["allocation"]["subnet"], _vip(svc)) == ("10.213.0.0/24", "10.213.0.2")
            raise Boom
    assert store.list("network") == [] and store.list("service") == []
    # The same VNI, subnet and VIP are free again: nothing held them outside the transaction.
    with store.transaction() as tx:
        net = _network(tx, "t_net")
        svc = _service(tx, "t_web", "t_net")
    assert overlay.vni_of(net["allocation"]["options"]) == 4096
    assert (net["allocation"]["subnet"], _vip(svc)) == ("10.213.0.0/24", "10.213.0.2")
    assert not (root / "networks").exists()  # the node's network files: never read nor made


def test_allocations_come_from_the_store(root: Path, store: SQLiteStore) -> None:
    with store.transaction() as tx:
        first = _network(tx, "s_net")
        svc = _service(tx, "s_web", "s_net")
    with store.transaction() as tx:
        second = _network(tx, "t_net")
        # A VIP already held is kept on update; another service's is never given again.
        assert allocator.allocate_endpoint(tx, svc["id"], svc["spec"], svc["endpoint"])["vips"] == svc["endpoint"]["vips"]
        other = allocator.allocate_endpoint(tx, "id-other", dict(svc["spec"], name="other"))
        assert other["vips"] == [{"network": "s_net", "addr": "10.213.0.3"}]
    assert overlay.vni_of(second["allocation"]["options"]) == 4097
    assert second["allocation"]["subnet"] == "10.213.1.0/24"
    with pytest.raises(Conflict, match=r"subnet 10.213.0.128/25 overlaps with network s_net \(10.213.0.0/24\)"):
        with store.transaction() as tx:
            _network(tx, "u_net", "10.213.0.128/25")
    with pytest.raises(ShoalError, match="could not find an available, non-overlapping IPv4 address pool"):
        with store.transaction() as tx:
            _network(tx, "u_net")

    # A NEW task on the network gets the next address that no VIP, gateway or task holds.
    now = time.time()
    task = Task(id="t1", service_id=svc["id"], service_name="s_web", slot=1, spec_version=1,
                status=TaskStatus(state=TaskState.NEW, timestamp=now), created_at=now,
                spec={"networks": [{"target": "s_net", "aliases": []}]})
    with store.transaction() as tx:
        tx.create("task", task.to_dict())
        allocator.reconcile(tx, now, allocator.store_networks(tx))
    (raw,) = store.list("task")
    assert raw["status"]["state"] == "pending"
    assert raw["networks"][0]["addresses"] == ["10.213.0.3/24"]

    # What a node is sent to make its copy: the record's allocation, the ID its copy carries.
    records = allocator.node_records(store.list("network"))
    assert records["s_net"]["id"] == first["allocation"]["network_id"]
    assert (records["s_net"]["subnet"], records["s_net"]["gateway"]) == ("10.213.0.0/24", "10.213.0.1")
    assert records["s_net"]["scope"] == "swarm" and records["s_net"]["mtu"] == 1450
    assert overlay.vni_of(records["t_net"]["options"]) == 4097
    assert not (root / "networks").exists()


def test_an_older_records_allocation_moves_in_from_the_nodes_copy_once(root: Path, store: SQLiteStore) -> None:
    from shoal.manager import endpoints
    from shoal.network.store import NetworkStore

    local = NetworkStore().create("old_net", driver="overlay", options={overlay.VXLANID_OPTION: "4100"},
                                  labels={"com.docker.stack.namespace": "old"})
    with store.transaction() as tx:  # as an older shoald stored it: no allocation
        tx.create("network", {"id": "swarm-old", "name": "old_net", "stack": "old", "created_at": 1.0,
                              "spec": {"name": "old_net", "compose_name": "net", "driver": "overlay"}})
    assert endpoints.migrate_networks(store) == ["old_net"]
    (raw,) = store.list("network")
    alloc = raw["allocation"]
    assert (alloc["network_id"], alloc["subnet"], alloc["gateway"]) == (local.id, local.subnet, local.gateway)
    assert overlay.vni_of(alloc["options"]) == 4100
    assert endpoints.migrate_networks(store) == []  # once
    # A new network avoids what the moved one holds.
    with store.transaction() as tx:
        new = _network(tx, "new_net")
    assert new["allocation"]["subnet"] != local.subnet
    assert overlay.vni_of(new["allocation"]["options"]) == 4096


def test_a_network_made_again_alike_is_the_same_copy_on_the_nodes(store: SQLiteStore) -> None:
    """`stack rm` and deploy at once: the new record's network is the old one again (same
    subnet and VNI, the lowest free), so a node whose old tasks still hold its copy keeps it."""
    with store.transaction() as tx:
        first = _network(tx, "s_net")
        tx.delete("network", first["id"])
    with store.transaction() as tx:
        again = _network(tx, "s_net")
        other = _network(tx, "t_net")
    assert again["allocation"] == dict(first["allocation"], created=again["allocation"]["created"])
    assert other["allocation"]["network_id"] != again["allocation"]["network_id"]


def test_a_record_that_cannot_be_allocated_does_not_stop_the_others(root: Path, store: SQLiteStore) -> None:
    from shoal.manager import endpoints

    with store.transaction() as tx:
        _network(tx, "a_net")  # 10.213.0.0/24
        for name, ipam in (("b_net", {"config": [{"subnet": "10.213.0.0/25"}]}), ("c_net", {})):
            tx.create("network", {"id": f"id-{name}", "name": name, "created_at": 1.0,
                                  "spec": {"name": name, "driver": "overlay", "ipam": ipam}})
    assert endpoints.migrate_networks(store) == ["c_net"]  # b_net overlaps a_net: left, logged
    assert set(allocator.node_records(store.list("network"))) == {"a_net", "c_net"}


def _ports_service(tx: Any, name: str, ports: list[dict[str, Any]], current: dict[str, Any] | None = None,
                   given: dict[str, set[str]] | None = None) -> dict[str, Any]:
    spec = {"name": name, "image": "web:v1", "networks": [], "endpoint": {"mode": "vip", "ports": ports}}
    endpoint = allocator.allocate_endpoint(tx, f"id-{name}", spec, current, given=given)
    record = {"id": f"id-{name}", "name": name, "spec": spec, "spec_version": 1, "endpoint": endpoint}
    if tx.get("service", f"id-{name}") is None:
        return tx.create("service", record)
    return tx.update("service", record, expect_version=None)


def _published(service: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(p["target"], p["published"], p["mode"]) for p in service["endpoint"]["ports"]]


def test_an_ingress_port_published_as_0_gets_one_of_30000_32767(store: SQLiteStore) -> None:
    """The voting app's `ports: ["6379"]`: swarmkit's port allocator gives the service a port
    of its dynamic range (Endpoint.Ports; `stack services` shows `*:30000->6379/tcp`), kept
    across updates, never one another service holds or asks for; a host-mode 0 stays 0."""
    with store.transaction() as tx:
        tx.create("service", {"id": "id-web", "name": "web", "spec_version": 1,
                              "spec": {"name": "web", "endpoint": {"ports": [{"target": 80, "published": 30000}]}}})
        redis = _ports_service(tx, "redis", [{"target": 6379, "protocol": "tcp"}])
        assert _published(redis) == [(6379, 30001, "ingress")]
        # Two of them in one request (a stack deploy shares `given`), and a host-mode 0.
        given: dict[str, set[str]] = {}
        a = _ports_service(tx, "a", [{"target": 80}, {"target": 81}, {"target": 82, "publish_mode": "host"}],
                           given=given)
        b = _ports_service(tx, "b", [{"target": 80}], given=given)
        assert _published(a) == [(80, 30002, "ingress"), (81, 30003, "ingress"), (82, 0, "host")]
        assert _published(b) == [(80, 30004, "ingress")]
        # An update (a redeploy) keeps the port the service had, another target gets a new one.
        again = _ports_service(tx, "redis", [{"target": 6379}, {"target": 6380}], current=redis["endpoint"])
        assert _published(again) == [(6379, 30001, "ingress"), (6380, 30005, "ingress")]
        udp = _ports_service(tx, "dns", [{"target": 53, "protocol": "udp"}])
        assert udp["endpoint"]["ports"][0]["published"] == 30000  # another protocol, another space
