"""Several -c files merged as `docker compose -f a -f b` merges them."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.compose.api import load_config, load_stack
from shoal.compose.merge import merge_configs
from shoal.errors import ShoalError
from shoal.model import NetworkAttachment, PortConfig
from shoal.runtime.spec import Mount

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


@pytest.fixture(scope="module")
def merged() -> dict:
    return load_config([FIXTURES / "base.yml", FIXTURES / "override.yml"], environ={},
                       warn=lambda m: None)


def test_scalars_replaced_and_lists_of_commands_not_appended(merged: dict) -> None:
    web = merged["services"]["web"]
    assert web["image"] == "web:v2"
    assert web["command"] == ["gunicorn", "app"]


def test_environment_and_labels_merge_by_name(merged: dict) -> None:
    web = merged["services"]["web"]
    assert web["environment"] == {"A": "1", "B": "20", "C": "3"}
    assert web["labels"] == {"keep": "base", "added": "over"}


def test_ports_and_volumes_merge_by_key(merged: dict) -> None:
    web = merged["services"]["web"]
    # docker/cli's merge.go: keyed by published port (typed long syntax), sorted by that key.
    assert web["ports"] == [
        {"mode": "ingress", "target": 70, "published": 7000, "protocol": "tcp"},
        {"mode": "ingress", "target": 80, "published": 8080, "protocol": "tcp"},
        {"mode": "ingress", "target": 9000, "published": 9000, "protocol": "tcp"}]
    assert web["volumes"] == ["data:/data", "./conf2:/etc/app"]  # same target: replaced


def test_mappings_merge_deeply_and_services_are_added(merged: dict) -> None:
    web = merged["services"]["web"]
    assert web["deploy"] == {"replicas": 4, "resources": {"limits": {"memory": "50M",
                                                                     "cpus": "0.5"}}}
    assert web["networks"] == {"front": None, "back": {"aliases": ["api"]}}
    assert set(merged["services"]) == {"web", "cache"}
    assert set(merged["networks"]) == {"front", "back"}


def test_merged_stack() -> None:
    stack = load_stack([FIXTURES / "base.yml", FIXTURES / "override.yml"], "app", environ={},
                       warn=lambda m: None)
    web = stack.services["app_web"]
    assert web.replicas == 4
    assert web.resources.limits.nano_cpus == 500_000_000
    assert web.resources.limits.memory_bytes == 50 << 20
    assert web.endpoint.ports == [PortConfig(70, 7000), PortConfig(80, 8080),
                                  PortConfig(9000, 9000)]
    assert web.networks == [NetworkAttachment("app_back", ["api", "web"]),
                            NetworkAttachment("app_front", ["web"])]
    assert web.mounts[1] == Mount(type="bind", target="/etc/app", source=str(FIXTURES / "conf2"))
    # Relative paths resolve against the first file's directory.
    assert sorted(stack.services) == ["app_cache", "app_web"]


@pytest.mark.parametrize(
    ("base", "over", "expected"),
    [
        ({"entrypoint": ["a"]}, {"entrypoint": ["b"]}, {"entrypoint": ["b"]}),
        ({"healthcheck": {"test": ["CMD", "a"], "retries": 2}},
         {"healthcheck": {"test": ["CMD", "b"]}},
         {"healthcheck": {"test": ["CMD", "a", "CMD", "b"], "retries": 2}}),  # mergo appends
        ({"environment": ["A=1"]}, {"environment": ["A=2", "B"]},
         {"environment": {"A": "2", "B": None}}),
        ({"dns": "8.8.8.8"}, {"dns": ["1.1.1.1", "8.8.8.8"]},
         {"dns": ["8.8.8.8", "1.1.1.1", "8.8.8.8"]}),  # mergo appends, keeps repeats
        ({"cap_add": ["NET_ADMIN"]}, {"cap_add": ["SYS_TIME", "NET_ADMIN"]},
         {"cap_add": ["NET_ADMIN", "SYS_TIME", "NET_ADMIN"]}),
        ({"build": "."}, {"build": {"dockerfile": "Dockerfile.dev"}},
         {"build": {"context": ".", "dockerfile": "Dockerfile.dev"}}),
        ({"depends_on": ["db"]}, {"depends_on": {"cache": {"condition": "service_healthy"}}},
         {"depends_on": {"db": {"condition": "service_started", "required": True},
                         "cache": {"condition": "service_healthy"}}}),
        ({"logging": {"driver": "json-file", "options": {"max-size": "1m"}}},
         {"logging": {"driver": "syslog"}}, {"logging": {"driver": "syslog"}}),
        ({"logging": {"driver": "json-file", "options": {"max-size": "1m"}}},
         {"logging": {"options": {"max-file": "3"}}},
         {"logging": {"driver": "json-file", "options": {"max-size": "1m", "max-file": "3"}}}),
        ({"secrets": ["a", {"source": "b", "target": "t"}]},
         {"secrets": [{"source": "a", "target": "/run/secrets/a", "mode": 0o400}]},
         {"secrets": [{"source": "a", "target": "/run/secrets/a", "mode": 0o400},
                      {"source": "b", "target": "t"}]}),
        ({"ports": [{"target": 80, "published": 8080}]},
         {"ports": [{"target": 80, "published": 8080, "mode": "host"}]},
         {"ports": [{"target": 80, "published": 8080, "mode": "host"}]}),
        ({"image": "a"}, {"image": None}, {"image": "a"}),
    ],
)
def test_merge_rules(base: dict, over: dict, expected: dict) -> None:
    result = merge_configs([{"services": {"s": base}}, {"services": {"s": over}}])
    assert result == {"services": {"s": expected}}


def test_same_target_within_one_file_is_kept_and_the_deploy_refuses_it(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("version: '3.8'\nservices:\n  web:\n    image: x\n    volumes:\n"
                       "      - a:/data\n      - b:/data\n      - /srv:/srv\nvolumes:\n  a:\n  b:\n")
    config = load_config([compose], environ={}, warn=lambda m: None)
    assert config["services"]["web"]["volumes"] == ["a:/data", "b:/data", "/srv:/srv"]
    with pytest.raises(ShoalError) as info:
        load_stack([compose], "app", environ={}, warn=lambda m: None)
    assert str(info.value) == (f"{compose}:7: services.web.volumes[1]: "
                               "ContainerSpec: duplicate mount point: /data")


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("    ports: ['8080:80', '8080:81']\n", "services.web.ports: EndpointSpec: duplicate published ports provided"),
        ("    ports: ['8080:80', '8080:80/udp', '80', '81']\n", None),
        ("    secrets: [s, s]\n", "services.web.secrets[1]: secret references 'app_s' and 'app_s' have a conflicting target: 's'"),
        ("    secrets: [s, {source: t, target: s}]\n", "services.web.secrets[1]: secret references 'app_s' and 'app_t' have a conflicting target: 's'"),
        ("    configs: [s, s]\n", "services.web.configs[1]: config references 'app_s' and 'app_s' have a conflicting target: 's'"),
        # docker/cli never converts a service's `tmpfs:`, so it clashes with nothing
        ("    tmpfs: [/run]\n    volumes: ['/x:/run']\n", None),
    ],
)
def test_duplicates_within_one_file_are_refused_as_swarm_does(tmp_path: Path, service: str,
                                                              message: str | None) -> None:
    compose = tmp_path / "c.yml"
    (tmp_path / "s").write_text("x")
    compose.write_text("version: '3.8'\nservices:\n  web:\n    image: x\n" + service +
                       "secrets:\n  s: {file: ./s}\n  t: {file: ./s}\n"
                       "configs:\n  s: {file: ./s}\n")
    config = load_config([compose], environ={}, warn=lambda m: None)
    assert config["services"]["web"]  # stack config prints the file, duplicates and all
    if message is None:
        load_stack([compose], "app", environ={}, warn=lambda m: None)
        return
    with pytest.raises(ShoalError) as info:
        load_stack([compose], "app", environ={}, warn=lambda m: None)
    assert str(info.value).endswith(message)


def test_type_clash_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("services:\n  web:\n    image: x\n    deploy: {replicas: 1}\n")
    (tmp_path / "b.yml").write_text("services:\n  web:\n    image: x\n    ports: ['80']\n"
                                    "x-thing: 1\n")
    (tmp_path / "c.yml").write_text("services:\n  web:\n    ports: {a: 1}\n")
    with pytest.raises(ShoalError, match=r"c\.yml:3: services\.web\.ports: must be a list"):
        load_config([tmp_path / "a.yml", tmp_path / "c.yml"], environ={}, warn=lambda m: None)


def test_schema_error_in_second_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("services:\n  web:\n    deploy:\n      replicas: [2]\n")
    with pytest.raises(ShoalError) as info:
        load_config([FIXTURES / "seed.yml", tmp_path / "b.yml"], environ={}, warn=lambda m: None)
    assert str(info.value) == (f"{tmp_path / 'b.yml'}:4: services.web.deploy.replicas: "
                               "must be an integer or a string")


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ("version: '3.7'\n", "version: '3.3'\n", "3.7 and 3.3"),
        ("", "version: '3.8'\n", "3.13 and 3.8"),  # no version is docker's newest, 3.13
        ("version: '3'\n", "version: '3.8'\n", "3.13 and 3.8"),
    ],
)
def test_files_of_different_versions_are_refused(tmp_path: Path, first: str, second: str,
                                                 message: str) -> None:
    (tmp_path / "a.yml").write_text(first + "services:\n  web:\n    image: x\n")
    (tmp_path / "b.yml").write_text(second + "services:\n  web:\n    image: y\n")
    for load in (load_config, lambda *a, **k: load_stack(*a[:1], "app", **k)):
        with pytest.raises(ShoalError) as info:
            load([tmp_path / "a.yml", tmp_path / "b.yml"], environ={}, warn=lambda m: None)
        assert str(info.value) == (f"{tmp_path / 'b.yml'}: version mismatched between two "
                                   f"composefiles : {message}")


def test_same_version_spelt_differently_merges(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("version: '3'\nservices:\n  web:\n    image: x\n")
    (tmp_path / "b.yml").write_text("services:\n  web:\n    image: y\n")
    assert load_config([tmp_path / "a.yml", tmp_path / "b.yml"], environ={},
                       warn=lambda m: None)["services"]["web"]["image"] == "y"


def test_top_level_objects_are_replaced_whole(tmp_path: Path) -> None:
    """docker/cli merge.go: mergo.Map replaces a network declared again, even by an empty one."""
    (tmp_path / "a.yml").write_text(
        "services:\n  web:\n    image: x\n    networks: [front]\n"
        "networks:\n  front:\n    driver_opts: {encrypted: ''}\n    labels: [a=b]\n")
    (tmp_path / "b.yml").write_text("services:\n  web:\n    image: y\nnetworks:\n  front:\n")
    config = load_config([tmp_path / "a.yml", tmp_path / "b.yml"], environ={},
                         warn=lambda m: None)
    assert config["networks"] == {"front": None}
    stack = load_stack([tmp_path / "a.yml", tmp_path / "b.yml"], "app", environ={},
                       warn=lambda m: None)
    assert stack.networks["app_front"].labels.get("a") is None
