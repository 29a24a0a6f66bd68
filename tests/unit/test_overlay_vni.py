"""Overlay networks on the manager's side: VNIs (Docker's range, the lowest free, a given one
checked, a clear error when the pool is exhausted, nothing made), encrypted networks refused
at deploy, and what each node is sent: its own address and the network's tasks on the other
nodes that are up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import Conflict, InvalidArgument, ShoalError
from shoal.manager import allocator
from shoal.manager.controlapi.stacks import deploy_stack
from shoal.manager.dispatcher import _View, overlay_peers, overlay_record
from shoal.network import overlay, wireguard
from shoal.network.store import NetworkStore
from shoal.store import SQLiteStore

# Refused without WireGuard: no kernel module and no wireguard-go (tests/unit/test_wireguard.py).
ENCRYPTED_REFUSED = (f"network s_(net|secret): {overlay.NO_ENCRYPTION}: the kernel has no WireGuard "
                     r"\(CONFIG_WIREGUARD\) and wireguard-go is not installed$")


@pytest.fixture
def no_wireguard(monkeypatch: pytest.MonkeyPatch) -> None:
    """wireguard-go looked for where it is not (the kernel's WireGuard cannot be taken away)."""
    if wireguard.kernel_has_wireguard():
        pytest.skip("this kernel has WireGuard: an encrypted network is never refused here")
    monkeypatch.setenv("SHOAL_WIREGUARD_GO", "/nonexistent/wireguard-go")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_DEFAULT_ADDRESS_POOLS", "10.213.0.0/16:24")
    return tmp_path


def test_vni_is_the_lowest_free_from_4096() -> None:
    assert allocator.allocate_vni("a", set()) == 4096
    assert allocator.allocate_vni("a", {4096, 4097, 4099}) == 4098
    assert allocator.VNI_LAST == 16_777_215


def test_vni_pool_exhausted_is_a_clear_error() -> None:
    with pytest.raises(ShoalError, match=r"could not allocate a VXLAN ID \(VNI\) for network web_net: "
                                         r"the pool 4096-4097 is exhausted"):
        allocator.allocate_vni("web_net", {4096, 4097}, 4096, 4097)


def test_given_vni_is_checked() -> None:
    opt = overlay.VXLANID_OPTION
    assert allocator.reserve_vni("n", {opt: "5000"}, {4096}) == {opt: "5000"}
    assert allocator.reserve_vni("n", {"x": "1"}, {4096}) == {"x": "1", opt: "4097"}
    with pytest.raises(Conflict, match="VXLAN ID 4096 is in use"):
        allocator.reserve_vni("n", {opt: "4096"}, {4096})
    with pytest.raises(InvalidArgument, match="out of the range"):
        allocator.reserve_vni("n", {opt: "12"}, set())


def test_options_checked(no_wireguard: None) -> None:
    with pytest.raises(InvalidArgument, match=ENCRYPTED_REFUSED):
        overlay.check_options("s_net", "overlay", {"encrypted": ""})
    with pytest.raises(InvalidArgument, match="vxlanid_list"):
        overlay.check_options("s_net", "overlay", {overlay.VXLANID_OPTION: "many"})
    overlay.check_options("b", "bridge", {"encrypted": ""})  # a bridge has no VXLAN to encrypt
    assert overlay.vni_of({overlay.VXLANID_OPTION: "4097,4098"}) == 4097
    assert overlay.vni_of({}) == 0


def test_node_address() -> None:
    assert overlay.node_address("198.18.0.2:2377") == "198.18.0.2"
    assert overlay.node_address("198.18.0.2") == "198.18.0.2"
    assert overlay.node_address("") == ""
    assert overlay.node_address("node-1:2377") == ""


def _stack(name: str, *nets: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {"name": name, "services": {},
            "networks": {net: {"name": net, "compose_name": net.split("_", 1)[1], "driver": "overlay",
                               "driver_opts": opts} for net, opts in nets}}


@pytest.fixture
def store(root: Path) -> Iterator[SQLiteStore]:
    db = SQLiteStore(root / "shoald.db")
    try:
        yield db
    finally:
        db.close()


def _vnis(store: SQLiteStore) -> dict[str, int]:
    return {raw["name"]: overlay.vni_of(raw["allocation"]["options"]) for raw in store.list("network")}


def test_deploy_gives_each_overlay_network_its_vni(store: SQLiteStore) -> None:
    deploy_stack(store, _stack("s", ("s_a", {}), ("s_b", {})))
    assert _vnis(store) == {"s_a": 4096, "s_b": 4097}
    # This node's copy is the record's: same ID, subnet and VNI.
    local = NetworkStore()
    for raw in store.list("network"):
        copy = local.get(raw["name"])
        assert (copy.id, copy.subnet, copy.options) == (raw["allocation"]["network_id"], raw["allocation"]["subnet"],
                                                        raw["allocation"]["options"])
    # A redeploy keeps them; a removed network's VNI is given again.
    deploy_stack(store, _stack("s", ("s_a", {}), ("s_b", {})))
    assert _vnis(store) == {"s_a": 4096, "s_b": 4097}
    with store.transaction() as tx:
        tx.delete("network", store.find_by_name("network", "s_a")["id"])
    deploy_stack(store, _stack("t", ("t_c", {})))
    assert _vnis(store)["t_c"] == 4096


def test_deploy_refuses_encrypted_with_nothing_made(store: SQLiteStore, no_wireguard: None) -> None:
    with pytest.raises(InvalidArgument, match=ENCRYPTED_REFUSED):
        deploy_stack(store, _stack("s", ("s_plain", {}), ("s_secret", {"encrypted": ""})))
    assert {n.name for n in NetworkStore().list()} == {"bridge", "host", "none"}
    assert store.list("network") == []


def test_exhausted_pool_at_deploy_leaves_nothing(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy_stack(store, _stack("s", ("s_a", {})))
    monkeypatch.setattr(allocator, "VNI_LAST", 4097)
    with pytest.raises(ShoalError, match="pool 4096-4097 is exhausted"):
        deploy_stack(store, _stack("t", ("t_b", {}), ("t_c", {})))
    assert {n.name for n in NetworkStore().list()} == {"bridge", "host", "none", "s_a"}
    assert [raw["name"] for raw in store.list("network")] == ["s_a"]


def _task(tid: str, node: str, state: str, ip: str, net: str = "s_net") -> dict[str, Any]:
    return {"id": tid, "node_id": node, "status": {"state": state},
            "networks": [{"network": net, "addresses": [f"{ip}/24"]}]}


def test_each_node_is_sent_the_other_nodes_tasks() -> None:
    tasks = [_task("t1", "A", "running", "10.0.0.2"), _task("t2", "B", "running", "10.0.0.3"),
             _task("t3", "B", "starting", "10.0.0.4"), _task("t4", "C", "running", "10.0.0.5"),
             _task("t5", "B", "complete", "10.0.0.6"), _task("t6", "B", "failed", "10.0.0.7"),
             _task("t7", "", "pending", "10.0.0.8"), _task("t8", "D", "running", "10.0.0.9")]
    peers = overlay_peers(tasks)
    assert sorted(peers["s_net"]) == [("10.0.0.2", "A"), ("10.0.0.3", "B"), ("10.0.0.4", "B"),
                                      ("10.0.0.5", "C"), ("10.0.0.9", "D")]
    view = _View(revision=1, tasks_by_node={}, services=[],
                 networks={"s_net": {"id": "n1", "name": "s_net", "driver": "overlay"},
                           "b": {"id": "n2", "name": "b", "driver": "bridge"}},
                 peers=peers,
                 nodes={"A": ("198.18.0.1", "a"), "B": ("198.18.0.2", "b"), "C": ("198.18.0.3", "c")})  # D down
    got = overlay_record(view, "s_net", "A")
    assert got["overlay"] == {"local": "198.18.0.1", "peers": [
        {"ip": "10.0.0.3", "node": "198.18.0.2", "name": "b"}, {"ip": "10.0.0.4", "node": "198.18.0.2", "name": "b"},
        {"ip": "10.0.0.5", "node": "198.18.0.3", "name": "c"}],
        "nodes": ["198.18.0.2", "198.18.0.3"]}  # every other live node: the mesh's next hops
    assert "overlay" not in view.networks["s_net"]  # the shared view is not changed
    assert [p["ip"] for p in overlay_record(view, "s_net", "B")["overlay"]["peers"]] == ["10.0.0.2", "10.0.0.5"]
    assert overlay_record(view, "b", "A") == {"id": "n2", "name": "b", "driver": "bridge"}


def test_nft_rules_for_overlay() -> None:
    """VXLAN's packets untracked only while an overlay network with a VNI is in use; a VIP's
    rotation holds the other nodes' tasks, which the hairpin masquerade (of a task sent to
    itself) leaves out."""
    from shoal.network import nft
    from shoal.network.store import Network

    def net(driver: str, options: dict[str, str]) -> Network:
        return Network(id="a" * 64, name="s_net", driver=driver, scope="swarm", created="", subnet="10.9.0.0/24",
                       gateway="10.9.0.1", bridge="shoal-aaaaaaaaa", options=options)

    overlay_net = net("overlay", {overlay.VXLANID_OPTION: "4096"})
    script = nft.render([overlay_net], [nft.VipRule("10.9.0.2", ["10.9.0.3", "10.9.0.7"], "service web",
                                                    ["10.9.0.7"])], [])
    assert "udp dport 4789 fib daddr type local notrack" in script and "udp dport 4789 notrack" in script
    assert "ip daddr 10.9.0.2 dnat to numgen inc mod 2 map { 0 : 10.9.0.3, 1 : 10.9.0.7 }" in script
    assert "ip saddr . ip daddr { 10.9.0.3 . 10.9.0.3 } ct status dnat masquerade" in script
    assert "10.9.0.7 . 10.9.0.7" not in script
    plain = nft.render([net("bridge", {}), net("overlay", {})], [], [])
    assert "4789" not in plain and "ip saddr . ip daddr" not in plain
