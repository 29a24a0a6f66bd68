"""The PORTS columns as docker/cli's formatters fill them: `service ls`/`stack services` from the
service's Endpoint.Ports (the ports as the manager allocated them: the voting app's
`ports: ["6379"]` shows `*:30000->6379/tcp`), ingress only; `service ps`/`stack ps` from a
running task's host-mode ports (traefik's `mode: host` 80 and 443)."""

from __future__ import annotations

from typing import Any

from shoal.cli.swarmfmt import service_rows, task_rows


def _service(ports: list[dict[str, Any]], allocated: list[dict[str, Any]] | None) -> dict[str, Any]:
    svc: dict[str, Any] = {"id": "s" * 25, "name": "vote_redis", "status": {},
                           "spec": {"image": "redis:alpine", "endpoint": {"ports": ports}}}
    if allocated is not None:
        svc["endpoint"] = {"mode": "vip", "vips": [], "ports": allocated}
    return svc


def test_service_ports_are_the_allocated_ones() -> None:
    spec_ports = [{"target": 6379, "protocol": "tcp"}, {"target": 80, "published": 80, "publish_mode": "host"}]
    allocated = [{"target": 6379, "published": 30000, "protocol": "tcp", "mode": "ingress"},
                 {"target": 80, "published": 80, "protocol": "tcp", "mode": "host"}]
    (row,) = service_rows([_service(spec_ports, allocated)])
    assert row["Ports"] == "*:30000->6379/tcp"
    # A record with no endpoint yet: the spec's ports, a 0 one not shown.
    (row,) = service_rows([_service(spec_ports, None)])
    assert row["Ports"] == ""


def _task(state: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "t" * 25, "service_id": "s", "service_name": "tr_traefik", "slot": 0, "node_id": "n1",
            "desired_state": "running", "status": {"state": state, "timestamp": 0.0},
            "spec": {"image": "traefik:v2.10", "endpoint": {"ports": ports}}}


def test_task_ports_are_its_host_mode_ports_while_it_runs() -> None:
    ports = [{"target": 80, "published": 80, "protocol": "tcp", "publish_mode": "host"},
             {"target": 443, "published": 443, "protocol": "tcp", "publish_mode": "host"},
             {"target": 8080, "published": 8081, "protocol": "tcp", "publish_mode": "ingress"},
             {"target": 53, "published": 0, "protocol": "udp", "publish_mode": "host"}]
    (running,) = task_rows([_task("running", ports)], {"n1": "h6a-1"}, now=1.0)
    assert running["Ports"] == "*:80->80/tcp,*:443->443/tcp"
    (stopped,) = task_rows([_task("shutdown", ports)], {"n1": "h6a-1"}, now=1.0)
    assert stopped["Ports"] == ""
