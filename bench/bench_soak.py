"""Benchmark: shoald's memory, descriptors and threads over a long run of mixed work (issue 10).

    sudo .venv/bin/python bench/bench_soak.py [--minutes 60] [--report-every 5] [--trace DIR]

A private SHOAL_ROOT (address pool 10.216.0.0/16) and shoald started here (as the CLI would).
Then, until the time is up, cycles of what an ordinary day does, each through shoal's CLI:

  build a small image (FROM busybox, a label and a COPY), deploy a stack of two services (busybox httpd
  with 5 replicas and a published port; the built image with a secret and a config), scale the
  web service to 50 and back to 5, a rolling update (an environment change), `stack rm`, rmi.

shoald is sampled in the same state every time: the stack just deployed (6 tasks), 8 s idle.
The first sample is the start, one every --report-every minutes, and the last (a final deploy
after the time is up) the end; each prints RSS, open descriptors and threads. Target: end RSS at
most 1.2 x start, descriptors and threads unchanged. Exit 0 either way (a benchmark reports);
the verdict is printed.

--trace DIR runs shoald under tracemalloc (bench/_traced_shoald.py) and signals it to write a
snapshot at every sample; at the end the allocations that grew most between the first and the
last sample are printed (tracemalloc makes shoald slower and bigger: its RSS figures are then
not the ones to quote). Everything created is removed at the end, however the run ends."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _swarm  # noqa: E402 - after the path insert

HERE = Path(__file__).resolve().parent
STACK = "soak"
WEB, APP = f"{STACK}_web", f"{STACK}_app"
REPLICAS, SCALED = 5, 50
TARGET_RATIO = 1.2
# Idle before each sample: longer than the worker's idle threads live (agent/pool.py, 5 s), so
# every sample sees the same settled daemon.
SETTLE = 8.0

COMPOSE = """\
version: "3.8"
services:
  web:
    image: {base}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    environment:
      SOAK_REV: "{rev}"
    deploy:
      replicas: {replicas}
      update_config: {{parallelism: 2, delay: 0s}}
      resources: {{limits: {{cpus: "0.1", memory: 50M}}}}
    stop_grace_period: 1s
    ports: ["{port}:80"]
    networks: [front]
  app:
    image: {built}
    command: ["sh", "-c", "cat /run/secrets/token /conf >/dev/null && exec sleep 100000"]
    secrets: [token]
    configs: [{{source: conf, target: /conf}}]
    stop_grace_period: 1s
    networks: [front]
secrets:
  token:
    file: ./token.txt
configs:
  conf:
    file: ./conf.txt
networks:
  front:
