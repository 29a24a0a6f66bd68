"""Encrypted overlay networks' parts that need no cluster (network/wireguard.py, the
dispatcher's tunnels, overlay.py's peers): whether a node can encrypt agrees with what is
installed and what the kernel does; a node without WireGuard refuses `--opt encrypted` in one
line; a node's keys are real X25519 keys (`wg pubkey` agrees); tunnel addresses are stable and
unique; an encrypted network's VXLAN entries point only into the tunnel."""

from __future__ import annotations

import os
import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.agent.session import NodeDescription
from shoal.errors import InvalidArgument
from shoal.manager import tunnels
from shoal.manager.dispatcher import Dispatcher, _View, overlay_record
from shoal.network import overlay, wireguard
from shoal.store import SQLiteStore


def test_unavailable_agrees_with_what_is_here() -> None:
    wireguard.kernel_has_wireguard.cache_clear()
    why = wireguard.unavailable()
    userspace = bool(shutil.which("wireguard-go")) and Path("/dev/net/tun").exists()
    can = bool(shutil.which("wg")) and (wireguard.kernel_has_wireguard() or userspace)
    assert (why == "") == can, why


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_kernel_answer_is_the_kernels() -> None:
    wireguard.kernel_has_wireguard.cache_clear()
    made = subprocess.run(["unshare", "--net", "ip", "link", "add", "wgt", "type", "wireguard"],
                          capture_output=True).returncode == 0
    assert wireguard.kernel_has_wireguard() == made
    assert "wgprobe" not in os.listdir("/sys/class/net")  # asked in a namespace that is gone


def test_refused_without_wireguard(monkeypatch: pytest.MonkeyPatch) -> None:
    if wireguard.kernel_has_wireguard():
        pytest.skip("this kernel has WireGuard: an encrypted network is never refused here")
    monkeypatch.setenv("SHOAL_WIREGUARD_GO", "/nonexistent/wireguard-go")
    with pytest.raises(InvalidArgument) as info:
        overlay.check_options("s_net", "overlay", {"encrypted": ""})
    assert str(info.value) == ("network s_net: cannot encrypt an overlay network on this node: the kernel has "
                               "no WireGuard (CONFIG_WIREGUARD) and wireguard-go is not installed")
    assert wireguard.rotate() == {}  # nothing to publish: the manager gives this node no tunnel
    overlay.check_options("b", "bridge", {"encrypted": ""})  # a bridge has no VXLAN to encrypt


@pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools is not installed")
def test_keys_are_wireguards() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    ident = wireguard.new_identity()
    # the public key is the X25519 one of the private key (checked by a second implementation)
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(ident.private))
    pub = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)).decode()
    assert pub == ident.public and wireguard.valid_key(pub) and wireguard.valid_key(ident.private)
    assert ident.private not in repr(ident)
    assert wireguard.new_identity().public != ident.public
    assert not wireguard.valid_key("short") and not wireguard.valid_key("!" * 44)


@pytest.mark.skipif(bool(wireguard.unavailable()), reason="no WireGuard here")
def test_key_taken_only_once_the_manager_has_it() -> None:
    before = wireguard.identity()
    sent = wireguard.rotate()
    assert sent["port"] == wireguard.WG_PORT and wireguard.identity() == before  # not yet
    wireguard.commit({"key": "another"})
    assert wireguard.identity() == before
    wireguard.commit(sent)
    ident = wireguard.identity()
    assert ident is not None and ident.public == sent["key"]


def test_tunnel_addresses_stable_and_unique() -> None:
    a = tunnels.allocate("nodeA", set())
    assert a == tunnels.allocate("nodeA", set())  # the same after a manager restart
    assert a in {str(ip) for ip in wireguard.TUNNEL_NET.hosts()}
    b = tunnels.allocate("nodeA", {a})
    assert b != a and b in {str(ip) for ip in wireguard.TUNNEL_NET.hosts()}


