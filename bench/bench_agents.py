"""The manager's memory and CPU with N simulated agents heartbeating (issue 11), over real mutual
TLS sessions.

    sudo .venv/bin/python bench/bench_agents.py [--agents 100] [--seconds 30]

A real shoald (`shoal daemon`, private state and run roots) runs `swarm init` on a loopback
port. In this one process, each simulated agent then takes the real join flow (agent/join.py:
the CA fetched and checked against the token's digest, a key and CSR of its own, a node
certificate signed by the manager) and holds a real session (agent/session_https.py, mutual TLS
with its certificate): registration with its own hostname, the assignment stream kept open, a
heartbeat at the period the manager gives (1 s by default, with up to 10 % jitter), and the
log-subscription stream a real agent also holds. No task runs; the figures are the dispatcher's
fixed cost per node.

Printed: shoald's RSS and PSS and its CPU (user + system from /proc/PID/stat, as a share of one
core) over the same window before the agents join and while they heartbeat, the heartbeats the
agents sent, the cost per node, and that cost extrapolated linearly to 1,000 nodes (one asyncio
process serves them all: the extrapolation is an estimate, not a measurement). The simulator's
own CPU is printed too: it runs on the same 2 cores. Removes everything it made."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def memory_mib(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    rss = int(re.search(r"^Rss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    pss = int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return rss / 1024, pss / 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    """One simulated node: join, session, heartbeats, streams held open."""

    def __init__(self, index: int, base: Path) -> None:
        self.hostname = f"simnode-{index:04d}"
        self.dir = base / self.hostname
        self.heartbeats = 0
        self.failures = 0

    async def join(self, manager: str, token: str) -> None:
        from shoal.agent.join import join
        from shoal.store.secretbox import FileKeys

        await join(manager, token, self.hostname, "127.0.0.1", self.dir / "certificates",
                   keys=FileKeys(self.dir / "keys"))

    async def run(self, manager: str, stop: asyncio.Event) -> None:
        from shoal.agent.session import NodeDescription, Resources
        from shoal.agent.session_https import HTTPSSession

        session = HTTPSSession([manager], self.dir / "certificates")
        info = await session.register(NodeDescription(hostname=self.hostname, advertise_addr="127.0.0.1",
                                                      resources=Resources(nano_cpus=2 * 10**9,
                                                                          memory_bytes=4 * 2**30)))

        async def drain(stream: Any) -> None:
            async for _ in stream:
                pass

        streams = [asyncio.create_task(drain(session.assignments())),
                   asyncio.create_task(drain(session.log_subscriptions()))]
        period = info.heartbeat_period
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(period):
                        await stop.wait()
                    break
                except TimeoutError:
                    pass
                try:
                    period = await session.heartbeat()
                    self.heartbeats += 1
                except Exception:  # noqa: BLE001 - counted, the figure says how many failed
                    self.failures += 1
        finally:
            for s in streams:
                s.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            await session._reset()  # no /close: the manager would keep the node Ready anyway


def shoal(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"shoal {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


async def measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """shoald's CPU share of one core over `seconds`, and its RSS and PSS at the end."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    rss, pss = memory_mib(pid)
    return cpu, rss, pss


async def bench(env: dict[str, str], base: Path, pid: int, n: int, seconds: float) -> None:
    port = free_port()
    shoal(env, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
    token = shoal(env, "swarm", "join-token", "-q", "worker").strip()
    manager = f"127.0.0.1:{port}"
    await asyncio.sleep(2)
    base_cpu, base_rss, base_pss = await measure(pid, seconds)

    agents = [Agent(i, base / "agents") for i in range(n)]
    t0 = time.monotonic()
    sem = asyncio.Semaphore(8)  # joins in parallel, a few at a time (each signs a certificate)

    async def one(a: Agent) -> None:
        async with sem:
            await a.join(manager, token)

    await asyncio.gather(*(one(a) for a in agents))
    joined = time.monotonic() - t0
    stop = asyncio.Event()
    runs = [asyncio.create_task(a.run(manager, stop)) for a in agents]
    await asyncio.sleep(5)  # every session registered and into its heartbeat rhythm
    ready = shoal(env, "node", "ls", "--format", "{{.Status}}").split().count("Ready")
    me = os.getpid()
    me0 = cpu_seconds(me)
    beats0 = sum(a.heartbeats for a in agents)
    cpu, rss, pss = await measure(pid, seconds)
    beats = sum(a.heartbeats for a in agents) - beats0
    me_cpu = (cpu_seconds(me) - me0) / seconds
    stop.set()
    await asyncio.gather(*runs, return_exceptions=True)
    failures = sum(a.failures for a in agents)

    per_node_cpu = (cpu - base_cpu) / n
    per_node_mib = (rss - base_rss) / n
    print(f"agents {n} joined in {joined:.1f} s (real join flow, a certificate each); Ready in node ls: {ready}")
    print(f"heartbeats_per_s {beats / seconds:.1f}  (failed {failures})")
    print(f"shoald_cpu_idle_pct {base_cpu * 100:.1f}  shoald_cpu_{n}_agents_pct {cpu * 100:.1f}  (of one core)")
    print(f"shoald_rss_mib idle {base_rss:.1f} -> {rss:.1f} with {n} agents; pss {base_pss:.1f} -> {pss:.1f}")
    print(f"per_node: cpu {per_node_cpu * 100:.3f} % of a core, rss {per_node_mib * 1024:.0f} KiB")
    print(f"extrapolated_1000_nodes: cpu {(base_cpu + per_node_cpu * 1000) * 100:.0f} % of a core, "
          f"rss {base_rss + per_node_mib * 1000:.0f} MiB (linear from {n}; an estimate)")
    print(f"simulator_cpu_pct {me_cpu * 100:.1f}  (the {n} agents' TLS clients, same machine)")
    print(f"load_average_1m {os.getloadavg()[0]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_agents: needs root", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="shba-"))
    root = base / "root"
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(root / "run"), SHOAL_CONFIG=str(base / "cfg.json"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_SOCKET", "SHOAL_CERT_PATH"):
        env.pop(k, None)
    daemon = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(base / "shoald.log", "w"))
    try:
        deadline = time.monotonic() + 30
        while not (root / "run" / "shoal.sock").exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"shoald did not start: {(base / 'shoald.log').read_text()[-2000:]}")
            time.sleep(0.1)
        asyncio.run(bench(env, base, daemon.pid, args.agents, args.seconds))
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        # What the state root made in the kernel (its nftables table, bridges): as tests' teardown_root.
        subprocess.run([sys.executable, "-c", "from shoal.network.cleanup import remove_everything; remove_everything()"],
                       env=env, check=False, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
