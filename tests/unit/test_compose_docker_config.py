"""`stack config` prints docker/cli's typed model as `docker stack config` does: checked byte
for byte against docker/cli's own golden (cli/compose/loader/testdata/full-example.yaml.golden,
v28.5.2, made from full-example.yml with HOME=/bar, QUX set and the working directory /foo),
and its output is a fixed point: loaded again, it prints the same and deploys the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shoal.compose.api import load_docker_model, load_stack
from shoal.compose.goyaml import dump, go_duration, go_float, sort_keys
from shoal.errors import ShoalError

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
DOCKER = FIXTURES / "docker-full"
GOLDEN_ENV = {"HOME": "/bar", "QUX": "qux_from_environment"}


def _config(files: list[Path], environ: dict[str, str]) -> str:
    return dump(load_docker_model(files, environ=environ, warn=lambda m: None))


def test_full_example_is_dockers_golden_byte_for_byte() -> None:
    printed = _config([DOCKER / "full-example.yml"], GOLDEN_ENV)
    # docker's test loads with the working directory /foo; ours is the file's directory.
    assert printed.replace(str(DOCKER), "/foo") == (DOCKER / "full-example.yaml.golden").read_text()


CASES = [
    (["docker-full/full-example.yml"], GOLDEN_ENV),
    (["full.yml"], {"FROM_HOST": "h"}),
    (["base.yml", "override.yml"], {}),
    (["seed.yml"], {}),
    (["interpolated.yml"], {"TAG": "v2", "REPLICAS": "3"}),
]


@pytest.mark.parametrize(("names", "environ"), CASES)
def test_output_is_a_fixed_point(tmp_path: Path, names: list[str], environ: dict[str, str]
                                 ) -> None:
    copy = tmp_path / "project"
    shutil.copytree(FIXTURES, copy)
    files = [copy / name for name in names]
    first = _config(files, environ)
    again = files[0].parent / "printed.yml"
    again.write_text(first)
    # Already interpolated: a `$` it prints is a literal (docker's output is not re-escaped).
    assert dump(load_docker_model([again], environ=environ, warn=lambda m: None,
                                  interpolation=False)) == first


@pytest.mark.parametrize(("names", "environ"), CASES[1:4])
def test_output_deploys_the_same(tmp_path: Path, names: list[str], environ: dict[str, str]
                                 ) -> None:
    copy = tmp_path / "project"
    shutil.copytree(FIXTURES, copy)
    files = [copy / name for name in names]
    again = files[0].parent / "printed.yml"
    again.write_text(_config(files, environ))
    original = load_stack(files, "app", environ=environ, warn=lambda m: None).to_dict()
    reloaded = load_stack([again], "app", environ=environ, warn=lambda m: None).to_dict()
    assert reloaded == original


def test_typed_model_forms(tmp_path: Path) -> None:
    (tmp_path / "web.env").write_text('A="quoted"\nB=from-file \n# comment\nC\nE=\n')
    compose = tmp_path / "c.yml"
    compose.write_text(
        "version: '3.8'\n"
        "services:\n"
        "  web:\n"
        "    image: x\n"
        "    command: sh -c 'echo hi'\n"
        "    env_file: web.env\n"
        "    environment: [D=1, E, B=from-environment]\n"
        "    networks: [front]\n"
        "    ports: ['8000-8001:80-81/udp', '9000']\n"
        "    volumes: ['./data:/data:ro', 'named:/named:nocopy']\n"
        "    stop_grace_period: 90s\n"
        "    deploy:\n"
        "      resources: {limits: {memory: 1g}}\n"
        "      update_config: {delay: 1h, monitor: 0.5s, max_failure_ratio: 0.1}\n"
        "    healthcheck: {test: curl -f localhost}\n"
        "networks:\n  front:\nvolumes:\n  named:\n")
    printed = _config([compose], {"C": "from-env", "E": "e-env"})
    assert printed == f'''version: "3.8"
services:
  web:
    command:
      - sh
      - -c
      - echo hi
    deploy:
      update_config:
        delay: 1h0m0s
        monitor: 500ms
        max_failure_ratio: 0.1
      resources:
        limits:
          memory: "1073741824"
    environment:
      A: '"quoted"'
      B: from-environment
      C: from-env
      D: "1"
      E: e-env
    env_file:
      - web.env
    healthcheck:
      test:
        - CMD-SHELL
        - curl -f localhost
    image: x
    networks:
      front: null
    ports:
      - mode: ingress
        target: 80
        published: 8000
        protocol: udp
      - mode: ingress
        target: 81
        published: 8001
        protocol: udp
      - mode: ingress
        target: 9000
        protocol: tcp
    stop_grace_period: 1m30s
    volumes:
      - type: bind
        source: {tmp_path}/data
        target: /data
        read_only: true
      - type: volume
        source: named
        target: /named
        volume:
          nocopy: true
networks:
  front: {{}}
volumes:
  named: {{}}
'''
    # The deploy reads env_file as docker does: quotes and trailing spaces are the value's.
    env = load_stack([compose], "app", environ={"C": "from-env"}, warn=lambda m: None
                     ).services["app_web"].env
    assert 'A="quoted"' in env and "B=from-environment" in env and "C=from-env" in env


def test_missing_env_file_fails_as_docker_does(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: x\n    env_file: [./missing.env]\n")
    for load in (lambda: load_docker_model([compose], environ={}, warn=lambda m: None),
                 lambda: load_stack([compose], "app", environ={}, warn=lambda m: None)):
        with pytest.raises(ShoalError) as info:
            load()
        assert str(info.value) == (f"{compose}:4: services.web.env_file[0]: open "
                                   f"{tmp_path / 'missing.env'}: no such file or directory")


@pytest.mark.parametrize(("ns", "text"), [(0, "0s"), (90 * 10**9, "1m30s"), (10**9 // 2, "500ms"),
                                          (3600 * 10**9, "1h0m0s"), (1500, "1.5µs"),
                                          (36 * 10**8, "3.6s")])
def test_go_durations(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize(("value", "text"), [(0.3, "0.3"), (1e6, "1e+06"), (123456.0, "123456"),
                                             (1e-05, "1e-05"), (0.0001, "0.0001"), (3.0, "3")])
def test_go_floats(value: float, text: str) -> None:
    assert go_float(value) == text


def test_yaml_v3_key_order() -> None:
    assert sort_keys(["b", "a10", "a2", "a-b", "ab", "A"]) == ["A", "a-b", "a2", "a10", "ab", "b"]


def test_float_values_are_strings_as_go_prints_them(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: x\n    environment: {A: 1000000.0, B: 1.0, "
                       "C: 0.5}\n    deploy: {labels: {big: 1e6}}\n")
    web = load_stack([compose], "app", environ={}, warn=lambda m: None).services["app_web"]
    assert web.env == ["A=1e+06", "B=1", "C=0.5"]
    assert web.labels["big"] == "1e+06"
    assert '      A: "1e+06"\n' in _config([compose], {})


def test_env_file_of_a_later_file_overrides_an_earlier_environment(tmp_path: Path) -> None:
    """docker/cli reads each file's env_file into its environment before merging the files."""
    (tmp_path / "later.env").write_text("A=from-later-env-file\n")
    (tmp_path / "a.yml").write_text("services:\n  web:\n    image: x\n    environment: [A=first, B=b]\n")
    (tmp_path / "b.yml").write_text("services:\n  web:\n    env_file: later.env\n")
    files = [tmp_path / "a.yml", tmp_path / "b.yml"]
    web = load_stack(files, "app", environ={}, warn=lambda m: None).services["app_web"]
    assert web.env == ["A=from-later-env-file", "B=b"]
    assert "      A: from-later-env-file\n      B: b\n" in _config(files, {})


