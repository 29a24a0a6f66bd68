"""Compose -> StackSpec, checked against what `docker stack deploy` makes of the same file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.compose.api import load_stack
from shoal.errors import ShoalError
from shoal.model import (
    EndpointSpec,
    NetworkAttachment,
    PortConfig,
    ResourceLimits,
    RestartPolicy,
    StackSpec,
    UpdateConfig,
)
from shoal.runtime.spec import Mount

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


def load(name: str, stack: str = "webapp", environ: dict[str, str] | None = None,
         warnings: list[str] | None = None) -> StackSpec:
    sink = warnings if warnings is not None else []
    return load_stack([FIXTURES / name], stack, environ=environ or {}, warn=sink.append)


def test_seed_file_converts_to_what_swarm_makes() -> None:
    warnings: list[str] = []
    stack = load("seed.yml", warnings=warnings)
    assert warnings == []
    assert list(stack.services) == ["webapp_web"]
    web = stack.services["webapp_web"]
    assert (web.name, web.compose_name, web.stack, web.image) == ("webapp_web", "web", "webapp",
                                                                  "web:v1")
    assert web.mode == "replicated" and web.replicas == 5
    assert web.resources.limits == ResourceLimits(nano_cpus=100_000_000, memory_bytes=52_428_800)
    # on-failure with no delay: Swarm's 5s, not compose-spec's 0.
    assert web.restart_policy == RestartPolicy(condition="on-failure", delay=5.0,
                                               max_attempts=0, window=0.0)
    assert web.endpoint == EndpointSpec(mode="vip", ports=[
        PortConfig(target=80, published=4000, protocol="tcp", publish_mode="ingress")])
    assert web.networks == [NetworkAttachment(target="webapp_webnet", aliases=["web"])]
    assert web.labels == {"com.docker.stack.namespace": "webapp",
                          "com.docker.stack.image": "web:v1"}
    assert web.container_labels == {"com.docker.stack.namespace": "webapp"}
    assert web.update_config == UpdateConfig()  # swarmkit's defaults
    assert web.rollback_config == UpdateConfig(parallelism=1, monitor=5.0)
    assert web.stop_grace_period == 10.0
    # Only the referenced network is created, overlay by default, with the stack label.
    assert list(stack.networks) == ["webapp_webnet"]
    net = stack.networks["webapp_webnet"]
    assert (net.driver, net.external, net.labels) == (
        "overlay", False, {"com.docker.stack.namespace": "webapp"})


def test_stack_spec_round_trips_through_json() -> None:
    stack = load("full.yml", "shop", environ={"FROM_HOST": "h"})
    again = StackSpec.from_dict(json.loads(json.dumps(stack.to_dict())))
    assert again == stack


@pytest.fixture(scope="module")
def shop() -> StackSpec:
    return load("full.yml", "shop", environ={"FROM_HOST": "from-host", "HOME": "/home/u"})


def test_full_service_fields(shop: StackSpec) -> None:
    web = shop.services["shop_web"]
    assert web.image == "registry.example.com:5000/team/web:1.2"
    assert web.cmd == ["python", "app.py", "--port", "8080"]  # shell-split, as docker does
    assert web.entrypoint == ["/tini", "--"]
    # env_file first, environment over it, a bare name from the client env, sorted.
    assert web.env == ["A=one", "B=2", "FILE_ONLY=\"quoted value\"", "FROM_HOST=from-host",
                       "INDENTED=yes"]
    assert (web.user, web.workdir, web.stop_signal) == ("app:app", "/srv", "SIGINT")
    assert web.hostname == "{{.Service.Name}}-{{.Task.Slot}}"  # the node expands it
    assert web.stop_grace_period == 90.0
    assert web.healthcheck is not None
    assert web.healthcheck.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert (web.healthcheck.interval, web.healthcheck.timeout, web.healthcheck.retries,
            web.healthcheck.start_period) == (30.0, 5.0, 3, 1.0)
    assert web.extra_hosts == ["162.242.195.82 somehost"]
    assert [(u.name, u.soft, u.hard) for u in web.ulimits] == [("nofile", 20000, 40000),
                                                               ("nproc", 65535, 65535)]
    assert web.container_labels == {"app.tier": "front", "com.docker.stack.namespace": "shop"}
    assert web.labels["com.example.description"] == "web"


def test_full_build_section_is_kept(shop: StackSpec) -> None:
    build = shop.services["shop_web"].build
    assert build is not None
    assert build.context == str(FIXTURES / "app")
    assert (build.dockerfile, build.target) == ("Dockerfile.prod", "runtime")
    assert build.args == {"PY": "3.11", "FROM_ENV": None}


def test_full_deploy_section(shop: StackSpec) -> None:
    web = shop.services["shop_web"]
    assert web.replicas == 2
    assert web.resources.limits == ResourceLimits(500_000_000, 1 << 30, 100)
    assert (web.resources.reservations.nano_cpus,
            web.resources.reservations.memory_bytes) == (250_000_000, 20 << 20)
    assert web.restart_policy == RestartPolicy("any", 0.0, 3, 120.0)  # explicit 0s is 0
    assert web.update_config == UpdateConfig(parallelism=0, delay=10.0,
                                             failure_action="rollback", monitor=5.0,
                                             max_failure_ratio=0.5, order="start-first")
    assert web.rollback_config.monitor == 5.0  # 0 is sent as unset
    assert web.placement.constraints == ["node.role==manager", "node.labels.zone!=b"]
    assert web.placement.preferences == ["node.labels.zone"]
    assert web.placement.max_replicas_per_node == 1


def test_ports_short_long_and_ranges_sorted(shop: StackSpec) -> None:
    ports = [(p.protocol, p.target, p.published, p.publish_mode)
             for p in shop.services["shop_web"].endpoint.ports]
    # Sorted as moby's PortConfig.Compare: published, target, protocol, mode.
    assert ports == [
        ("tcp", 3000, 0, "ingress"),
        ("tcp", 80, 8000, "ingress"),
        ("tcp", 81, 8001, "ingress"),
        ("tcp", 443, 8443, "host"),
        ("udp", 90, 9000, "ingress"),
    ]


def test_volumes_named_bind_tmpfs_anonymous(shop: StackSpec) -> None:
    # docker/cli handleVolumeToMount: a stack volume's mount carries its labels and the
    # stack's (VolumeOptions.Labels), for the volume the node makes.
    assert shop.services["shop_web"].mounts == [
        Mount(type="volume", target="/var/lib/data", source="shop_data",
              options=["volume-label=backup=daily", "volume-label=com.docker.stack.namespace=shop"]),
        Mount(type="bind", target="/srv/static", source=str(FIXTURES / "static"),
              read_only=True),
        Mount(type="tmpfs", target="/tmp", options=["size=67108864"]),
        Mount(type="volume", target="/anon"),
    ]  # the service's `tmpfs: /run` makes none: docker/cli's convert never reads it
    db = shop.services["shop_db"]
    assert db.mounts == [Mount(type="volume", target="/var/lib/postgresql/data",
                               source="shared-db", options=["nocopy", "volume-label=com.docker.stack.namespace=shop"])]
    # Only the volumes services use; `name:` kept; labels plus the namespace.
    assert sorted(shop.volumes) == ["shared-db", "shop_data"]
    assert shop.volumes["shop_data"].labels == {"backup": "daily",
                                                "com.docker.stack.namespace": "shop"}


def test_networks_aliases_default_and_only_referenced(shop: StackSpec) -> None:
    web = shop.services["shop_web"]
    assert web.networks == [NetworkAttachment("shop_back", ["web"]),
                            NetworkAttachment("shop_front", ["www", "web"])]
    worker = shop.services["shop_worker"]
    assert worker.networks == [NetworkAttachment("shop_default", ["worker"])]
    assert sorted(shop.networks) == ["shop_back", "shop_default", "shop_front"]
    back = shop.networks["shop_back"]
    assert back.internal and back.ipam.config[0].subnet == "10.20.0.0/24"
    assert back.ipam.config[0].gateway == "10.20.0.1"
    front = shop.networks["shop_front"]
    assert front.attachable and front.driver_opts == {"encrypted": ""}
    assert front.labels == {"tier": "front", "com.docker.stack.namespace": "shop"}


def test_global_mode_secrets_and_depends_on(shop: StackSpec) -> None:
    db = shop.services["shop_db"]
    assert (db.mode, db.replicas) == ("global", 0)
    assert [(s.source, s.target, s.mode) for s in db.secrets] == [
        ("db_cert", "/run/secrets/cert.pem", 0o400),  # external: its own name
        ("shop_db_password", "/run/secrets/db_password", 0o444),
    ]
    assert shop.secrets["shop_db_password"].file == str(FIXTURES / "secrets/db_password.txt")
    assert shop.secrets["db_cert"].external
    dep = shop.services["shop_web"].depends_on["db"]
    assert (dep.condition, dep.required) == ("service_healthy", True)


def test_legacy_restart_is_applied_and_warned() -> None:
    warnings: list[str] = []
    stack = load("full.yml", "shop", warnings=warnings)
    assert stack.services["shop_worker"].restart_policy == RestartPolicy("on-failure", 5.0, 3)
    assert warnings == ["Ignoring unsupported options: restart\n"]


def test_external_network(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n    networks: [outside]\n"
                       "networks:\n  outside:\n    external: true\n")
    stack = load_stack([compose], "s", environ={}, warn=lambda m: None)
    assert stack.networks["outside"].external
    assert stack.services["s_web"].networks == [NetworkAttachment("outside", ["web"])]


def test_build_without_image_gets_compose_name() -> None:
    stack = load("build-only.yml", "shop")
    web = stack.services["shop_web"]
    assert web.image == "shop-web" and web.build is not None
    assert web.build.context == str(FIXTURES)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("global-replicas.yml", "global-replicas.yml:6: services.agent.deploy.replicas: "
                                "replicas can only be used with replicated or replicated-job mode"),
        ("undefined-network.yml", 'undefined-network.yml:5: services.web.networks[0]: '
                                  'undefined network "missing"'),
        ("undefined-volume.yml", 'undefined-volume.yml:5: services.web.volumes[0].source: '
                                 'undefined volume "nodata"'),
        ("undefined-secret.yml", 'undefined-secret.yml:5: services.web.secrets[0]: '
                                 'undefined secret "nope"'),
        ("bad-duration.yml", 'bad-duration.yml:4: services.web.stop_grace_period: '
                             'time: invalid duration "10 seconds"'),
        ("bad-size.yml", "bad-size.yml:7: services.web.deploy.resources.limits.memory: "
                         "invalid size: '50 megabytes'"),
        ("no-image.yml", "no-image.yml:2: services.web.image: invalid image reference for "
                         "service web: no image specified"),
    ],
)
def test_bad_input_is_one_line_naming_file_service_and_key(fixture: str, expected: str) -> None:
    with pytest.raises(ShoalError) as info:
        load(fixture)
    message = str(info.value)
    assert "\n" not in message
    assert message == str(FIXTURES / expected.split(":", 1)[0]) + ":" + expected.split(":", 1)[1]


@pytest.mark.parametrize("name", ["", "   ", "'  '", "-web", "web app", "web/app", "wéb",
                                  "web.app", "_web"])
def test_bad_stack_name(name: str) -> None:
    with pytest.raises(ShoalError, match="invalid stack name"):
        load("seed.yml", name)


@pytest.mark.parametrize("name", ["webapp", "Web-App", "w_1", "0day", "a-"])
def test_good_stack_names(name: str) -> None:
    assert f"{name}_web" in load("seed.yml", name).services


def _one_service(tmp_path: Path, body: str) -> StackSpec:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n" + body)
    return load_stack([compose], "s", environ={}, warn=lambda m: None)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("    deploy:\n      mode: daemon\n", "deploy.mode: unknown mode: daemon"),
        ("    deploy:\n      endpoint_mode: dnsrr\n    ports: ['80:80']\n",
         "port published with ingress mode can't be used with dnsrr mode"),
        ("    deploy:\n      resources:\n        limits:\n          cpus: '0.0001'\n",
         "must be at least 0.001"),
        ("    deploy:\n      resources:\n        limits:\n          memory: 1M\n",
         "must be at least 4MiB"),
        ("    deploy:\n      restart_policy:\n        condition: always\n",
         "restart_policy.condition: invalid restart condition"),
        ("    deploy:\n      update_config:\n        max_failure_ratio: 2\n",
         "max_failure_ratio: must be between 0 and 1"),
        ("    deploy:\n      rollback_config:\n        failure_action: rollback\n",
         "invalid failure action 'rollback'"),
        ("    healthcheck:\n      test: ['CMD', 'true']\n      disable: true\n",
         "test and disable can't be set at the same time"),
        ("    healthcheck:\n      interval: 10us\n", "must be at least 1ms"),
        ("    ports: ['99999:80']\n", "invalid host port range"),
        ("    ports: ['8000-8002:80-81']\n", "invalid ranges specified"),
        ("    command: 'echo \"unterminated'\n", "services.web.command: cannot split"),
        ("    volumes: ['a:b:c:d']\n", "too many colons"),
        ("    volumes: ['data:relative']\nvolumes:\n  data:\n", "must be an absolute path"),
        ("    stop_grace_period: -5s\n", "must not be negative"),
        ("    ports: ['8080:0']\n", "the container port must be 1-65535"),
        ("    deploy:\n      placement:\n        constraints: ['node.role']\n",
         "invalid constraint 'node.role'"),
    ],
)
def test_swarm_rules_enforced(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(ShoalError) as info:
        _one_service(tmp_path, body)
    assert needle in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "docker-compose.yml") + ":")


def test_global_mode_without_replicas_and_dnsrr_with_host_port(tmp_path: Path) -> None:
    stack = _one_service(tmp_path, "    deploy:\n      mode: global\n      endpoint_mode: DNSRR\n"
                                   "    ports:\n      - {target: 80, published: 80, mode: host}\n")
    web = stack.services["s_web"]
    assert (web.mode, web.endpoint.mode) == ("global", "dnsrr")


def test_publish_mode_is_read_in_any_case(tmp_path: Path) -> None:
    """moby's portConfigToGRPC upper-cases the mode: `Host` is host mode (shoal refused it)."""
    stack = _one_service(tmp_path, "    ports:\n      - {target: 80, published: 80, mode: Host}\n"
                                   "      - {target: 81, published: 81, mode: INGRESS}\n")
    assert [(p.target, p.publish_mode) for p in stack.services["s_web"].endpoint.ports] == [(80, "host"), (81, "ingress")]


