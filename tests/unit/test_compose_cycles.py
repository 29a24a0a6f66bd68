"""`depends_on` cycles are refused at load, naming the cycle (compose-go's wording)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.compose.api import load_config, load_stack
from shoal.compose.cycles import find_cycle
from shoal.errors import ShoalError

CYCLES = Path(__file__).parent / "fixtures" / "compose" / "cycles"


def _quiet(_: str) -> None:
    pass


def test_three_service_cycle_is_refused_by_deploy_and_config() -> None:
    for load in (lambda: load_stack([CYCLES / "three.yml"], "app", environ={}, warn=_quiet),
                 lambda: load_config([CYCLES / "three.yml"], environ={}, warn=_quiet)):
        with pytest.raises(ShoalError, match=r"dependency cycle detected: a -> b -> c -> a$"):
            load()


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(ShoalError, match=r"self.yml: dependency cycle detected: web -> web$"):
        load_stack([CYCLES / "self.yml"], "app", environ={}, warn=_quiet)


def test_cycle_made_by_merging_two_files(tmp_path: Path) -> None:
    base = tmp_path / "base.yml"
    over = tmp_path / "over.yml"
    base.write_text("version: '3.8'\nservices:\n  x:\n    image: i\n    depends_on: [y]\n"
                    "  y:\n    image: i\n")
    over.write_text("version: '3.8'\nservices:\n  y:\n    depends_on: [x]\n")
    with pytest.raises(ShoalError, match="dependency cycle detected: x -> y -> x"):
        load_stack([base, over], "app", environ={}, warn=_quiet)


def test_chains_and_diamonds_are_not_cycles() -> None:
    services = {"a": {"depends_on": ["b", "c"]}, "b": {"depends_on": ["d"]},
                "c": {"depends_on": {"d": {}}}, "d": {}}
    assert find_cycle(services) is None
    long_chain = {f"s{i}": {"depends_on": [f"s{i + 1}"]} for i in range(5000)}
    assert find_cycle(long_chain) is None
    long_chain["s5000"] = {"depends_on": ["s0"]}
    cycle = find_cycle(long_chain)
    assert cycle is not None and cycle[0] == cycle[-1] == "s0" and len(cycle) == 5002
