"""`shoal stack config` prints the merged, interpolated file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shoal.cli.main import main
from shoal.compose.api import load_config

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


def test_stack_config_prints_merged_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["stack", "config", "-c", str(FIXTURES / "base.yml"),
               "-c", str(FIXTURES / "override.yml")])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    printed = yaml.safe_load(out)
    assert printed["services"]["web"]["image"] == "web:v2"
    assert [p["published"] for p in printed["services"]["web"]["ports"]] == [7000, 8080, 9000]
    # docker's typed model: version always, services by name, struct field order.
    assert out.startswith('version: "3.13"\nservices:\n  cache:\n    image: redis:7\n  web:\n'
                          "    command:\n      - gunicorn\n")
    assert '        limits:\n          cpus: "0.5"\n          memory: "52428800"\n' in out


def test_stack_config_env_file_and_skip_interpolation(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAG", raising=False)
    compose = str(FIXTURES / "envdir" / "docker-compose.yml")
    assert main(["stack", "config", "-c", compose,
                 "--env-file", str(FIXTURES / "envdir" / "prod.env")]) == 0
    out, err = capsys.readouterr()
    assert "image: web:prod" in out and err == ""  # an --env-file is what the user asked for
    assert main(["stack", "config", "-c", compose, "--skip-interpolation"]) == 0
    out, err = capsys.readouterr()
    assert "image: web:${TAG}" in out
    # docker stack never reads .env: shoal does, and says which one on stderr (one line).
    assert err == (f"Reading variables from {FIXTURES / 'envdir' / '.env'} "
                   "(docker stack deploy does not read .env files)\n")


def test_stack_config_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["stack", "config", "-c", str(FIXTURES / "unknown-key.yml")])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err == (f"Error: {FIXTURES / 'unknown-key.yml'}:4: services.web.flavour: "
                   "additional property flavour is not allowed\n")


def test_stack_config_without_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "config"]) == 1
    assert capsys.readouterr().err == "Error: specify a Compose file (with --compose-file)\n"


def test_stack_config_reads_stdin(shoal) -> None:  # type: ignore[no-untyped-def]
    result = shoal("stack", "config", "-c", "-",
                   input="services:\n  web:\n    image: web:v1\n    ports: ['4000:80']\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ('version: "3.13"\nservices:\n  web:\n    image: web:v1\n'
                             "    ports:\n      - mode: ingress\n        target: 80\n"
                             "        published: 4000\n        protocol: tcp\n")


def test_anchors_merge_keys_and_extension_fields(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text(
        "x-defaults: &defaults\n"
        "  image: web:v1\n"
        "  deploy: {replicas: 3}\n"
        "  x-note: kept out of the spec\n"
        "services:\n"
        "  web:\n"
        "    <<: *defaults\n"
        "    deploy: {replicas: 5}\n"
        "  worker:\n"
        "    <<: *defaults\n"
    )
    config = load_config([compose], environ={}, warn=lambda m: None)
    assert config["services"]["web"]["deploy"] == {"replicas": 5}
    assert config["services"]["worker"]["image"] == "web:v1"


def test_merge_key_lists_as_yaml_v3_reads_them() -> None:
    """`<<: [*a, *b]`: a's keys win over b's, the mapping's own over both (the YAML merge
    spec, yaml.v3, docker stack config); with libyaml's parser PyYAML 6.0.4 let b win, for
    keys longer than one character. A second `<<` in a mapping is a duplicate key there."""
    from shoal.compose.errors import ComposeError
    from shoal.compose.load import parse_yaml

    text = ("x-a: &a {image: a, environment: {A: '1'}}\n"
            "x-b: &b {image: b, environment: {B: '2'}, user: bee}\n"
            "services:\n"
            "  one:\n    <<: [*a, *b]\n"
            "  two:\n    <<: [*b, *a]\n    user: own\n")
    data, _ = parse_yaml(text, "f.yml")
    assert data["services"] == {
        "one": {"image": "a", "environment": {"A": "1"}, "user": "bee"},
        "two": {"image": "b", "environment": {"B": "2"}, "user": "own"},
    }
    with pytest.raises(ComposeError) as info:
        parse_yaml("x-a: &a {image: a}\nservices:\n  one:\n    <<: *a\n    <<: *a\n", "f.yml")
    assert str(info.value) == "f.yml:5: invalid YAML: mapping key '<<' already defined at line 4"


@pytest.mark.parametrize("text", [
    "services:\n  a:\n    image: x\n---\n",  # a trailing separator
    "---\nservices:\n  a:\n    image: x\n---\nservices:\n  b:\n    image: y\n",
    "services:\n  a:\n    image: x\n---\n: : bad: [\n",  # never parsed, as in yaml.v3
])
def test_only_the_first_document_is_read(text: str) -> None:
    """yaml.v3's Unmarshal decodes a file's first document and stops: docker stack config
    prints service a for each of these; shoal refused them ('but found another document')."""
    from shoal.compose.load import parse_yaml

    data, _ = parse_yaml(text, "f.yml")
    assert data == {"services": {"a": {"image": "x"}}}


def test_local_tags_are_read_as_untagged_values() -> None:
    """compose-spec's `!reset` and `!override` (and any local tag) mean nothing to yaml.v3
    decoding into docker/cli's map: docker stack config prints `ports: !reset []` as no ports
    and `labels: !override {a: b}` as the labels, a tagged scalar as its text; shoal refused
    the file ('could not determine a constructor for the tag')."""
    from shoal.compose.load import parse_yaml

    data, _ = parse_yaml("services:\n  a:\n    image: !custom x\n    ports: !reset []\n"
                         "    labels: !override {a: b}\n    environment:\n      A: !foo 12\n"
                         "      B: !bar\n",
                         "f.yml")
    assert data == {"services": {"a": {"image": "x", "ports": [], "labels": {"a": "b"},
                                       "environment": {"A": "12", "B": ""}}}}


def test_stack_deploy_loader_says_which_dotenv_it_read() -> None:
    """The line reaches `stack deploy` as a warning (shoald returns warnings to the CLI)."""
    from shoal.compose.api import load_stack

    warnings: list[str] = []
    load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "app", environ={},
               warn=warnings.append)
    assert warnings == [f"Reading variables from {FIXTURES / 'envdir' / '.env'} "
                        "(docker stack deploy does not read .env files)"]
    warnings.clear()
    load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "app", environ={},
               env_files=[FIXTURES / "envdir" / "prod.env"], warn=warnings.append)
    assert warnings == []
