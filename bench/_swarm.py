"""The seed's stack run the same way on shoal and on Docker Swarm, for bench_stack.py and
bench/compare-swarm.

Each orchestrator is driven through its own CLI, as a user types it (`stack deploy`, `service
scale`, `stack rm`). What is running is read the cheapest way each offers, so polling disturbs
the figures as little as possible: shoal's container records in-process (what `shoal ps` prints),
Docker's `docker ps` (a Go binary asking dockerd). A task counts as running when its container's
process runs. Timings are wall-clock from the command's start to the state being observed, with
a poll every POLL seconds."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
POLL = 0.1
STACK = "benchweb"
SERVICE = f"{STACK}_web"
IMAGE = "localhost/busybox:test"
REPLICAS = 5
SCALED = 50
RESTART_DELAY = 5.0  # Swarm's default, written out so both sides wait the same
SHOAL_POOL = "10.216.0.0/16:20"

COMPOSE = """\
version: "3.8"
services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    environment:
      BENCH_REV: "{rev}"
    deploy:
      replicas: {replicas}
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
        delay: {delay:g}s
    stop_grace_period: 1s
    ports:
      - "{port}:80"
    networks:
      - webnet
networks:
  webnet:
"""

# What platform-notes measured for Swarm on one of these machines (seed stack, 5 s restart delay).
PLATFORM_NOTES = {
    "deploy": 4.8,
    "kill": 7.1 - 5.0,
    "scale": 21.2,
    "rm": 21.7,
    "rss": 150.0,
}


class Timeout(RuntimeError):
    pass


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until check() holds; returns the monotonic time it was first seen."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def pids_named(comm: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == comm:
                    out.append(int(d.name))
    return out


def make_busybox_tar(path: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_busybox_rootfs_tar  # the same offline image the tests use

    return make_busybox_rootfs_tar(path)


class Orchestrator(Protocol):
    label: str

    def deploy(self, compose: Path) -> None: ...
    def scale(self, replicas: int) -> None: ...
    def remove(self) -> None: ...
    def running(self) -> dict[str, int]: ...  # container id -> host pid
    def containers(self) -> list[str]: ...  # every container of the stack, running or not
    def env(self, ids: list[str]) -> list[list[str]]: ...
    def daemon_pids(self) -> list[int]: ...


# ---- shoal -------------------------------------------------------------------------------------

class Shoal:
    """shoal under a private SHOAL_ROOT / SHOAL_RUN."""

    label = "shoal"

    def __init__(self, root: Path) -> None:
        self.root = root
        os.environ.update(SHOAL_ROOT=str(root), SHOAL_RUN=str(root / "run"),
                          SHOAL_DEFAULT_ADDRESS_POOLS=SHOAL_POOL)
        os.environ.pop("SHOAL_SOCKET", None)
        from shoal.runtime.manager import ContainerManager

        self.mgr = ContainerManager()

    def cli(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"shoal {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def import_image(self, tar: Path) -> None:
        self.cli("import", str(tar), IMAGE)

    def start_daemon(self) -> None:
        self.cli("stack", "ls")  # starts shoald on first use, as any stack command does

    def deploy(self, compose: Path) -> None:
        self.cli("stack", "deploy", "-d", "-c", str(compose), STACK)

    def scale(self, replicas: int) -> None:
        self.cli("service", "scale", "-d", f"{SERVICE}={replicas}")

    def remove(self) -> None:
        self.cli("stack", "rm", STACK)

    def running(self) -> dict[str, int]:
        return {c.id: c.state.pid for c in self.mgr.list()}

    def containers(self) -> list[str]:
        return [c.id for c in self.mgr.list(all=True)]

    def env(self, ids: list[str]) -> list[list[str]]:
        out = []
        for cid in ids:
            with contextlib.suppress(Exception):  # removed meanwhile
                out.append(list(self.mgr.get(cid).config.get("Env") or []))
        return out

    def daemon_pid(self) -> int | None:
        try:
            return int((self.root / "run" / "shoald.lock").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def daemon_pids(self) -> list[int]:
        pid = self.daemon_pid()
        return [pid] if pid else []

    def cleanup(self) -> list[str]:
        """stack rm, wait for every container to go, stop shoald, remove the root. Returns what
        could not be removed."""
        problems: list[str] = []
        if (self.root / "run" / "shoal.sock").exists():
            with contextlib.suppress(Exception):
                self.cli("stack", "rm", STACK, timeout=60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.containers():
            time.sleep(0.2)
        for cid in self.containers():
            with contextlib.suppress(Exception):
                self.cli("rm", "-f", cid, timeout=60)
        deadline = time.monotonic() + 30  # shoald removes the stack network after its tasks
        while time.monotonic() < deadline and self.daemon_pid():
            try:
                if f"{STACK}_webnet" not in self.cli("network", "ls", timeout=30):
                    break
            except Exception:  # noqa: BLE001 - no daemon or no network list: nothing to wait for
                break
            time.sleep(0.3)
        pid = self.daemon_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
        with contextlib.suppress(Exception):
            self.cli("network", "reconcile", timeout=60)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(self.root) in line]
        for target in reversed(mounts):
            subprocess.run(["umount", "-l", target], check=False)
            problems.append(f"mount {target}")
        from shoal.network.nft import table_name

        if subprocess.run(["nft", "list", "table", "ip", table_name()], capture_output=True).returncode == 0:
            problems.append(f"nft table ip {table_name()}")
        ip_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        problems += [f"link {line.split(':')[1].strip()}" for line in ip_links.splitlines() if f"shoal:{self.root}" in line]
        shutil.rmtree(self.root, ignore_errors=True)
        return problems


# ---- Docker Swarm ------------------------------------------------------------------------------

def docker_bin() -> str:
    """Debian's docker.io client when installed (it matches its dockerd), else any on PATH."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    proc = subprocess.run([docker_bin(), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def docker_running() -> bool:
    if not (Path("/usr/bin/docker").exists() or shutil.which("docker")):
        return False
    try:
        return subprocess.run([docker_bin(), "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}", check=False).strip()


class Swarm:
    label = "Docker Swarm"

    def import_image(self, tar: Path) -> None:
        docker("import", str(tar), IMAGE)

    def deploy(self, compose: Path) -> None:
        docker("stack", "deploy", "-c", str(compose), STACK)

    def scale(self, replicas: int) -> None:
        docker("service", "scale", "-d", f"{SERVICE}={replicas}")

    def remove(self) -> None:
        docker("stack", "rm", STACK)

    def _ids(self, all_: bool) -> list[str]:
        args = ["ps", "-q", "--no-trunc", "--filter", f"label=com.docker.stack.namespace={STACK}"]
        return docker(*args, *(["-a"] if all_ else [])).split()

    def running(self) -> dict[str, int]:
        ids = self._ids(False)
        if not ids:
            return {}
        out = docker("inspect", "-f", "{{.Id}} {{.State.Pid}} {{.State.Running}}", *ids, check=False)
        return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
                if line.endswith(" true") and line.split()[1] != "0"}

    def containers(self) -> list[str]:
        return self._ids(True)

    def env(self, ids: list[str]) -> list[list[str]]:
        if not ids:
            return []
        out = docker("inspect", "-f", "{{json .Config.Env}}", *ids, check=False)
        import json

        return [json.loads(line) for line in out.splitlines() if line.startswith("[")]

    def daemon_pids(self) -> list[int]:
        return pids_named("dockerd") + pids_named("containerd")

    def cleanup(self) -> list[str]:
        docker("stack", "rm", STACK, check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.containers():
            time.sleep(0.5)
        left = self.containers()
        if left:
            docker("rm", "-f", *left, check=False)
        # the stack's network goes a moment after its tasks
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and f"{STACK}_webnet" in docker("network", "ls", check=False):
            time.sleep(0.5)
        return [f"container {c[:12]}" for c in left]


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class Figures:
    label: str
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # key -> why there is no figure
    rps: float | None = None
    rss_mib: float | None = None
    idle_cpu: float | None = None  # % of one core, daemon(s) with SCALED tasks up


def write_compose(path: Path, port: int, rev: int, replicas: int = REPLICAS) -> Path:
    path.write_text(COMPOSE.format(image=IMAGE, rev=rev, replicas=replicas, delay=RESTART_DELAY, port=port))
    return path


def http_rps(port: int, requests: int = 2000, concurrency: int = 4) -> tuple[float | None, str]:
    """Requests/s through the published port on 127.0.0.1, a new connection per request (ab
    without -k). (None, why) when the port does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.settimeout(3)
            s.recv(64)
    except ConnectionRefusedError:
        return None, "refused"
    except OSError as exc:
        return None, f"fails ({exc.strerror or exc})"
    proc = subprocess.run(["ab", "-q", "-r", "-n", str(requests), "-c", str(concurrency),
                           f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=120)
    m = re.search(r"Requests per second:\s+([\d.]+)", proc.stdout)
    failed = re.search(r"Failed requests:\s+(\d+)", proc.stdout)
    if not m:
        return None, f"ab failed: {proc.stderr.strip()[:80]}"
    if failed and int(failed.group(1)):
        return float(m.group(1)), f"{failed.group(1)} of {requests} failed"
    return float(m.group(1)), ""


def measure(o: Orchestrator, work: Path, port: int, *, update: bool, rps: bool, log: Callable[[str], None],
            requests: int = 2000) -> Figures:
    """deploy -> idle memory -> requests/s -> kill -9 -> rolling update -> scale -> idle CPU -> rm."""
    fig = Figures(o.label)
    v1 = write_compose(work / f"{o.label.split()[0].lower()}-v1.yml", port, rev=1)

    def converged(n: int, rev: int | None = None) -> Callable[[], bool]:
        def check() -> bool:
            up = o.running()
            if len(up) != n:
                return False
            return rev is None or all(f"BENCH_REV={rev}" in e for e in o.env(list(up)))
        return check

    def timed(key: str, what: str, action: Callable[[], None], done: Callable[[], bool], timeout: float,
              less: float = 0.0) -> None:
        """One figure; a step that never converges is shown as timed out and the run goes on."""
        t0 = time.monotonic()
        action()
        try:
            fig.seconds[key] = wait_until(done, timeout, what) - t0 - less
            log(f"{o.label}: {what}: {fig.seconds[key] + less:.2f} s" + (f" ({fig.seconds[key]:.2f} s beyond the {less:g} s delay)" if less else ""))
        except Timeout:
            fig.notes[key] = f"timed out ({timeout:.0f} s)"
            log(f"{o.label}: {what}: timed out after {timeout:.0f} s")

    timed("deploy", f"deploy to {REPLICAS}/{REPLICAS} running", lambda: o.deploy(v1), converged(REPLICAS), 180)

    time.sleep(3)  # idle: nothing to converge
    pids = o.daemon_pids()
    fig.rss_mib = sum(rss_kib(p) for p in pids) / 1024
    log(f"{o.label}: daemon RSS, idle with {REPLICAS} tasks: {fig.rss_mib:.1f} MiB ({len(pids)} processes)")

    if rps:
        fig.rps, why = http_rps(port, requests)
        if why:
            fig.notes["rps"] = why
        log(f"{o.label}: published port: {fig.rps or 0:,.0f} req/s {why}")

    up = o.running()
    if up:
        victim = sorted(up)[0]
        timed("kill", "kill -9 to replaced", lambda: os.kill(up[victim], signal.SIGKILL),
              lambda: victim not in (r := o.running()) and len(r) == REPLICAS, 120, less=RESTART_DELAY)

    if update:
        v2 = write_compose(work / f"{o.label.split()[0].lower()}-v2.yml", port, rev=2)
        timed("update", "rolling update (env change, parallelism 1)", lambda: o.deploy(v2),
              converged(REPLICAS, rev=2), 180)

    timed("scale", f"scale {REPLICAS} -> {SCALED}", lambda: o.scale(SCALED), converged(SCALED), 300)

    time.sleep(2)
    pids = o.daemon_pids()
    before, t = cpu_ticks(pids), time.monotonic()
    time.sleep(5)
    ticks = cpu_ticks(pids) - before
    fig.idle_cpu = ticks / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t) * 100
    log(f"{o.label}: daemon CPU, idle with {len(o.running())} tasks: {fig.idle_cpu:.1f}% of a core")

    tasks, containers = len(o.running()), len(o.containers())
    timed("rm", f"stack rm of {tasks} tasks ({containers - tasks} more exited containers of their history) "
          "until no container is left", o.remove,
          lambda: not o.containers(), 300)
    return fig


@contextlib.contextmanager
def shoal_session(work: Path, tar: Path) -> Iterator[Shoal]:
    """A private shoal root with the busybox image, cleaned up however the block ends (SIGTERM
    and SIGINT included)."""
    sh = Shoal(work / "shoal-root")
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for s in old:
        signal.signal(s, interrupted)
    try:
        sh.import_image(tar)
        yield sh
    finally:
        left = sh.cleanup()
        for s, h in old.items():
            signal.signal(s, h)
        if left:
            print(f"warning: shoal left behind {left}", file=sys.stderr)


def work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="shoal-bench-stack-"))


# ---- the table ---------------------------------------------------------------------------------

ROWS = [
    ("deploy", f"stack deploy to {REPLICAS}/{REPLICAS} running", "s"),
    ("scale", f"scale {REPLICAS} -> {SCALED} (until {SCALED}/{SCALED} running)", "s"),
    ("kill", f"kill -9 of a task to replaced, less the {RESTART_DELAY:g} s delay", "s"),
    ("update", f"rolling update of {REPLICAS} tasks (env change)", "s"),
    ("rm", f"stack rm of {SCALED} tasks until no container is left", "s"),
    ("rps", "published port, 127.0.0.1, new connection per request", "req/s"),
    ("rss", f"daemon RSS, idle with {REPLICAS} tasks", "MiB"),
    ("cpu", f"daemon CPU, idle with {SCALED} tasks", "% core"),
]


def value(fig: Figures, key: str) -> float | None:
    if key in fig.seconds:
        return fig.seconds[key]
    return {"rps": fig.rps, "rss": fig.rss_mib, "cpu": fig.idle_cpu}.get(key)


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "req/s":
        return f"{v:,.0f} req/s"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:.1f}%"


def cell(v: float | None, unit: str, note: str) -> str:
    """A figure, a figure with its caveat, or only why there is none."""
    if v is None and note:
        return note
    return fmt(v, unit) + (f" ({note})" if note else "")


def table(shoal: Figures, swarm: Figures | None, keys: list[str], *, targets: dict[str, str] | None = None,
          swarm_source: str = "") -> str:
    """One table: figure, shoal, Swarm, shoal/Swarm (and a target column when given)."""
    head = ["", "shoal", f"Docker Swarm{swarm_source}", "shoal/Swarm"] + (["target"] if targets else [])
    rows = [head]
    for key, title, unit in ROWS:
        if key not in keys:
            continue
        mine = value(shoal, key)
        theirs = value(swarm, key) if swarm else None
        mine_s = cell(mine, unit, shoal.notes.get(key, ""))
        theirs_s = cell(theirs, unit, swarm.notes.get(key, "") if swarm else "")
        if mine is not None and theirs:
            ratio = f"{mine / theirs:.2f}"
        else:
            ratio = "-"
        row = [title, mine_s, theirs_s, ratio]
        if targets is not None:
            row.append(targets.get(key, ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for r in rows:
        lines.append("   ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)