def test_two_files_merged_deploy_as_their_printout(tmp_path: Path) -> None:
    """The deploy merges compose mappings, `stack config` docker's typed model: both as
    docker/cli's merge.go, so the printout of a merge deploys what the merge deploys."""
    (tmp_path / "a.yml").write_text(
        "services:\n  web:\n    image: x\n    healthcheck: {test: [CMD, a], retries: 2}\n"
        "    extra_hosts: {one: 10.0.0.1}\n    dns: [8.8.8.8]\n    cap_add: [NET_ADMIN]\n"
        "    ports: ['80', '8080:80']\n    deploy: {placement: {constraints: [a==b]}}\n"
        "    logging: {driver: json-file, options: {max-size: 1m}}\n"
        "    networks: {front: {aliases: [x]}}\nnetworks:\n  front:\n    labels: [k=v]\n")
    (tmp_path / "b.yml").write_text(
        "services:\n  web:\n    healthcheck: {test: curl -f localhost}\n"
        "    extra_hosts: ['two:10.0.0.2']\n    dns: 1.1.1.1\n    cap_add: [SYS_TIME]\n"
        "    ports: [{target: 81, published: 8080}]\n"
        "    deploy: {placement: {constraints: [c==d]}}\n"
        "    logging: {options: {max-file: '3'}}\n"
        "    networks: {front: {aliases: [y]}}\nnetworks:\n  front:\n")
    files = [tmp_path / "a.yml", tmp_path / "b.yml"]
    printed = tmp_path / "printed.yml"
    printed.write_text(_config(files, {}))
    original = load_stack(files, "app", environ={}, warn=lambda m: None).to_dict()
    assert load_stack([printed], "app", environ={}, warn=lambda m: None).to_dict() == original
    web = original["services"]["app_web"]
    assert [p["published"] for p in web["endpoint"]["ports"]] == [0, 8080]


