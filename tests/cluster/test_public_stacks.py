"""Real stack files from public projects on a four-node local cluster, checked as a Swarm user
would: dockersamples/example-voting-app's docker-stack.yml (frontend/backend overlays, db,
worker and visualizer on the manager, `ports: ["6379"]`, restart/update policies, a labelled
worker), Portainer's agent stack (a global agent on an attachable overlay, the server reaching
every agent through `tasks.agent`) and a traefik stack in dockerswarm.rocks' shape (global,
constrained to labelled nodes, `mode: host` ports 80/443, an app with max_replicas_per_node and
a spread preference).

No image can be pulled here: the images are stand-ins of the same names built on the manager
only (so every worker pulls them from it), busybox with an httpd on the image's ports that
answers /cgi-bin/who (its name, task hostname, client address) and /cgi-bin/probe?HOST:PORT
(who answers at HOST:PORT from inside the task: names across nodes and networks).

Real processes over real TLS and VXLAN in network namespaces, as test_seed_cluster.py."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 4

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402

# dockersamples/example-voting-app, docker-stack.yml (the version with the visualizer), as it is.
VOTING = """\
version: "3"
services:

  redis:
    image: redis:alpine
    ports:
      - "6379"
    networks:
      - frontend
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
        delay: 10s
      restart_policy:
        condition: on-failure
  db:
    image: postgres:9.4
    volumes:
      - db-data:/var/lib/postgresql/data
    networks:
      - backend
    deploy:
      placement:
        constraints: [node.role == manager]
  vote:
    image: dockersamples/examplevotingapp_vote:before
    ports:
      - 5000:80
    networks:
      - frontend
    depends_on:
      - redis
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
      restart_policy:
        condition: on-failure
  result:
    image: dockersamples/examplevotingapp_result:before
    ports:
      - 5001:80
    networks:
      - backend
    depends_on:
      - db
    deploy:
      replicas: 1
      update_config:
        parallelism: 2
        delay: 10s
      restart_policy:
        condition: on-failure

  worker:
    image: dockersamples/examplevotingapp_worker
    networks:
      - frontend
      - backend
    deploy:
      mode: replicated
      replicas: 1
      labels: [APP=VOTING]
      restart_policy:
        condition: on-failure
        delay: 10s
        max_attempts: 3
        window: 120s
      placement:
        constraints: [node.role == manager]

  visualizer:
    image: dockersamples/visualizer:stable
    ports:
      - "8080:8080"
    stop_grace_period: 1m30s
    volumes:
      - "/var/run/docker.sock:/var/run/docker.sock"
    deploy:
      placement:
        constraints: [node.role == manager]

networks:
  frontend:
  backend:

volumes:
  db-data:
"""

# Portainer's portainer-agent-stack.yml, as it is.
PORTAINER = """\
version: '3.2'

services:
  agent:
    image: portainer/agent:2.13.1
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - /var/lib/docker/volumes:/var/lib/docker/volumes
    networks:
      - agent_network
    deploy:
      mode: global
      placement:
        constraints: [node.platform.os == linux]

  portainer:
    image: portainer/portainer-ce:2.13.1
    command: -H tcp://tasks.agent:9001 --tlsskipverify
    ports:
      - "9443:9443"
      - "9000:9000"
      - "8000:8000"
    volumes:
      - portainer_data:/data
    networks:
      - agent_network
    deploy:
      mode: replicated
      replicas: 1
      placement:
        constraints: [node.role == manager]

networks:
  agent_network:
    driver: overlay
    attachable: true

volumes:
  portainer_data:
"""

# dockerswarm.rocks' traefik.yml shape (host-mode ports, global on labelled nodes, the external
# network traefik-public its guide makes first) with an app spread over zones, at most 2 a node
# (Docker's docs' placement keys).
TRAEFIK = """\
version: '3.9'

