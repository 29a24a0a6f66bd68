"""Swarm's templates on the node (agent/templating.py): the context and functions of swarmkit's
template package, checked with the cases of its getter_test.go and context_test.go, and its
error texts."""

from __future__ import annotations

import pytest

from shoal.agent import templating
from shoal.agent.taskspec import container_spec
from shoal.errors import ShoalError
from shoal.model.cluster import Node, Platform, Task

DATA = {("secret", "referencedsecretname"): b"mysecret", ("config", "referencedconfigname"): b"myconfig",
        ("secret", "templatedsecretname"): b"SECRET_VAL={{secret \"templatedsecrettarget\"}}\n"}


def _task(**spec) -> Task:
    return Task(id="taskID", service_id="serviceID", service_name="serviceName", slot=10, node_id="nodeID",
                spec={"image": "x", **spec})


NODE = Node(id="nodeID", hostname="host-1", platform=Platform(os="linux", architecture="x86_64"))


def _get(kind: str, name: str) -> bytes:
    return DATA[(kind, name)]


def _expand(data: str, task: Task, kind: str = "config") -> str:
    return templating.expand_payload(kind, f"templated{kind}", data.encode(), task, NODE, _get).decode()


SECRET_REF = {"source": "referencedsecretname", "target": "/run/secrets/referencedsecrettarget"}
CONFIG_REF = {"source": "referencedconfigname", "target": "referencedconfigtarget"}


def test_the_task_context() -> None:
    task = _task(labels={"com.x": "y"})
    text = ("SERVICE_ID={{.Service.ID}}\nSERVICE_NAME={{.Service.Name}}\nTASK_ID={{.Task.ID}}\n"
            "TASK_NAME={{.Task.Name}}\nNODE_ID={{.Node.ID}}\nSLOT={{.Task.Slot}}\n"
            "HOST={{.Node.Hostname}} {{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}\n"
            '{{index .Service.Labels "com.x"}} {{join "," "a" "b"}}\n')
    assert _expand(text, task) == ("SERVICE_ID=serviceID\nSERVICE_NAME=serviceName\nTASK_ID=taskID\n"
                                   "TASK_NAME=serviceName.10.taskID\nNODE_ID=nodeID\nSLOT=10\n"
                                   "HOST=host-1 linux/x86_64\ny a,b\n")


def test_a_global_task_slot_is_its_node() -> None:
    task = Task(id="t", service_id="s", service_name="svc", slot=0, node_id="nodeID", spec={})
    assert _expand("{{.Task.Slot}} {{.Task.Name}}", task) == "nodeID svc.nodeID.t"


@pytest.mark.parametrize("kind", ["secret", "config"])
def test_secret_config_and_env_by_target(kind: str) -> None:
    task = _task(secrets=[SECRET_REF], configs=[CONFIG_REF], env=["foo=bar", "BARE"])
    assert _expand('SECRET_VAL={{secret "referencedsecrettarget"}}\n', task, kind) == "SECRET_VAL=mysecret\n"
    assert _expand('CONFIG_VAL={{config "referencedconfigtarget"}}\n', task, kind) == "CONFIG_VAL=myconfig\n"
    assert _expand('ENV VALUE={{env "foo"}}\nDOES NOT EXIST={{env "badname"}}{{env "BARE"}}\n', task, kind) == \
        "ENV VALUE=bar\nDOES NOT EXIST=\n"


def test_a_referenced_object_is_not_expanded_again() -> None:
    """swarmkit's "expansion of the same secret avoids recursion": the data as stored."""
    task = _task(secrets=[{"source": "templatedsecretname", "target": "/run/secrets/templatedsecrettarget"}])
    assert _expand('SECRET_VAL={{secret "templatedsecrettarget"}}\n', task, "secret") == \
        'SECRET_VAL=SECRET_VAL={{secret "templatedsecrettarget"}}\n\n'


@pytest.mark.parametrize("kind", ["secret", "config"])
def test_an_object_the_task_does_not_have_is_swarmkits_error(kind: str) -> None:
    # The secret exists (DATA has it) but this task was not given it: only the task's own.
    task = _task(configs=[CONFIG_REF])
    with pytest.raises(ShoalError) as err:
        _expand('SECRET_VAL={{secret "referencedsecrettarget"}}\n', task, kind)
    assert str(err.value) == (
        f"unable to get {kind} from {kind} store: failed to expand templated {kind} templated{kind}: "
        'template: expansion:1:13: executing "expansion" at <secret "referencedse...>: '
        "error calling secret: secret target referencedsecrettarget not found")
    with pytest.raises(ShoalError, match=r'at <config "unknowntarge\.\.\.>: error calling config: '
                                         r"config target unknowntarget not found$"):
        _expand('CONFIG_VAL={{config "unknowntarget"}}\n', task, kind)


def test_template_errors_say_where_as_go() -> None:
    task = _task(labels={"a": "1"})
    cases = {
        "x\n  {{.Service.Labels.nope}}": 'template: expansion:2:4: executing "expansion" at '
                                          '<.Service.Labels.nope>: map has no entry for key "nope"',
        '{{upper "x"}}': 'template: expansion:1: function "upper" not defined',  # not docker/cli's set
        "{{.Service.Nope}}": "can't evaluate field Nope",
    }
    for text, expected in cases.items():
        with pytest.raises(ShoalError) as err:
            _expand(text, task)
        assert expected in str(err.value), str(err.value)


def test_the_container_spec_uses_the_same_context() -> None:
    task = _task(env=["SLOT={{.Task.Slot}}", "PLAIN", "N={{.Node.Hostname}}"], hostname="{{.Service.Name}}-{{.Task.Slot}}",
                 mounts=[{"type": "volume", "source": "data-{{.Task.Slot}}", "target": "/d"}])
    spec = container_spec(task, NODE)
    assert spec.env == ["SLOT=10", "PLAIN", "N=host-1"] and spec.hostname == "serviceName-10"
    assert spec.mounts[0].source == "data-10"
    with pytest.raises(ShoalError) as err:
        container_spec(_task(env=["A={{.Task.Nope}}"]), NODE)
    assert str(err.value).startswith('expanding env failed: expanding env "A={{.Task.Nope}}": '
                                     'template: expansion:1:2: executing "expansion" at <.Task.Nope>: ')


def test_a_bind_mount_whose_source_is_missing_rejects_the_task(tmp_path) -> None:
    """dockerd makes a task's container with HostConfig.Mounts: a bind source must exist on the
    node (the voting app's visualizer binds /var/run/docker.sock), checked after the templates
    are expanded; only `run -v` makes a missing one."""
    (tmp_path / "host-1").mkdir()
    bind = {"type": "bind", "source": str(tmp_path / "{{.Node.Hostname}}"), "target": "/d"}
    assert container_spec(_task(mounts=[bind]), NODE).mounts[0].source == str(tmp_path / "host-1")
    missing = str(tmp_path / "docker.sock")
    with pytest.raises(ShoalError) as err:
        container_spec(_task(mounts=[{"type": "bind", "source": missing, "target": "/var/run/docker.sock"}]), NODE)
    assert str(err.value) == f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    assert not (tmp_path / "docker.sock").exists()
