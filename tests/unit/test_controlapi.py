"""The control API (manager/controlapi) against a real SQLiteStore in a state root of the
test's own: create, duplicate name, validation with swarmkit's words, update with a stale
version, update and rollback, mode change, secrets that must exist, published-port clash,
scale, a network in use, and the typed records loading what older shoalds stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, teardown_root
from shoal.errors import Conflict, InvalidArgument, NotFound
from shoal.manager import serviceview
from shoal.manager.controlapi import networks as netapi, services as svcapi
from shoal.model.records import Network, Service
from shoal.model.service import (DEFAULT_TASK_HISTORY_LIMIT, FileReference, NetworkAttachment, PortConfig,
                                 RestartPolicy, ServiceSpec, UpdateConfig)
from shoal.model.stack import NetworkSpec
from shoal.store import SQLiteStore
from shoal.store.base import VersionConflict


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state root for the module (what the services and networks make in the kernel is
    named after it), torn down once at the end, whatever happened."""
    root = tmp_path_factory.mktemp("controlapi")
    root.chmod(0o700)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHOAL_ROOT", str(root))
        env.setenv("SHOAL_RUN", str(root / "run"))
        try:
            yield root
        finally:
            teardown_root(root, root / "run")


@pytest.fixture
def store(root: Path, tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "shoald.db")
    try:
        yield s
    finally:
        # What this test's services hold in the kernel goes with them.
        for svc in s.list("service"):
            svcapi.remove_service(s, svc["id"])
        s.close()


def spec(name: str = "web", **changes) -> ServiceSpec:
    return ServiceSpec(name=name, **{"image": "busybox:latest", **changes})


def services(store: SQLiteStore) -> list[Service]:
    return [Service.from_dict(s) for s in store.list("service")]


def test_create_stores_a_typed_record_with_swarms_defaults(store: SQLiteStore) -> None:
    service_id, warnings = svcapi.create_service(store, spec(replicas=2))
    # The manager's store lacks busybox: moby's CreateService answers its digest warning.
    assert [w.splitlines()[0] for w in warnings] == [
        "image busybox:latest could not be accessed on a registry to record"]
    (svc,) = services(store)
    assert (svc.id, svc.name, svc.stack, svc.spec_version) == (service_id, "web", "", 1)
    assert svc.spec.replicas == 2 and svc.previous_spec is None and svc.update_status is None
    assert svc.spec.restart_policy == RestartPolicy() and svc.spec.force_update == 0
    assert svcapi.inspect_service(store, service_id[:6]).name == "web"


def test_a_name_taken_is_swarmkits_already_exists_and_nothing_more_is_stored(store: SQLiteStore) -> None:
    first, _ = svcapi.create_service(store, spec())
    with pytest.raises(Conflict, match="AlreadyExists desc = name conflicts with an existing object: "
                                       "service web already exists"):
        svcapi.create_service(store, spec(replicas=3))
    assert [(s.id, s.spec.replicas) for s in services(store)] == [(first, 1)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": ""}, "meta: name must be provided"),
    ({"name": "my web"}, "name must be valid as a DNS name component"),
    ({"name": "a" * 64}, "name must be 63 characters or fewer"),
    ({"image": ""}, "ContainerSpec: image reference must be provided"),
    ({"replicas": -1}, "Number of replicas must be non-negative"),
    ({"mode": "sometimes"}, "Unrecognized service mode"),
    ({"restart_policy": RestartPolicy(delay=-1.0)}, "TaskSpec: restart-delay cannot be negative"),
    ({"update_config": UpdateConfig(max_failure_ratio=2.0)},
     "TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1"),
    ({"secrets": [FileReference("a", "/run/secrets/x"), FileReference("b", "/run/secrets/x")]},
     "secret references 'a' and 'b' have a conflicting target: '/run/secrets/x'"),
])
def test_an_invalid_spec_is_refused_with_swarmkits_words(store: SQLiteStore, changes, message) -> None:
    with pytest.raises(InvalidArgument) as exc:
        svcapi.create_service(store, spec(**{"name": "web", **changes}))
    assert str(exc.value).endswith(message)
    assert store.list("service") == []


def test_a_secret_the_service_names_must_exist(store: SQLiteStore) -> None:
    with pytest.raises(InvalidArgument, match="secret not found: nope$"):
        svcapi.create_service(store, spec(secrets=[FileReference("nope", "/run/secrets/nope")]))
    with pytest.raises(NotFound, match="network nonet not found"):
        svcapi.create_service(store, spec(networks=[NetworkAttachment("nonet")]))
    assert store.list("service") == []


