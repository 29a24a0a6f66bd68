"""`service inspect` / `node inspect` JSON in moby's shape (cli/dockerjson.py), golden: the
expected objects are written from moby's api/types/swarm structs (service.go, task.go,
container.go, node.go, runtime.go) under encoding/json's rules: keys in field order, omitempty
leaves out zero values but never a struct value, map keys sorted, time.Duration in nanoseconds,
time.Time as RFC3339Nano (trailing zeros trimmed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal.cli import dockerjson
from shoal.compose import load_stack
from shoal.model.cluster import ManagerStatus, Node, NodeResources, NodeStatus, Platform
from shoal.model.records import Endpoint, EndpointPort, Service, UpdateStatus, VirtualIP

COMPOSE = """\
services:
  web:
    image: web:v1
    command: ["python", "app.py"]
    deploy:
      replicas: 5
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
    ports:
      - "4000:80"
    networks:
      - webnet
    secrets:
      - token
    configs:
      - source: conf
        target: /etc/app.conf
networks:
  webnet:
secrets:
  token:
    file: ./token.txt
configs:
  conf:
    file: ./app.conf
"""

IDS = {"ingress": "ingressid", "webapp_webnet": "netid", "webapp_token": "secid", "webapp_conf": "confid"}
PORT = {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 4000, "PublishMode": "ingress"}
UPDATE = {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000, "MaxFailureRatio": 0,
          "Order": "stop-first"}

GOLDEN_WEB: dict[str, Any] = {
    "ID": "q9x1w8v7u6t5s4r3p2o1n0m9l",
    "Version": {"Index": 12},
    "CreatedAt": "2023-11-14T22:13:20.5Z",
    "UpdatedAt": "2023-11-14T22:13:21Z",
    "Spec": {
        "Name": "webapp_web",
        "Labels": {"com.docker.stack.image": "web:v1", "com.docker.stack.namespace": "webapp"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "web:v1",
                "Labels": {"com.docker.stack.namespace": "webapp"},
                "Args": ["python", "app.py"],
                # compose convert's `Privileges: &privileges`: on every stack service.
                "Privileges": {"CredentialSpec": None, "SELinuxContext": None, "NoNewPrivileges": False},
                # Not in the file: filled in by InterpolateService (`service inspect` asks so).
                "StopGracePeriod": 10000000000,
                "DNSConfig": {},
                "Secrets": [{"File": {"Name": "token", "UID": "0", "GID": "0", "Mode": 292},
                             "SecretID": "secid", "SecretName": "webapp_token"}],
                "Configs": [{"File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 292},
                             "ConfigID": "confid", "ConfigName": "webapp_conf"}],
                "Isolation": "default",
            },
            # Only the limits the file gives: no default fills Reservations in.
            "Resources": {"Limits": {"NanoCPUs": 100000000, "MemoryBytes": 52428800}},
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5000000000, "MaxAttempts": 0},
            "Placement": {},
            "Networks": [{"Target": "netid", "Aliases": ["web"]}],
            "ForceUpdate": 0,
            "Runtime": "container",
        },
        "Mode": {"Replicated": {"Replicas": 5}},
        "UpdateConfig": UPDATE,
        "RollbackConfig": UPDATE,
        "EndpointSpec": {"Mode": "vip", "Ports": [PORT]},
    },
    "Endpoint": {
        "Spec": {"Mode": "vip", "Ports": [PORT]},
        "Ports": [PORT],
        "VirtualIPs": [{"NetworkID": "ingressid", "Addr": "10.0.0.5/24"}, {"NetworkID": "netid", "Addr": "10.0.1.2/24"}],
    },
    "UpdateStatus": {"State": "completed", "StartedAt": "2023-11-14T22:13:21Z",
                     "CompletedAt": "2023-11-14T22:13:21.0625Z", "Message": "update completed"},
}


def _web(tmp_path: Path) -> Service:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    (tmp_path / "token.txt").write_text("t\n")
    (tmp_path / "app.conf").write_text("c\n")
    spec = load_stack([tmp_path / "docker-compose.yml"], "webapp").services["webapp_web"]
    return Service(
        id="q9x1w8v7u6t5s4r3p2o1n0m9l", name=spec.name, spec=spec, stack="webapp", created_at=1700000000.5,
        updated_at=1700000001.0, version=12,
        endpoint=Endpoint(mode="vip", vips=[VirtualIP("ingress", "10.0.0.5/24"), VirtualIP("webapp_webnet", "10.0.1.2/24")],
                          ports=[EndpointPort(target=80, published=4000)]),
        update_status=UpdateStatus(state="completed", started_at=1700000001.0, completed_at=1700000001.0625,
                                   message="update completed"))


def test_stack_service_matches_the_golden(tmp_path: Path) -> None:
    got = dockerjson.service(json.loads(json.dumps(_web(tmp_path).to_dict())), IDS)
    assert got == GOLDEN_WEB
    # Key order is Go's field order (json.dumps keeps it, as docker prints it).
    assert list(got) == list(GOLDEN_WEB) and list(got["Spec"]) == list(GOLDEN_WEB["Spec"])
    assert list(got["Spec"]["TaskTemplate"]["ContainerSpec"]) == list(GOLDEN_WEB["Spec"]["TaskTemplate"]["ContainerSpec"])
    assert list(got["Spec"]["Labels"]) == ["com.docker.stack.image", "com.docker.stack.namespace"]  # sorted map


def test_previous_spec_and_a_fresh_service(tmp_path: Path) -> None:
    record = _web(tmp_path)
    record.previous_spec = record.spec
    record.endpoint, record.update_status, record.version = Endpoint(), None, 0
    got = dockerjson.service(record.to_dict(), {})
    assert got["PreviousSpec"]["Name"] == "webapp_web" and "UpdateStatus" not in got
    # A record written before the store kept revisions: its spec version (Docker never prints 0).
    assert got["Version"] == {"Index": 1} and got["Endpoint"] == {"Spec": {}}  # before the allocator ran
    # A name the lookup lacks stays as it was written.
    assert got["Spec"]["TaskTemplate"]["Networks"] == [{"Target": "webapp_webnet", "Aliases": ["web"]}]


def test_modes_and_container_fields() -> None:
    from shoal.model.service import Healthcheck, ServiceSpec

    def spec(**kw: Any) -> dict[str, Any]:
        return dockerjson.service_spec(ServiceSpec(name="s", image="i", **kw).to_dict(), {})

    assert spec(mode="global", replicas=0)["Mode"] == {"Global": {}}
    assert spec(mode="global-job", replicas=0)["Mode"] == {"GlobalJob": {}}
    assert spec(mode="replicated-job", replicas=3)["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}}
    assert spec(mode="replicated-job", replicas=3, max_concurrent=1)["Mode"]["ReplicatedJob"]["MaxConcurrent"] == 1
    assert spec(replicas=0)["Mode"] == {"Replicated": {"Replicas": 0}}  # *uint64: set, so printed
    from shoal.model.container import Mount, Ulimit

    c = spec(entrypoint=["sh", "-c"], cmd=["echo hi"], init=False, tty=True, stop_signal="SIGUSR1",
             mounts=[Mount(type="tmpfs", target="/cache", options=[f"size={64 << 20}"]),
                     Mount(type="volume", target="/data", source="d", read_only=True, options=["nocopy"])],
             healthcheck=Healthcheck(test=["CMD-SHELL", "true"], interval=2.0, retries=3),
             dns=["1.1.1.1"], sysctls={"b": "2", "a": "1"}, ulimits=[Ulimit("nofile", 10, 20)],
             security_opt=["no-new-privileges"], stop_grace_period=1.5)["TaskTemplate"]["ContainerSpec"]
    assert c == {
        "Image": "i", "Command": ["sh", "-c"], "Args": ["echo hi"],
        "Privileges": {"CredentialSpec": None, "SELinuxContext": None, "NoNewPrivileges": True},
        "Init": False, "StopSignal": "SIGUSR1", "TTY": True,
        "Mounts": [{"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 67108864}},
                   {"Type": "volume", "Source": "d", "Target": "/data", "ReadOnly": True, "VolumeOptions": {"NoCopy": True}}],
        "StopGracePeriod": 1500000000,
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2000000000, "Retries": 3},
        "DNSConfig": {"Nameservers": ["1.1.1.1"]}, "Isolation": "default",
        "Sysctls": {"a": "1", "b": "2"}, "Ulimits": [{"Name": "nofile", "Hard": 20, "Soft": 10}],
    }
    assert list(c["Sysctls"]) == ["a", "b"]


def test_node_matches_the_golden() -> None:
    record = Node(id="n0d3", hostname="box", role="manager", availability="active", labels={"zone": "a"},
                  platform=Platform(os="linux", architecture="x86_64"),
                  resources=NodeResources(nano_cpus=2_000_000_000, memory_bytes=4 << 30),
                  status=NodeStatus(state="ready", addr="198.18.0.1"),
                  manager_status=ManagerStatus(leader=True, reachability="reachable", addr="198.18.0.1:2377"),
                  created_at=1700000000.0, updated_at=1700000000.125, version=7)
    record.engine.engine_version = "0.1.0"
    record.engine.plugins = [{"type": "Network", "name": "overlay"}]
    assert dockerjson.node(json.loads(json.dumps(record.to_dict()))) == {
        "ID": "n0d3",
        "Version": {"Index": 7},
        "CreatedAt": "2023-11-14T22:13:20Z",
        "UpdatedAt": "2023-11-14T22:13:20.125Z",
        "Spec": {"Labels": {"zone": "a"}, "Role": "manager", "Availability": "active"},
        "Description": {
            "Hostname": "box",
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": 2000000000, "MemoryBytes": 4294967296},
            "Engine": {"EngineVersion": "0.1.0", "Plugins": [{"Type": "Network", "Name": "overlay"}]},
            "TLSInfo": {},
        },
        "Status": {"State": "ready", "Addr": "198.18.0.1"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "198.18.0.1:2377"},
    }
    worker = Node(id="w", hostname="w1", role="worker", manager_status=None)
    shaped = dockerjson.node(worker.to_dict())
    assert "ManagerStatus" not in shaped and shaped["Spec"]["Labels"] == {}


def test_times_as_go_prints_them() -> None:
    assert dockerjson.go_time(0) == "0001-01-01T00:00:00Z"
    assert dockerjson.go_time(1700000000.25) == "2023-11-14T22:13:20.25Z"
    assert dockerjson.go_time(1700000000.9999999999) == "2023-11-14T22:13:21Z"


def test_dumps_escapes_as_go_marshal() -> None:
    """json.MarshalIndent: 4 spaces, UTF-8 kept, HTML characters escaped (`docker service
    inspect` marshals the typed object in the CLI)."""
    text = dockerjson.dumps([{"Env": ["A=<b>&c", "Ä=é"]}])
    assert text == '[\n    {\n        "Env": [\n            "A=\\u003cb\\u003e\\u0026c",\n            "Ä=é"\n        ]\n    }\n]'
    assert json.loads(text) == [{"Env": ["A=<b>&c", "Ä=é"]}]
    assert dockerjson.dumps([]) == "[]"


MINIMAL = """\
services:
  min:
    image: busybox
