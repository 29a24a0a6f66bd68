"""A service's tasks see their client's own address on one node too (issue 12 item 4), as Docker's
VIPs (IPVS in the client's sandbox) show it: a container on the service's overlay network
reaching the service by name (its VIP) or through the node's published port, each task on the
same node and bridge as the client; a task reaching its own service, landing on itself too
(the one case masqueraded: the bridge's gateway); and a loopback client of the published port
(its 169.254.0.0/16 stand-in, network/nft.py). Against a real shoald: busybox httpd tasks with
a CGI printing their hostname and REMOTE_ADDR."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY

PORT = 28619  # published by the test's service; nothing else here uses it
STACK = "h4"
NET = f"{STACK}_vipnet"
SUBNET = "10.213.184.0/24"
GATEWAY = "10.213.184.1"
SERVICE = f"{STACK}_who"

CGI = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$(hostname) $REMOTE_ADDR\"\n"
WEB = ("mkdir -p /www/cgi-bin && printf '%s' \"$CGI\" > /www/cgi-bin/who && chmod 755 /www/cgi-bin/who "
       "&& exec httpd -f -p 80 -h /www")
# The client prints its own address, then one answer per request: `<task hostname> <address>`.
ASK = "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; for i in $(seq {n}); do wget -qO- {url}; done"


def _answers(out: str) -> list[tuple[str, str]]:
    """`<hostname> <REMOTE_ADDR>` lines; busybox httpd listens on :: and writes an IPv4 client
    as [::ffff:a.b.c.d]."""
    rows = []
    for line in out.splitlines():
        host, addr = line.split()
        rows.append((host, addr.removeprefix("[::ffff:").removesuffix("]")))
    return rows


def _tasks(shoal) -> list[str]:
    """The running task containers' IDs."""
    out = shoal("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={SERVICE}",
                check=True).stdout.split()
    return out if len(out) == 2 else []


def test_tasks_see_the_clients_own_address_on_one_node(shoal, busybox_image: str, tmp_path) -> None:
    compose = {"version": "3.8",
               "services": {"who": {"image": busybox_image, "command": ["sh", "-c", WEB.replace("$", "$$")],
                                    "environment": {"CGI": CGI.replace("$", "$$")}, "stop_grace_period": "1s",
                                    "deploy": {"replicas": 2}, "ports": [f"{PORT}:80"], "networks": ["vipnet"]}},
               "networks": {"vipnet": {"driver": "overlay", "attachable": True,
                                       "ipam": {"config": [{"subnet": SUBNET}]}}}}
    (tmp_path / "who.yml").write_text(yaml.safe_dump(compose))
    try:
        shoal("stack", "deploy", "--detach", "-c", str(tmp_path / "who.yml"), STACK, check=True, timeout=120)
        tasks = poll(lambda: _tasks(shoal), 60, "two running tasks")
        hostnames = {t[:12] for t in tasks}

        def ask(url: str, n: int = 8) -> tuple[str, list[tuple[str, str]]]:
            out = shoal("run", "--rm", "--network", NET, busybox_image, "sh", "-c",
                        ASK.replace("{n}", str(n)).replace("{url}", url), check=True, timeout=60).stdout
            own, *rest = out.splitlines()
            return own, _answers("\n".join(rest))

        # Both tasks answer through the VIP (by name) and each sees the client's own address,
        # not the bridge's gateway.
        def by_vip() -> tuple[str, list[tuple[str, str]]] | None:
            own, got = ask(f"http://{SERVICE}/cgi-bin/who")
            return (own, got) if {h for h, _ in got} == hostnames else None
        own, got = poll(by_vip, 30, "both tasks through the VIP")
        assert own.startswith("10.213.184.") and own != GATEWAY, own
        assert {addr for _, addr in got} == {own}, got

        # Through the node's published port on the network's gateway: the client's address too.
        own, got = ask(f"http://{GATEWAY}:{PORT}/cgi-bin/who")
        assert {h for h, _ in got} == hostnames and {addr for _, addr in got} == {own}, (own, got)

        # A task reaching its own service: the other task sees its address, itself (DNATed to
        # itself, which only a masquerade lets answer) the gateway.
        first = tasks[0]
        for url in (f"http://{SERVICE}/cgi-bin/who", f"http://{GATEWAY}:{PORT}/cgi-bin/who"):
            out = shoal("exec", first, "sh", "-c", ASK.replace("{n}", "8").replace("{url}", url),
                        check=True, timeout=60).stdout
            mine, *rest = out.splitlines()
            seen = set(_answers("\n".join(rest)))
            assert seen == {(first[:12], GATEWAY), (tasks[1][:12], mine)}, (url, mine, seen)

        # A loopback client of the published port shows as its 169.254.0.0/16 stand-in.
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/cgi-bin/who", timeout=5) as r:
            host, addr = _answers(r.read().decode())[0]
        assert host in hostnames and addr.startswith("169.254."), (host, addr)
    finally:
        shoal("stack", "rm", STACK)
        poll(lambda: not shoal("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVICE}").stdout.strip(),
              30, "the tasks to stop")
