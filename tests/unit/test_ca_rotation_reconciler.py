"""The root rotation's decision (manager/carotation.py, swarmkit's ca/reconciler.go) and the
CLI's progress lines (docker/cli progress/root_rotation.go), over real certificates from
manager/ca.py: a node counts as rotated only when its certificate's issuer is the new key."""

from __future__ import annotations

from typing import Any

from shoal.cli.swarm import progress_bar, rotation_lines
from shoal.manager import ca, carotation
from shoal.model.cluster import Node, TLSInfo


def node(node_id: str, root_ca: ca.RootCA, trust: ca.RootCA, state: str = "ready") -> dict[str, Any]:
    cert, _ = root_ca.issue(node_id, ca.WORKER_ROLE, "cluster")
    record = Node(id=node_id, hostname=node_id, role="worker", state=state)
    record.tls_info = TLSInfo.from_api(ca.node_tls_info(cert, trust.cert_pem))
    return record.to_dict()


def test_rotation_finishes_only_when_every_live_node_has_the_new_issuer() -> None:
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    desired = ca.desired_tls_info(rotating)
    nodes = [node("m", rotating, rotating), node("w1", rotating, rotating), node("w2", old, old)]
    assert not carotation.may_finish(nodes, desired)
    assert carotation.progress(nodes, desired) == carotation.Progress(3, 2, 3)
    nodes[2] = node("w2", rotating, rotating)
    assert carotation.may_finish(nodes, desired)


def test_a_down_node_does_not_hold_the_rotation_but_an_unknown_one_does() -> None:
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    desired = ca.desired_tls_info(rotating)
    nodes = [node("m", rotating, rotating), node("gone", old, old, state="down")]
    assert carotation.may_finish(nodes, desired)
    assert carotation.progress(nodes, desired).nodes == 1
    nodes.append(node("new", old, old, state="unknown"))
    assert not carotation.may_finish(nodes, desired)


def test_same_subject_other_key_is_not_rotated_and_no_nodes_never_finishes() -> None:
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    desired = ca.desired_tls_info(rotating)
    stale = node("w", old, old)
    # both roots are CN=swarm-ca: only the issuer's public key tells them apart
    assert Node.from_dict(stale).tls_info.cert_issuer_subject == desired["CertIssuerSubject"]
    assert not carotation.issuer_matches(stale, desired)
    assert not carotation.may_finish([], desired)
    never = Node(id="n", hostname="n", role="worker").to_dict()  # no TLSInfo recorded yet
    assert not carotation.may_finish([never], ca.desired_tls_info(old))


def test_after_finish_trust_roots_count_the_new_root() -> None:
    old = ca.RootCA.create()
    rotating = ca.begin_rotation(old)
    new_root, tokens = ca.finish_rotation(rotating)
    desired = ca.desired_tls_info(new_root)
    nodes = [node("m", rotating, new_root), node("w", rotating, rotating)]
    assert carotation.progress(nodes, desired) == carotation.Progress(2, 2, 1)
    assert ca.parse_join_token(tokens.worker).root_digest == new_root.digest != old.digest


def test_progress_lines_as_docker_prints_them() -> None:
    assert progress_bar(1, 4) == "[" + "=" * 12 + ">" + " " * 38 + "] 1/4 nodes"
    assert progress_bar(3, 3) == "[" + "=" * 50 + ">] 3/3 nodes"
    pem = ca.RootCA.create().cert_pem.decode()
    answer = {"Certificate": pem, "RootRotationInProgress": True,
              "Progress": {"Nodes": 3, "TLSRotated": 3, "CARotated": 3}}
    lines, done = rotation_lines(answer)
    assert lines[0] == f"desired root digest: sha256:{ca.pem_digest(pem.encode())}"
    assert lines[1] == "  rotated TLS certificates: " + progress_bar(3, 3)
    # CA certificates show 0 until the rotation itself has finished (docker/cli's updateProgress)
    assert lines[2] == "  rotated CA certificates:  " + progress_bar(0, 3) and not done
    lines, done = rotation_lines(dict(answer, RootRotationInProgress=False))
    assert lines[2] == "  rotated CA certificates:  " + progress_bar(3, 3) and done


def test_info_says_whether_a_rotation_is_in_progress() -> None:
    from shoal.cli.swarm import info_lines

    info = {"LocalNodeState": "active", "NodeID": "n", "ControlAvailable": True, "ClusterID": "c", "Managers": 1,
            "Nodes": 3, "Cluster": {"Spec": {"task_history_limit": 5, "heartbeat_period": 1.0,
                                             "cert_expiry": 7776000.0}, "RootRotationInProgress": True}}
    assert "  Root Rotation In Progress: true" in info_lines(info)
    info["Cluster"]["RootRotationInProgress"] = False
    assert "  Root Rotation In Progress: false" in info_lines(info)


def test_a_rotation_during_a_rotation_is_cross_signed_by_the_trusted_root(tmp_path: Any) -> None:
    store = ca.CertStore(tmp_path / "certs")
    old = ca.RootCA.create()
    store.save_root_ca(old)
    store.save_root_ca(ca.begin_rotation(old))
    assert store.load_root_ca().rotating
    second = ca.begin_rotation(store.load_trusted_root_ca())
    store.save_root_ca(second)
    loaded = store.load_root_ca()
    assert loaded.signing_cert_pem == second.signing_cert_pem and loaded.cert_pem == old.cert_pem
    cert, _ = loaded.issue("n", ca.WORKER_ROLE, "c")
    assert ca.RootCA(old.cert_pem).verify_node_cert(cert).node_id == "n"  # old-root nodes accept it
    final, _ = ca.finish_rotation(loaded)
    store.save_root_ca(final)
    assert store.load_root_ca().cert_pem == second.signing_cert_pem and not store.load_root_ca().rotating
