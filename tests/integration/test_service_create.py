"""`service create|update|rollback|inspect --pretty|scale` and jobs against a real shoald (one
node): Docker's output (the ID, the progress, `verify: Service <id> converged`, `job complete`),
the spec each command leaves, the published port answering, and Docker's refusals."""

from __future__ import annotations

import json
import urllib.request

from typing import Any

from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY

PORT = 28431  # published by the test's service; nothing else here uses it


def _err(result: Any) -> str:
    return "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("Starting shoald"))


def _get(path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _inspect(shoal, name: str) -> dict[str, Any]:
    return json.loads(shoal("service", "inspect", name, check=True).stdout)[0]


def test_create_update_rollback(shoal, busybox_image: str) -> None:
    # A swarm-scoped network (outside swarm mode `-d overlay` alone makes a node-local one), on a
    # subnet of its own: other roots on this kernel take the default pool's first subnets.
    shoal("network", "create", "-d", "overlay", "--scope", "swarm", "--subnet", "10.231.43.0/24", "h3it_net",
          check=True)
    try:
        made = shoal("service", "create", "--name", "h3it_web", "--replicas", "2", "--network", "h3it_net",
                     "-p", f"{PORT}:80", "-e", "COLOR=blue", "--update-monitor", "1s", "--stop-grace-period", "1s",
                     busybox_image, "httpd", "-f", "-p", "80", "-h", "/etc", check=True, timeout=120)
        lines = made.stdout.splitlines()
        service_id = lines[0]
        assert len(service_id) == 25
        assert lines[1] == "overall progress: 0 out of 2 tasks"
        assert "overall progress: 2 out of 2 tasks" in lines
        assert lines[-1] == f"verify: Service {service_id} converged"
        assert "root:x:0:0" in poll(lambda: _get("/passwd"), 20, "the published port")
        svc = _inspect(shoal, "h3it_web")
        # Docker's shape (cli/dockerjson.py): no stack label, no previous spec yet.
        assert svc["ID"] == service_id and svc["Spec"]["Labels"] == {} and "PreviousSpec" not in svc
        assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["COLOR=blue"]
        assert svc["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "any"  # the model's default, as compose's
        listing = shoal("service", "ls", check=True).stdout
        assert any(line.split()[1:4] == ["h3it_web", "replicated", "2/2"] for line in listing.splitlines())

        # update: -q prints the name only; the spec changes by Docker's rules and the tasks roll.
        old_tasks = {t["id"] for t in json.loads(_tasks(shoal, service_id)) if t["desired_state"] == "running"}
        updated = shoal("service", "update", "-q", "--env-add", "SIZE=L", "--env-rm", "COLOR", "--label-add", "tier=web",
                        "h3it_web", check=True, timeout=120)
        assert updated.stdout == "h3it_web\n"
        svc = _inspect(shoal, "h3it_web")
        assert (svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"], svc["Spec"]["Labels"]) == (["SIZE=L"], {"tier": "web"})
        assert svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["COLOR=blue"]
        running = [t for t in json.loads(_tasks(shoal, service_id)) if t["desired_state"] == "running"]
        assert len(running) == 2 and all(t["spec"]["env"] == ["SIZE=L"] for t in running)
        assert not old_tasks & {t["id"] for t in running}
        # The manager's monitor (1 s) ends about when the CLI's did: completed once it passed.
        poll(lambda: _inspect(shoal, "h3it_web")["UpdateStatus"]["State"] == "completed", 20, "the update's monitor")
        pretty = shoal("service", "inspect", "--pretty", "h3it_web", check=True).stdout
        assert pretty.startswith(f"\nID:\t\t{service_id}\nName:\t\th3it_web\nLabels:\n tier=web\n"
                                 "Service Mode:\tReplicated\n Replicas:\t2\nUpdateStatus:\n State:\t\tcompleted\n")
        assert " Env:\t\tSIZE=L \n" in pretty and "Networks: h3it_net \n" in pretty

        # --force alone rolls the tasks (ForceUpdate); rollback brings the previous spec back.
        shoal("service", "update", "-d", "--force", "h3it_web", check=True)
        assert _inspect(shoal, "h3it_web")["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
        rolled = shoal("service", "rollback", "h3it_web", check=True, timeout=120)
        assert rolled.stdout.splitlines()[0] == "h3it_web"
        assert "rollback: manually requested rollback" in rolled.stdout
        # progress.go: the rollback's final message follows the verification when it came first.
        assert "verify: Service h3it_web converged" in rolled.stdout.splitlines()[-2:]
        # The CLI waits update_config's monitor (1 s), the manager rollback_config's (5 s unset).
        svc = poll(lambda: (s := _inspect(shoal, "h3it_web"))["UpdateStatus"]["State"] == "rollback_completed" and s,
                    20, "the rollback's monitor")
        assert svc["Spec"]["TaskTemplate"]["ForceUpdate"] == 0
        assert "root:x:0:0" in poll(lambda: _get("/passwd"), 20, "the port after the rollback")

        # An image nobody has: Docker's warning, then the update pauses on the rejected task.
        missing = shoal("service", "update", "--image", "localhost/nosuch:1", "h3it_web", timeout=120)
        assert missing.returncode == 1
        assert "image localhost/nosuch:1 could not be accessed on a registry to record" in _err(missing)
        assert "Error: service update paused: update paused due to failure or early termination of task" in _err(missing)
        assert '"No such image: localhost/nos' in shoal("service", "ps", "h3it_web", check=True).stdout
        assert "root:x:0:0" in _get("/passwd")  # stop-first, parallelism 1: one task still serves
    finally:
        shoal("service", "rm", "h3it_web")
        poll(lambda: not [t for t in json.loads(_tasks(shoal, None)) if t["service_name"] == "h3it_web"], 30,
              "the service's tasks to go")
        shoal("network", "rm", "h3it_net")


def _tasks(shoal, service: str | None) -> str:
    """The tasks as the API lists them (the CLI's table hides the spec)."""
    from shoal.api.client import connect

    with connect() as client:
        return json.dumps(client.get("/tasks", **({"service": service} if service else {})))


def test_jobs_run_to_completion(shoal, busybox_image: str) -> None:
    try:
        made = shoal("service", "create", "--name", "h3it_job", "--mode", "replicated-job", "--replicas", "3",
                     "--max-concurrent", "2", busybox_image, "true", check=True, timeout=120)
        lines = made.stdout.splitlines()
        assert lines[1:3] == ["job progress: 0 out of 3 complete", "active tasks: 0 out of 2 tasks"]
        assert "job progress: 3 out of 3 complete" in lines and lines[-1] == "job complete"
        row = [line for line in shoal("service", "ls", check=True).stdout.splitlines() if " h3it_job " in line][0]
        assert "replicated job   0/0 (3/3 completed)" in row
        ps = shoal("service", "ps", "--format", "{{.Name}} {{.DesiredState}} {{.CurrentState}}", "h3it_job",
                   check=True).stdout.splitlines()
        # swarmkit numbers a job's slots from 0, and docker/cli names a slot-0 task by its node.
        node_id = shoal("node", "ls", "-q", check=True).stdout.split()[0]
        assert sorted(line.split()[:3] for line in ps) == [
            ["h3it_job.1", "Complete", "Complete"], ["h3it_job.2", "Complete", "Complete"],
            [f"h3it_job.{node_id}", "Complete", "Complete"]]
        # scale of a replicated job: TotalCompletions, a new iteration that runs again.
        scaled = shoal("service", "scale", "h3it_job=4", check=True, timeout=120)
        assert scaled.stdout.splitlines()[0] == "h3it_job scaled to 4" and scaled.stdout.endswith("job complete\n")
        row = [line for line in shoal("service", "ls", check=True).stdout.splitlines() if " h3it_job " in line][0]
        assert "0/0 (4/4 completed)" in row
        # Down to 2: a new iteration too, counted on its own tasks (not the 4 that completed before).
        scaled = shoal("service", "scale", "h3it_job=2", check=True, timeout=120).stdout.splitlines()
        assert scaled[1:3] == ["job progress: 0 out of 2 complete", "active tasks: 0 out of 2 tasks"]
        assert scaled[-1] == "job complete"
        row = [line for line in shoal("service", "ls", check=True).stdout.splitlines() if " h3it_job " in line][0]
        assert "0/0 (2/2 completed)" in row  # done when the display said so, not before
        gjob = shoal("service", "create", "--name", "h3it_gjob", "--mode", "global-job", busybox_image, "true",
                     check=True, timeout=120).stdout.splitlines()
        assert len(gjob[0]) == 25 and gjob[-2:] == ["job progress: 1 out of 1 complete", "job complete"]
        assert "global job       0/0 (1/1 completed)" in shoal("service", "ls").stdout
        refused = shoal("service", "scale", "h3it_gjob=2")
        assert refused.returncode == 1
        assert "h3it_gjob: scale can only be used with replicated or replicated-job mode" in _err(refused)
        # A job's task is desired Complete from the start (swarmkit), so while it runs too.
        shoal("service", "create", "-d", "--name", "h3it_slowjob", "--mode", "replicated-job", busybox_image,
              "sleep", "60", check=True)

        def ps(*f: str) -> list[str]:
            return shoal("service", "ps", *f, "--format", "{{.ID}} {{.DesiredState}} {{.CurrentState}}",
                         "h3it_slowjob", check=True).stdout.split()

        row = poll(lambda: (r := ps()) and r[2] == "Running" and r, 60, "the job's task to run")
        assert row[1] == "Complete"
        assert ps("-f", "desired-state=complete")[:2] == row[:2] and ps("-f", "desired-state=running") == []
        assert json.loads(shoal("inspect", row[0], check=True).stdout)[0]["DesiredState"] == "complete"
        assert "replicated job   1/1 (0/1 completed)" in shoal("service", "ls", check=True).stdout
    finally:
        shoal("service", "rm", "h3it_job", "h3it_gjob", "h3it_slowjob")


def test_update_monitor(shoal, busybox_image: str) -> None:
    """UpdateConfig.Monitor, as swarmkit's updater: the update stays updating until `monitor`
    has passed since its last task started; a task of the update failing within `monitor` pauses
    it, although every slot was replaced already."""
    try:
        service_id = shoal("service", "create", "-d", "--name", "h3it_mon", "--update-monitor", "6s",
                           "--restart-condition", "none", busybox_image, "sh", "-c", 'sleep "${LIFE:-600}"; exit 3',
                           check=True).stdout.strip()

        def running(version: int) -> list[dict[str, Any]]:
            return [t for t in json.loads(_tasks(shoal, service_id)) if t["spec_version"] == version
                    and t["status"]["state"] == "running" and t["desired_state"] == "running"]

        poll(lambda: running(1), 60, "the first task")
        shoal("service", "update", "-d", "--env-add", "V=2", "h3it_mon", check=True)
        poll(lambda: running(2), 60, "the updated task")
        assert _inspect(shoal, "h3it_mon")["UpdateStatus"]["State"] == "updating"  # its 6 s have not passed
        poll(lambda: _inspect(shoal, "h3it_mon")["UpdateStatus"]["State"] == "completed", 30, "the monitor to pass")

        # The new task exits non-zero 1 s after it started: within the 2 s monitor.
        shoal("service", "update", "-d", "--env-add", "LIFE=1", "--update-monitor", "2s", "h3it_mon", check=True)
        status = poll(lambda: (u := _inspect(shoal, "h3it_mon")["UpdateStatus"])["State"] == "paused" and u, 60,
                       "the update to pause")
        failed = [t for t in json.loads(_tasks(shoal, service_id)) if t["spec_version"] == 3]
        assert [t["status"]["state"] for t in failed] == ["failed"]
        assert status["Message"] == f"update paused due to failure or early termination of task {failed[0]['id']}"
        assert not running(2)  # the only slot was replaced before the task failed
    finally:
        shoal("service", "rm", "h3it_mon")


def test_refusals(shoal, busybox_image: str) -> None:
    # moby's getService words for update, rollback, rm and scale; ps, logs and inspect have the CLI's own.
    gone = shoal("service", "update", "--image", "x", "h3it_nosuch")
    assert (gone.returncode, gone.stdout, _err(gone)) == (1, "", "Error response from daemon: service h3it_nosuch not found\n")
    gone = shoal("service", "rollback", "h3it_nosuch")
    assert (gone.returncode, _err(gone)) == (1, "Error response from daemon: service h3it_nosuch not found\n")
    gone = shoal("service", "rm", "h3it_nosuch")
    assert (gone.returncode, _err(gone)) == (1, "Error response from daemon: service h3it_nosuch not found\n")
    gone = shoal("service", "scale", "h3it_nosuch=2", "h3it_other=x")
    assert (gone.returncode, gone.stdout, _err(gone)) == (
        1, "", "h3it_nosuch: Error response from daemon: service h3it_nosuch not found\n"
               'h3it_other: invalid replicas value x: strconv.ParseUint: parsing "x": invalid syntax\n')
    gone = shoal("service", "ps", "h3it_nosuch")
    assert (gone.returncode, gone.stdout, _err(gone)) == (1, "", "no such service: h3it_nosuch\n")
    gone = shoal("service", "logs", "h3it_nosuch")
    assert (gone.returncode, gone.stdout, _err(gone)) == (1, "", "no such task or service: h3it_nosuch\n")
    gone = shoal("service", "inspect", "h3it_nosuch")  # inspect.Inspect: `[]`, then its own words
    assert (gone.returncode, gone.stdout, _err(gone)) == (1, "[]\n", "Error: no such service: h3it_nosuch\n")
    bad = shoal("service", "create", "--replicas", "two", busybox_image)
    assert bad.returncode == 125
    assert _err(bad) == ('invalid argument "two" for "--replicas" flag: strconv.ParseUint: parsing "two": invalid syntax'
                         "\n\nUsage:  shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]\n\n"
                         "Run 'shoal service create --help' for more information\n")  # cli/cobra.go FlagErrorFunc
    bad = shoal("service", "create", "--mode", "global", "--replicas", "2", busybox_image)
    assert (bad.returncode, _err(bad)) == (1, "Error: replicas can only be used with replicated or replicated-job mode\n")
    bad = shoal("service", "create", "--secret", "h3it_nosecret", busybox_image)
    assert (bad.returncode, _err(bad)) == (1, "Error: secret not found: h3it_nosecret\n")
    bad = shoal("service", "create", "--network", "h3it_nonet", busybox_image)
    assert (bad.returncode, _err(bad)) == (1, "Error: network h3it_nonet not found\n")
    assert "h3it" not in shoal("service", "ls", check=True).stdout  # nothing half-made
    # An image nobody has: created, with moby's digest warning (then its tasks are rejected).
    made = shoal("service", "create", "-d", "--name", "h3it_noimage", "localhost/h3it-nosuch:1")
    try:
        assert made.returncode == 0 and len(made.stdout.strip()) == 25
        assert _err(made) == ("image localhost/h3it-nosuch:1 could not be accessed on a registry to record\n"
                              "its digest. Each node will access localhost/h3it-nosuch:1 independently,\n"
                              "possibly leading to different nodes running different\n"
                              "versions of the image.\n\n")
        # A refusal of the daemon's exits 1, whatever its HTTP status (docker's main).
        never = shoal("service", "rollback", "h3it_noimage")
        assert (never.returncode, _err(never)) == (1, "Error response from daemon: rpc error: code = FailedPrecondition "
                                                      f"desc = service {made.stdout.strip()} does not have a previous spec\n")
    finally:
        shoal("service", "rm", "h3it_noimage")


def test_compose_job(shoal, busybox_image: str, tmp_path) -> None:
    """deploy.mode replicated-job in a stack: the same jobs orchestrator, the same ls column."""
    compose = tmp_path / "job.yml"
    compose.write_text(f"services:\n  once:\n    image: {busybox_image}\n    command: [sh, -c, 'exit 0']\n"
                       "    deploy:\n      mode: replicated-job\n      replicas: 2\n")
    try:
        shoal("stack", "deploy", "-d", "-c", str(compose), "h3itjob", check=True)
        row = poll(lambda: [line for line in shoal("service", "ls").stdout.splitlines()
                             if " h3itjob_once " in line and "(2/2 completed)" in line], 30, "the job to complete")
        assert "replicated job   0/0 (2/2 completed)" in row[0]
        # MaxConcurrent defaults to the replicas, as Swarm's.
        assert _inspect(shoal, "h3itjob_once")["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}}
    finally:
        shoal("stack", "rm", "h3itjob")


def test_stack_rm_detach_false_waits_for_the_tasks(shoal, busybox_image: str, tmp_path) -> None:
    """docker stack rm --detach=false (remove.go waitOnTasks): it returns once the stack's tasks
    reached a terminal state, so no container of the stack still runs (the default, -d, does
    not wait); a bool flag's bad value is pflag's refusal."""
    compose = tmp_path / "rm.yml"
    compose.write_text(f"services:\n  slow:\n    image: {busybox_image}\n    command: [sleep, '300']\n"
                       "    stop_grace_period: 2s\n")
    # --detach=false --quiet: it waits for the service to converge, without the progress lines
    # (and, the flag given, without the notice the default prints)
    quiet = shoal("stack", "deploy", "--detach=false", "-q", "-c", str(compose), "h3itrm", check=True, timeout=120)
    assert (quiet.stdout, quiet.stderr) == ("Creating network h3itrm_default\nCreating service h3itrm_slow\n", "")
    running = ["ps", "--filter", "label=com.docker.stack.namespace=h3itrm", "--format", "{{.Names}}"]
    try:
        poll(lambda: shoal(*running).stdout.strip(), 30, "the task's container to run")
        bad = shoal("stack", "rm", "--detach=maybe", "h3itrm")
        assert (bad.returncode, bad.stderr.splitlines()[0]) == (
            125, 'invalid argument "maybe" for "-d, --detach" flag: strconv.ParseBool: parsing "maybe": invalid syntax')
        removed = shoal("stack", "rm", "--detach=false", "h3itrm", check=True, timeout=60)
        assert removed.stdout == "Removing service h3itrm_slow\nRemoving network h3itrm_default\n"
        assert shoal(*running, check=True).stdout == ""
    finally:
        shoal("stack", "rm", "h3itrm")


def test_service_logs_since(shoal, busybox_image: str) -> None:
    """service logs --since (the client's timetypes.GetTimestamp): an RFC 3339 time or a
    duration before now; the lines written before it are left out."""
    shoal("service", "create", "-d", "--name", "h3it_logs", busybox_image, "sh", "-c",
          "echo one; sleep 2; echo two; exec sleep 300", check=True)
    try:
        lines = poll(lambda: [line for line in shoal("service", "logs", "-t", "h3it_logs").stdout.splitlines()
                               if line.endswith("| two")], 30, "both lines")
        stamp = lines[0].split()[0]
        since = shoal("service", "logs", "--since", stamp, "h3it_logs", check=True).stdout
        assert [line.split("| ")[1] for line in since.splitlines()] == ["two"]
        assert [line.split("| ")[1] for line in shoal("service", "logs", "--since", "1h", "h3it_logs").stdout.splitlines()] == \
            ["one", "two"]
        bad = shoal("service", "logs", "--since", "soon", "h3it_logs")
        assert (bad.returncode, _err(bad)) == (
            1, 'Error: invalid value for "since": failed to parse value as time or duration: "soon"\n')
    finally:
        shoal("service", "rm", "h3it_logs")


def test_log_driver_max_size_caps_a_tasks_log(shoal, busybox_image: str) -> None:
    """--log-opt max-size (json-file, local) bounds what a task's log keeps, as moby's driver
    does: conmon empties the file when it gets there, so the newest lines stay. A value moby's
    driver refuses rejects the task with its words."""
    shoal("service", "create", "-d", "--name", "h3it_logcap", "--log-driver", "json-file", "--log-opt",
          "max-size=20k", busybox_image, "sh", "-c",
          "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; exec sleep 300", check=True)
    shoal("service", "create", "-d", "--name", "h3it_logbad", "--log-driver", "json-file", "--log-opt",
          "max-size=lots", busybox_image, "sleep", "300", check=True)
    try:
        def container() -> str:
            ids = shoal("ps", "-q", "--filter", "label=com.docker.swarm.service.name=h3it_logcap").stdout.split()
            return ids[0] if ids else ""

        cid = poll(container, 30, "the task's container")
        lines = poll(lambda: [ln for ln in shoal("logs", cid).stdout.splitlines() if ln == "line 2999"], 30,
                     "the last line")
        assert lines
        log = json.loads(shoal("inspect", cid, check=True).stdout)[0]["LogPath"]
        from pathlib import Path

        assert 0 < Path(log).stat().st_size <= 20 * 1024  # 3000 lines are about 28 KiB
        assert len(shoal("logs", cid).stdout.splitlines()) < 3000
        errors = poll(lambda: shoal("service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                                    "h3it_logbad").stdout.splitlines(), 30, "the rejected task")
        assert errors[0].startswith("Rejected") and errors[0].endswith(  # docker/cli quotes the error (%q)
            '|"failed to initialize logging driver: invalid size: \'lots\'"')
    finally:
        shoal("service", "rm", "h3it_logcap", "h3it_logbad")