"""
UPDATE_GIVEN = """\
services:
  min:
    image: busybox
    stop_grace_period: 3s
    dns: [1.1.1.1]
    deploy:
      resources: {reservations: {memory: 8M}}
      restart_policy: {max_attempts: 2}
      update_config: {parallelism: 2, order: start-first}
"""
PRIVILEGES = {"CredentialSpec": None, "SELinuxContext": None, "NoNewPrivileges": False}


def _stack_service(tmp_path: Path, text: str) -> dict[str, Any]:
    (tmp_path / "docker-compose.yml").write_text(text)
    spec = load_stack([tmp_path / "docker-compose.yml"], "webapp").services["webapp_min"]
    record = Service(id="m1n", name=spec.name, spec=spec, stack="webapp", created_at=1700000000.0,
                     updated_at=1700000000.0, version=3)
    return json.loads(json.dumps(record.to_dict()))


def test_a_minimal_stack_service_as_docker_prints_it(tmp_path: Path) -> None:
    """`docker service inspect` (InsertDefaults) of a service whose file sets nothing but its
    image: swarmkit's defaults filled in, except Resources, which stays as convert made it."""
    record = _stack_service(tmp_path, MINIMAL)
    assert dockerjson.service(record, {"webapp_default": "defid"})["Spec"] == {
        "Name": "webapp_min",
        "Labels": {"com.docker.stack.image": "busybox", "com.docker.stack.namespace": "webapp"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Labels": {"com.docker.stack.namespace": "webapp"},
                              "Privileges": PRIVILEGES, "StopGracePeriod": 10000000000, "DNSConfig": {},
                              "Isolation": "default"},
            "Resources": {},
            "RestartPolicy": {"Condition": "any", "Delay": 5000000000, "MaxAttempts": 0},
            "Placement": {},
            "Networks": [{"Target": "defid", "Aliases": ["min"]}],
            "ForceUpdate": 0,
            "Runtime": "container",
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "UpdateConfig": UPDATE,
        "RollbackConfig": UPDATE,
        "EndpointSpec": {"Mode": "vip"},
    }
    # As stored (a PreviousSpec, a task's Spec): what convert left nil is not there.
    record["previous_spec"] = record["spec"]
    previous = dockerjson.service(record, {})["PreviousSpec"]
    assert previous["TaskTemplate"]["ContainerSpec"] == {
        "Image": "busybox", "Labels": {"com.docker.stack.namespace": "webapp"}, "Privileges": PRIVILEGES,
        "Isolation": "default"}
    assert "RestartPolicy" not in previous["TaskTemplate"] and previous["TaskTemplate"]["Resources"] == {}
    assert "UpdateConfig" not in previous and "RollbackConfig" not in previous
    task = {"id": "t", "service_id": "m1n", "slot": 1, "spec": record["spec"], "status": {"state": "new"}}
    assert dockerjson.task(task, {}, {})["Spec"] == {k: v for k, v in previous["TaskTemplate"].items()}


