"""`swarm init` and `swarm join` as a user types them, between real shoalds in network
namespaces over real mutual TLS (tests/cluster/conftest.py): nodes join and are Ready; a wrong
token, a rotated token, an unreachable manager, a second node with one hostname, a certificate
of another cluster, a manager token: one clear line, and nothing joined; a worker's
certificate is refused on the control API."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cluster.conftest import NetnsCluster, NetnsNode

READY_WAIT = 30.0


def init(manager: NetnsNode) -> str:
    out = manager.shoal("swarm", "init", "--advertise-addr", manager.addr).stdout
    assert "Swarm initialized: current node (" in out
    assert f"shoal swarm join --token SWMTKN-1-" in out and f" {manager.addr}:2377\n" in out
    return manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()


def node_rows(manager: NetnsNode) -> list[list[str]]:
    lines = manager.shoal("node", "ls").stdout.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS", "ENGINE", "VERSION"]
    return [line.replace(" * ", " ").split() for line in lines[1:]]


def wait_ready(manager: NetnsNode, count: int) -> list[list[str]]:
    deadline = time.monotonic() + READY_WAIT
    rows: list[list[str]] = []
    while time.monotonic() < deadline:
        rows = node_rows(manager)
        if len(rows) == count and all(r[2] == "Ready" for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not {count} nodes Ready: {rows}")


def not_joined(node: NetnsNode) -> None:
    certs = node.root / "certificates"
    assert not (certs / "swarm-node.crt").exists() and not (certs / "swarm-node.key").exists()
    assert not (node.root / "swarm" / "state.json").exists()
    info = json.loads(node.shoal("node", "inspect", "self").stdout)[0]
    assert info["Spec"]["Role"] == "manager"  # still its own one-node manager


def test_init_and_two_joins_all_ready(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    token = init(manager)
    workers = [netns_cluster.add(), netns_cluster.add()]
    for worker in workers:
        out = worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377").stdout
        assert out == "This node joined a swarm as a worker.\n"
    rows = wait_ready(manager, 3)
    assert sorted(r[1] for r in rows) == sorted(n.name for n in (manager, *workers))
    by_host = {r[1]: r for r in rows}
    assert by_host[manager.name][4] == "Leader"
    assert all(len(by_host[w.name]) == 5 for w in workers)  # no MANAGER STATUS for workers
    first = manager.shoal("node", "ls").stdout.splitlines()[1:]
    assert sum(" * " in line for line in first) == 1 and [l for l in first if " * " in l][0].split()[2] == manager.name
    # The worker's certificate names its role; its key is private.
    cert_dir = workers[0].root / "certificates"
    assert (cert_dir / "swarm-node.key").stat().st_mode & 0o777 == 0o600
    assert not (cert_dir / "swarm-root-ca.key").exists()
    # A worker does not answer cluster commands (Docker's words).
    err = workers[0].shoal("node", "ls", check=False)
    assert err.returncode != 0 and "This node is not a swarm manager." in err.stderr


def test_wrong_and_rotated_tokens_join_nobody(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    token = init(manager)
    node = netns_cluster.add()
    # A token of the right shape and the right CA whose secret is not the cluster's.
    forged = token[: token.rindex("-") + 1] + "0" * 25
    result = node.shoal("swarm", "join", "--token", forged, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error response from daemon: A valid join token is necessary to join this cluster"]
    not_joined(node)
    result = node.shoal("swarm", "join", "--token", "SWMTKN-1-nonsense", f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and result.stderr.strip() == "Error response from daemon: invalid join token"
    # Rotated: the old token admits nobody, the new one does.
    out = manager.shoal("swarm", "join-token", "--rotate", "worker").stdout
    assert out.startswith("Successfully rotated worker join token.\n\nTo add a worker to this swarm")
    new = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new != token and new in out
    result = node.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and "A valid join token is necessary to join this cluster" in result.stderr
    not_joined(node)
    assert len(node_rows(manager)) == 1
    node.shoal("swarm", "join", "--token", new, f"{manager.addr}:2377")
    wait_ready(manager, 2)


def test_unreachable_manager_and_other_clusters_token(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    token = init(manager)
    other = netns_cluster.add()
    other_token = init(other)  # a second cluster: its token carries another CA's digest
    node = netns_cluster.add()
    result = node.shoal("swarm", "join", "--token", token, f"{manager.addr[:-1]}99:2377", check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"could not reach the manager at {manager.addr[:-1]}99:2377" in result.stderr
    not_joined(node)
    # The token of one cluster given to another's manager: the CA does not match its digest.
    result = node.shoal("swarm", "join", "--token", other_token, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and "remote CA does not match fingerprint. Expected:" in result.stderr
    not_joined(node)
    assert len(node_rows(manager)) == 1


def test_manager_token_and_duplicate_hostname_refused(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    init(manager)
    node = netns_cluster.add()
    manager_token = manager.shoal("swarm", "join-token", "-q", "manager").stdout.strip()
    result = node.shoal("swarm", "join", "--token", manager_token, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and "joining as a manager is not supported yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    not_joined(node)
    # Two machines with one hostname: the second is refused before anything is signed.
    token = manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    node.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    twin = netns_cluster.add(hostname=node.name)
    result = twin.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377", check=False)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert f'a node with hostname "{node.name}" is already part of this swarm' in result.stderr
    not_joined(twin)
    assert len(node_rows(manager)) == 2


def _call_control_api(node: NetnsNode, target: NetnsNode, path: str, cert_dir: Path,
                      method: str = "GET", body: object = None) -> tuple[int, str]:
    """<method> https://target:2377<path> (/v1<path> for a control API path) from inside
    `node`'s namespace with the certificate in `cert_dir`, as a manager is reached (server
    name swarm-manager)."""
    url = f"https://{target.addr}:2377{path if path.startswith('/swarm/') else '/v1' + path}"
    code = f"""