# docker/cli cli/compose/loader/loader_test.go (v28.5.2): its expected typed values, printed.
def _service(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> dict:
    compose = tmp_path / "c.yml"
    compose.write_text("version: '3.2'\nservices:\n  web:\n    image: busybox\n" + body)
    model = load_docker_model([compose], environ=environ or {}, warn=lambda m: None)
    return dict(model["services"]["web"])


def test_loader_test_environment(tmp_path: Path) -> None:
    for body in ("    environment:\n      FOO: '1'\n      BAR: 2\n      BAZ: 2.5\n      QUX:\n"
                 "      QUUX:\n",
                 "    environment: [FOO=1, BAR=2, BAZ=2.5, QUX=, QUUX]\n"):
        assert _service(tmp_path, body, {"QUX": "qux"})["environment"] == {
            "FOO": "1", "BAR": "2", "BAZ": "2.5", "QUX": "qux", "QUUX": None}


def test_loader_test_expanded_port_format(tmp_path: Path) -> None:
    ports = _service(tmp_path, "    ports:\n      - '80-82:8080-8082'\n"
                               "      - '90-92:8090-8092/udp'\n      - '85:8500'\n      - 8600\n"
                               "      - {protocol: udp, target: 53, published: 10053}\n"
                               "      - {mode: host, target: 22, published: 10022}\n")["ports"]
    ingress = [("ingress", t, p, proto) for t, p, proto in (
        (8080, 80, "tcp"), (8081, 81, "tcp"), (8082, 82, "tcp"), (8090, 90, "udp"),
        (8091, 91, "udp"), (8092, 92, "udp"), (8500, 85, "tcp"), (8600, 0, "tcp"))]
    expected = [{"mode": m, "target": t, **({"published": p} if p else {}), "protocol": proto}
                for m, t, p, proto in ingress]
    expected += [{"target": 53, "published": 10053, "protocol": "udp"},
                 {"mode": "host", "target": 22, "published": 10022}]
    assert ports == expected


def test_loader_test_extra_hosts(tmp_path: Path) -> None:
    as_map = _service(tmp_path, "    extra_hosts:\n      zulu: 162.242.195.82\n"
                                "      alpha: 50.31.209.229\n      beta: '[fd20:f8a7:6e5b::2]'\n"
                                "      host.docker.internal: host-gateway\n")
    assert as_map["extra_hosts"] == ["alpha:50.31.209.229", "beta:fd20:f8a7:6e5b::2",
                                     "host.docker.internal:host-gateway", "zulu:162.242.195.82"]
    as_list = _service(tmp_path, "    extra_hosts:\n      - zulu:162.242.195.82\n"
                                 "      - whiskey=162.242.195.83\n      - alpha:50.31.209.229\n"
                                 "      - zulu:ff02::1\n      - whiskey=ff02::2\n"
                                 "      - foxtrot=[ff02::3]\n      - bravo:[ff02::4]\n"
                                 "      - host.docker.internal=host-gateway\n      - noaddress\n")
    assert as_list["extra_hosts"] == [
        "zulu:162.242.195.82", "whiskey:162.242.195.83", "alpha:50.31.209.229", "zulu:ff02::1",
        "whiskey:ff02::2", "foxtrot:ff02::3", "bravo:ff02::4", "host.docker.internal:host-gateway"]


def test_loader_test_expanded_mount_format(tmp_path: Path) -> None:
    volumes = _service(tmp_path, "    volumes:\n      - {type: volume, source: foo, "
                                 "target: /target, read_only: true}\nvolumes:\n  foo: {}\n")
    assert volumes["volumes"] == [{"type": "volume", "source": "foo", "target": "/target",
                                   "read_only": True}]


# awesome-compose's nextcloud-redis-mariadb and elasticsearch-logstash-kibana, cut down: keys
# docker stack drops (restart) or deprecates (container_name), and swarmprom's unset SLACK_URL.
DROPPED_KEYS = """\
services:
  db:
    image: mariadb
    restart: always
    container_name: es
    environment:
      - SLACK_URL=${SLACK_URL}
"""


def test_stack_config_warns_of_nothing_as_dockers_deploy_does(tmp_path: Path) -> None:
    """docker/cli prints 'Ignoring unsupported/deprecated options' from loadComposeFile, which
    only `stack deploy` calls; `stack config` (outputConfig) loads silently, and no docker stack
    command warns of an unset variable (SLACK_URL here). The deploy still warns of the keys it
    drops."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(DROPPED_KEYS)
    said: list[str] = []
    printed = dump(load_docker_model([compose], environ={}, warn=said.append))
    assert said == []
    assert "restart: always\n" in printed and "container_name: es\n" in printed
    load_stack([compose], "nc", environ={}, warn=said.append)
    assert said == ["Ignoring unsupported options: restart\n",
                    "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.\n"]


def test_extension_values_print_as_go_maps(tmp_path: Path) -> None:
    """An `x-` value is `any` in docker/cli's model, so its mappings print with yaml.v3's sorted
    keys at every depth (a shared logging block's options, as in many public stacks, came out
    as written: max-size before max-file); checked against docker 28.2.2's stack config."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("""\
version: "3.9"
x-logging:
  driver: json-file
  options: {max-size: "10m", max-file: "3"}
x-b: {z: 1, a: [{y: 1, b: 2}]}
services:
  web:
    image: busybox
    x-meta: {zeta: 1, alpha: {k2: 1, k1: 2}}
""")
    assert _config([compose], {}) == """\
version: "3.9"
services:
  web:
    image: busybox
    x-meta:
      alpha:
        k1: 2
        k2: 1
      zeta: 1
x-b:
  a:
    - b: 2
      "y": 1
  z: 1
x-logging:
  driver: json-file
  options:
    max-file: "3"
    max-size: 10m
"""


# Short ports as docker 28.2.2's stack config takes them (nat.ParsePortSpec in the schema's
# 'ports' format, convertPortToPortConfig): (target, published) per port, or None if refused.
SHORT_PORTS = [
    ("8080-8082:80/udp", [(80, 8080), (80, 8081), (80, 8082)]),  # one port on a host range
    ("8080-8081:80-81", [(80, 8080), (81, 8081)]),
    ("8080:80-81", None),  # a container range needs a host range of its size
    ("8000-8001:80-82", None),
    ("80:80:80", None),  # "80" is no IP address
    ("1.2.3:80:80", None),
    ("::1:8080:80", [(80, 8080)]),  # the IP is all before the last two parts
    ("[::1]:8080:80", [(80, 8080)]),
    ("127.0.0.1::80", [(80, 0)]),
    ("80-79", None),
]


@pytest.mark.parametrize(("spec", "expected"), SHORT_PORTS)
def test_short_ports_as_docker_takes_them(tmp_path: Path, spec: str, expected: list[tuple[int, int]] | None
                                          ) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f'version: "3.8"\nservices:\n  a:\n    image: busybox\n    ports: ["{spec}"]\n')
    if expected is None:
        with pytest.raises(ShoalError):
            load_docker_model([compose], environ={}, warn=lambda m: None)
        with pytest.raises(ShoalError):
            load_stack([compose], "p", environ={}, warn=lambda m: None)
        return
    model = load_docker_model([compose], environ={}, warn=lambda m: None)
    assert [(p["target"], p.get("published", 0)) for p in model["services"]["a"]["ports"]] == expected
    spec_ports = load_stack([compose], "p", environ={}, warn=lambda m: None).services["p_a"].endpoint.ports
    assert sorted((p.target, p.published) for p in spec_ports) == sorted(expected)


@pytest.mark.parametrize(("version", "expected"), [
    ("3.3", []),
    ("3.4", ["volume v: volume.external.name is deprecated in favor of volume.name"]),
    ("3.9", ["network default: network.external.name is deprecated in favor of network.name",
             "volume v: volume.external.name is deprecated in favor of volume.name",
             "secret s: secret.external.name is deprecated in favor of secret.name"]),
])
def test_external_name_is_deprecated_from_dockers_versions(tmp_path: Path, version: str,
                                                          expected: list[str]) -> None:
    """docker/cli's loader warns of `external: {name: x}` (a pattern of older public stacks:
    `networks: default: external: name: my-net`) from 3.4 for volumes and 3.5 for the rest, on
    stack config and deploy alike."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f'version: "{version}"\nservices:\n  a:\n    image: busybox\n    volumes: [v:/v]\n'
                       "    secrets: [s]\nnetworks:\n  default:\n    external:\n      name: my-net\n"
                       "volumes:\n  v:\n    external:\n      name: vv\n"
                       "secrets:\n  s:\n    external:\n      name: ss\n")
    said: list[str] = []
    load_docker_model([compose], environ={}, warn=said.append)
    assert said == expected