def test_update_with_a_stale_version_is_out_of_sequence(store: SQLiteStore) -> None:
    service_id, _ = svcapi.create_service(store, spec())
    svcapi.update_service(store, service_id, 1, spec(replicas=2))
    with pytest.raises(VersionConflict, match="update out of sequence"):
        svcapi.update_service(store, service_id, 1, spec(replicas=5))
    (svc,) = services(store)
    assert (svc.spec_version, svc.spec.replicas) == (2, 2)


def test_update_keeps_the_previous_spec_and_rollback_swaps_them(store: SQLiteStore) -> None:
    service_id, _ = svcapi.create_service(store, spec())
    with pytest.raises(InvalidArgument, match=f"FailedPrecondition desc = service {service_id} does not have a "
                                              "previous spec"):
        svcapi.update_service(store, service_id, 1, None, rollback="previous")
    svcapi.update_service(store, "web", 1, spec(env=["A=1"], force_update=1))
    (svc,) = services(store)
    assert svc.spec.env == ["A=1"] and svc.previous_spec is not None and svc.previous_spec.env == []
    assert svc.update_status is None and svc.spec_version == 2
    svcapi.update_service(store, "web", 2, None, rollback="previous")
    (svc,) = services(store)
    assert svc.spec.env == [] and svc.spec.force_update == 0 and svc.previous_spec.env == ["A=1"]
    assert svc.spec_version == 3 and svc.rolling_back
    assert svc.update_status is not None
    assert (svc.update_status.state, svc.update_status.message) == ("rollback_started", "manually requested rollback")


def test_mode_change_and_rename_are_refused(store: SQLiteStore) -> None:
    service_id, _ = svcapi.create_service(store, spec())
    with pytest.raises(InvalidArgument, match="service mode change is not allowed"):
        svcapi.update_service(store, service_id, 1, spec(mode="global", replicas=0))
    with pytest.raises(InvalidArgument, match="renaming services is not supported"):
        svcapi.update_service(store, service_id, 1, spec("other"))
    (svc,) = services(store)
    assert (svc.spec.mode, svc.name, svc.spec_version) == ("replicated", "web", 1)


@ROOT_ONLY
def test_a_published_port_another_service_holds_is_refused(store: SQLiteStore) -> None:
    ports = [PortConfig(target=80, published=38931)]
    first, _ = svcapi.create_service(store, spec("front"))
    svcapi.update_service(store, first, 1, spec("front", endpoint=_endpoint(ports)))
    with pytest.raises(InvalidArgument, match=f"port '38931' is already in use by service 'front' \\({first}\\) "
                                              "as an ingress port"):
        svcapi.create_service(store, spec("back", endpoint=_endpoint(ports)))
    assert [s.name for s in services(store)] == ["front"]


@ROOT_ONLY
def test_a_port_the_manager_gave_is_held_as_if_asked_for(store: SQLiteStore) -> None:
    """`-p 6379` (published 0) gets a port of 30000-32767 in Endpoint.Ports, not in the spec;
    swarmkit's checkPortConflicts looks at both, so a service asking for that port is refused."""
    cache, _ = svcapi.create_service(store, spec("cache", endpoint=_endpoint([PortConfig(target=6379)])))
    (svc,) = services(store)
    (port,) = svc.endpoint.ports
    assert 30000 <= port.published <= 32767 and svc.spec.endpoint.ports[0].published == 0
    with pytest.raises(InvalidArgument, match=f"port '{port.published}' is already in use by service 'cache' "
                                              f"\\({cache}\\) as an ingress port"):
        svcapi.create_service(store, spec("back", endpoint=_endpoint([PortConfig(target=80, published=port.published)])))
    assert [s.name for s in services(store)] == ["cache"]


def _endpoint(ports: list[PortConfig]):
    from shoal.model.service import EndpointSpec

    return EndpointSpec(ports=ports)


def test_scale_changes_replicas_only_and_refuses_global(store: SQLiteStore) -> None:
    service_id, _ = svcapi.create_service(store, spec())
    svcapi.scale_service(store, "web", 4)
    (svc,) = services(store)
    assert (svc.spec.replicas, svc.spec_version, svc.previous_spec) == (4, 2, None)
    svcapi.create_service(store, spec("everywhere", mode="global", replicas=0))
    with pytest.raises(InvalidArgument, match="scale can only be used with replicated or replicated-job mode"):
        svcapi.scale_service(store, "everywhere", 2)
    removed = svcapi.remove_service(store, service_id)
    assert removed.name == "web" and [s.name for s in services(store)] == ["everywhere"]