import asyncio, json, ssl, sys
import aiohttp
from pathlib import Path
from shoal.tlsconfig import client_context
d = Path({str(cert_dir)!r})
ctx = client_context(Path(d / 'swarm-root-ca.crt').read_bytes(), d / 'swarm-node.crt', d / 'swarm-node.key')
async def main():
    try:
        async with aiohttp.ClientSession() as s:
            async with s.request({method!r}, {url!r}, json=json.loads({json.dumps(json.dumps(body))}), ssl=ctx,
                                 server_hostname='swarm-manager') as r:
                print(r.status); print(await r.text())
    except aiohttp.ClientError as exc:
        print(0); print(type(exc).__name__, exc)
asyncio.run(main())
"""
    import sys

    result = node.exec(sys.executable, "-c", code, env=node.env, timeout=60)
    status, _, text = result.stdout.partition("\n")
    assert status, result.stderr
    return int(status), text


def test_worker_certificate_refused_on_control_api(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    certs = worker.root / "certificates"
    for path in ("/nodes", "/services", "/info"):
        status, text = _call_control_api(worker, manager, path, certs)
        assert status == 403, text
        assert "Permission denied: remote certificate not part of OUs: [swarm-manager]" in text
    # However the path is spelled, the route decides: a control route needs a manager.
    for path in ("/swarm/ca/../../v1/nodes", "/swarm/dispatcher/%2e%2e/%2e%2e/v1/nodes", "/swarm/ca//v1/nodes"):
        status, text = _call_control_api(worker, manager, path, certs)
        assert status in (403, 404), (path, status, text)
    # The manager's own certificate reaches it (the CLI's remote context uses one like it).
    status, text = _call_control_api(worker, manager, "/nodes", manager.root / "certificates")
    assert status == 200 and len(json.loads(text)) == 2


def test_certificate_of_another_cluster_refused(netns_cluster: NetnsCluster) -> None:
    manager = netns_cluster.add()
    init(manager)
    stranger = netns_cluster.add()
    init(stranger)  # another cluster's manager: a valid certificate, from another CA
    # Its certificate against our manager, trusting our CA: the handshake fails.
    mixed = stranger.root / "mixed"
    mixed.mkdir(mode=0o700)
    (mixed / "swarm-root-ca.crt").write_bytes((manager.root / "certificates" / "swarm-root-ca.crt").read_bytes())
    for name in ("swarm-node.crt", "swarm-node.key"):
        (mixed / name).write_bytes((stranger.root / "certificates" / name).read_bytes())
    (mixed / "swarm-node.key").chmod(0o600)
    status, text = _call_control_api(stranger, manager, "/nodes", mixed)
    # No HTTP answer at all: the handshake fails (with TLS 1.3 the client learns it as the
    # server closing the connection after verifying the certificate).
    assert status == 0 and any(w in text for w in ("SSL", "Certificate", "Disconnected", "Connection")), text
    assert len(node_rows(manager)) == 1


def test_a_node_speaks_only_for_itself_and_a_removed_one_not_at_all(netns_cluster: NetnsCluster) -> None:
    """The dispatcher takes the node ID from the client certificate, never from the request; a
    node removed with `node rm --force` keeps a valid certificate but is not registered again."""
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    nodes = {n["Description"]["Hostname"]: n for n in json.loads(manager.shoal("node", "inspect", manager.name, worker.name).stdout)}
    manager_id, worker_id = nodes[manager.name]["ID"], nodes[worker.name]["ID"]
    certs = worker.root / "certificates"
    description = {"hostname": "impostor", "node_id": manager_id}
    status, text = _call_control_api(worker, manager, "/swarm/dispatcher/session", certs, "POST", description)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["node_id"] == worker_id  # not the manager's, whatever the body said
    assert json.loads(manager.shoal("node", "inspect", manager.name).stdout)[0]["Description"]["Hostname"] == manager.name
    # Another node's session ID is not this node's session.
    status, text = _call_control_api(worker, manager, "/swarm/dispatcher/heartbeat", certs, "POST",
                                     {"session_id": "x" * 25})
    assert status == 409 and json.loads(text)["kind"] == "session_invalid"
    # Removed: its certificate still verifies, but it is told so and not recorded again.
    manager.shoal("node", "rm", "--force", worker.name)
    status, text = _call_control_api(worker, manager, "/swarm/dispatcher/session", certs, "POST",
                                     {"hostname": worker.name})
    assert status == 403 and json.loads(text)["kind"] == "node_removed", text
    time.sleep(3)  # the worker's agent keeps trying; none of its attempts brings it back
    assert [r[1] for r in node_rows(manager)] == [manager.name]


def test_manager_renews_its_own_certificate(tmp_path: Path) -> None:
    """The manager signs its own renewal: a new key and certificate, same ID, role and cluster,
    valid from now for the cluster's --cert-expiry (the listener's loop calls this at the
    50-80% moment and serves the new pair)."""
    from shoal.manager import swarmnode
    from shoal.store import SQLiteStore

    store = SQLiteStore(tmp_path / "shoald.db")
    try:
        node = swarmnode.SwarmNode(tmp_path, store, "n" * 25)
        import socket

        with socket.socket() as probe:  # a free port: init checks it can listen there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        node.init(listen_addr=f"127.0.0.1:{port}", advertise_addr="127.0.0.1", cert_expiry=7200)
        before = node.certs.identity()
        old_key = node.certs.key_path.read_bytes()
        time.sleep(1.1)  # certificates count whole seconds
        after = node.renew_own_certificate()
        assert (after.node_id, after.role, after.cluster_id) == (before.node_id, "swarm-manager", before.cluster_id)
        assert after.not_after > before.not_after
        assert node.certs.identity() == after and node.certs.key_path.read_bytes() != old_key
        assert node.certs.key_path.stat().st_mode & 0o777 == 0o600
        node.update(cert_expiry=3 * 3600)  # swarm update --cert-expiry applies to the next one
        longer = node.renew_own_certificate()
        assert 2.9 * 3600 < (longer.not_after - longer.not_before).total_seconds() - 3600 < 3.1 * 3600
    finally:
        store.close()


def test_manager_restart_keeps_the_swarm_and_workers_come_back(netns_cluster: NetnsCluster) -> None:
    """A restarted manager serves the cluster again at once (same CA, tokens and listener), and
    its workers' sessions reconnect by themselves (the agent's backoff), Ready again."""
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    manager.stop()
    manager.start()
    assert manager.shoal("swarm", "join-token", "-q", "worker").stdout.strip() == token
    rows = wait_ready(manager, 2)
    assert sorted(r[1] for r in rows) == sorted([manager.name, worker.name])
    # The listener is back too: a third node joins with the same token.
    third = netns_cluster.add()
    third.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 3)


def test_https_session_tries_every_manager_address(netns_cluster: NetnsCluster) -> None:
    """The agent's session, given several manager addresses, registers with the one that
    answers (a dead address first costs only its timeout) and keeps using that one."""
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    dead = f"{manager.addr[:-1]}99:2377"
    code = f"""