def test_dispatcher_gives_each_node_a_tunnel_and_the_peers(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "shoald.db")
    try:
        d = Dispatcher(store)
        keys = {n: wireguard.new_identity().public for n in ("A", "B")}
        for n in ("A", "B"):
            d.register(NodeDescription(hostname=n.lower(), node_id=n, wireguard={"key": keys[n], "port": 51820}),
                       addr=f"198.18.0.{ord(n) - 64}")
        d.register(NodeDescription(hostname="c", node_id="C"), addr="198.18.0.3")  # no WireGuard
        tun = dict(d._tunnels)
        assert set(tun) == {"A", "B"} and tun["A"][0] != tun["B"][0]
        # A new key (a new session) keeps the node's address.
        d.register(NodeDescription(hostname="a", node_id="A", wireguard={"key": keys["B"], "port": 51820}),
                   addr="198.18.0.1")
        assert d._tunnels["A"] == (tun["A"][0], keys["B"], 51820)
        d.register(NodeDescription(hostname="a", node_id="A", wireguard={"key": keys["A"], "port": 51820}),
                   addr="198.18.0.1")
    finally:
        store.close()
    view = _View(revision=1, tasks_by_node={}, services=[],
                 networks={"sec": {"id": "n1", "name": "sec", "driver": "overlay", "options": {"encrypted": ""}},
                           "pl": {"id": "n2", "name": "pl", "driver": "overlay", "options": {}}},
                 peers={"sec": [("10.0.0.2", "A"), ("10.0.0.3", "B"), ("10.0.0.4", "C")]},
                 nodes={"A": ("198.18.0.1", "a"), "B": ("198.18.0.2", "b"), "C": ("198.18.0.3", "c")})
    got = overlay_record(view, "sec", "A", d._tunnels)["overlay"]
    assert got["wireguard"] == {"address": tun["A"][0], "peers": [
        {"node": "198.18.0.2", "tunnel": tun["B"][0], "key": keys["B"], "endpoint": "198.18.0.2:51820"}]}
    assert "wireguard" not in overlay_record(view, "pl", "A", d._tunnels)["overlay"]
    assert "wireguard" not in overlay_record(view, "sec", "C", d._tunnels)["overlay"]  # C has no key

    # On node A: the VXLAN entries of the encrypted network go to B's tunnel address only; C's
    # task (no tunnel to C) gets none, never the node address in clear.
    record = {**view.networks["sec"], "overlay": got}
    remote = {p.ip: p.remote for p in overlay.peers_of(record)}
    assert remote == {"10.0.0.3": tun["B"][0], "198.18.0.2": tun["B"][0]}
    tunnel = overlay.tunnel_of(record)
    assert tunnel is not None and tunnel.address == tun["A"][0]
    assert [p.endpoint for p in tunnel.peers] == ["198.18.0.2:51820"]
    # Several peers (three nodes): kept in order, one tunnel for all the encrypted networks.
    d._tunnels["C"] = (tunnels.allocate("C", {t[0] for t in d._tunnels.values()}),
                       wireguard.new_identity().public, 51820)
    record = {**view.networks["sec"], "overlay": overlay_record(view, "sec", "A", d._tunnels)["overlay"]}
    tunnel = overlay.tunnel_of(record)
    assert tunnel is not None and len(tunnel.peers) == 2 and list(tunnel.peers) == sorted(tunnel.peers)
    assert {p.remote for p in overlay.peers_of(record)} == {tun["B"][0], d._tunnels["C"][0]}
    plain = {**view.networks["pl"], "overlay": overlay_record(view, "pl", "A", d._tunnels)["overlay"]}
    assert {p.remote for p in overlay.peers_of(plain)} <= {"198.18.0.2", "198.18.0.3"}


@pytest.mark.skipif(bool(wireguard.unavailable()), reason="no WireGuard here")
def test_the_static_key_rotates_with_a_new_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After its rotation period the agent opens a new session with a new key; the manager
    keeps the node's tunnel address and sends the new key."""
    import asyncio

    from shoal.agent.agent import Agent
    from shoal.agent.inprocess import InProcessSession

    monkeypatch.setenv("SHOAL_WIREGUARD_ROTATE", "1.5")
    store = SQLiteStore(tmp_path / "shoald.db")
    dispatcher = Dispatcher(store)

    async def scenario() -> None:
        agent = Agent(tmp_path / "node", InProcessSession(dispatcher), NodeDescription(hostname="pc1"))
        runner = asyncio.create_task(agent.run())
        try:
            assert await agent.wait_registered(5)
            assert agent.info is not None
            first, node_id = agent.info.session_id, agent.info.node_id
            (address, key, port), = dispatcher._tunnels.values()
            assert port == wireguard.WG_PORT and wireguard.identity().public == key  # type: ignore[union-attr]
            for _ in range(100):
                now = dispatcher._tunnels[node_id][1]
                if now != key and wireguard.identity().public == now:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.05)
            assert agent.info.session_id != first
            assert dispatcher._tunnels[node_id][0] == address  # the same tunnel address
            new_key = dispatcher._tunnels[node_id][1]
            assert new_key != key and wireguard.identity().public == new_key  # type: ignore[union-attr]
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            agent.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