@ROOT_ONLY
def test_a_network_in_use_by_a_service_cannot_be_removed(store: SQLiteStore) -> None:
    network_id = netapi.create_network(store, NetworkSpec(name="appnet"))
    with pytest.raises(Conflict, match="network with name appnet already exists"):
        netapi.create_network(store, NetworkSpec(name="appnet"))
    service_id, _ = svcapi.create_service(store, spec(networks=[NetworkAttachment("appnet")]))
    (svc,) = services(store)
    assert [v.network for v in svc.endpoint.vips] == ["appnet"]
    with pytest.raises(InvalidArgument, match=f"FailedPrecondition desc = network {network_id} is in use by "
                                              f"service {service_id}"):
        netapi.remove_network(store, "appnet")
    assert netapi.inspect_network(store, network_id[:8]).spec.driver == "overlay"
    svcapi.remove_service(store, "web")
    netapi.remove_network(store, "appnet")
    assert store.list("network") == []
    with pytest.raises(NotFound, match="network appnet not found"):
        netapi.remove_network(store, "appnet")


def test_a_predefined_or_badly_addressed_network_is_refused(store: SQLiteStore) -> None:
    with pytest.raises(InvalidArgument, match="host is a pre-defined network and cannot be created"):
        netapi.create_network(store, NetworkSpec(name="host"))
    from shoal.model.stack import IPAM, IPAMPool

    bad = NetworkSpec(name="n1", ipam=IPAM(config=[IPAMPool(subnet="10.9.0.0/24", gateway="10.8.0.1")]))
    with pytest.raises(InvalidArgument, match="ipam configuration: subnet 10.9.0.0/24 does not contain gateway 10.8.0.1"):
        netapi.create_network(store, bad)
    assert store.list("network") == []


def test_records_load_what_older_shoalds_stored_and_keep_unknown_keys() -> None:
    old = {"id": "s1", "name": "webapp_web", "stack": "webapp", "spec_version": 3, "created_at": 1.0,
           "updated_at": 2.0, "endpoint": {}, "version": 7, "from_a_newer_shoald": {"x": 1},
           "spec": {"name": "webapp_web", "compose_name": "web", "stack": "webapp", "image": "web:v1",
                    "secrets": [{"source": "webapp_db", "target": "/run/secrets/db", "digest": "sha256:ab"}]}}
    svc = Service.from_dict(old)
    assert svc.spec.secrets[0].digest == "sha256:ab" and svc.endpoint.vips == [] and svc.version == 7
    again = svc.to_dict()
    assert again["from_a_newer_shoald"] == {"x": 1} and again["spec_version"] == 3
    assert Service.from_dict(again) == svc
    net = {"id": "n1", "name": "webapp_webnet", "stack": "webapp", "created_at": 1.0,
           "spec": {"name": "webapp_webnet", "compose_name": "webnet", "labels": {"a": "b"}}}
    assert Network.from_dict(net).to_dict()["spec"]["driver"] == "overlay"


def test_serviceview_takes_swarms_defaults_from_the_model() -> None:
    view = serviceview.view({"id": "s1", "name": "web", "spec": {}})
    default = ServiceSpec(name="web")
    assert view.restart == default.restart_policy
    assert (view.mode, view.replicas) == (default.mode, default.replicas)
    assert view.update_config() == default.update_config
    assert view.update_config(rolling_back=True) == default.rollback_config
    assert view.history_limit == serviceview.DEFAULT_HISTORY_LIMIT == DEFAULT_TASK_HISTORY_LIMIT
    source = Path(serviceview.__file__).read_text()
    for literal in ("5.0", "10.0", '"any"', '"pause"', '"stop-first"'):
        assert literal not in source, f"serviceview.py writes a default of its own: {literal}"


def _stack(**services: ServiceSpec) -> dict:
    return {"name": "app", "networks": {}, "services": {s.name: s.to_dict() for s in services.values()}}


def _stack_service(compose_name: str, **changes) -> ServiceSpec:
    return ServiceSpec(name=f"app_{compose_name}", compose_name=compose_name, stack="app",
                       labels={"com.docker.stack.namespace": "app"}, **{"image": "busybox:latest", **changes})


