"""`--with-registry-auth` without a daemon: the CLI's encoding (docker/cli's EncodeAuthConfig, from
the credentials `shoal login` stored for the image's registry, only with the flag), the manager's
checks and its update/rollback rules (moby keeps the current spec's credentials without
X-Registry-Auth, the previous spec's on a rollback), sealed at rest, and the dispatcher giving
them only to the node that runs the service's tasks."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import pytest

from shoal.cli.servicespec import registry_auth
from shoal.errors import InvalidArgument
from shoal.image.auth import Credentials, store_credentials
from shoal.image.registryauth import decode, encode, for_image
from shoal.manager import registryauth as stored
from shoal.store import SQLiteStore


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path / "root"))  # the sealing key's home
    path = tmp_path / "config.json"
    monkeypatch.setenv("SHOAL_CONFIG", str(path))
    store_credentials("registry.example:5000", Credentials("alice", "pa:ss"), path)
    return path


@pytest.fixture
def store(tmp_path: Path, config: Path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def test_the_cli_sends_the_image_registry_credentials_only_with_the_flag(config: Path) -> None:
    value = registry_auth(argparse.Namespace(with_registry_auth=True), "registry.example:5000/team/web:v1")
    assert value is not None
    assert json.loads(base64.urlsafe_b64decode(value)) == {
        "username": "alice", "password": "pa:ss", "serveraddress": "registry.example:5000"}
    assert registry_auth(argparse.Namespace(with_registry_auth=None), "registry.example:5000/team/web:v1") is None
    # Another registry: docker/cli sends the empty config's encoding, and no credentials reach anyone.
    other = for_image("other.example/web:v1")
    assert base64.urlsafe_b64decode(other) == b"{}" and decode(other) is None


def test_the_manager_checks_the_shape() -> None:
    assert decode(encode(Credentials("u", "p"), "r.example")) == (Credentials("u", "p"), "r.example")
    for bad in ("not base64 json!", base64.b64encode(b"[1]").decode(), 42,
                base64.b64encode(json.dumps({"username": "u"}).encode()).decode()):
        with pytest.raises(InvalidArgument, match="registry_auth"):
            stored.checked(bad)
    assert stored.checked(None) is None and stored.checked("") == ""


def test_sealed_and_kept_by_docker_update_rules(store: SQLiteStore, tmp_path: Path) -> None:
    first, second = encode(Credentials("u", "first-pw"), "r"), encode(Credentials("u", "second-pw"), "r")
    with store.transaction() as tx:
        stored.put(tx, "svc1", first)
    assert stored.current(store, "svc1") == first
    with store.transaction() as tx:
        stored.put(tx, "svc1", None)  # update without the flag: kept
    assert stored.current(store, "svc1") == first
    with store.transaction() as tx:
        stored.put(tx, "svc1", second)  # update with the flag: replaced
    assert stored.current(store, "svc1") == second
    with store.transaction() as tx:
        stored.put(tx, "svc1", None, rollback=True)  # rollback: the previous spec's
    assert stored.current(store, "svc1") == first
    with store.transaction() as tx:
        stored.put(tx, "svc1", "")  # the flag, no login for the registry: none
    assert stored.current(store, "svc1") is None
    with store.transaction() as tx:
        stored.put(tx, "svc1", second)
    store.close()
    for path in tmp_path.glob("state.db*"):
        data = path.read_bytes()
        assert b"second-pw" not in data and second.encode() not in data, path
    reopened = SQLiteStore(tmp_path / "state.db")
    try:
        assert stored.current(reopened, "svc1") == second
        with reopened.transaction() as tx:
            stored.remove(tx, "svc1")
        assert reopened.get(stored.KIND, "svc1") is None
    finally:
        reopened.close()


def test_a_sealed_value_does_not_open_for_another_service(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        stored.put(tx, "svc1", encode(Credentials("u", "p"), "r"))
        record = dict(tx.get(stored.KIND, "svc1"), id="svc2")
        record.pop("version")
        tx.create(stored.KIND, record)
    with pytest.raises(Exception, match="does not open"):
        stored.current(store, "svc2")


def test_the_dispatcher_gives_them_to_the_service_node_only(store: SQLiteStore) -> None:
    from tests.unit.test_dispatcher import Clock, add_service, describe, manager_pass
    from shoal.manager.dispatcher import Dispatcher

    clock = Clock()
    dispatcher = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = dispatcher.register(describe("pc1"))
    b = dispatcher.register(describe("pc2"))
    service = add_service(store, replicas=1, placement={"constraints": ["node.hostname==pc1"]})
    value = encode(Credentials("u", "p"), "r")
    with store.transaction() as tx:
        stored.put(tx, service, value)
    manager_pass(store, clock.now)
    got_a = dispatcher.assignments(a.node_id, a.session_id)
    got_b = dispatcher.assignments(b.node_id, b.session_id)
    assert got_a is not None and got_a.tasks and got_a.registry_auths == {service: value}
    assert got_b is not None and not got_b.tasks and got_b.registry_auths == {}
    # Replaced credentials reach the node in an incremental set; unchanged ones are not re-sent.
    assert dispatcher.assignments(a.node_id, a.session_id) is None
    newer = encode(Credentials("u", "p2"), "r")
    with store.transaction() as tx:
        stored.put(tx, service, newer)
    inc = dispatcher.assignments(a.node_id, a.session_id)
    assert inc is not None and inc.registry_auths == {service: newer}


def test_the_assignment_carries_them_over_the_wire() -> None:
    """The HTTPS session sends sets as JSON (agent/session.py to_json/from_json)."""
    import json as _json

    from shoal.agent.session import AssignmentSet, AssignmentType, from_json, to_json

    value = encode(Credentials("u", "p"), "r")
    sent = AssignmentSet(type=AssignmentType.COMPLETE, sequence=1, registry_auths={"svc1": value})
    got = from_json(AssignmentSet, _json.loads(_json.dumps(to_json(sent))))
    assert got.registry_auths == {"svc1": value}
    unchanged = from_json(AssignmentSet, _json.loads(_json.dumps(to_json(
        AssignmentSet(type=AssignmentType.INCREMENTAL, sequence=2, applies_to=1)))))
    assert unchanged.registry_auths is None


def test_the_agent_keeps_them_in_memory_only(tmp_path: Path, store: SQLiteStore) -> None:
    """Through the in-process session: the agent has the service's credentials for its worker
    (AssignedFiles.registry_auth) and its own store (worker/tasks.db) never holds them."""
    import asyncio

    from tests.unit.test_dispatcher import Clock, add_service, describe, manager_pass
    from shoal.agent.agent import Agent, AssignedFiles
    from shoal.agent.inprocess import InProcessSession
    from shoal.manager.dispatcher import Dispatcher

    dispatcher = Dispatcher(store, heartbeat_period=1.0, clock=Clock())
    service = add_service(store, replicas=1)
    value = encode(Credentials("agentuser", "agent-Secret-77"), "r.example")
    with store.transaction() as tx:
        stored.put(tx, service, value)

    async def scenario() -> None:
        agent = Agent(tmp_path / "node", InProcessSession(dispatcher, role="manager"), describe("pc1"))
        runner = asyncio.create_task(agent.run())
        try:
            assert await agent.wait_registered(5)
            await asyncio.to_thread(manager_pass, store, 1.0)
            dispatcher.notify()
            for _ in range(300):
                if agent.store.list("task") and agent.registry_auths:
                    break
                await asyncio.sleep(0.01)
            assert AssignedFiles(agent).registry_auth(service) == value
            assert AssignedFiles(agent).registry_auth("another") is None
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            agent.close()

    asyncio.run(scenario())
    for path in (tmp_path / "node" / "worker").iterdir():
        data = path.read_bytes()
        assert b"agent-Secret-77" not in data and value.encode() not in data, path