def test_short_port_host_ip_is_ignored_with_dockers_warning(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n    ports: ['127.0.0.1:80:80', "
                       "'127.0.0.1::81/udp', '[::1]:8080-8081:90', '0.0.0.0:82:82', '127.0.0.1:83-84:83-84']\n")
    warnings: list[str] = []
    stack = load_stack([compose], "s", environ={}, warn=warnings.append)
    assert sorted((p.target, p.published) for p in stack.services["s_web"].endpoint.ports) == [
        (80, 80), (81, 0), (82, 82), (83, 83), (84, 84), (90, 8080), (90, 8081)]
    # docker 28.2.2's words, one per binding (net.JoinHostPort, the container port/proto); none
    # for the unspecified address.
    assert warnings == [f"ignoring IP-address ({b}) service will listen on '0.0.0.0'" for b in (
        "127.0.0.1:80:80/tcp", "127.0.0.1::81/udp", "[::1]:8080-8081:90/tcp", "127.0.0.1:83:83/tcp",
        "127.0.0.1:84:84/tcp")]


def test_yaml_12_scalars(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("secret")
    # PyYAML alone reads 4000:50 as a base-60 integer and `on` as true; Go's parser does not.
    stack = _one_service(tmp_path, "    ports:\n      - 4000:50\n    environment:\n"
                                   "      FLAG: on\n    secrets:\n      - source: s\n"
                                   "        mode: 0440\nsecrets:\n  s:\n    file: ./s\n")
    web = stack.services["s_web"]
    assert web.endpoint.ports == [PortConfig(50, 4000)]
    assert web.env == ["FLAG=on"]
    assert web.secrets[0].mode == 0o440


def test_secret_file_must_exist(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n    secrets: [k]\n"
                       "secrets:\n  k:\n    file: ./missing.pem\n")
    with pytest.raises(ShoalError) as info:
        load_stack([compose], "s", environ={}, warn=lambda m: None)
    assert str(info.value) == (f"{compose}:7: secrets.k.file: open {tmp_path / 'missing.pem'}: "
                               "no such file")


def test_model_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    from shoal.model import ServiceSpec
    spec = ServiceSpec.from_dict({"name": "s_web", "compose_name": "web", "stack": "s",
                                  "image": "web:v1", "added_by_a_newer_version": 1,
                                  "restart_policy": {"condition": "none"}})
    assert spec.restart_policy == RestartPolicy(condition="none", delay=5.0)
    assert spec.replicas == 1 and spec.endpoint.mode == "vip"


def test_stack_volume_mounts_as_docker_clis_convert(tmp_path: Path) -> None:
    """A Traefik stack's bind-backed local volume (men2985/server-installer's traefik.yml.tpl)
    and an anonymous volume with nocopy: Docker's service inspect shows the named one's
    VolumeOptions (stack label, DriverConfig) and nothing for the anonymous one, whose
    VolumeOptions handleVolumeToMount never sets."""
    from shoal.cli.dockerjson import _mount
    from shoal.model._serde import to_dict

    compose = tmp_path / "traefik.yml"
    compose.write_text("""\
version: '3.8'
services:
  traefik:
    image: traefik:latest
    volumes:
      - traefik_letsencrypt:/letsencrypt
      - type: volume
        target: /cache
        volume: {nocopy: true}
volumes:
  traefik_letsencrypt:
    driver: local
    driver_opts:
      type: none
      device: /home/docker/traefik/letsencrypt
      o: bind
""")
    named, anonymous = load_stack([compose], "tpl", environ={}, warn=lambda m: None).services["tpl_traefik"].mounts
    assert anonymous == Mount(type="volume", target="/cache")
    assert _mount(to_dict(named)) == {
        "Type": "volume", "Source": "tpl_traefik_letsencrypt", "Target": "/letsencrypt",
        "VolumeOptions": {"Labels": {"com.docker.stack.namespace": "tpl"},
                          "DriverConfig": {"Name": "local", "Options": {
                              "device": "/home/docker/traefik/letsencrypt", "o": "bind", "type": "none"}}}}


def test_config_targets_stay_as_written(tmp_path: Path) -> None:
    """docker/cli's convertFileObject keeps a config's target as written, its source name by
    default ('myconf', not '/myconf': service inspect shows File.Name so; the node puts it at
    /myconf, as moby's getConfigTargetPath); a secret's bare target goes under /run/secrets."""
    from shoal.cli.dockerjson import _file_ref

    (tmp_path / "c.txt").write_text("x")
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  a:\n    image: busybox\n"
                       "    configs: [myconf, {source: other, target: /etc/other}, {source: rel, target: rel.conf}]\n"
                       "    secrets: [s]\n"
                       "configs:\n  myconf: {file: ./c.txt}\n  other: {file: ./c.txt}\n  rel: {file: ./c.txt}\n"
                       "secrets:\n  s: {file: ./c.txt}\n")
    svc = load_stack([compose], "fo", environ={}, warn=lambda m: None).services["fo_a"]
    assert [(c.source, c.target) for c in svc.configs] == [
        ("fo_myconf", "myconf"), ("fo_other", "/etc/other"), ("fo_rel", "rel.conf")]
    assert [(s.source, s.target) for s in svc.secrets] == [("fo_s", "/run/secrets/s")]
    assert _file_ref({"source": "fo_myconf", "target": "myconf"}, "Config", {})["File"]["Name"] == "myconf"


def test_bind_sources_as_docker_clis_abspath(tmp_path: Path) -> None:
    """docker/cli's resolveVolumePaths joins only a relative bind source to the file's
    directory (filepath.Join, which cleans it); an absolute one is passed to Swarm as written,
    trailing slash and all (a cAdvisor service's `/var/lib/docker/:/var/lib/docker:ro`, whose
    service inspect shows Source "/var/lib/docker/"). `~` is HOME's."""
    compose = tmp_path / "monitor.yml"
    compose.write_text("""\
version: "3.7"
services:
  cadvisor:
    image: gcr.io/cadvisor/cadvisor
    volumes:
      - /var/lib/docker/:/var/lib/docker:ro
      - /sys:/sys:ro
      - ./prometheus/:/etc/prometheus/
      - ~/dash//:/dash
      - type: bind
        source: /dev/disk/
        target: /dev/disk
""")
    mounts = load_stack([compose], "mon", environ={"HOME": "/home/ops"},
                        warn=lambda m: None).services["mon_cadvisor"].mounts
    assert [(m.source, m.target) for m in mounts] == [
        ("/var/lib/docker/", "/var/lib/docker"), ("/sys", "/sys"),
        (str(tmp_path / "prometheus"), "/etc/prometheus/"), ("/home/ops/dash//", "/dash"),
        ("/dev/disk/", "/dev/disk")]


def test_capabilities_as_docker_clis_effective_cap_add_drop(tmp_path: Path) -> None:
    """docker/cli's convert passes cap_add/cap_drop through opts.EffectiveCapAddCapDrop: names
    trimmed, upper-cased and CAP_-prefixed, deduplicated, sorted; ALL stands for the whole
    list; one both added and dropped is added. Docker 28.2.2's stack deploy request for these
    three services has exactly these lists (shoal sent the names as written)."""
    compose = tmp_path / "caps.yml"
    compose.write_text("""\
services:
  a:
    image: busybox
    cap_add: [net_admin, " SYS_TIME ", CAP_CHOWN, NET_ADMIN]
    cap_drop: [MKNOD, SYS_TIME, cap_kill]
  b:
    image: busybox
    cap_add: [NET_RAW]
    cap_drop: [ALL]
  c:
    image: busybox
    cap_add: [all, NET_RAW]
    cap_drop: [ALL]
""")
    services = load_stack([compose], "cap", environ={}, warn=lambda m: None).services
    assert {name: (s.cap_add, s.cap_drop) for name, s in services.items()} == {
        "cap_a": (["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_TIME"], ["CAP_KILL", "CAP_MKNOD"]),
        "cap_b": (["CAP_NET_RAW"], ["ALL"]),
        "cap_c": (["ALL"], []),
    }


def test_service_tmpfs_makes_no_mount_as_docker_stack_deploy(tmp_path: Path) -> None:
    """docker/cli's convert never reads a service's `tmpfs:` (only a `type: tmpfs` volume is a
    mount): docker 28.2.2's stack deploy sends this service with the one bind mount, no tmpfs,
    no warning and no clash on /run (shoal mounted both tmpfs and refused the duplicate /run).
    `stack config` still prints the key, as docker stack config does."""
    from shoal.compose.api import load_docker_model
    from shoal.compose.goyaml import dump

    compose = tmp_path / "c.yml"
    compose.write_text("version: '3.8'\nservices:\n  web:\n    image: x\n    read_only: true\n"
                       "    tmpfs: [/run, '/tmp:size=64m']\n    volumes: ['/x:/run']\n")
    said: list[str] = []
    web = load_stack([compose], "t", environ={}, warn=said.append).services["t_web"]
    assert (web.mounts, said) == ([Mount(type="bind", source="/x", target="/run")], [])
    assert "    tmpfs:\n      - /run\n      - /tmp:size=64m\n" in dump(
        load_docker_model([compose], environ={}, warn=said.append))


def test_depends_on_an_undefined_service_is_no_error(tmp_path: Path) -> None:
    """docker/cli never reads depends_on: a stack file whose dependency was left out (a
    database run elsewhere) deploys with docker 28.2.2's stack deploy, without a word; shoal
    refused it ('depends on undefined service "db"'). The defined one is still waited on."""
    warnings: list[str] = []
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n    depends_on: [db, cache]\n"
                       "  cache:\n    image: redis\n")
    web = load_stack([compose], "s", environ={}, warn=warnings.append).services["s_web"]
    assert (list(web.depends_on), warnings) == (["cache"], [])