def test_stack_deploy_goes_through_the_same_checks_and_keeps_the_previous_spec(store: SQLiteStore) -> None:
    from shoal.manager.controlapi import stacks as stackapi

    with pytest.raises(InvalidArgument, match="^failed to create service app_bad: .*Number of replicas must be "
                                              "non-negative$"):
        stackapi.deploy_stack(store, _stack(web=_stack_service("web"), bad=_stack_service("bad", replicas=-1)))
    assert store.list("service") == []  # not even the valid one
    lines, _ = stackapi.deploy_stack(store, _stack(web=_stack_service("web")))
    assert lines == ["Creating service app_web"]
    (first,) = services(store)
    lines, _ = stackapi.deploy_stack(store, _stack(web=_stack_service("web", env=["A=1"])))
    assert lines == [f"Updating service app_web (id: {first.id})"]
    (svc,) = services(store)
    assert (svc.spec_version, svc.spec.env, svc.previous_spec.env, svc.stack) == (2, ["A=1"], [], "app")
    with pytest.raises(InvalidArgument, match="service mode change is not allowed"):
        stackapi.deploy_stack(store, _stack(web=_stack_service("web", mode="global", replicas=0)))
    assert stackapi.remove_stack(store, "app") == ["Removing service app_web"]
    assert store.list("service") == []


def test_stack_deploy_keeps_the_force_update_a_service_update_gave(store: SQLiteStore) -> None:
    """docker/cli's deployServices keeps the service's ForceUpdate (stack deploy has no
    --force): the same file deployed again after `service update --force` changes nothing.
    Shoal sent 0 back, a new spec every task was dirty against: all of them restarted."""
    from shoal.manager.controlapi import stacks as stackapi

    stackapi.deploy_stack(store, _stack(web=_stack_service("web")))
    (first,) = services(store)
    svcapi.update_service(store, first.id, 1, first.spec.__class__.from_dict(
        {**first.spec.to_dict(), "force_update": 1}))
    stackapi.deploy_stack(store, _stack(web=_stack_service("web")))
    (svc,) = services(store)
    assert (svc.spec_version, svc.spec.force_update) == (2, 1)
    stackapi.deploy_stack(store, _stack(web=_stack_service("web", env=["A=1"])))
    (svc,) = services(store)
    assert (svc.spec_version, svc.spec.force_update, svc.spec.env) == (3, 1, ["A=1"])


@ROOT_ONLY
def test_stack_deploy_refuses_a_port_another_service_holds_as_service_create_does(store: SQLiteStore) -> None:
    """A traefik stack publishing 8080 where the voting app's visualizer has it: swarmkit's
    checkPortConflicts refuses the create docker/cli's deploy makes (it was this node's
    nftables bookkeeping that refused it, in its own words); two services of one stack asking
    for one port likewise; nothing is stored."""
    from shoal.manager.controlapi import stacks as stackapi

    ports = _endpoint([PortConfig(target=8080, published=38932)])
    viz, _ = svcapi.create_service(store, spec("vote_visualizer", endpoint=ports))
    with pytest.raises(InvalidArgument, match="^failed to create service app_traefik: rpc error: code = "
                                              "InvalidArgument desc = port '38932' is already in use by service "
                                              f"'vote_visualizer' \\({viz}\\) as an ingress port$"):
        stackapi.deploy_stack(store, _stack(traefik=_stack_service("traefik", endpoint=ports)))
    host = _endpoint([PortConfig(target=80, published=38933, publish_mode="host")])
    ingress = _endpoint([PortConfig(target=80, published=38933)])
    with pytest.raises(InvalidArgument, match="^failed to create service app_b: .*port '38933' is already in use "
                                              "by service 'app_a' .* as a host-published port$"):
        stackapi.deploy_stack(store, _stack(a=_stack_service("a", endpoint=host), b=_stack_service("b", endpoint=ingress)))
    assert [s.name for s in services(store)] == ["vote_visualizer"]
    # Two services on one host-mode port: swarmkit lets them be (its scheduler keeps them apart).
    stackapi.deploy_stack(store, _stack(a=_stack_service("a", endpoint=host), b=_stack_service("b", endpoint=host)))
    assert sorted(s.name for s in services(store)) == ["app_a", "app_b", "vote_visualizer"]


