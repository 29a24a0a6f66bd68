"""Thousands of mutated compose files: each loads or gives a ShoalError, never a traceback."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.compose.api import load_docker_model, load_stack
from shoal.compose.goyaml import dump
from shoal.errors import ShoalError

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
SOURCES = ["fuzz-base.yml", "seed.yml", "base.yml", "override.yml", "interpolated.yml", "unsupported.yml",
           "full.yml"]
SMALL = SOURCES[:-1]  # structural mutations of full.yml cost more than they find
TEXTS = {name: (FIXTURES / name).read_text() for name in SOURCES}
DATA = {name: yaml.safe_load(text) for name, text in TEXTS.items()}
ENVIRON = {"TAG": "v1", "REPLICAS": "2", "EMPTY": "", "HOME": "/root"}
# SHOAL_FUZZ_EXAMPLES=5000 for a longer run; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

tricky_text = st.sampled_from([
    "", " ", "$", "$$", "${", "${TAG", "${TAG:?boom}", "${UNSET:-x}", "${}", "{{.Task.Slot}}",
    "0", "-1", "1.5", "1e400", "nan", "inf", "99999", "0.0001", "4000:80", "1-2:3-4",
    "a:b:c:d", "::", "/", "./x", "~", "1m30s", "10 seconds", "50M", "50 megabytes", "global",
    "replicated", "dnsrr", "host", "on-failure", "none", "yes", "null", "true", "\n", "\t",
    "é", "web:v1", "UPPER:Case", "x" * 300, "[", "{", "a=b", "=b", "a=", "udp", "80/sctp",
    "[::1]:80:80", "0x10", "0o7", "CMD", "NONE", "9" * 5000, "1" + "0" * 4400 + ":80",
    "${PASS:-$2y$05$oZcj4}", "$1", "${A:+x}",
])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), tricky_text, tricky_text,
    st.text(max_size=10),
)
# Flat containers: a recursive strategy costs more to draw than the file costs to load.
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(tricky_text, scalars, max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _perturb(value: Any, position: int, piece: str) -> Any:
    """A near miss of a valid value: "5s" -> "5 s", "4000:80" -> "4000:8$0", 5 -> "5x"."""
    text = value if isinstance(value, str) else yaml.safe_dump(value).split("\n")[0]
    position %= len(text) + 1
    return text[:position] + piece + text[position:]


def _mutate(data: Any, path: tuple[Any, ...], action: int, value: Any, key: str,
            position: int = 0) -> Any:
    if not path:
        return value if action == 0 else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action >= 5 and not isinstance(parent[last], (dict, list)):
        parent[last] = _perturb(parent[last], position, key[:2])
    elif action == 0:
        parent[last] = value
    elif action == 1:
        del parent[last]
    elif action == 2 and isinstance(parent[last], dict):
        parent[last][key] = value
    elif action == 3 and isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = copy.deepcopy(parent)  # a structure where a value was expected
    return data


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Each example rewrites the file: tmpfs keeps that from timing the disk.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="shoal-fuzz-", dir=shm) as tmp:
        (Path(tmp) / "web.env").write_text("A=from-file\n")
        (Path(tmp) / "key.pem").write_text("not really a key\n")
        yield Path(tmp)


def _load(workdir: Path, text: str) -> None:
    compose = workdir / "docker-compose.yml"
    compose.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_stack([compose], "fuzz", environ=ENVIRON, warn=lambda m: None)
    except ShoalError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(source=st.sampled_from(SMALL), data=st.data())
def test_structurally_mutated_files(workdir: Path, source: str, data: st.DataObject) -> None:
    config = copy.deepcopy(DATA[source])
    for _ in range(data.draw(st.integers(1, 4))):
        paths = list(_paths(config))
        path = data.draw(st.sampled_from(paths))
        config = _mutate(config, path, data.draw(st.integers(0, 7)), data.draw(values),
                         data.draw(st.one_of(tricky_text, st.sampled_from(list(" :-./$%{}")))),
                         data.draw(st.integers(0, 40)))
    try:
        text = yaml.safe_dump(config, allow_unicode=True)
    except (yaml.YAMLError, RecursionError):
        return
    _load(workdir, text)


@FUZZ
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_textually_mutated_files(workdir: Path, source: str, data: st.DataObject) -> None:
    text = TEXTS[source]
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.integers(0, 2))
        piece = data.draw(st.one_of(st.sampled_from(list(":-[]{}&*!|>'\"#%@`$,?\n\t ")),
                                    tricky_text, st.text(max_size=3)))
        if kind == 0:
            text = text[:pos] + piece + text[pos:]
        elif kind == 1:
            text = text[:pos] + text[pos + len(piece) + 1:]
        else:
            text = text[:pos] + piece + text[pos + len(piece):]
    _load(workdir, text)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(text=st.text(max_size=200))
def test_arbitrary_text(workdir: Path, text: str) -> None:
    _load(workdir, text)


def _load_many(workdir: Path, texts: list[str]) -> None:
    """Several -c files, loaded for a deploy and for `stack config` (printed too)."""
    files = []
    for index, text in enumerate(texts):
        compose = workdir / f"part{index}.yml"
        compose.write_text(text, encoding="utf-8", errors="surrogatepass")
        files.append(compose)
    deployed = None
    try:
        deployed = load_stack(files, "fuzz", environ=ENVIRON, warn=lambda m: None).to_dict()
    except ShoalError as exc:
        assert str(exc) and "\n" not in str(exc)
    try:
        printed = dump(load_docker_model(files, environ=ENVIRON, warn=lambda m: None))
    except ShoalError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if deployed is None:
        return  # refused at deploy: docker's printout of such a file need not load again
    # `stack config`'s output, loaded again (it is already interpolated), prints the same
    # and deploys the same.
    again = workdir / "printed.yml"
    again.write_text(printed, encoding="utf-8", errors="surrogatepass")
    try:
        reprinted = dump(load_docker_model([again], environ=ENVIRON, warn=lambda m: None,
                                           interpolation=False))
    except ShoalError as exc:
        # Lists of several files are appended, as docker/cli's merge does; the printout may
        # then repeat an entry the schema wants unique (Docker's printout would too).
        assert len(files) > 1 and "must contain unique items" in str(exc), exc
        return
    assert reprinted == printed
    if "$" not in printed:
        assert load_stack([again], "fuzz", environ=ENVIRON, warn=lambda m: None
                          ).to_dict() == deployed


@FUZZ
@given(sources=st.lists(st.sampled_from(SMALL), min_size=2, max_size=3), data=st.data())
def test_merges_of_mutated_files(workdir: Path, sources: list[str], data: st.DataObject) -> None:
    texts = []
    for source in sources:
        config = copy.deepcopy(DATA[source])
        if data.draw(st.booleans()):
            config.pop("version", None)  # same version more often, so merging is reached
        for _ in range(data.draw(st.integers(0, 3))):
            path = data.draw(st.sampled_from(list(_paths(config))))
            config = _mutate(config, path, data.draw(st.integers(0, 7)), data.draw(values),
                             data.draw(st.one_of(tricky_text, st.sampled_from(list(" :-./$%{}")))),
                             data.draw(st.integers(0, 40)))
        try:
            texts.append(yaml.safe_dump(config, allow_unicode=True))
        except (yaml.YAMLError, RecursionError):
            return
    _load_many(workdir, texts)


env_lines = st.one_of(
    st.sampled_from(["A=1", "export B=2", "C", "D=", "=x", " E = 3 ", "F='q $A'", 'G="\\n$A"',
                     "H=${A:-x}", "I=${UNSET:?boom}", "J=$$", "K=\"unterminated", "# c",
                     "L=a #c", "M: 1", "N=" + "9" * 5000, "TAG=v2", "REPLICAS=x", "é=1",
                     "O=\x00", "P=${", "Q\tR=1"]),
    st.text(max_size=20),
)


@FUZZ
@given(dotenv=st.lists(env_lines, max_size=6), env_file=st.lists(env_lines, max_size=6),
       source=st.sampled_from(["fuzz-base.yml", "full.yml"]))
def test_dotenv_and_env_file_contents(workdir: Path, dotenv: list[str], env_file: list[str],
                                      source: str) -> None:
    (workdir / ".env").write_text("\n".join(dotenv), encoding="utf-8", errors="surrogatepass")
    (workdir / "web.env").write_text("\n".join(env_file), encoding="utf-8",
                                     errors="surrogatepass")
    try:
        _load_many(workdir, [TEXTS[source]])
    finally:
        (workdir / ".env").unlink()
        (workdir / "web.env").write_text("A=from-file\n")


def _scalar_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _scalar_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _scalar_paths(value, (*prefix, index))
    elif prefix:
        yield prefix


@pytest.mark.parametrize("digits", ["9" * 5000, "1" * 4400 + ":80", "80:" + "7" * 4400])
def test_thousands_of_digits_in_every_value(workdir: Path, digits: str) -> None:
    """Every scalar of full.yml replaced in turn by a number Python will not read (int() stops
    at 4,300 digits): a one-line error or a result, never a traceback."""
    base = DATA["full.yml"]
    for path in _scalar_paths(base):
        config = _mutate(copy.deepcopy(base), path, 0, digits, "")
        _load_many(workdir, [yaml.safe_dump(config, allow_unicode=True)])
    long_form = {"version": "3.8", "services": {"web": {"image": "x", "ports": [
        {"target": 80, "published": "9" * 5000}]}}}
    _load_many(workdir, [yaml.safe_dump(long_form)])