def test_extra_hosts_as_docker_clis_hosts_list(tmp_path: Path) -> None:
    """docker/cli's transformHostsList then convertExtraHosts (v28.5.2): a mapping's entries
    sorted, brackets around an IPv6 address dropped, `host=ip` or `host:ip`; an entry with
    neither is dropped (shoal refused the whole file for it; it warns now). Shoal kept the
    mapping's file order and wrote `[::1] alpha`, a line /etc/hosts cannot read."""
    mapping = _one_service(tmp_path, "    extra_hosts: {zeta: 1.1.1.1, alpha: '[::1]', "
                                     "mid: 2.2.2.2}\n").services["s_web"]
    assert mapping.extra_hosts == ["::1 alpha", "2.2.2.2 mid", "1.1.1.1 zeta"]
    compose = tmp_path / "list.yml"
    compose.write_text("services:\n  web:\n    image: web:v1\n    extra_hosts: ['b:[::2]', "
                       "noseparator, 'a=1.2.3.4', 'c:::1']\n")
    said: list[str] = []
    listed = load_stack([compose], "s", environ={}, warn=said.append).services["s_web"]
    assert listed.extra_hosts == ["::2 b", "1.2.3.4 a", "::1 c"]  # a list keeps its order
    assert said == ["services.web.extra_hosts[1]: ignoring extra host 'noseparator': "
                    "it is not host:ip"]