import asyncio, json
from pathlib import Path
from shoal.agent.session import NodeDescription, Unreachable
from shoal.agent.session_https import HTTPSSession
async def main():
    s = HTTPSSession([{dead!r}, '{manager.addr}:2377'], Path({str(worker.root / 'certificates')!r}))
    info = await s.register(NodeDescription(hostname={worker.name!r}))
    period = await s.heartbeat()
    await s.close()
    print(json.dumps({{"node_id": info.node_id, "period": period, "managers": s.managers}}))
asyncio.run(main())
"""
    import sys

    result = worker.exec(sys.executable, "-c", code, env=worker.env, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    worker_id = json.loads(manager.shoal("node", "inspect", worker.name).stdout)[0]["ID"]
    assert answer["node_id"] == worker_id and answer["period"] > 0
    assert answer["managers"][0] == f"{manager.addr}:2377"  # the one that answered first from now on
    wait_ready(manager, 2)  # the agent's own session takes over again


def test_assignments_and_status_cross_the_https_session(netns_cluster: NetnsCluster, busybox_tar: Path) -> None:
    """A task the manager schedules on a worker reaches it through the assignment stream, and
    what the worker observes comes back through the status route: the manager's `service ps`
    shows the worker's own report (Running, or the worker's error), never a task stuck at
    Assigned."""
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    worker.wait_api()
    for node in (manager, worker):
        node.shoal("import", str(busybox_tar), "localhost/busybox:test")
    compose = netns_cluster.base / "stack.yml"
    compose.write_text("services:\n  s:\n    image: localhost/busybox:test\n    command: ['sleep', '1000']\n"
                       "    deploy:\n      placement:\n        constraints: [node.role == worker]\n")
    manager.shoal("stack", "deploy", "--detach", "-c", str(compose), "t")
    try:
        deadline = time.monotonic() + READY_WAIT
        reported = []
        while time.monotonic() < deadline and not reported:
            lines = manager.shoal("service", "ps", "--format", "{{json .}}", "t_s").stdout.splitlines()
            tasks = [json.loads(line) for line in lines if line.strip()]
            reported = [t for t in tasks if t["Node"] == worker.name
                        and t["CurrentState"].split()[0] not in ("New", "Pending", "Assigned")]
            time.sleep(0.3)
        assert reported, tasks
    finally:
        manager.shoal("stack", "rm", "t", check=False)
