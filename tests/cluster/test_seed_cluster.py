"""The seed's ending on a four-node local cluster (`shoal cluster create --nodes 4`): the web
image exists only on the manager, the seed's stack (5 replicas, 0.1 CPU / 50M, restart on
failure, 4000:80, overlay network webnet) deploys with 5 tasks running on at least 3 nodes and
none REJECTED "No such image" (the seed's failure under Docker Swarm); the workers pulled the
manager's image (same image ID); every task has its own address on webnet (allocated by the
manager); each node's port 4000 answers from the service's tasks; an image nobody has is
rejected on every node with Docker's words; a stack on the external host network runs; and
`cluster rm` leaves nothing.

Real processes over real TLS in network namespaces, as tests/cluster/test_local_cluster.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 4
REPO = Path(__file__).resolve().parents[2]
HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


from cluster.conftest import cgroup_dirs_named, host_mounts, in_netns, link_names, netns_names
from cluster.test_local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    c = LocalCluster(tmp_path_factory.mktemp("seedcluster"))
    c.name = f"shoalseed{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", str(NODES), c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        # The web image on the manager only, as the seed built it there.
        c.on_node(1, "import", str(busybox_tar), "web:v1")
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def seed_compose(base: Path, image: str = "web:v1", name: str = "seed.yml", replicas: int = 5) -> Path:
    """examples/getstarted's compose, its web service with the test image (httpd serving the
    task's hostname) in place of the seed's build."""
    data = yaml.safe_load((REPO / "examples/getstarted/docker-compose.yml").read_text())
    web = data["services"]["web"]
    web.pop("build", None)
    web["image"] = image
    web["command"] = HTTPD
    web["stop_grace_period"] = "1s"
    web["deploy"]["replicas"] = replicas
    data["services"] = {"web": web}
    data.pop("volumes", None)
    path = base / name
    path.write_text(yaml.safe_dump(data))
    return path


def tasks(cluster: Any, service: str) -> list[dict[str, str]]:
    out = cluster.shoal("service", "ps", service, "--no-trunc", "--format",
                        "{{.Name}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}").stdout
    rows = []
    for line in out.splitlines():
        name, node, desired, current, error = (line.split("\t") + [""] * 5)[:5]
        rows.append({"name": name.strip(), "node": node, "desired": desired, "current": current, "error": error})
    return rows


def test_seed_stack_runs_on_every_node(cluster: Any) -> None:
    compose = seed_compose(cluster.base)
    start = time.monotonic()
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose), "webapp")
    deadline = start + 45
    while True:
        rows = tasks(cluster, "webapp_web")
        running = [r for r in rows if r["desired"] == "Running" and r["current"].startswith("Running")]
        if len(running) == 5:
            break
        assert time.monotonic() < deadline, f"not 5/5 running: {rows}"
        time.sleep(0.1)
    print(f"deploy to 5/5 across nodes: {time.monotonic() - start:.2f} s")
    assert not [r for r in rows if "Rejected" in r["current"] or "No such image" in r["error"]], rows
    nodes = {r["node"] for r in running}
    assert len(nodes) >= 3, running

    # Pinned at deploy to the manager's digest (Docker's --resolve-image always), shown without it.
    pinned = cluster.shoal("service", "ps", "webapp_web", "--no-trunc", "--format", "{{.Image}}").stdout.split()
    assert pinned and all(p.startswith("web:v1@sha256:") for p in pinned), pinned
    assert set(cluster.shoal("service", "ps", "webapp_web", "--format", "{{.Image}}").stdout.split()) == {"web:v1"}
    # The workers pulled the manager's image: the same image ID, named as the service names it.
    manager_id = cluster.on_node(1, "images", "--no-trunc", "--format", "{{.ID}}", "web:v1").stdout.strip()
    assert manager_id.startswith("sha256:")
    workers = sorted({int(n.rsplit("-", 1)[1]) for n in nodes} - {1})
    assert workers
    for k in workers:
        listed = cluster.on_node(k, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
        assert f"web:v1 {manager_id}" in listed.splitlines(), listed

    # Each task has its own address on webnet, whichever node it runs on (the manager allocates).
    addresses: list[str] = []
    for k in range(1, NODES + 1):
        for f in (Path(cluster.node(k)["root"]) / "networks").glob("*.json"):
            net = json.loads(f.read_text())
            if net["name"] == "webapp_webnet":
                addresses += [e["ip"] for e in net["endpoints"].values()]
    assert len(addresses) == 5 and len(set(addresses)) == 5, addresses

    # Each node's published port answers from the service's tasks (the routing mesh reaches
    # those of every node; tests/cluster/test_seed_mesh.py): the body is the task container's
    # hostname (its ID's first 12 characters).
    containers = {d.name[:12] for k in range(1, NODES + 1)
                  for d in (Path(cluster.node(k)["root"]) / "containers").iterdir() if len(d.name) == 64}
    for k in workers:
        node = cluster.node(k)
        for _ in range(3):
            got = in_netns(node["hostname"], "curl", "-s", "-m", "5", f"http://{node['address']}:4000/")
            assert got.returncode == 0, got.stderr
            assert got.stdout.strip() in containers, (got.stdout, containers)

    # A service added later to the same network gets a VIP that no task holds on any node (the
    # manager alone knew only its own tasks' addresses).
    two = cluster.base / "two.yml"
    two.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"other": {"image": "web:v1", "command": ["sleep", "3600"], "stop_grace_period": "1s",
                               "networks": ["shared"]}},
        "networks": {"shared": {"external": True, "name": "webapp_webnet"}}}))
    cluster.shoal("stack", "deploy", "--detach", "-c", str(two), "two")
    manager_net = next(json.loads(f.read_text()) for f in (Path(cluster.node(1)["root"]) / "networks").glob("*.json")
                       if json.loads(f.read_text())["name"] == "webapp_webnet")
    vips = set(manager_net["reserved"])
    assert len(vips) == 2 and not vips & set(addresses), (vips, addresses)
    cluster.shoal("stack", "rm", "two")

    # Removed and deployed again at once, while the old tasks are still stopping on the workers
    # (10 s grace): the port and the network name are free again everywhere (a worker kept the
    # old service's port 4000 and rejected the new tasks: "port 4000/tcp is already published").
    cluster.shoal("stack", "rm", "webapp")
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose), "webapp")
    deadline = time.monotonic() + 30
    while True:
        rows = tasks(cluster, "webapp_web")
        running = [r for r in rows if r["desired"] == "Running" and r["current"].startswith("Running")]
        if len(running) == 5:
            break
        assert time.monotonic() < deadline, f"not 5/5 running after a redeploy: {rows}"
        time.sleep(0.2)
    assert not [r for r in rows if "Rejected" in r["current"]], rows
    assert len({r["node"] for r in running}) >= 3, running

    # A stack removal takes the network off every node once its tasks are gone.
    cluster.shoal("stack", "rm", "webapp")
    deadline = time.monotonic() + 30
    while True:
        left = [k for k in range(1, NODES + 1)
                for f in (Path(cluster.node(k)["root"]) / "networks").glob("*.json")
                if json.loads(f.read_text())["name"] == "webapp_webnet"]
        links = [k for k in range(1, NODES + 1)
                 if [ln for ln in in_netns(cluster.node(k)["hostname"], "ip", "-br", "link").stdout.splitlines()
                     if ln.startswith("shoal")]]
        if not left and not links:
            break
        assert time.monotonic() < deadline, f"webapp_webnet left on nodes {left}, links on {links}"
        time.sleep(0.2)


def test_image_nobody_has_is_rejected_on_every_node(cluster: Any) -> None:
    compose = seed_compose(cluster.base, image="localhost/nobody:v1", name="nobody.yml", replicas=4)
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose), "nobody")
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = tasks(cluster, "nobody_web")
            rejected = [r for r in rows if "Rejected" in r["current"]]
            if {r["node"] for r in rejected} == {f"{cluster.name}-{k}" for k in range(1, NODES + 1)}:
                break
            assert time.monotonic() < deadline, f"not rejected on every node: {rows}"
            time.sleep(0.2)
        assert not [r for r in rows if r["current"].startswith("Running")]
        for r in rejected:
            # Docker's words first (a worker adds why its manager could not give the image).
            assert r["error"].strip('"').startswith("No such image: localhost/nobody:v1"), r
    finally:
        cluster.shoal("stack", "rm", "nobody")


def test_stack_on_the_host_network(cluster: Any) -> None:
    """An external `host` network: the tasks use their node's own network (no VIP, no address
    of their own), as a Swarm service on the host network; it was a 500 (AddressValueError)."""
    compose = cluster.base / "host.yml"
    compose.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"h": {"image": "web:v1", "command": ["sleep", "3600"], "stop_grace_period": "1s",
                           "deploy": {"replicas": 2}, "networks": ["hostnet"]}},
        "networks": {"hostnet": {"external": True, "name": "host"}}}))
    bad = cluster.shoal("stack", "deploy", "--resolve-image", "sometimes", "-c", str(compose), "hst", check=False)
    assert bad.returncode != 0 and "Invalid option sometimes for flag --resolve-image" in bad.stderr, bad.stderr
    # --resolve-image never: the image stays as written (a node pulls it by its tag).
    cluster.shoal("stack", "deploy", "--detach", "--resolve-image", "never", "-c", str(compose), "hst")
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = tasks(cluster, "hst_h")
            if len([r for r in rows if r["current"].startswith("Running")]) == 2:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        images = cluster.shoal("service", "ps", "hst_h", "--no-trunc", "--format", "{{.Image}}").stdout.split()
        assert set(images) == {"web:v1"}, images
    finally:
        cluster.shoal("stack", "rm", "hst")


def test_image_api_on_the_managers_listener_is_for_nodes_only(cluster: Any) -> None:
    """The manager serves its image store on its cluster port (/v2) to node certificates of this
    cluster only, read-only; the same certificate gets nothing from the control API."""
    certs = Path(cluster.node(2)["root"]) / "certificates"
    url = "https://swarm-manager:2377"
    base = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
            "--resolve", f"swarm-manager:2377:{cluster.node(1)['address']}", "--cacert", str(certs / "swarm-root-ca.crt")]
    worker = [*base, "--cert", str(certs / "swarm-node.crt"), "--key", str(certs / "swarm-node.key")]

    def code(*cmd: str) -> str:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).stdout.strip()

    assert code(*worker, f"{url}/v2/") == "200"
    assert code(*worker, "-H", "Accept: application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json", f"{url}/v2/web/manifests/v1") == "200"
    assert code(*base, f"{url}/v2/") == "403"  # no certificate: DENIED
    assert code(*worker, "-X", "PUT", f"{url}/v2/web/manifests/v2") == "405"  # read-only
    assert code(*worker, f"{url}/v1/services") == "403"  # a worker is no manager


def test_cluster_rm_leaves_nothing(cluster: Any) -> None:
    netns = {cluster.node(k)["hostname"] for k in range(1, NODES + 1)}
    links = {cluster.record["bridge"], *(cluster.node(k)["host_veth"] for k in range(1, NODES + 1))}
    cluster.shoal("cluster", "rm", cluster.name)
    assert not (netns & netns_names()), "network namespaces left"
    assert not (links & link_names()), "links left"
    assert not [m for m in host_mounts() if str(cluster.base) in m], "mounts left"
    for k in range(1, NODES + 1):
        assert cgroup_dirs_named(f"shoal-{cluster.name}-{k}") == [], "cgroups left"
    assert not cluster.dir.exists() and not cluster.run_dir.exists(), "state left"
    assert cluster.name not in cluster.shoal("cluster", "ls", "-q").stdout.split()
