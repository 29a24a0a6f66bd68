"""Schema errors and the supported/unsupported key table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.compose import support
from shoal.compose.api import load_config, load_stack
from shoal.compose.validate import schema
from shoal.errors import ShoalError

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


def _error(tmp_path: Path, text: str) -> str:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(text)
    with pytest.raises(ShoalError) as info:
        load_stack([compose], "s", environ={}, warn=lambda m: None)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(compose), "FILE")


def test_unknown_key_names_file_line_service_and_key() -> None:
    with pytest.raises(ShoalError) as info:
        load_config([FIXTURES / "unknown-key.yml"], environ={}, warn=lambda m: None)
    assert str(info.value) == (f"{FIXTURES / 'unknown-key.yml'}:4: services.web.flavour: "
                               "additional property flavour is not allowed")


def test_enum_error() -> None:
    with pytest.raises(ShoalError) as info:
        load_config([FIXTURES / "schema-error.yml"], environ={}, warn=lambda m: None)
    assert str(info.value).endswith(
        "schema-error.yml:7: services.web.deploy.update_config.order: must be one of: "
        "start-first, stop-first")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  web:\n    image: [x]\n", "FILE:3: services.web.image: must be a string"),
        ("services:\n  web:\n    image: x\n    deploy:\n      replicas: 1.5\n",
         "FILE:5: services.web.deploy.replicas: must be an integer or a string"),
        ("services:\n  web:\n    image: x\n    healthcheck:\n      interval: 5\n",
         "FILE:5: services.web.healthcheck.interval: must be a string"),
        ("services:\n  web:\n    image: x\n    networks:\n      front:\n        aliases: a\n"
         "networks:\n  front:\n", "FILE:6: services.web.networks.front.aliases: must be a list"),
        ("servics:\n  web:\n    image: x\n",
         "FILE:1: servics: additional property servics is not allowed"),
        ("services:\n  web:\n    image: x\n    depends_on:\n      db: {condition: up}\n"
         "  db:\n    image: y\n",
         "FILE:5: services.web.depends_on.db.condition: must be one of: service_started, "
         "service_healthy, service_completed_successfully"),
        ("version: '2.4'\nservices:\n  web:\n    image: x\n",
         "FILE:1: version: unsupported Compose file version: 2.4"),
        ("", "FILE: empty compose file"),
        ("- a\n", "FILE: Top-level object must be a mapping"),
        ("services:\n  web:\n    image: x\n    image: y\n",
         "FILE:4: invalid YAML: mapping key 'image' already defined at line 3"),
        ("services:\n  web:\n    image: x\n   ports: [\n", "FILE:4: invalid YAML"),
        ("services:\n  web:\n    image: Web:V1\n",
         "FILE:3: services.web.image: invalid image reference for service web: invalid "
         "reference format: repository name (library/Web) must be lowercase"),  # docker 28.2.2's words
    ],
)
def test_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ShoalError, match="no such file or directory"):
        load_config([tmp_path / "nope.yml"], environ={}, warn=lambda m: None)


def test_no_files() -> None:
    with pytest.raises(ShoalError, match=r"specify a Compose file \(with --compose-file\)"):
        load_config([], environ={}, warn=lambda m: None)


def test_unsupported_keys_warned_by_name_with_dockers_wording() -> None:
    warnings: list[str] = []
    stack = load_stack([FIXTURES / "unsupported.yml"], "s", environ={}, warn=warnings.append)
    assert warnings == [
        "Ignoring unsupported options: ports.host_ip, privileged, profiles, shm_size\n",
        "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not "
        "supported.\n",
    ]
    assert stack.services["s_web"].endpoint.ports[0].published == 8080


def test_forbidden_key_is_an_error_naming_file_and_line() -> None:
    with pytest.raises(ShoalError) as info:
        load_stack([FIXTURES / "forbidden.yml"], "s", environ={}, warn=lambda m: None)
    assert str(info.value) == (
        f"{FIXTURES / 'forbidden.yml'}:4: compose file contains unsupported options: "
        "mem_limit: Set resource limits using deploy.resources")


def test_support_table_covers_every_service_and_top_level_key_of_the_schema() -> None:
    spec = schema()
    service_keys = set(spec["definitions"]["service"]["properties"])
    covered = {row.key for row in support.TABLE if row.scope == "service"}
    assert service_keys - covered == set()
    assert set(spec["properties"]) - {r.key for r in support.TABLE if r.scope == "top"} == set()
    deploy_keys = set(spec["definitions"]["deployment"]["properties"])
    assert deploy_keys - {r.key for r in support.TABLE if r.scope == "service.deploy"} == set()
    for row in support.TABLE:
        assert row.status in (support.SUPPORTED, support.UNSUPPORTED, support.DEPRECATED,
                              support.FORBIDDEN, support.IGNORED)
        if row.status != support.SUPPORTED:
            assert row.reason, row


def test_a_key_missing_from_the_table_is_still_warned() -> None:
    found = support.scan({"services": {"web": {"image": "x", "brand_new_key": 1}}})
    assert found.sorted(support.UNSUPPORTED) == ["brand_new_key"]
    assert found.paths["brand_new_key"] == ("services", "web", "brand_new_key")


def test_support_matrix_renders_for_the_docs() -> None:
    text = support.markdown()
    assert "| service | `privileged` | unsupported |" in text
    assert "| service | `image` | supported |" in text
    assert len(text.splitlines()) == len(support.TABLE) + 2


def test_forbidden_key_in_override_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("services:\n  web:\n    volumes_from: [db]\n")
    with pytest.raises(ShoalError) as info:
        load_stack([FIXTURES / "seed.yml", tmp_path / "b.yml"], "s", environ={},
                   warn=lambda m: None)
    assert str(info.value).startswith(f"{tmp_path / 'b.yml'}:3: compose file contains "
                                      "unsupported options: volumes_from: To share a volume")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    environment: 5\n", "services.web.environment: must be a mapping or a list"),
        ("    ports: [[80]]\n", "services.web.ports[0]: must be a number, an integer, a string "
                               "or a mapping"),
        ("    build: 5\n", "services.web.build: must be a string or a mapping"),
    ],
)
def test_one_of_errors_say_what_is_allowed(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _error(tmp_path, "services:\n  web:\n    image: x\n" + body)


def test_bundled_schema_is_the_official_one() -> None:
    data = schema()
    assert data["$id"] == "compose_spec.json"
    assert data["title"] == "Compose Specification"
    json.dumps(data)


def test_nested_unsupported_keys_are_named_with_their_section(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text(
        "name: myproject\n"
        "services:\n  web:\n    image: web:v1\n    networks:\n      front:\n"
        "        ipv4_address: 10.0.0.5\n"
        "    deploy:\n      resources:\n        reservations:\n"
        "          devices: [{capabilities: [gpu]}]\n"
        "    x-custom: ignored-silently\n"
        "networks:\n  front:\n    enable_ipv6: true\n"
    )
    warnings: list[str] = []
    load_stack([compose], "s", environ={}, warn=warnings.append)
    assert warnings == ["Ignoring unsupported options: deploy.resources.reservations.devices, "
                        "name, networks.enable_ipv6\n"]  # ipv4_address: silently, as Docker


def test_cgroupns_mode_of_dockers_schema_is_warned_not_refused(tmp_path: Path) -> None:
    """docker/cli's 3.9+ schemas allow a service's cgroupns_mode (the compose-spec dropped it
    for `cgroup`): docker 28.2.2's stack deploy warns of it and deploys, and so does shoal now
    (it refused the file: 'additional property cgroupns_mode is not allowed'); stack config
    prints it as docker's does. A value that is not a string is still refused."""
    from shoal.compose.api import load_docker_model
    from shoal.compose.goyaml import dump

    compose = tmp_path / "docker-compose.yml"
    compose.write_text('version: "3.9"\nservices:\n  web:\n    image: nginx\n'
                       '    cgroupns_mode: host\n')
    warnings: list[str] = []
    stack = load_stack([compose], "s", environ={}, warn=warnings.append)
    assert list(stack.services) == ["s_web"]
    assert warnings == ["Ignoring unsupported options: cgroupns_mode\n"]
    assert dump(load_docker_model([compose], environ={}, warn=warnings.append)) == (
        'version: "3.9"\nservices:\n  web:\n    cgroupns_mode: host\n    image: nginx\n')
    assert _error(tmp_path, 'services:\n  web:\n    image: nginx\n    cgroupns_mode: [host]\n') \
        == "FILE:4: services.web.cgroupns_mode: must be a string"


def test_keys_docker_takes_without_a_word_are_not_warned(tmp_path: Path) -> None:
    """docker 28.2.2's stack deploy says nothing of isolation and credential_spec (its convert
    passes them to Swarm; they mean something on Windows nodes only) nor of a network's
    ipv4_address/ipv6_address (never read): shoal warned 'Ignoring unsupported options:
    credential_spec, isolation, networks.ipv4_address, networks.ipv6_address'."""
    compose = tmp_path / "c.yml"
    (tmp_path / "cs.json").write_text("{}")
    compose.write_text(
        'version: "3.13"\nservices:\n  web:\n    image: nginx\n    isolation: default\n'
        "    credential_spec: {config: cs}\n    networks:\n      front:\n"
        "        ipv4_address: 10.0.0.5\n        ipv6_address: 'fd00::5'\n"
        "networks:\n  front:\nconfigs:\n  cs:\n    file: ./cs.json\n")
    warnings: list[str] = []
    stack = load_stack([compose], "s", environ={}, warn=warnings.append)
    assert warnings == []
    assert [n.target for n in stack.services["s_web"].networks] == ["s_front"]
