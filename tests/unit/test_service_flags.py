"""`service create|update` flags -> ServiceSpec, as docker/cli's opts.go and update.go build and
change a spec; `service inspect --pretty` against docker/cli's golden; the job column of
`service ls`; the progress display's lines."""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.cli import serviceflags, servicespec as sf
from shoal.cli.serviceprogress import Display, _ReplicatedJob
from shoal.cli.servicepretty import pretty
from shoal.cli.swarmfmt import replicas_column
from shoal.compose import load_stack
from shoal.errors import InvalidArgument, ShoalError


def create(*argv: str, lookups: sf.Lookups | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    serviceflags.add_create_flags(p)
    return sf.spec_from_create(p.parse_args(list(argv)), lookups).to_dict()


def update(spec: dict[str, Any], *argv: str, lookups: sf.Lookups | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    serviceflags.add_update_flags(p)
    return sf.apply_update(spec, p.parse_args([*argv, "svc"]), lookups)


def test_create_caps_adding_wins_over_dropping() -> None:
    """opts.EffectiveCapAddCapDrop: a capability given to both --cap-add and --cap-drop is
    added, not dropped (shoal dropped it); ALL in --cap-drop stays with an added one; RESET
    means nothing to create. Docker 28.2.2's service create request has these lists."""
    spec = create("--cap-add", "net_admin", "--cap-drop", "NET_ADMIN", "--cap-drop", "mknod", "img:1")
    assert (spec["cap_add"], spec["cap_drop"]) == (["CAP_NET_ADMIN"], ["CAP_MKNOD"])
    spec = create("--cap-add", "chown", "--cap-drop", "all", "--cap-drop", "reset", "img:1")
    assert (spec["cap_add"], spec["cap_drop"]) == (["CAP_CHOWN"], ["ALL"])


def test_create_host_gateway_is_an_address_for_the_node() -> None:
    """opts.ValidateExtraHost takes `host-gateway` for the address: the node's daemon puts its
    host gateway in (shoal refused it, 'invalid IP address in add-host')."""
    spec = create("--host", "host.docker.internal:host-gateway", "--host", "db:10.0.0.2", "img:1")
    assert spec["extra_hosts"] == ["host-gateway host.docker.internal", "10.0.0.2 db"]
    with pytest.raises(ShoalError, match="invalid IP address in add-host"):
        create("--host", "x:host-gw", "img:1")


def test_create_fills_the_models_defaults_like_compose(tmp_path: Path) -> None:
    """The seed's web service by flags equals what `stack deploy` makes of its compose file,
    apart from the names and the stack's labels."""
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: web:v1\n    deploy:\n      replicas: 5\n"
        "      resources:\n        limits:\n          cpus: '0.1'\n          memory: 50M\n"
        "      restart_policy:\n        condition: on-failure\n"
        "    ports:\n      - '4000:80'\n")
    compose = load_stack([tmp_path / "docker-compose.yml"], "webapp").services["webapp_web"].to_dict()
    cli = create("--name", "web", "--replicas", "5", "--limit-cpu", "0.1", "--limit-memory", "50M",
                 "--restart-condition", "on-failure", "--publish", "4000:80", "web:v1")
    # `defaulted` says what each client left to Swarm's defaults (compose: no DNSConfig, no
    # Reservations...); the values every consumer reads are the same.
    for key in ("name", "compose_name", "stack", "labels", "container_labels", "networks", "defaulted"):
        compose.pop(key), cli.pop(key)
    assert cli == compose


def test_create_flags_reach_their_fields() -> None:
    spec = create("--name", "api", "-e", "A=1", "--env", "B=2", "-e", "A=3", "-l", "tier=front", "--label", "bare",
                  "--container-label", "c=1", "--mount", "type=tmpfs,target=/cache,tmpfs-size=64m",
                  "--mount", "source=data,target=/data,readonly", "--constraint", "node.role==manager",
                  "--placement-pref", "spread=node.labels.zone", "--replicas-max-per-node", "2",
                  "-p", "published=8080,target=80,mode=host,protocol=udp", "-p", "9000-9001:90-91",
                  "--health-cmd", "true", "--health-interval", "2s", "--stop-grace-period", "1m30s",
                  "--stop-signal", "SIGUSR1", "-u", "app", "-w", "/srv", "--hostname", "h", "--entrypoint", "sh -c",
                  "--init", "--read-only", "-t", "--cap-add", "net_admin", "--cap-drop", "mknod",
                  "--sysctl", "net.core.somaxconn=1024", "--ulimit", "nofile=10:20", "--dns", "1.1.1.1",
                  "--dns-search", "example.org", "--dns-option", "ndots:2", "--host", "db:10.0.0.9",
                  "--group", "staff", "--update-parallelism", "2", "--update-order", "start-first",
                  "--rollback-monitor", "10s", "--restart-max-attempts", "3", "--endpoint-mode", "dnsrr",
                  "--log-driver", "json-file", "--log-opt", "max-size=1m", "--limit-pids", "100",
                  "--reserve-memory", "16M", "--generic-resource", "gpu=1",
                  "img:1", "echo", "hi")
    assert spec["env"] == ["B=2", "A=3"]  # a later value moves the key to the end (makeEnv)
    assert spec["labels"] == {"tier": "front", "bare": ""} and spec["container_labels"] == {"c": "1"}
    assert spec["mounts"] == [
        {"type": "tmpfs", "target": "/cache", "source": "", "read_only": False, "options": [f"size={64 << 20}"]},
        {"type": "volume", "target": "/data", "source": "data", "read_only": True, "options": []}]
    assert spec["placement"] == {"constraints": ["node.role==manager"], "preferences": ["node.labels.zone"],
                                 "max_replicas_per_node": 2}
    assert [(p["published"], p["target"], p["protocol"], p["publish_mode"]) for p in spec["endpoint"]["ports"]] == [
        (8080, 80, "udp", "host"), (9000, 90, "tcp", "ingress"), (9001, 91, "tcp", "ingress")]
    assert spec["healthcheck"]["test"] == ["CMD-SHELL", "true"] and spec["healthcheck"]["interval"] == 2.0
    assert (spec["stop_grace_period"], spec["stop_signal"], spec["user"], spec["workdir"], spec["hostname"]) == (
        90.0, "SIGUSR1", "app", "/srv", "h")
    assert spec["entrypoint"] == ["sh", "-c"] and spec["cmd"] == ["echo", "hi"]
    assert (spec["init"], spec["read_only"], spec["tty"]) == (True, True, True)
    assert (spec["cap_add"], spec["cap_drop"]) == (["CAP_NET_ADMIN"], ["CAP_MKNOD"])
    assert spec["sysctls"] == {"net.core.somaxconn": "1024"}
    assert spec["ulimits"] == [{"name": "nofile", "soft": 10, "hard": 20}]
    assert (spec["dns"], spec["dns_search"], spec["dns_options"]) == (["1.1.1.1"], ["example.org"], ["ndots:2"])
    assert spec["extra_hosts"] == ["10.0.0.9 db"] and spec["groups"] == ["staff"]
    assert spec["update_config"]["parallelism"] == 2 and spec["update_config"]["order"] == "start-first"
    assert spec["rollback_config"]["monitor"] == 10.0 and spec["rollback_config"]["parallelism"] == 1
    assert spec["restart_policy"] == {"condition": "any", "delay": 5.0, "max_attempts": 3, "window": 0.0}
    assert spec["endpoint"]["mode"] == "dnsrr"
    assert spec["log_driver"] == {"name": "json-file", "options": {"max-size": "1m"}}
    assert spec["resources"]["limits"]["pids"] == 100
    assert spec["resources"]["reservations"] == {"nano_cpus": 0, "memory_bytes": 16 << 20,
                                                 "generic_resources": [{"kind": "gpu", "value": 1}]}


def test_secret_and_config_references_need_the_objects() -> None:
    lookups = sf.Lookups(secrets=lambda: ["db_pw"], configs=lambda: ["app_conf"])
    spec = create("--secret", "db_pw", "--secret", "source=db_pw,target=pw2,uid=1000,mode=0400",
                  "--config", "source=app_conf,target=/etc/app.conf", "img", lookups=lookups)
    assert [(r["source"], r["target"], r["uid"], r["mode"]) for r in spec["secrets"]] == [
        ("db_pw", "/run/secrets/db_pw", "0", 0o444), ("db_pw", "/run/secrets/pw2", "1000", 0o400)]
    assert spec["configs"][0]["target"] == "/etc/app.conf"
    with pytest.raises(ShoalError, match="^secret not found: nope$"):
        create("--secret", "nope", "img", lookups=lookups)
    with pytest.raises(ShoalError, match="^duplicate secret target for db_pw not allowed$"):
        create("--secret", "db_pw", "--secret", "db_pw", "img", lookups=lookups)


@pytest.mark.parametrize(("argv", "message", "kind"), [
    (["--mode", "daemon"], "unknown mode: daemon, only replicated and global supported", ShoalError),
    (["--mode", "global", "--replicas", "2"], "replicas can only be used with replicated or replicated-job mode", ShoalError),
    (["--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode", ShoalError),
    (["--mode", "replicated-job", "--update-parallelism", "2"],
     "update and rollback configuration is not supported for jobs", ShoalError),
    (["--replicas", "x"], 'invalid argument "x" for "--replicas" flag: strconv.ParseUint: parsing "x": invalid syntax',
     InvalidArgument),
    (["--limit-cpu", "abc"], 'invalid argument "abc" for "--limit-cpu" flag: failed to parse abc as a rational number',
     InvalidArgument),
    (["--restart-delay", "5"], 'invalid argument "5" for "--restart-delay" flag: time: missing unit in duration "5"',
     InvalidArgument),
    (["--mount", "type=bind,target=/x"],
     'invalid argument "type=bind,target=/x" for "--mount" flag: invalid mount config for type "bind": field Source must not be empty',
     InvalidArgument),
    (["-p", "published=80"], 'invalid argument "published=80" for "--publish" flag: missing mandatory field \'target\'',
     InvalidArgument),
    (["-p", "127.0.0.1:80:80"], 'invalid argument "127.0.0.1:80:80" for "--publish" flag: hostip is not supported',
     InvalidArgument),
    (["--dns", "nameserver"], 'invalid argument "nameserver" for "--dns" flag: IP address is not correctly formatted: nameserver',
     InvalidArgument),
    (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-* options", ShoalError),
])
def test_bad_create_flags_are_dockers_errors(argv: list[str], message: str, kind: type[Exception]) -> None:
    with pytest.raises(kind) as caught:
        create(*argv, "img")
    assert str(caught.value) == message
    assert type(caught.value) is kind  # pflag's parse errors exit 125, the others 1


def test_jobs_and_global_modes() -> None:
    job = create("--mode", "replicated-job", "--replicas", "3", "--max-concurrent", "2", "img")
    assert (job["mode"], job["replicas"], job["max_concurrent"]) == ("replicated-job", 3, 2)
    assert create("--mode", "replicated-job", "img")["max_concurrent"] is None  # = replicas
    assert create("--mode", "global-job", "img")["replicas"] == 0
    assert create("img")["replicas"] == 1


def test_update_removes_then_adds_by_dockers_keys() -> None:
    base = create("--name", "svc", "-e", "A=1", "-e", "B=2", "-l", "x=1", "-l", "y=2",
                  "--mount", "source=a,target=/a", "--mount", "source=b,target=/b",
                  "-p", "8080:80", "-p", "9090:90", "--constraint", "node.role==worker",
                  "--host", "a:10.0.0.1", "--dns", "8.8.8.8", "--ulimit", "nofile=1:2", "--sysctl", "k=1",
                  "--cap-add", "NET_ADMIN", "--group", "b", "img:1")
    new = update(base, "--env-rm", "A", "--env-add", "B=3", "--env-add", "C=4", "--label-rm", "x",
                 "--label-add", "z=3", "--mount-rm", "/a", "--mount-add", "source=c,target=/b",
                 "--publish-rm", "80", "--publish-add", "7070:70", "--constraint-add", "node.labels.a==1",
                 "--constraint-rm", "node.role==worker", "--host-rm", "a", "--host-add", "c:10.0.0.3",
                 "--dns-add", "1.1.1.1", "--dns-rm", "8.8.8.8", "--ulimit-add", "nproc=5", "--ulimit-rm", "nofile",
                 "--sysctl-rm", "k", "--sysctl-add", "j=2", "--cap-drop", "NET_ADMIN", "--group-add", "a",
                 "--image", "img:2", "--args", "sleep 5", "--force", "--replicas", "3")
    assert new["env"] == ["B=3", "C=4"]
    assert new["labels"] == {"y": "2", "z": "3"}
    assert [(m["source"], m["target"]) for m in new["mounts"]] == [("c", "/b")]
    assert [(p["published"], p["target"]) for p in new["endpoint"]["ports"]] == [(7070, 70), (9090, 90)]
    assert new["placement"]["constraints"] == ["node.labels.a==1"]
    assert new["extra_hosts"] == ["10.0.0.3 c"] and new["dns"] == ["1.1.1.1"]
    assert new["ulimits"] == [{"name": "nproc", "soft": 5, "hard": 5}] and new["sysctls"] == {"j": "2"}
    assert (new["cap_add"], new["cap_drop"]) == ([], [])  # dropping an added capability un-adds it
    assert new["groups"] == ["a", "b"]
    assert (new["image"], new["cmd"], new["force_update"], new["replicas"]) == ("img:2", ["sleep", "5"], 1, 3)
    assert update(new, "--force")["force_update"] == 2
    untouched = update(base)
    assert untouched == base  # no flag, no change (so no new spec version rolls the tasks)


def test_update_refusals() -> None:
    base = create("--name", "svc", "img")
    with pytest.raises(ShoalError, match="^other flags may not be combined with --rollback$"):
        update(base, "--rollback", "--env-add", "A=1")
    assert update(base, "--rollback", "-d") == base
    job = create("--mode", "replicated-job", "img")
    with pytest.raises(ShoalError, match="^replicas can only be used with replicated mode$"):
        update(job, "--replicas", "2")
    nets = sf.Lookups(networks=lambda: ["front"])
    attached = update(base, "--network-add", "front", lookups=nets)
    with pytest.raises(ShoalError, match="^service is already attached to network front$"):
        update(attached, "--network-add", "front", lookups=nets)
    with pytest.raises(ShoalError, match="^network back not found$"):
        update(base, "--network-add", "back", lookups=nets)
    assert update(attached, "--network-rm", "front", lookups=nets)["networks"] == []


def test_pretty_matches_dockers_golden() -> None:
    """cli/command/service/testdata/service-inspect-pretty.golden, for the same service."""
    golden = (Path(__file__).parent / "fixtures" / "service-inspect-pretty.golden").read_text()
    svc = {"id": "de179gar9d0o7ltdybungplod", "name": "my_service",
           "spec": {"labels": {"com.label": "foo"}, "log_driver": {"name": "driver", "options": {"max-file": "5"}},
                    "image": "foo/bar@sha256:this_is_a_test",
                    "configs": [{"source": "configtest.conf", "target": "/configtest.conf"}],
                    "secrets": [{"source": "secrettest.conf", "target": "/secrettest.conf"}],
                    "healthcheck": {"test": ["CMD-SHELL", "curl"], "interval": 4e-9, "retries": 3,
                                    "start_period": 2e-9, "timeout": 1e-9},
                    "resources": {"limits": {"nano_cpus": 100000000000, "memory_bytes": 10490000, "pids": 20},
                                  "reservations": {}},
                    "networks": [{"target": "5vpyomhb6ievnk0i0o60gcnei", "aliases": ["web"]}],
                    "mode": "replicated", "replicas": 2, "endpoint": {"mode": "vip"}},
           "endpoint": {"ports": [{"protocol": "tcp", "target": 5000, "published": 30000, "mode": ""}]},
           "update_status": {"started_at": 1.0, "completed_at": 1.0}}
    assert pretty(svc, {"5vpyomhb6ievnk0i0o60gcnei": "mynetwork"}) == golden


def test_pretty_update_status() -> None:
    svc = {"id": "x", "name": "web", "spec": create("--name", "web", "img"),
           "update_status": {"state": "rollback_completed", "started_at": 100.0, "completed_at": 160.0,
                             "message": "rollback completed"}}
    text = pretty(svc, {}, now=200.0)
    assert "UpdateStatus:\n State:\t\trollback_completed\n Started:\tAbout a minute ago\n Message:\trollback completed\n" in text
    svc["update_status"]["state"] = "completed"
    assert " Completed:\t40 seconds ago\n" in pretty(svc, {}, now=200.0)


def test_ls_replicas_column_for_jobs() -> None:
    job = {"spec": {"mode": "replicated-job", "replicas": 3},
           "status": {"RunningTasks": 1, "DesiredTasks": 1, "CompletedTasks": 2}}
    assert replicas_column(job) == "1/1 (2/3 completed)"
    gjob = {"spec": {"mode": "global-job"}, "status": {"RunningTasks": 1, "DesiredTasks": 1, "CompletedTasks": 3}}
    assert replicas_column(gjob) == "1/1 (3/4 completed)"


def test_job_progress_lines() -> None:
    out = io.StringIO()
    updater = _ReplicatedJob(Display(out, tty=False))
    svc = {"spec": {"mode": "replicated-job", "replicas": 2}}

    def task(slot: int, state: str) -> dict[str, Any]:
        return {"slot": slot, "node_id": "n", "desired_state": "running", "status": {"state": state, "err": ""}}

    # swarmkit's job slots are 0 and 1; docker/cli shows Slot+1
    assert not updater.update(svc, [task(0, "running"), task(1, "starting")], {"n"}, False)
    assert updater.update(svc, [task(0, "complete"), task(1, "complete")], {"n"}, False)
    assert out.getvalue().splitlines() == [
        "job progress: 0 out of 2 complete", "active tasks: 0 out of 2 tasks", "1/2:", "2/2:",
        "1/2: running", "2/2: starting", "active tasks: 2 out of 2 tasks",
        "1/2: complete", "2/2: complete", "job progress: 2 out of 2 complete", "active tasks: 0 out of 0 tasks"]


def test_golden_fixture_is_dockers() -> None:
    """The fixture is docker/cli's file, byte for byte (when a mirror of docker/cli is at hand)."""
    mirror = Path("/work/.mirror/docker+cli/repo")
    if not mirror.exists():
        pytest.skip("no docker/cli mirror on this machine")
    theirs = subprocess.run(["git", f"--git-dir={mirror}", "show",
                             "HEAD:cli/command/service/testdata/service-inspect-pretty.golden"],
                            capture_output=True, text=True, check=True).stdout
    assert (Path(__file__).parent / "fixtures" / "service-inspect-pretty.golden").read_text() == theirs


def test_progress_on_a_terminal_rewrites_lines_in_place() -> None:
    out = io.StringIO()
    display = Display(out, tty=True)
    display.width = 120
    display.write("overall progress", "0 out of 1 tasks")
    display.write("1/1", f"{'running':<9}", 9, 9)
    display.write("overall progress", "1 out of 1 tasks")
    text = out.getvalue()
    assert text.startswith("overall progress: 0 out of 1 tasks\n1/1: running   [" + "=" * 50 + ">] \n")
    # the first line is rewritten: two lines up, cleared, written, and back down
    assert text.endswith("\x1b[2A\x1b[2K\roverall progress: 1 out of 1 tasks\x1b[2B\r")


def test_networks_by_name_id_or_node_network() -> None:
    nets = sf.Lookups(networks=lambda: {"front": "front", "q1w2e3r4t5y6u7i8o9p0a1s2d": "front"})
    assert [n["target"] for n in create("--network", "q1w2e3", "--network", "host", "img", lookups=nets)["networks"]] == [
        "front", "host"]
    spec = create("--network", "name=front,alias=web", "img", lookups=nets)
    assert spec["networks"] == [{"target": "front", "aliases": ["web"], "driver_opts": {}}]
    assert update(spec, "--network-rm", "q1w2e3r4t5y6u7i8o9p0a1s2d", lookups=nets)["networks"] == []


def test_global_job_progress_lines() -> None:
    from shoal.cli.serviceprogress import _GlobalJob

    out = io.StringIO()
    updater = _GlobalJob(Display(out, tty=False))

    def task(node: str, state: str) -> dict[str, Any]:
        return {"slot": 0, "node_id": node, "desired_state": "running", "status": {"state": state, "err": ""}}

    assert not updater.update({}, [], {"n1"}, False)
    assert not updater.update({}, [task("n1", "running"), task("n2", "complete")], {"n1", "n2"}, False)
    assert updater.update({}, [task("n1", "complete"), task("n2", "complete")], {"n1", "n2"}, False)
    assert out.getvalue().splitlines() == [
        "job progress: waiting for tasks", "job progress: 0 out of 2 complete", "n1: running", "n2: complete",
        "job progress: 1 out of 2 complete", "n1: complete", "job progress: 2 out of 2 complete"]


def test_pflag_booleans_turn_off_on_update() -> None:
    on = create("--name", "svc", "--tty", "--read-only", "--init", "img")
    assert (on["tty"], on["read_only"], on["init"]) == (True, True, True)
    off = update(on, "--tty=false", "--read-only=0", "--init=false")
    assert (off["tty"], off["read_only"], off["init"]) == (False, False, False)
    assert update(off, "-t", "--read-only=true")["tty"] is True
    assert create("--init=false", "img")["init"] is False and create("img")["init"] is None


def test_create_leaves_to_swarm_what_docker_cli_leaves_nil() -> None:
    """ToService sets RestartPolicy, UpdateConfig, RollbackConfig and StopGracePeriod only from
    their flags: a task's Spec (printed as stored) lacks them, the service's (InsertDefaults)
    has Swarm's defaults."""
    from shoal.cli import dockerjson

    spec = create("--restart-condition", "on-failure", "web:v1")
    assert spec["defaulted"] == ["stop_grace_period", "restart_policy.delay", "update_config", "rollback_config"]
    raw = dockerjson.service_spec(spec, {}, defaults=False)
    assert raw["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 0}
    container = raw["TaskTemplate"]["ContainerSpec"]
    assert "StopGracePeriod" not in container and container["DNSConfig"] == {}  # DNSConfig: always sent
    assert raw["TaskTemplate"]["Resources"] == {"Limits": {}, "Reservations": {}} and "UpdateConfig" not in raw
    full = dockerjson.service_spec(spec, {})
    assert full["TaskTemplate"]["RestartPolicy"]["Delay"] == 5_000_000_000 and full["UpdateConfig"]["Monitor"] == 5_000_000_000
    assert create("--stop-grace-period", "2s", "--restart-delay", "1s", "--update-order", "start-first",
                  "--rollback-parallelism", "0", "web:v1")["defaulted"] == []


def test_config_file_name_stays_as_given_as_docker_clis_config_opt() -> None:
    """opts/swarmopts ConfigOpt: File.Name is the target as given, the source name by default
    (relative; the node puts it under /); a secret's bare target is under /run/secrets."""
    assert sf.parse_file_ref("app_conf", "config")[1].target == "app_conf"
    assert sf.parse_file_ref("source=app_conf,target=app.conf", "config")[1].target == "app.conf"
    assert sf.parse_file_ref("source=app_conf,target=/etc/app.conf", "config")[1].target == "/etc/app.conf"
    assert sf.parse_file_ref("token", "secret")[1].target == "/run/secrets/token"


def test_a_monitor_of_zero_is_swarms_default() -> None:
    # moby sends Monitor 0 as unset and swarmkit then monitors for its default 5 s, as compose's
    # `monitor: 0s` already converts.
    spec = create("--name", "api", "--update-monitor", "0", "--rollback-monitor", "0s", "--update-delay", "0",
                  "img:1")
    assert spec["update_config"]["monitor"] == 5.0 and spec["rollback_config"]["monitor"] == 5.0
    assert spec["update_config"]["delay"] == 0.0
    assert create("--name", "api", "--update-monitor", "250ms", "img:1")["update_config"]["monitor"] == 0.25
