"""`shoal inspect TASK` (cli/inspectobj.py, cli/dockerjson.py task/network): moby's swarm.Task
and swarm.Network (api/types/swarm/task.go, network.go, common.go) as moby's TaskFromGRPC fills
them, under encoding/json's rules; a task found as moby's getTask finds one; --type checked as
docker/cli's system inspect does."""

from __future__ import annotations

import pytest

from shoal.cli import dockerjson
from shoal.cli.inspectobj import check_type, find_task
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.model.cluster import Task, TaskState, TaskStatus

NETWORK_RECORD = {
    "id": "netid", "name": "webapp_webnet", "stack": "webapp", "created_at": 1700000000.25, "version": 3,
    "spec": {"name": "webapp_webnet", "driver": "overlay", "driver_opts": {}, "ipam": {"driver": "", "config": []},
             "internal": False, "attachable": False, "labels": {"com.docker.stack.namespace": "webapp"}},
    "allocation": {"subnet": "10.0.1.0/24", "gateway": "10.0.1.1",
                   "options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"}},
}

GOLDEN_NETWORK = {
    "ID": "netid",
    "Version": {"Index": 3},
    "CreatedAt": "2023-11-14T22:13:20.25Z",
    "UpdatedAt": "2023-11-14T22:13:20.25Z",
    "Spec": {"Name": "webapp_webnet", "Labels": {"com.docker.stack.namespace": "webapp"},
             "DriverConfiguration": {"Name": "overlay"}, "Scope": "swarm"},
    "DriverState": {"Name": "overlay", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"}},
    "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
}

SPEC = {"name": "webapp_web", "image": "web:v1@sha256:" + "a" * 64, "cmd": ["python", "app.py"],
        "container_labels": {"com.docker.stack.namespace": "webapp"}, "stop_grace_period": 10.0,
        "resources": {"limits": {"nano_cpus": 100000000}}, "restart_policy": {"condition": "on-failure", "delay": 5.0},
        "networks": [{"target": "webapp_webnet", "aliases": ["web"]}]}

GOLDEN_TASK = {
    "ID": "t1a2b3c4d5e6f7g8h9i0j1k2l",
    "Version": {"Index": 41},
    "CreatedAt": "2023-11-14T22:13:20.5Z",
    "UpdatedAt": "2023-11-14T22:13:22Z",
    "Labels": {},
    "Spec": dockerjson.service_spec(SPEC, {"webapp_webnet": "netid"})["TaskTemplate"],
    "ServiceID": "svcid",
    "Slot": 2,
    "NodeID": "nodeid",
    "Status": {"Timestamp": "2023-11-14T22:13:22Z", "State": "running", "Message": "started",
               "ContainerStatus": {"ContainerID": "c" * 64, "PID": 4242, "ExitCode": 0}, "PortStatus": {}},
    "DesiredState": "running",
    "NetworksAttachments": [{"Network": GOLDEN_NETWORK, "Addresses": ["10.0.1.7/24"]}],
    "Volumes": None,
}


def _task(**status) -> dict:
    task = Task(id="t1a2b3c4d5e6f7g8h9i0j1k2l", service_id="svcid", service_name="webapp_web", slot=2,
                node_id="nodeid", created_at=1700000000.5, version=41, spec=SPEC,
                networks=[{"network": "webapp_webnet", "addresses": ["10.0.1.7"], "aliases": ["web"]}],
                status=TaskStatus(state=TaskState.RUNNING, timestamp=1700000002.0, message="started",
                                  container_id="c" * 64, pid=4242, **status))
    return task.to_dict()


def test_a_running_task_matches_the_golden() -> None:
    got = dockerjson.task(_task(), {"webapp_webnet": NETWORK_RECORD}, {"webapp_webnet": "netid"})
    assert got == GOLDEN_TASK
    assert list(got) == list(GOLDEN_TASK)  # Go's field order
    assert list(got["Status"]) == list(GOLDEN_TASK["Status"])
    assert list(got["NetworksAttachments"][0]["Network"]) == list(GOLDEN_NETWORK)
    assert '"Volumes": null' in dockerjson.dumps([got])


def test_a_failed_task_before_its_container() -> None:
    record = _task(err="No such image: web:v1")
    record["status"].update(state="rejected", container_id="", message="preparing")
    record.update(networks=[], desired_state="shutdown", slot=0)
    got = dockerjson.task(record, {}, {})
    assert got["Status"] == {"Timestamp": "2023-11-14T22:13:22Z", "State": "rejected", "Message": "preparing",
                             "Err": "No such image: web:v1", "PortStatus": {}}
    assert "Slot" not in got and "NetworksAttachments" not in got and got["DesiredState"] == "shutdown"


TASKS = [{"id": "abc111", "service_name": "web", "slot": 1, "node_id": "n1"},
         {"id": "abc222", "service_name": "web", "slot": 2, "node_id": "n1"},
         {"id": "xyz333", "service_name": "agent", "slot": 0, "node_id": "n1"}]


def test_tasks_are_found_as_moby_finds_them() -> None:
    assert find_task(TASKS, "abc222")["id"] == "abc222"  # full ID
    assert find_task(TASKS, "web.1.abc111")["id"] == "abc111"  # name (its container's)
    assert find_task(TASKS, "agent.n1.xyz333")["id"] == "xyz333"  # a global task's name
    with pytest.raises(NotFound):
        find_task(TASKS, "web.1")  # not a task's name: every task of the slot has it
    assert find_task(TASKS, "xy")["id"] == "xyz333"  # unique prefix
    with pytest.raises(InvalidArgument, match=r"^task abc is ambiguous \(2 matches found\)$"):
        find_task(TASKS, "abc")
    with pytest.raises(NotFound, match="^task nope not found$"):
        find_task(TASKS, "nope")


def test_type_is_checked_as_docker() -> None:
    check_type(None)
    check_type("task")
    one_of = '"config", "container", "image", "network", "node", "plugin", "secret", "service", "task", "volume"'
    with pytest.raises(ShoalError) as err:
        check_type("")
    assert str(err.value) == f"type is empty: must be one of {one_of}"
    with pytest.raises(ShoalError) as err:
        check_type("tasks")
    assert str(err.value) == f'unknown type: "tasks": must be one of {one_of}'