"""

# No RUN step: builds happen in the CLI, not in shoald, so a new image each cycle is what matters
# to shoald here (it resolves it at deploy), not how it was made.
DOCKERFILE = """\
FROM {base}
ARG CYCLE
LABEL soak.cycle=$CYCLE
COPY cycle.txt /cycle.txt
"""


@dataclass
class Sample:
    at: float          # seconds since the start
    cycle: int
    rss_kib: int
    fds: int
    threads: int

    def line(self, label: str) -> str:
        return (f"{label:>6} {self.at / 60:6.1f} min  cycle {self.cycle:4d}  RSS {self.rss_kib / 1024:7.1f} MiB  "
                f"fds {self.fds:4d}  threads {self.threads:3d}")


def sample(pid: int, started: float, cycle: int) -> Sample:
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Sample(time.monotonic() - started, cycle, _swarm.rss_kib(pid), len(os.listdir(f"/proc/{pid}/fd")), threads)


class Soak:
    def __init__(self, work: Path, tar: Path, trace: Path | None) -> None:
        self.work = work
        self.sh = _swarm.Shoal(work / "shoal-root")  # sets SHOAL_ROOT/SHOAL_RUN for us and children
        # This machine's shoald, whatever context ~/.shoal/config.json names at the moment (a
        # `shoal context use` elsewhere must not send the cycles to another node).
        os.environ.update(SHOAL_CONTEXT="default", SHOAL_CONFIG=str(work / "config.json"))
        self.tar = tar
        self.trace = trace
        self.port = _swarm.free_port()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.snapshots = 0
        (work / "token.txt").write_text("soak-secret-value\n")
        (work / "conf.txt").write_text("key=value\n")
        (work / "ctx").mkdir()

    # -- shoald ---------------------------------------------------------------------------------
    def start_daemon(self) -> int:
        """shoald as the CLI starts it (a new session, output to shoald.log), or the traced one."""
        root = self.sh.root
        root.mkdir(parents=True, exist_ok=True)
        log = open(root / "shoald.log", "ab")
        if self.trace:
            cmd = [sys.executable, str(HERE / "_traced_shoald.py")]
            env = {**os.environ, "SOAK_TRACE_DIR": str(self.trace)}
        else:
            cmd, env = [sys.executable, "-m", "shoal", "daemon"], dict(os.environ)
        self.daemon = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True, close_fds=True)
        log.close()
        _swarm.wait_until(lambda: self.sh.daemon_pid() is not None and (root / "run" / "shoal.sock").exists(),
                          60, "shoald to listen")
        self.sh.cli("stack", "ls")
        pid = self.sh.daemon_pid()
        assert pid is not None
        return pid

    def snapshot(self, pid: int) -> None:
        if not self.trace:
            return
        want = self.trace / f"types-{self.snapshots}.txt"
        os.kill(pid, signal.SIGUSR2)
        _swarm.wait_until(want.exists, 300, "the tracemalloc snapshot")
        self.snapshots += 1

    # -- the work -------------------------------------------------------------------------------
    def compose(self, cycle: int, rev: int, replicas: int = REPLICAS) -> Path:
        path = self.work / "stack.yml"
        path.write_text(COMPOSE.format(base=_swarm.IMAGE, built=f"localhost/soak:c{cycle}", rev=rev,
                                       replicas=replicas, port=self.port))
        return path

    def running(self) -> dict[str, int]:
        return self.sh.running()

    def converged(self, n: int, rev: int | None = None):
        def check() -> bool:
            up = self.running()
            if len(up) != n:
                return False
            return rev is None or sum(f"SOAK_REV={rev}" in e for e in self.sh.env(list(up))) == REPLICAS
        return check

    def build(self, cycle: int) -> None:
        (self.work / "ctx" / "Dockerfile").write_text(DOCKERFILE.format(base=_swarm.IMAGE))
        (self.work / "ctx" / "cycle.txt").write_text(f"cycle {cycle}\n")
        self.sh.cli("build", "-q", "--build-arg", f"CYCLE={cycle}", "-t", f"localhost/soak:c{cycle}",
                    str(self.work / "ctx"))

    def deploy(self, cycle: int) -> None:
        self.build(cycle)
        self.sh.cli("stack", "deploy", "-d", "-c", str(self.compose(cycle, rev=1)), STACK)
        _swarm.wait_until(self.converged(REPLICAS + 1), 300, "deploy to 6 running")

    def rest_of_cycle(self, cycle: int) -> None:
        self.sh.cli("service", "scale", "-d", f"{WEB}={SCALED}")
        _swarm.wait_until(self.converged(SCALED + 1), 600, f"scale to {SCALED}")
        self.sh.cli("service", "scale", "-d", f"{WEB}={REPLICAS}")
        _swarm.wait_until(self.converged(REPLICAS + 1), 600, f"scale back to {REPLICAS}")
        self.sh.cli("stack", "deploy", "-d", "-c", str(self.compose(cycle, rev=2)), STACK)
        _swarm.wait_until(self.converged(REPLICAS + 1, rev=2), 600, "rolling update")
        self.remove(cycle)

    def remove(self, cycle: int) -> None:
        self.sh.cli("stack", "rm", STACK)
        _swarm.wait_until(lambda: not self.sh.containers(), 600, "stack rm")
        # The stack's network goes a moment after its tasks; the next deploy makes it again.
        _swarm.wait_until(lambda: f"{STACK}_front" not in self.sh.cli("network", "ls"), 120, "the network to go")
        self.sh.cli("rmi", f"localhost/soak:c{cycle}")

    def cleanup(self) -> list[str]:
        with contextlib.suppress(Exception):
            self.sh.cli("stack", "rm", STACK, timeout=60)
        left = self.sh.cleanup()  # waits for containers, stops shoald, removes the root
        if self.daemon is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(30)
            if self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait()
        return left


def top_growth(trace: Path, first: int, last: int, limit: int = 25) -> None:
    """What grew most between two snapshots, by the line that allocated it."""
    a = tracemalloc.Snapshot.load(str(trace / f"snap-{first}.pickle"))
    b = tracemalloc.Snapshot.load(str(trace / f"snap-{last}.pickle"))
    print(f"\ntracemalloc, sample {first} -> {last}: traced {sum(s.size for s in a.statistics('filename')) / 2**20:.1f}"
          f" -> {sum(s.size for s in b.statistics('filename')) / 2**20:.1f} MiB; grew most:")
    for stat in b.compare_to(a, "traceback")[:limit]:
        if stat.size_diff <= 0:
            continue
        frames = [f"{f.filename.split('site-packages/')[-1].split('/src/')[-1]}:{f.lineno}" for f in stat.traceback]
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  " + " <- ".join(frames[-1:-5:-1]))
    for i in (first, last):
        print(f"\nsample {i}: " + "\n  ".join((trace / f"types-{i}.txt").read_text().split("\n")[:2]))
    types_a = dict(_types(trace / f"types-{first}.txt"))
    grown = sorted(((n - types_a.get(name, 0), name, n) for name, n in _types(trace / f"types-{last}.txt")), reverse=True)
    print("live objects that grew most: " + ", ".join(f"{name} {n} ({d:+d})" for d, name, n in grown[:12] if d > 0))


def _types(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text().splitlines()[2:]:
        n, _, name = line.strip().partition(" ")
        out.append((name, int(n)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run cycles (default 60)")
    parser.add_argument("--report-every", type=float, default=5.0, metavar="MIN",
                        help="print a sample at least this often, in minutes (default 5)")
    parser.add_argument("--trace", type=Path, metavar="DIR",
                        help="run shoald under tracemalloc, snapshots in DIR, and print what grew")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_soak: needs root", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-soak-"))
    trace = opts.trace.resolve() if opts.trace else None
    soak: Soak | None = None
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for s in old:
        signal.signal(s, interrupted)
    try:
        tar = _swarm.make_busybox_tar(work / "busybox.tar")
        soak = Soak(work, tar, trace)
        soak.sh.import_image(tar)
        pid = soak.start_daemon()
        print(f"shoald pid {pid}{' (under tracemalloc)' if trace else ''}; {opts.minutes:g} min of cycles "
              f"(build, deploy 6 tasks, scale to {SCALED} and back, rolling update, rm)", flush=True)
        started = time.monotonic()
        cycle = 0
        soak.deploy(cycle)
        time.sleep(SETTLE)
        first = sample(pid, started, cycle)
        soak.snapshot(pid)
        print(first.line("start"), flush=True)
        last_report = started
        samples = [first]
        while True:
            soak.rest_of_cycle(cycle)
            cycle += 1
            soak.deploy(cycle)
            done = time.monotonic() - started >= opts.minutes * 60
            if done or time.monotonic() - last_report >= opts.report_every * 60:
                time.sleep(SETTLE)
                s = sample(pid, started, cycle)
                soak.snapshot(pid)
                samples.append(s)
                last_report = time.monotonic()
                print(s.line("end" if done else ""), flush=True)
            if done:
                break
        soak.remove(cycle)
        end = samples[-1]
        ratio = end.rss_kib / first.rss_kib
        per_cycle = (end.rss_kib - first.rss_kib) / 1024 / max(cycle, 1)
        print(f"\n{cycle} cycles in {end.at / 60:.1f} min: RSS {first.rss_kib / 1024:.1f} -> {end.rss_kib / 1024:.1f} MiB, "
              f"x{ratio:.2f} (target <= x{TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'missed'}), "
              f"{per_cycle:+.2f} MiB a cycle")
        print(f"descriptors {first.fds} -> {end.fds} ({'unchanged' if end.fds == first.fds else 'CHANGED'}), "
              f"threads {first.threads} -> {end.threads} ({'unchanged' if end.threads == first.threads else 'CHANGED'})")
        if trace and soak.snapshots >= 2:
            top_growth(trace, 0, soak.snapshots - 1)
        return 0
    finally:
        if soak is not None:
            left = soak.cleanup()
            if left:
                print(f"warning: shoal left behind {left}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    raise SystemExit(main())