def test_parts_given_are_printed_as_given(tmp_path: Path) -> None:
    spec = dockerjson.service(_stack_service(tmp_path, UPDATE_GIVEN), {})["Spec"]
    template = spec["TaskTemplate"]
    assert template["ContainerSpec"]["StopGracePeriod"] == 3000000000
    assert template["ContainerSpec"]["DNSConfig"] == {"Nameservers": ["1.1.1.1"]}
    assert template["Resources"] == {"Reservations": {"MemoryBytes": 8388608}}
    # The delay the file left out is filled in; a policy without condition is `any`.
    assert template["RestartPolicy"] == {"Condition": "any", "Delay": 5000000000, "MaxAttempts": 2}
    assert spec["UpdateConfig"] == {"Parallelism": 2, "FailureAction": "pause", "Monitor": 5000000000,
                                    "MaxFailureRatio": 0, "Order": "start-first"}
    raw = dockerjson.service_spec(_stack_service(tmp_path, UPDATE_GIVEN)["spec"], {}, defaults=False)
    assert raw["TaskTemplate"]["RestartPolicy"] == {"Condition": "any", "MaxAttempts": 2}
    assert "RollbackConfig" not in raw and raw["UpdateConfig"]["Order"] == "start-first"


def test_defaults_reach_every_consumer_and_a_later_change_is_given(tmp_path: Path) -> None:
    from shoal.model.service import ServiceSpec, given

    record = _stack_service(tmp_path, MINIMAL)
    spec = ServiceSpec.from_dict(record["spec"])
    assert sorted(spec.defaulted) == ["dns_config", "resources.limits", "resources.reservations",
                                      "restart_policy", "rollback_config", "stop_grace_period", "update_config"]
    # The record itself holds Swarm's defaults, so the orchestrator and the node read them.
    assert (spec.restart_policy.condition, spec.restart_policy.delay, spec.stop_grace_period) == ("any", 5.0, 10.0)
    assert spec.update_config.monitor == 5.0 and spec.update_config.parallelism == 1
    # `service update --limit-cpu 1` on it: the limits are given from then on.
    record["spec"]["resources"]["limits"]["nano_cpus"] = 1_000_000_000
    assert given(record["spec"], "resources.limits") and not given(record["spec"], "resources.reservations")
    assert dockerjson.service(record, {})["Spec"]["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 1000000000}}
