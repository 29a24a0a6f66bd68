"""The generated fast schema check and jsonschema give the same verdict: a file the fast check
accepts is one jsonschema accepts (fastcheck.py relies on it), on the fixtures and on thousands
of mutated configs from the fuzz tests' mutations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shoal.compose import fastcheck, validate
from test_compose_fuzz import DATA, FIXTURES, FUZZ, SMALL, _mutate, _paths, tricky_text, values


def _jsonschema_valid(config: Any) -> bool:
    return not any(True for _ in jsonschema.Draft7Validator(validate.schema()).iter_errors(config))


def test_generated_check_is_fresh_and_loads(tmp_path: Path) -> None:
    target = fastcheck.generate(tmp_path / "_schema_check.py")
    assert fastcheck._fresh(target)
    assert fastcheck._load() is not None, "the fast check could not be generated or imported"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.yml")))
def test_same_verdict_on_every_fixture(name: str) -> None:
    try:
        config = yaml.safe_load((FIXTURES / name).read_text())
    except yaml.YAMLError:
        pytest.skip("not YAML: nothing to validate")
    assert fastcheck.is_valid(config) == _jsonschema_valid(config)


def test_a_wrong_type_is_refused_by_both() -> None:
    config = {"services": {"web": {"image": "web:v1", "deploy": {"mode": ["global"]}}}}
    assert not fastcheck.is_valid(config) and not _jsonschema_valid(config)


@FUZZ
@given(source=st.sampled_from(SMALL), data=st.data())
def test_same_verdict_on_mutated_configs(source: str, data: st.DataObject) -> None:
    config = copy.deepcopy(DATA[source])
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(list(_paths(config))))
        config = _mutate(config, path, data.draw(st.integers(0, 7)), data.draw(values),
                         data.draw(st.one_of(tricky_text, st.sampled_from(list(" :-./$%{}")))),
                         data.draw(st.integers(0, 40)))
    assert fastcheck.is_valid(config) == _jsonschema_valid(config)
