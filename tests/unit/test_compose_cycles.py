"""`depends_on` cycles: `docker stack deploy` never reads depends_on, so a file with a cycle
deploys there. shoal's deploy warns of each cycle and keeps no order among its services (a cycle
would wait for ever); `stack config` prints depends_on as written and says nothing, as docker's."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli.main import main
from shoal.compose.api import load_config, load_stack
from shoal.compose.cycles import break_cycles, find_cycle

CYCLES = Path(__file__).parent / "fixtures" / "compose" / "cycles"


def _depends(files: list[Path]) -> tuple[dict[str, list[str]], list[str]]:
    warnings: list[str] = []
    spec = load_stack(files, "app", environ={}, warn=warnings.append)
    return {svc.compose_name: sorted(svc.depends_on) for svc in spec.services.values()}, warnings


def test_three_service_cycle_deploys_unordered_with_one_warning() -> None:
    depends, warnings = _depends([CYCLES / "three.yml"])
    assert warnings == ["Ignoring depends_on cycle: a -> b -> c -> a"]
    assert depends == {"a": [], "b": [], "c": [], "d": []}


def test_ordering_outside_the_cycle_is_kept(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("version: '3.8'\nservices:\n"
                       "  web:\n    image: i\n    depends_on: [api, db]\n"
                       "  api:\n    image: i\n    depends_on: {worker: {condition: service_healthy},"
                       " db: {condition: service_started}}\n"
                       "  worker:\n    image: i\n    depends_on: [api, db]\n"
                       "  db:\n    image: i\n")
    warnings: list[str] = []
    spec = load_stack([compose], "app", environ={}, warn=warnings.append)
    assert warnings == ["Ignoring depends_on cycle: api -> worker -> api"]
    services = {svc.compose_name: svc for svc in spec.services.values()}
    assert sorted(services["web"].depends_on) == ["api", "db"]
    assert list(services["api"].depends_on) == ["db"]
    assert services["api"].depends_on["db"].condition == "service_started"
    assert list(services["worker"].depends_on) == ["db"]


def test_self_dependency_is_a_cycle() -> None:
    depends, warnings = _depends([CYCLES / "self.yml"])
    assert warnings == ["Ignoring depends_on cycle: web -> web"]
    assert depends == {"web": []}


def test_cycle_made_by_merging_two_files(tmp_path: Path) -> None:
    base = tmp_path / "base.yml"
    over = tmp_path / "over.yml"
    base.write_text("version: '3.8'\nservices:\n  x:\n    image: i\n    depends_on: [y]\n"
                    "  y:\n    image: i\n")
    over.write_text("version: '3.8'\nservices:\n  y:\n    depends_on: [x]\n")
    depends, warnings = _depends([base, over])
    assert warnings == ["Ignoring depends_on cycle: x -> y -> x"]
    assert depends == {"x": [], "y": []}


def test_stack_config_keeps_the_cycle_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config([CYCLES / "three.yml"], environ={})["services"]["c"]["depends_on"] == ["a"]
    assert main(["stack", "config", "-c", str(CYCLES / "three.yml")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert ("  a:\n    depends_on:\n      - b\n" in out and "  b:\n    depends_on:\n      c:\n"
            in out and "  c:\n    depends_on:\n      - a\n" in out), out


def test_two_cycles_sharing_a_service_are_both_named() -> None:
    services = {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a", "c"]},
                "c": {"depends_on": ["b", "d"]}, "d": {}, "e": {"depends_on": ["a"]}}
    broken, cycles = break_cycles(services)
    assert cycles == [["a", "b", "a"], ["b", "c", "b"]]
    assert {n: s.get("depends_on") for n, s in broken.items()} == {
        "a": [], "b": [], "c": ["d"], "d": None, "e": ["a"]}
    assert find_cycle(broken) is None
    assert services["b"]["depends_on"] == ["a", "c"]  # the caller's mapping is left as written
    assert broken["d"] is services["d"]


def test_chains_and_diamonds_are_not_cycles() -> None:
    services = {"a": {"depends_on": ["b", "c"]}, "b": {"depends_on": ["d"]},
                "c": {"depends_on": {"d": {}}}, "d": {}}
    assert find_cycle(services) is None
    assert break_cycles(services) == (services, [])
    long_chain = {f"s{i}": {"depends_on": [f"s{i + 1}"]} for i in range(5000)}
    assert find_cycle(long_chain) is None
    long_chain["s5000"] = {"depends_on": ["s0"]}
    cycle = find_cycle(long_chain)
    assert cycle is not None and cycle[0] == cycle[-1] == "s0" and len(cycle) == 5002
    broken, cycles = break_cycles(long_chain)
    assert cycles == [cycle] and all(not s["depends_on"] for s in broken.values())