services:
  traefik:
    image: traefik:v2.10
    ports:
      - target: 80
        published: 80
        mode: host
        protocol: tcp
      - target: 443
        published: 443
        mode: host
        protocol: tcp
    deploy:
      mode: global
      placement:
        constraints:
          - node.labels.traefik-public.traefik-public-certificates == true
      labels:
        - traefik.enable=true
        - traefik.docker.network=traefik-public
    command:
      - --providers.docker
      - --providers.docker.swarmmode
      - --entrypoints.http.address=:80
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - traefik-public-certificates:/certificates
    networks:
      - traefik-public

  whoami:
    image: dockersamples/examplevotingapp_vote:before
    networks:
      - traefik-public
    deploy:
      replicas: 6
      placement:
        max_replicas_per_node: 2
        preferences:
          - spread: node.labels.zone
      update_config:
        parallelism: 2
        order: start-first
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.3

volumes:
  traefik-public-certificates:

networks:
  traefik-public:
    external: true
"""

STANDIN = r"""#!/bin/sh
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/who <<'X'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "$STANDIN_NAME $(hostname) $REMOTE_ADDR"
X
cat > /www/cgi-bin/probe <<'X'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
out=$(printf 'GET /cgi-bin/who HTTP/1.0\r\n\r\n' | nc -w 3 ${QUERY_STRING%:*} ${QUERY_STRING##*:} | tail -n 1)
echo "${out:-unreachable}"
X
cat > /www/cgi-bin/lookup <<'X'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
nslookup -type=a "$QUERY_STRING" 127.0.0.11 | sed -n 's/^Address: //p' | tr '\n' ' '
X
chmod 755 /www/cgi-bin/who /www/cgi-bin/probe /www/cgi-bin/lookup
for p in $STANDIN_PORTS; do httpd -p "$p" -h /www; done
trap 'exit 0' TERM INT
while :; do sleep 1 & wait $!; done
"""

DOCKERFILE = """\
FROM web:v1
ARG PORTS="80"
ARG NAME=standin
ENV STANDIN_PORTS=$PORTS STANDIN_NAME=$NAME
COPY standin.sh /standin.sh
ENTRYPOINT ["/standin.sh"]
"""

IMAGES = {  # name -> (ports, what it answers as)
    "redis:alpine": ("6379", "redis"),
    "postgres:9.4": ("5432", "db"),
    "dockersamples/examplevotingapp_vote:before": ("80", "vote"),
    "dockersamples/examplevotingapp_result:before": ("80", "result"),
    "dockersamples/examplevotingapp_worker": ("", "worker"),
    "dockersamples/visualizer:stable": ("8080", "visualizer"),
    "portainer/agent:2.13.1": ("9001", "agent"),
    "portainer/portainer-ce:2.13.1": ("9443 9000 8000", "portainer"),
    "traefik:v2.10": ("80 443", "traefik"),
}


@pytest.fixture(scope="module")
def host_paths() -> Iterator[None]:
    """What the files bind from a Docker host: its socket and volumes directory (the nodes share
    this machine's files). A task binding a path its node lacks is rejected, as Docker's; made
    here only if missing, and removed after."""
    made: list[Path] = []
    for path, is_dir in ((Path("/var/run/docker.sock"), False), (Path("/var/lib/docker/volumes"), True)):
        for parent in reversed([path, *path.parents]):
            if parent.exists():
                continue
            if parent == path and not is_dir:
                parent.touch()
            else:
                parent.mkdir()
            made.append(parent)
    try:
        yield
    finally:
        for path in reversed(made):
            path.rmdir() if path.is_dir() else path.unlink()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path, host_paths: None) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("publicstacks")
    with cluster_with_web_image(base, f"shoalpub{os.getpid() % 10000}", NODES, busybox_tar) as c:
        ctx = base / "standin"
        ctx.mkdir()
        (ctx / "standin.sh").write_text(STANDIN)
        (ctx / "standin.sh").chmod(0o755)
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        for image, (ports, name) in IMAGES.items():  # built through the context: on the manager
            c.shoal("build", "-q", "--build-arg", f"PORTS={ports}", "--build-arg", f"NAME={name}", "-t", image,
                    str(ctx))
        yield c


def write(c: Any, name: str, text: str) -> Path:
    path = c.base / name
    path.write_text(text)
    return path


def wait_converged(c: Any, stack: str, within: float = 60) -> dict[str, str]:
    """service name -> REPLICAS once every service of the stack runs all its tasks."""
    deadline = time.monotonic() + within
    while True:
        rows = dict(line.split(" ", 1) for line in c.shoal(
            "stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout.splitlines())
        done = all(r.split()[0].split("/")[0] == r.split()[0].split("/")[1] != "0" for r in rows.values())
        if rows and done:
            return rows
        assert time.monotonic() < deadline, (rows, c.shoal("stack", "ps", stack).stdout)
        time.sleep(0.3)


def stack_ps(c: Any, stack: str) -> list[tuple[str, str, str]]:
    """(task name, node, ports) of the stack's running tasks."""
    out = c.shoal("stack", "ps", stack, "--filter", "desired-state=running", "--format",
                  "{{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Ports}}").stdout
    return [(n, node, ports) for n, node, state, ports in (line.split("\t") for line in out.splitlines())
            if state.startswith("Running")]


def get(c: Any, client: int, entry: int, port: int, path: str = "/cgi-bin/who") -> str:
    """From node `client`'s namespace to node `entry`'s address; "" when nothing answers."""
    got = in_netns(c.node(client)["hostname"], "curl", "-s", "-m", "5", f"http://{c.node(entry)['address']}:{port}{path}")
    return got.stdout.strip() if got.returncode == 0 else ""


def test_voting_app(cluster: Any) -> None:
    c = cluster
    out = c.shoal("stack", "deploy", "--detach", "-c", str(write(c, "voting.yml", VOTING)), "vote").stdout
    assert "Creating network vote_frontend" in out and "Creating service vote_worker" in out
    rows = wait_converged(c, "vote")
    assert rows == {"vote_db": "1/1", "vote_redis": "2/2", "vote_result": "1/1", "vote_visualizer": "1/1",
                    "vote_vote": "2/2", "vote_worker": "1/1"}
    manager = c.node(1)["hostname"]
    tasks = stack_ps(c, "vote")
    for name, node, _ in tasks:  # node.role == manager
        if name.split(".")[0] in ("vote_db", "vote_worker", "vote_visualizer"):
            assert node == manager, tasks
    # `ports: ["6379"]`: the manager gives it a port of 30000-32767 (swarmkit's allocator).
    ports = dict(line.split(" ", 1) for line in c.shoal(
        "stack", "services", "vote", "--format", "{{.Name}} {{.Ports}}").stdout.splitlines())
    assert ports["vote_redis"] == "*:30000->6379/tcp", ports
    assert (ports["vote_vote"], ports["vote_result"], ports["vote_visualizer"]) == (
        "*:5000->80/tcp", "*:5001->80/tcp", "*:8080->8080/tcp")
    # The resolved spec as docker's compose loader and swarmkit make it.
    worker = c.shoal("service", "inspect", "vote_worker", "--format",
                     "{{json .Spec.Labels}}|{{json .Spec.TaskTemplate.RestartPolicy}}|"
                     "{{json .Spec.TaskTemplate.Placement}}").stdout.split("|")
    assert '"APP":"VOTING"' in worker[0] and '"com.docker.stack.namespace":"vote"' in worker[0]
    assert worker[1] == '{"Condition":"on-failure","Delay":10000000000,"MaxAttempts":3,"Window":120000000000}'
    assert worker[2].strip() == '{"Constraints":["node.role == manager"]}'
    assert c.shoal("service", "inspect", "vote_visualizer", "--format",
                   "{{.Spec.TaskTemplate.ContainerSpec.StopGracePeriod}}").stdout.strip() == "90000000000"
    # Every published port answers on every node's address, whichever node its tasks are on.
    for k in range(1, NODES + 1):
        for port, who in ((5000, "vote"), (5001, "result"), (8080, "visualizer"), (30000, "redis")):
            assert get(c, k, k, port).startswith(who + " "), (k, port)
    # Names across nodes: vote (frontend) reaches redis by name, VIP and tasks.; result (backend)
    # reaches db on the manager by name and tasks.db, from wherever it runs; vote cannot reach db.
    for k in (2, 3):
        for target in ("redis:6379", "tasks.redis:6379", "vote_redis:6379"):
            assert get(c, k, k, 5000, f"/cgi-bin/probe?{target}").startswith("redis "), (k, target)
        for target in ("db:5432", "tasks.db:5432"):
            assert get(c, k, k, 5001, f"/cgi-bin/probe?{target}").startswith("db "), (k, target)
        assert get(c, k, k, 5000, "/cgi-bin/probe?db:5432") == "unreachable"
    # `exec` in the result task, through its node's own socket as that node's user types it
    # (the CLI ran the runtime here, outside the node's mount namespace: `stat /bin/sh: no such
    # file or directory`): db on the manager by name and tasks.db, over the backend overlay.
    (node,) = [n for name, n, _ in tasks if name.startswith("vote_result.")]
    k = int(node.rsplit("-", 1)[1])
    (cid,) = c.on_node(k, "ps", "-q", "--filter", "name=vote_result").stdout.split()
    for name in ("db", "tasks.db"):
        got = c.on_node(k, "exec", cid, "sh", "-c",
                        f"printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 5432 | tail -n 1").stdout
        assert got.startswith("db "), (name, got)
    assert c.on_node(k, "exec", cid, "sh", "-c", "exit 3", check=False).returncode == 3
    # `network ls` through the cluster's context: the manager's networks and the swarm's, as
    # `docker network ls` against a manager (it was refused: "not supported yet").
    nets = c.shoal("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.splitlines()
    assert {f"vote_{n} overlay swarm" for n in ("frontend", "backend", "default")} <= set(nets), nets
    assert c.shoal("network", "inspect", "vote_backend", "--format", "{{.Driver}} {{.Scope}}").stdout.strip() == \
        "overlay swarm"
    # A worker lists the swarm networks it has a copy of (dockerd there does; it failed with
    # "This node is not a swarm manager"), never the cluster's list.
    redis_nodes = {node for name, node, _ in tasks if name.startswith("vote_redis.")}
    k = next(int(n.rsplit("-", 1)[1]) for n in sorted(redis_nodes) if n != manager)
    nets = c.on_node(k, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.splitlines()
    assert "vote_frontend overlay swarm" in nets and "bridge bridge local" in nets, nets


def test_portainer_agent_stack(cluster: Any) -> None:
    c = cluster
    c.shoal("stack", "deploy", "--detach", "-c", str(write(c, "portainer.yml", PORTAINER)), "portainer")
    rows = wait_converged(c, "portainer")
    assert rows == {"portainer_agent": f"{NODES}/{NODES}", "portainer_portainer": "1/1"}
    tasks = stack_ps(c, "portainer")
    agents = sorted(node for name, node, _ in tasks if name.startswith("portainer_agent."))
    assert agents == [c.node(k)["hostname"] for k in range(1, NODES + 1)]  # global: one per node
    # The server (on the manager) reaches the agents of every node through tasks.agent: the
    # embedded DNS answers each agent's address, in a new order each time as Docker's does
    # (libnetwork's shuffleAddr; a glibc client sorts them again by prefix, busybox's nslookup
    # shows them as sent).
    answer = get(c, 4, 4, 9000, "/cgi-bin/probe?tasks.agent:9001")
    assert answer.startswith("agent "), answer
    orders = set()
    for _ in range(12):
        orders.add(tuple(get(c, 4, 4, 9000, "/cgi-bin/lookup?tasks.agent").split()))
    assert len({len(set(o)) for o in orders}) == 1 and len(next(iter(orders))) == NODES, orders
    assert len({o[0] for o in orders}) > 1, orders


def test_traefik_host_mode_global_and_placement(cluster: Any) -> None:
    c = cluster
    labelled = (1, 3)
    for k in range(1, NODES + 1):
        args = ["--label-add", f"zone={'a' if k <= 2 else 'b'}"]
        if k in labelled:
            args += ["--label-add", "traefik-public.traefik-public-certificates=true"]
        c.shoal("node", "update", *args, c.node(k)["hostname"])
    # The guide's `docker network create --driver=overlay traefik-public`, through the context
    # (it was refused there: a stack naming it external could not be deployed).
    missing = c.shoal("stack", "deploy", "-c", str(write(c, "traefik.yml", TRAEFIK)), "tr", check=False)
    assert missing.returncode != 0 and 'network "traefik-public" is declared as external, but could not be found' \
        in missing.stderr, missing.stderr
    c.shoal("network", "create", "--driver=overlay", "traefik-public")
    c.shoal("stack", "deploy", "--detach", "-c", str(write(c, "traefik.yml", TRAEFIK)), "tr")
    rows = wait_converged(c, "tr")
    assert rows == {"tr_traefik": "2/2", "tr_whoami": "6/6 (max 2 per node)"}
    tasks = stack_ps(c, "tr")
    proxies = sorted((node, ports) for name, node, ports in tasks if name.startswith("tr_traefik."))
    assert proxies == [(c.node(k)["hostname"], "*:80->80/tcp,*:443->443/tcp") for k in labelled]
    per_node: dict[str, int] = {}
    for name, node, _ in tasks:
        if name.startswith("tr_whoami."):
            per_node[node] = per_node.get(node, 0) + 1
    assert max(per_node.values()) <= 2, per_node
    zone_a = sum(n for node, n in per_node.items() if node in {c.node(1)["hostname"], c.node(2)["hostname"]})
    assert zone_a == 3, per_node  # spread over node.labels.zone: 3 and 3
    # `mode: host`: the port answers only where a task runs, from that task.
    for k in range(1, NODES + 1):
        answer = get(c, k, k, 80)
        assert answer.startswith("traefik ") if k in labelled else answer == "", (k, answer)


def test_stack_rm_leaves_nothing_on_any_node(cluster: Any) -> None:
    c = cluster
    for stack in ("tr", "portainer", "vote"):
        c.shoal("stack", "rm", stack)
    assert c.shoal("network", "rm", "traefik-public").stdout.strip() == "traefik-public"

    def kernel_left() -> list[str]:
        left = []
        for k in range(1, NODES + 1):
            node = c.node(k)
            left += [f"{node['hostname']}: container {d.name[:12]}" for d in (Path(node["root"]) / "containers").iterdir()
                     if d.is_dir()]
            links = in_netns(node["hostname"], "ip", "-o", "link").stdout
            left += [f"{node['hostname']}: link {line.split(': ')[1]}" for line in links.splitlines()
                     if line.split(": ")[1].split("@")[0] not in ("lo", "eth0")]
            left += [f"{node['hostname']}: nft {t}" for t in
                     in_netns(node["hostname"], "nft", "list", "tables").stdout.splitlines()]
        return left

    deadline = time.monotonic() + 30  # the stop signals and teardowns: 3-5 s measured
    while left := kernel_left():
        assert time.monotonic() < deadline, left
        time.sleep(0.2)
    # And as each node's own user sees it: no container, no network but the predefined ones.
    for k in range(1, NODES + 1):
        assert c.on_node(k, "ps", "-a", "--format", "{{.Names}}").stdout.split() == [], k
        nets = c.on_node(k, "network", "ls", "--format", "{{.Name}}").stdout.split()
        assert sorted(nets) == ["bridge", "host", "none"], (k, nets)
    assert c.shoal("stack", "ls", "--format", "{{.Name}}").stdout.split() == []