def test_tmpfs_mode_is_dropped_as_docker_clis_convert(tmp_path: Path) -> None:
    """docker/cli's TmpFsOpts (v28.5.2) has only Size: a `type: tmpfs` volume's `mode` never
    reaches Swarm, and the mount stays tmpfs's 1777. Shoal sent mode=700."""
    stack = _one_service(tmp_path, "    volumes:\n      - type: tmpfs\n        target: /t\n"
                                   "        tmpfs: {size: 1000, mode: 0700}\n")
    assert stack.services["s_web"].mounts == [Mount(type="tmpfs", target="/t",
                                                    options=["size=1000"])]


def test_external_volume_mount_shows_empty_volume_options(tmp_path: Path) -> None:
    """docker/cli's handleVolumeToMount gives a stack's named volume VolumeOptions before it
    returns for an external one: Docker's service inspect shows `"VolumeOptions": {}` for it
    (NoCopy when asked); shoal showed none. An anonymous one still has none."""
    from shoal.cli.dockerjson import service_spec

    stack = _one_service(tmp_path, "    volumes: ['ext:/ext', 'other:/o:nocopy', '/anon']\n"
                                   "volumes:\n  ext: {external: true}\n  other: {external: true}\n")
    mounts = service_spec(stack.services["s_web"].to_dict(), {})["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mounts == [{"Type": "volume", "Source": "ext", "Target": "/ext", "VolumeOptions": {}},
                      {"Type": "volume", "Source": "other", "Target": "/o", "VolumeOptions": {"NoCopy": True}},
                      {"Type": "volume", "Target": "/anon"}]
