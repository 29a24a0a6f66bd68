"""Container lifecycle figures: create+start until the process runs, stop+remove, 100 containers
started one after another, and the memory shoal spends per running container beyond the
container's own processes (its conmon). Docker's figures beside them when an Engine is installed.

Run as root: .venv/bin/python bench/bench_containers.py [--count 100]"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    os.environ["SHOAL_ROOT"] = str(root)
    os.environ["SHOAL_RUN"] = str(root / "run")
    return root


def _import_busybox(root: Path) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_busybox_rootfs_tar  # the same offline image the tests use

    tar = make_busybox_rootfs_tar(root / "busybox.tar")
    ref = "localhost/busybox:bench"
    subprocess.run([sys.executable, "-m", "shoal", "import", str(tar), ref], check=True,
                   stdout=subprocess.DEVNULL)
    return ref


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _mem_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def _docker() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def _docker_time(args: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(["docker", *args], check=True, capture_output=True)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_containers: needs root", file=sys.stderr)
        return 1
    root = _setup_root()
    from shoal.runtime.manager import ContainerManager
    from shoal.runtime.spec import ContainerSpec

    mgr = ContainerManager()
    docker = _docker()
    try:
        image = _import_busybox(root)

        def spec(name: str = "") -> ContainerSpec:
            return ContainerSpec(image=image, name=name, cmd=["sleep", "600"], network="none")

        # create+start until the process runs; stop (SIGKILL-free: sleep as PID 1 ignores TERM,
        # so stop with a 0 s grace like `docker stop -t 0`) + remove
        starts, removes = [], []
        for _ in range(opts.rounds):
            t0 = time.monotonic()
            c = mgr.create(spec())
            mgr.start(c.id)
            pid = mgr.get(c.id).state.pid
            assert _running(pid)
            starts.append(time.monotonic() - t0)
            t0 = time.monotonic()
            mgr.stop(c.id, timeout=0)
            mgr.remove(c.id)
            removes.append(time.monotonic() - t0)

        # the same through the CLI, as a user types it (adds the Python start-up of `shoal`)
        cli_starts = []
        for _ in range(max(3, opts.rounds // 2)):
            t0 = time.monotonic()
            cid = subprocess.run([sys.executable, "-m", "shoal", "run", "-d", "--network", "none", image,
                                  "sleep", "600"], check=True, capture_output=True, text=True).stdout.strip()
            cli_starts.append(time.monotonic() - t0)
            mgr.remove(cid, force=True)

        # N containers one after another, all left running for the memory figure
        ids = []
        t0 = time.monotonic()
        for _ in range(opts.count):
            c = mgr.create(spec())
            mgr.start(c.id)
            ids.append(c.id)
        many = time.monotonic() - t0

        conmons = [mgr.get(i).state.conmon_pid for i in ids]
        mem = [_mem_kib(p) for p in conmons if p]
        rss = statistics.mean(m[0] for m in mem)
        pss = statistics.mean(m[1] for m in mem)

        t0 = time.monotonic()
        for i in ids:
            mgr.remove(i, force=True)
        teardown = time.monotonic() - t0

        d_start = d_rm = d_many = "n/a"
        if docker:
            ds, dr = [], []
            for _ in range(opts.rounds):
                ds.append(_docker_time(["run", "-d", "--network", "none", "--name", "shoal-bench", "busybox", "sleep", "600"]))
                dr.append(_docker_time(["rm", "-f", "shoal-bench"]))
            d_start, d_rm = _median_ms(ds), _median_ms(dr)
            t = time.monotonic()
            for n in range(opts.count):
                subprocess.run(["docker", "run", "-d", "--network", "none", "--name", f"shoal-bench-{n}", "busybox",
                                "sleep", "600"], check=True, capture_output=True)
            d_many = f"{time.monotonic() - t:.1f} s"
            subprocess.run(["docker", "rm", "-f", *[f"shoal-bench-{n}" for n in range(opts.count)]], capture_output=True)

        from shoal.runtime import engine

        print(f"runtime: {engine.select().name} under conmon, cgroup {'v2' if Path('/sys/fs/cgroup/cgroup.controllers').exists() else 'v1'}")
        print(f"{'figure':<52}{'shoal':>14}{'docker':>12}")
        print(f"{'create+start until the process runs (median)':<52}{_median_ms(starts):>14}{d_start:>12}")
        print(f"{'`shoal run -d` command, wall (median)':<52}{_median_ms(cli_starts):>14}{d_start:>12}")
        print(f"{'stop -t 0 + remove (median)':<52}{_median_ms(removes):>14}{d_rm:>12}")
        print(f"{f'{opts.count} containers started one after another':<52}{many:>12.1f} s{d_many:>12}")
        print(f"{'  per container':<52}{many / opts.count * 1000:>11.0f} ms{'':>12}")
        print(f"{f'remove -f of {opts.count} running containers':<52}{teardown:>12.1f} s{'':>12}")
        print(f"{'memory per running container beyond its processes':<52}{'':>14}{'n/a' if not docker else '':>12}")
        print(f"{'  conmon RSS (mean)':<52}{rss / 1024:>11.2f} MiB")
        print(f"{'  conmon PSS (mean; shared pages split)':<52}{pss / 1024:>11.2f} MiB")
        print(f"{'  target':<52}{'<= 2 MB':>14}")
    finally:
        for c in mgr.list(all=True):
            try:
                mgr.remove(c.id, force=True)
            except Exception:  # noqa: BLE001 - best effort, report below
                pass
        left = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(root) in line.split()[4]]
        for target in reversed(left):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
