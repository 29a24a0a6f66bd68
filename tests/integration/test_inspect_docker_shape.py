"""`service inspect` and `node inspect` print moby's API types (cli/dockerjson.py) against a real
shoald (one node): Docker users' `--format` templates read the values they expect, and the JSON
has Docker's keys (ID, Spec.TaskTemplate.ContainerSpec, Endpoint.VirtualIPs with network IDs)."""

from __future__ import annotations

import json

from tests.conftest import ROOT_ONLY

pytestmark = ROOT_ONLY


def test_service_and_node_inspect_in_docker_shape(shoal, busybox_image: str) -> None:
    made = shoal("service", "create", "-d", "--name", "h11_web", "--replicas", "2", "--label", "tier=x",
                 "-e", "COLOR=blue", "--restart-delay", "2s", "--stop-grace-period", "1s",
                 busybox_image, "sleep", "600", check=True, timeout=120)
    service_id = made.stdout.split()[0]
    try:
        fmt = lambda t: shoal("service", "inspect", "--format", t, "h11_web", check=True).stdout  # noqa: E731
        assert fmt("{{.Spec.Mode.Replicated.Replicas}}") == "2\n"
        image = fmt("{{.Spec.TaskTemplate.ContainerSpec.Image}}").strip()
        assert image.startswith(busybox_image.split("@")[0])
        assert fmt("{{.ID}} {{.Spec.Name}} {{index .Spec.Labels \"tier\"}}") == f"{service_id} h11_web x\n"
        assert fmt("{{.Spec.TaskTemplate.RestartPolicy.Delay}}") == "2000000000\n"
        assert fmt("{{json .Spec.TaskTemplate.ContainerSpec.Args}}") == '["sleep","600"]\n'

        svc = json.loads(shoal("service", "inspect", "h11_web", check=True).stdout)[0]
        assert list(svc)[:5] == ["ID", "Version", "CreatedAt", "UpdatedAt", "Spec"]
        spec = svc["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert container["Env"] == ["COLOR=blue"] and container["StopGracePeriod"] == 1_000_000_000
        assert container["Isolation"] == "default" and container["DNSConfig"] == {}
        assert spec["UpdateConfig"] == {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000,
                                        "MaxFailureRatio": 0, "Order": "stop-first"}
        assert spec["EndpointSpec"] == {"Mode": "vip"}
        assert svc["CreatedAt"].endswith("Z") and "spec" not in svc and "id" not in svc

        # An update leaves PreviousSpec and UpdateStatus in Docker's words.
        shoal("service", "update", "-d", "--env-add", "SHADE=dark", "h11_web", check=True, timeout=60)
        svc = json.loads(shoal("service", "inspect", "h11_web", check=True).stdout)[0]
        assert svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["COLOR=blue"]
        assert svc["UpdateStatus"]["State"] in ("updating", "completed")
        # --pretty still reads the record.
        assert "Name:\t\th11_web" in shoal("service", "inspect", "--pretty", "h11_web", check=True).stdout

        node = shoal("node", "inspect", "self", "--format",
                     "{{.Status.State}} {{.Spec.Role}} {{.Spec.Availability}} {{.Description.Hostname}}",
                     check=True).stdout.split()
        info = json.loads(shoal("node", "inspect", "self", check=True).stdout)[0]
        assert node == ["ready", "manager", "active", info["Description"]["Hostname"]]
        assert info["ManagerStatus"]["Leader"] is True and info["ManagerStatus"]["Reachability"] == "reachable"
        assert info["Description"]["Resources"]["NanoCPUs"] > 0 and info["Description"]["Platform"]["OS"] == "linux"
    finally:
        shoal("service", "rm", "h11_web", timeout=60)