def test_loader_warnings_come_first_in_dockers_order(tmp_path: Path) -> None:
    """docker/cli's loader warns of a short port's host IP (LoadServices) and then of
    external.name (the other sections), on stack config too; deploy's key report follows."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text('version: "3.8"\nservices:\n  a:\n    image: busybox\n    restart: always\n'
                       '    ports: ["127.0.0.1:80:80"]\nnetworks:\n  default:\n    external:\n      name: n\n')
    loaded = ["ignoring IP-address (127.0.0.1:80:80/tcp) service will listen on '0.0.0.0'",
              "network default: network.external.name is deprecated in favor of network.name"]
    said: list[str] = []
    load_docker_model([compose], environ={}, warn=said.append)
    assert said == loaded
    said.clear()
    load_stack([compose], "x", environ={}, warn=said.append)
    assert said == [*loaded, "Ignoring unsupported options: restart\n"]


def test_oom_score_adj_is_dropped_silently_as_docker_does(tmp_path: Path) -> None:
    """docker/cli's ServiceConfig.OomScoreAdj has no mapstructure name, so its loader looks for
    a key `oomscoreadj` (which the schema refuses) and never reads `oom_score_adj`, which only
    its 3.13 schema allows: docker 28.2.2's stack config prints nothing of it, its stack deploy
    request has no OomScoreAdj and it warns of nothing. shoal printed `oomscoreadj: -500` and
    deployed it."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text('version: "3.13"\nservices:\n  db:\n    image: postgres\n'
                       '    oom_score_adj: -500\n')
    said: list[str] = []
    assert _config([compose], {}) == 'version: "3.13"\nservices:\n  db:\n    image: postgres\n'
    spec = load_stack([compose], "pg", environ={}, warn=said.append).services["pg_db"]
    assert (spec.oom_score_adj, said) == (0, [])
