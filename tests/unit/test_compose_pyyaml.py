"""compose/pyyaml.py imports PyYAML with its own patterns compiled at first use: PyYAML must
behave exactly as before for every other reader of YAML, and `re` must be left as it was."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys

import pytest
import yaml

from shoal.compose import pyyaml  # noqa: F401 - the import under test
from shoal.compose.load import parse_yaml


def test_re_compile_is_restored() -> None:
    assert re.compile is pyyaml._compile
    assert isinstance(re.compile("a+"), re.Pattern)


def test_pure_python_reader_still_refuses_control_characters() -> None:
    # The Reader's NON_PRINTABLE is the pattern deferred to its first use.
    with pytest.raises(yaml.reader.ReaderError, match="special characters are not allowed"):
        yaml.load("a: b\x01", Loader=yaml.SafeLoader)


def test_default_resolver_keeps_yaml_1_1() -> None:
    # PyYAML's own resolver (deferred patterns): YAML 1.1 booleans, base 60, timestamps.
    assert yaml.safe_load("a: yes\nb: 1:30\nc: 2001-12-14\nd: 0x1f\ne: 1_000") == {
        "a": True, "b": 90, "c": datetime.date(2001, 12, 14), "d": 31, "e": 1000}
    assert yaml.safe_dump({"a": "yes", "b": "1.5"}) == "a: 'yes'\nb: '1.5'\n"


def test_compose_loader_keeps_yaml_1_2() -> None:
    doc, _ = parse_yaml("a: yes\nb: 4000:80\nc: 2001-12-14\nd: on\ne: 0o17\n", "compose.yml")
    assert doc == {"a": "yes", "b": "4000:80", "c": "2001-12-14", "d": "on", "e": 15}


def test_deploy_path_defers_the_reader_pattern() -> None:
    # What the module is for: loading the compose package compiles no NON_PRINTABLE (~9 ms).
    code = "import re, shoal.compose, yaml; print(isinstance(yaml.reader.Reader.NON_PRINTABLE, re.Pattern))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
