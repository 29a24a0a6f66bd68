"""Which services Swarm's ingress network serves (swarmkit IsIngressNetworkNeeded), which of them
shoal attaches to it, and that the attachment reaches the task's copy of the spec but never the
service's own; `--group-add` resolved as moby's GetAdditionalGroups."""

from __future__ import annotations

import pytest

from shoal.errors import ShoalError
from shoal.manager import ingress
from shoal.manager.orchestrator import task_spec
from shoal.runtime.users import additional_groups


def _spec(ports: list[dict], networks: list[dict] | None = None) -> dict:
    return {"name": "web", "image": "x", "replicas": 2, "endpoint": {"mode": "vip", "ports": ports},
            "networks": networks or []}


def test_needed_and_attached() -> None:
    ingress_port = {"target": 80, "published": 8080, "protocol": "tcp", "publish_mode": "ingress"}
    host_port = dict(ingress_port, publish_mode="host")
    assert ingress.needed(_spec([ingress_port])) and ingress.attaches(_spec([ingress_port]))
    assert not ingress.needed(_spec([host_port])) and not ingress.attaches(_spec([host_port]))
    assert not ingress.needed(_spec([]))
    own = _spec([ingress_port], [{"target": "webnet", "aliases": []}])
    assert ingress.needed(own) and not ingress.attaches(own)  # publishes through its own network
    assert ingress.effective(own) is own


def test_the_task_gets_the_attachment_the_service_spec_does_not() -> None:
    spec = _spec([{"target": 80, "published": 8080, "protocol": "tcp", "publish_mode": "ingress"}])
    task = task_spec(spec)
    assert task["networks"] == [{"target": "ingress", "aliases": []}]
    assert spec["networks"] == [] and "replicas" not in task


def test_additional_groups() -> None:
    group = "root:x:0:\nstaff:x:50:app\nnogroup:x:65534:\n"
    assert additional_groups(["staff", "4242", "50", "nogroup"], group) == [50, 4242, 65534]
    assert additional_groups([], None) == []
    with pytest.raises(ShoalError, match="^Unable to find group wheel: no matching entries in group file$"):
        additional_groups(["wheel"], group)
