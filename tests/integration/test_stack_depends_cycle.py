"""A stack whose depends_on has a cycle deploys, as under `docker stack deploy` (which never
reads depends_on): one warning names the cycle and both services run. Before, the file was refused;
with the cycle honoured, each service's first task would wait for the other for ever."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY


def test_two_service_depends_on_cycle_deploys_and_both_run(shoal, busybox_image: str,
                                                           tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        f"  ping:\n    image: {busybox_image}\n    command: [sleep, '300']\n"
        "    stop_grace_period: 1s\n    depends_on: [pong]\n"
        f"  pong:\n    image: {busybox_image}\n    command: [sleep, '300']\n"
        "    stop_grace_period: 1s\n    depends_on: [ping]\n")
    try:
        deployed = shoal("stack", "deploy", "--detach", "-c", str(compose), "cyc", check=True)
        assert "Ignoring depends_on cycle: ping -> pong -> ping\n" in deployed.stderr
        assert deployed.stderr.count("depends_on") == 1, deployed.stderr

        def running() -> bool:
            states = shoal("stack", "ps", "--format", "{{.Name}} {{.CurrentState}}", "cyc",
                           check=True).stdout.splitlines()
            return sorted(line.split()[0] for line in states if " Running " in f"{line} ") == [
                "cyc_ping.1", "cyc_pong.1"]

        poll(running, 60, "both services of the cycle to run")
    finally:
        shoal("stack", "rm", "cyc")