@ROOT_ONLY
def test_stack_deploy_checks_externals_first_in_docker_clis_order_and_words(store: SQLiteStore) -> None:
    """docker/cli's deployCompose, before anything is made: an external network must be a swarm
    network (dockerswarm.rocks' traefik-public made with `network create` without -d overlay is
    this node's bridge: the scope error, not 'could not be found'), and is checked before any
    port clash; then each service's secrets exist ('service appserver: secret not found: x', as
    the atsea sample's unmade external secrets), while an external secret no service uses is
    never looked up (the atsea stack with one more declared deploys)."""
    from shoal.manager.controlapi import stacks as stackapi
    from shoal.network.store import NetworkStore

    ports = _endpoint([PortConfig(target=80, published=38934)])
    svcapi.create_service(store, spec("other_web", endpoint=ports))
    stack = _stack(traefik=_stack_service("traefik", endpoint=ports,
                                          networks=[NetworkAttachment(target="h5-public")]))
    stack["networks"] = {"h5-public": {"name": "h5-public", "external": True}}
    with pytest.raises(NotFound, match='^network "h5-public" is declared as external, but could not be found. '
                                       "You need to create a swarm-scoped network before the stack is deployed$"):
        stackapi.deploy_stack(store, stack)
    local = NetworkStore()
    local.create("h5-public", driver="bridge")
    try:
        with pytest.raises(InvalidArgument, match='^network "h5-public" is declared as external, but it is not in '
                                                  'the right scope: "local" instead of "swarm"$'):
            stackapi.deploy_stack(store, stack)
    finally:
        from shoal.network import cleanup
        cleanup.remove_network("h5-public", local)
    secret = [FileReference(source="postgres_password", target="postgres_password")]
    atsea = _stack(appserver=_stack_service("appserver", secrets=secret))
    atsea["secrets"] = {"postgres_password": {"name": "postgres_password", "external": True},
                        "unused_token": {"name": "unused_token", "external": True}}
    with pytest.raises(NotFound, match="^service appserver: secret not found: postgres_password$"):
        stackapi.deploy_stack(store, atsea)
    assert [s.name for s in services(store)] == ["other_web"]
    from shoal.manager.controlapi import secrets as secretapi
    secretapi.create(store, "secret", "postgres_password", b"pw")
    lines, _ = stackapi.deploy_stack(store, atsea)
    assert lines == ["Creating service app_appserver"]


def test_two_updates_from_one_version_at_once_one_wins_the_other_is_out_of_sequence(store: SQLiteStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    svcapi.create_service(store, spec())

    def update(value: str) -> str:
        try:
            svcapi.update_service(store, "web", 1, spec(env=[f"V={value}"]))
            return "ok"
        except VersionConflict as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(update, ["a", "b"]))
    assert results[0] == "ok" and results[1].endswith("update out of sequence"), results
    (svc,) = services(store)
    assert svc.spec_version == 2 and svc.previous_spec is not None and svc.previous_spec.env == []


def test_a_task_a_scale_did_not_touch_is_up_to_date(store: SQLiteStore) -> None:
    """swarmkit's UpToDate filter, which docker/cli's progress display counts by: after `scale`
    the running tasks keep their spec_version but still run the current spec."""
    from shoal.manager import orchestrator, serviceview

    svcapi.create_service(store, spec(replicas=1))
    (raw,) = store.list("service")
    task = orchestrator.new_task(serviceview.view(raw), 1, "node1", orchestrator.TaskState.RUNNING, 0.0).to_dict()
    svcapi.scale_service(store, "web", 3)
    (scaled,) = store.list("service")
    assert task["spec_version"] == 1 and scaled["spec_version"] == 2
    assert svcapi.up_to_date(task, scaled)
    svcapi.update_service(store, "web", 2, spec(replicas=3, env=["A=1"]))
    (changed,) = store.list("service")
    assert not svcapi.up_to_date(task, changed)


@ROOT_ONLY
def test_a_removed_swarm_networks_copy_goes_once_its_last_user_lets_go(store: SQLiteStore) -> None:
    """`network rm` right after `service rm`: the swarm's record goes at once, this node's
    copy (held by the service's VIP until its endpoint is freed) as soon as it is free."""
    import time

    from shoal.manager import endpoints
    from shoal.network.store import NetworkStore

    netapi.create_network(store, NetworkSpec(name="heldnet"))
    service_id, _ = svcapi.create_service(store, spec("held", networks=[NetworkAttachment("heldnet")]))
    with store.transaction() as tx:
        tx.delete("service", service_id)  # the record gone, its VIP not yet freed
    netapi.remove_network(store, "heldnet")
    assert store.list("network") == [] and NetworkStore().find("heldnet") is not None
    endpoints.remove_service(service_id)
    deadline = time.monotonic() + 10
    while NetworkStore().find("heldnet") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert NetworkStore().find("heldnet") is None
