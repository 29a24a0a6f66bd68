"""Network logic that needs no root: IPAM, the network store, the nft rule set text, DNS answers."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.network import dns, ipam, nft
from shoal.network.store import Endpoint, Network, NetworkStore, PublishedPort, bridge_name

N = ipaddress.IPv4Network


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_DEFAULT_ADDRESS_POOLS", "10.213.0.0/16:20")
    return tmp_path


def test_default_pool_gives_networks_of_more_than_a_thousand_tasks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.delenv("SHOAL_DEFAULT_ADDRESS_POOLS", raising=False)
    [pool] = ipam.default_pools()
    assert pool.size == 20 and N("10.128.0.0/12") == pool.base
    assert N("10.128.0.0/20").num_addresses - 3 > 1000


def test_pools_from_daemon_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.delenv("SHOAL_DEFAULT_ADDRESS_POOLS", raising=False)
    (tmp_path / "daemon.json").write_text('{"default-address-pools": [{"base": "10.213.0.0/16", "size": 24}]}')
    assert ipam.default_pools() == [ipam.Pool(N("10.213.0.0/16"), 24)]
    (tmp_path / "daemon.json").write_text('{"default-address-pools": [{"base": "10.213.0.0/16", "size": 8}]}')
    with pytest.raises(InvalidArgument, match="daemon.json"):
        ipam.default_pools()


def test_allocate_subnet_skips_taken_and_host_routes(root: Path) -> None:
    taken = {"a": N("10.213.0.0/20")}
    assert ipam.allocate_subnet(taken, [N("10.213.16.0/24")]) == N("10.213.32.0/20")
    full = {str(i): s for i, s in enumerate(N("10.213.0.0/16").subnets(new_prefix=20))}
    with pytest.raises(ShoalError, match="10.213.0.0/16:20 are all in use"):
        ipam.allocate_subnet(full)


def test_allocate_ip_uses_range_skips_gateway_and_used() -> None:
    subnet, gw = N("10.213.0.0/24"), ipaddress.IPv4Address("10.213.0.1")
    assert str(ipam.allocate_ip("n", subnet, gw, None, [])) == "10.213.0.2"
    assert str(ipam.allocate_ip("n", subnet, gw, None, ["10.213.0.2", "10.213.0.3"])) == "10.213.0.4"
    assert str(ipam.allocate_ip("n", subnet, gw, N("10.213.0.128/25"), [])) == "10.213.0.129"
    with pytest.raises(ShoalError, match=r"no available IPv4 addresses on network n \(10.213.0.0/30 is full\)"):
        ipam.allocate_ip("n", N("10.213.0.0/30"), gw, None, ["10.213.0.2"])


def test_parse_subnet_and_layout_errors() -> None:
    with pytest.raises(InvalidArgument, match="did you mean 10.213.0.0/24"):
        ipam.parse_subnet("10.213.0.5/24")
    with pytest.raises(InvalidArgument, match="want an IPv4 CIDR"):
        ipam.parse_subnet("banana")
    with pytest.raises(InvalidArgument, match="gateway 10.213.1.1 for network n"):
        ipam.check_layout("n", N("10.213.0.0/24"), ipaddress.IPv4Address("10.213.1.1"), None)
    with pytest.raises(Conflict, match="overlaps with network a"):
        ipam.check_user_subnet("b", N("10.213.0.0/16"), {"a": N("10.213.4.0/24")})


def test_store_create_get_and_errors(root: Path) -> None:
    store = NetworkStore()
    assert [n.name for n in store.list()] == ["bridge", "host", "none"]
    net = store.create("webapp_webnet", driver="overlay", labels={"k": "v"})
    assert (net.scope, net.mtu, net.bridge) == ("swarm", 1450, bridge_name(net.id))
    assert len(net.bridge) <= 15
    assert store.get(net.id[:5]).name == "webapp_webnet"
    assert store.get("webapp_webnet").subnet == "10.213.16.0/20"  # bridge took the first /20
    with pytest.raises(Conflict, match="network with name webapp_webnet already exists"):
        store.create("webapp_webnet")
    with pytest.raises(NotFound, match="network nope not found"):
        store.get("nope")
    with pytest.raises(InvalidArgument, match="invalid network name"):
        store.create("bad name")
    before = sorted(p.name for p in (root / "networks").glob("*.json"))
    with pytest.raises(InvalidArgument):
        store.create("x", subnet="10.213.200.0/24", ip_range="10.213.100.0/24")
    assert sorted(p.name for p in (root / "networks").glob("*.json")) == before


def _net(name: str, subnet: str, internal: bool = False) -> Network:
    net = Network(id=name * 8, name=name, driver="bridge", scope="local", created="", subnet=subnet,
                  gateway=str(N(subnet)[1]), internal=internal, bridge=f"shoal-{name}")
    net.endpoints["c"] = Endpoint("c", "c", str(N(subnet)[2]), "", "v",
                                  ports=[PublishedPort("tcp", 8080, 80)])
    return net


def test_render_is_one_atomic_replacement_that_nft_accepts() -> None:
    nets = [_net("a", "10.213.0.0/20"), _net("b", "10.213.16.0/20", internal=True)]
    vips = [nft.VipRule("10.213.0.3", ["10.213.0.5", "10.213.0.4"], "service web")]
    ports = [nft.PortRule("tcp", 8080, [("10.213.0.4", 80), ("10.213.0.5", 80)], owner="service web"),
             nft.PortRule("udp", 5353, [("10.213.0.4", 53)], host_ip="127.0.0.1", keep_client_ip=False)]
    text = nft.render(nets, vips, ports)
    lines = text.splitlines()
    assert lines[:3] == [f"table ip {nft.table_name()}", f"delete table ip {nft.table_name()}", f"table ip {nft.table_name()} {{"]
    assert "ip daddr 10.213.0.3 dnat to numgen inc mod 2 map { 0 : 10.213.0.4, 1 : 10.213.0.5 }" in text
    assert "fib daddr type local meta l4proto tcp th dport 8080 dnat ip to numgen inc mod 2 map { 0 : 10.213.0.4 . 80, 1 : 10.213.0.5 . 80 }" in text
    assert f"ip daddr 127.0.0.1 meta l4proto udp th dport 5353 ct mark set {nft.SNAT_MARK:#x} dnat ip to 10.213.0.4:53" in text
    assert 'ip saddr 10.213.0.0/20 oifname != "shoal*" masquerade' in text
    assert 'ip saddr 10.213.16.0/20 oifname != "shoal*" masquerade' not in text  # internal: no egress
    assert "type nat hook output priority -100" in text
    assert 'iifname "shoal*" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop' in text
    # A client on the backends' own network keeps its address; only a task DNATed to itself is
    # masqueraded (exact pairs of the backends), unless bridged frames skip conntrack.
    assert "ip saddr . ip daddr { 10.213.0.4 . 10.213.0.4, 10.213.0.5 . 10.213.0.5 } ct status dnat masquerade" in text
    assert "ip daddr 10.213.0.0/20 ct status dnat masquerade" not in text
    unbridged = nft.render(nets, vips, ports, bridged=False)
    assert "ip saddr 10.213.0.0/20 ip daddr 10.213.0.0/20 ct status dnat masquerade" in unbridged
    assert "ip saddr . ip daddr" not in unbridged
    for script in (text, unbridged):
        try:
            check = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("nft is not installed")
        if "Operation not permitted" in check.stderr:
            pytest.skip("nft -c needs CAP_NET_ADMIN")
        assert check.returncode == 0, check.stderr


def test_dns_records_and_local_answers() -> None:
    server = dns.EmbeddedDNS(upstreams=[])
    server.set_records("n1", dns.merge(
        dns.service_records("webapp_web", "10.0.0.2", ["10.0.0.4", "10.0.0.3"], aliases=["web"]),
        dns.container_records("10.0.0.3", ["webapp_web.1.x", "host3"]),
    ))
    assert server.lookup(["n1"], "Web.") == ["10.0.0.2"]
    assert server.lookup(["n1"], "tasks.webapp_web") == ["10.0.0.3", "10.0.0.4"]
    assert server.lookup(["n2"], "web") is None
    reply = server.answer_local(["n1"], DNSRecord.question("host3"))
    assert reply is not None and [str(r.rdata) for r in reply.rr] == ["10.0.0.3"]
    assert server.answer_local(["n1"], DNSRecord.question("example.org")) is None
    ptr = server.answer_local(["n1"], DNSRecord.question("3.0.0.10.in-addr.arpa", "PTR"))
    assert ptr is not None and ptr.rr[0].rtype == QTYPE.PTR
    assert dns.service_records("db", None, ["10.0.0.9", "10.0.0.10"], endpoint_mode="dnsrr")["db"] == ["10.0.0.9", "10.0.0.10"]


def test_dns_answers_of_several_addresses_come_shuffled() -> None:
    """libnetwork's resolver shuffles an answer of several addresses (shuffleAddr), so a client
    that takes the first (portainer's tasks.agent, a dnsrr service) spreads over all of them;
    a one-address answer (a VIP) stays cached."""
    from dnslib import DNSRecord

    from shoal.network import dns

    server = dns.EmbeddedDNS(upstreams=[])
    ips = [f"10.0.0.{k}" for k in range(3, 9)]
    server.set_records("n1", dns.service_records("agent", None, ips, endpoint_mode="dnsrr"))
    firsts, orders = set(), set()
    for _ in range(60):
        query = DNSRecord.question("tasks.agent")
        answer = DNSRecord.parse(server.answer_packed(["n1"], query.pack(), query) or b"")
        got = [str(r.rdata) for r in answer.rr]
        assert sorted(got) == sorted(ips)
        firsts.add(got[0])
        orders.add(tuple(got))
    assert len(firsts) > 1 and len(orders) > 10
    # The cache keeps no order of them (it would answer the same first address from then on),
    # and keeps a one-address answer.
    server.set_records("n2", dns.service_records("portainer", "10.0.0.2", ["10.0.0.9"]))
    for name, network, cached in (("agent", "n1", False), ("portainer", "n2", True)):
        query = DNSRecord.question(name)
        server.answer_packed([network], bytes(query.pack()), query)
        assert (server.answer_cached([network], bytes(query.pack())) is not None) is cached, name


def test_stack_network_from_compose_ipam(root: Path) -> None:
    from shoal.model.stack import IPAM, IPAMPool, NetworkSpec
    from shoal.network.stack import ensure_network

    spec = NetworkSpec(name="webapp_webnet", compose_name="webnet",
                       ipam=IPAM(config=[IPAMPool(subnet="10.213.64.0/20", gateway="10.213.64.254", ip_range="10.213.66.0/24")]),
                       labels={"com.docker.stack.namespace": "webapp"})
    net = ensure_network(spec)
    assert (net.driver, net.scope, net.subnet, net.gateway, net.ip_range) == (
        "overlay", "swarm", "10.213.64.0/20", "10.213.64.254", "10.213.66.0/24")
    assert ensure_network(spec).id == net.id  # a redeploy reuses it
    with pytest.raises(NotFound, match='network "outside" is declared as external, but could not be found'):
        ensure_network(NetworkSpec(name="outside", compose_name="outside", external=True))
    with pytest.raises(Conflict, match="overlaps with network webapp_webnet"):
        ensure_network(NetworkSpec(name="webapp_other", compose_name="other",
                                   ipam=IPAM(config=[IPAMPool(subnet="10.213.64.0/24")])))


def test_endpoint_records_name_hostname_id_and_aliases() -> None:
    net = _net("a", "10.213.0.0/20")
    ep = net.endpoints["c"]
    ep.name, ep.hostname, ep.aliases, ep.container_id = "web1", "h1", ["www"], "f" * 64
    records = dns.endpoint_records(net)
    assert records == {"web1": [ep.ip], "h1": [ep.ip], "f" * 12: [ep.ip], "www": [ep.ip]}


def test_ipam_holds_more_than_a_thousand_tasks() -> None:
    subnet, gw = N("10.213.0.0/20"), ipaddress.IPv4Address("10.213.0.1")
    used: list[str] = []
    for _ in range(1100):
        used.append(str(ipam.allocate_ip("big", subnet, gw, None, used)))
    assert len(set(used)) == 1100 and str(gw) not in used
