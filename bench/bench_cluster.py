"""`shoal cluster create --nodes 4`: time to all shoalds answering and to all nodes Ready in the
manager's `node ls`, namespaces included, each node's idle shoald memory, and `cluster rm`.

    sudo .venv/bin/python bench/bench_cluster.py [--runs 3] [--nodes 4] [--no-stack]
        [--idle S] [--name NAME --subnet CIDR]

Memory is read (RSS, PSS) once the nodes are idle after the seed's stack was deployed
(bench_cluster_deploy.py's: 5 busybox httpd replicas, the image imported on the manager only, so
the workers pulled it from the manager's image store) and its 5 tasks run; --no-stack reads it
right after `cluster create`. Idle: --idle seconds (default: the manager's CA child's linger
and 2 s more, so it has left; any still there is counted apart).

Docker Swarm's figures on this machine (../shared/reference/swarm-multinode): 4 dockerd APIs up
0.45 s, 4 nodes Ready 0.8-1.4 s; dockerd+containerd 112-123 MiB per idle node. Targets (issue 11):
no slower than Swarm's daemons alone; shoald per node at most a third of dockerd+containerd.
shoald's last figures (2026-12-08, quiet machine, 3 runs each): with the seed's stack the manager
42.6 MiB RSS (PSS 23.6), workers 39.9-40.2 (PSS 20.7-21.0); right after create the manager
39.0-39.1, workers 37.0-37.1. The reference's dockerd+containerd pairs, per role (9 runs): idle
manager 120.6-124.7, workers 111.9-115.6; with the 5 tasks 147.8-150.4 and 124.9-129.6.
Runs in a private state root, run root and config dir; removes every cluster it made."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoal.manager.cachild import LINGER


def shoal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], env=env, capture_output=True, text=True, timeout=300)


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: shared pages (libpython, libcrypto, the .so files every shoald of
    the machine maps) split among the processes that map them."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def maps_cryptography(pid: int) -> bool:
    """Whether the process maps cryptography's extension (about 11 MiB a node): no shoald should
    (a worker renews its certificate in agent/certchild.py, a manager signs in manager/cachild.py)."""
    return "/cryptography/" in Path(f"/proc/{pid}/maps").read_text()


def ca_children(pid: int) -> int:
    """The manager's CA child processes (manager/cachild.py) still alive under `pid`."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                count += b"shoal.manager.cachild" in Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                pass
    return count


def deploy_seed(env: dict[str, str], base: Path, name: str) -> None:
    """The seed's stack, as bench_cluster_deploy.py deploys it, until its 5 tasks run."""
    import _swarm
    from bench_cluster_deploy import compose, running_on

    tar = base / "busybox.tar"
    if not tar.exists():
        _swarm.make_busybox_tar(tar)
    seed = base / "seed.yml" if (base / "seed.yml").exists() else compose(base)
    record = json.loads((base / "r" / "clusters" / name / "cluster.json").read_text())
    manager = record["nodes"][0]
    for args in ((dict(env, SHOAL_ROOT=manager["root"], SHOAL_RUN=manager["run"]), "-c", "default", "import",
                  str(tar), "web:v1"), (env, "stack", "deploy", "--detach", "-c", str(seed), "webapp")):
        proc = shoal(*args)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
    deadline = time.monotonic() + 60
    while sum(running_on(env).values()) != 5:
        if time.monotonic() > deadline:
            raise RuntimeError("the seed's 5 tasks did not run within 60 s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--no-stack", action="store_true", help="measure memory right after cluster create")
    parser.add_argument("--idle", type=float, default=LINGER + 2, help="seconds idle before memory is read")
    parser.add_argument("--name", help="the cluster's name (default bc<pid>)")
    parser.add_argument("--subnet", help="the cluster's subnet (default: a free /24 of 198.18.0.0/15)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_cluster: needs root", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="shbc-"))
    env = dict(os.environ, SHOAL_ROOT=str(base / "r"), SHOAL_RUN=str(base / "r" / "run"),
               SHOAL_CONFIG=str(base / "cfg" / "config.json"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_SOCKET"):
        env.pop(k, None)
    name = args.name or f"bc{os.getpid() % 10000}"
    subnet = ["--subnet", args.subnet] if args.subnet else []
    answering, ready, removed = [], [], []
    rss: dict[str, list[float]] = {"manager": [], "worker": []}
    pss: dict[str, list[float]] = {"manager": [], "worker": []}
    crypto: dict[str, list[bool]] = {"manager": [], "worker": []}
    lingering: list[int] = []
    try:
        for mode in ("--no-swarm", "swarm"):
            for _ in range(args.runs):
                t0 = time.monotonic()
                extra = ["--no-swarm"] if mode == "--no-swarm" else []
                proc = shoal(env, "cluster", "create", "--nodes", str(args.nodes), *extra, *subnet, name)
                elapsed = time.monotonic() - t0
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                if mode == "--no-swarm":
                    answering.append(elapsed)
                else:
                    if "warning: not Ready" in proc.stderr:
                        print(proc.stderr, file=sys.stderr)
                        return 1
                    ready.append(elapsed)
                    if not args.no_stack:
                        deploy_seed(env, base, name)
                    time.sleep(args.idle)
                    run = base / "r" / "run" / "clusters" / name
                    for k in range(1, args.nodes + 1):
                        pid = int((run / f"{k}.pid").read_text())
                        role = "manager" if k == 1 else "worker"
                        rss[role].append(rss_mib(pid))
                        pss[role].append(pss_mib(pid))
                        crypto[role].append(maps_cryptography(pid))
                        if k == 1:
                            lingering.append(ca_children(pid))
                t0 = time.monotonic()
                rm = shoal(env, "cluster", "rm", name)
                removed.append(time.monotonic() - t0)
                if rm.returncode != 0:
                    print(rm.stderr, file=sys.stderr)
                    return 1
    finally:
        if (base / "r" / "clusters" / name).exists():
            shoal(env, "cluster", "rm", name)
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"cluster_create_{args.nodes}_answering_s {statistics.median(answering):.2f}  "
          f"(runs {' '.join(f'{x:.2f}' for x in answering)})")
    print(f"cluster_create_{args.nodes}_ready_s {statistics.median(ready):.2f}  "
          f"(runs {' '.join(f'{x:.2f}' for x in ready)}; Swarm 0.8-1.4)")
    print(f"cluster_rm_{args.nodes}_s {statistics.median(removed):.2f}  "
          f"(runs {' '.join(f'{x:.2f}' for x in removed)})")
    for role in ("manager", "worker"):
        r, p = rss[role], pss[role]
        print(f"shoald_{role}_idle_rss_mib {statistics.median(r):.1f}  (min {min(r):.1f} max {max(r):.1f}; "
              f"dockerd+containerd 112-123)")
        print(f"shoald_{role}_idle_pss_mib {statistics.median(p):.1f}  (min {min(p):.1f} max {max(p):.1f})")
        print(f"shoald_{role}_maps_cryptography {sum(crypto[role])}/{len(crypto[role])}")
    print(f"memory read {'after cluster create' if args.no_stack else 'with the seed stack running'}, "
          f"{args.idle:g} s idle; manager's CA child still alive in {sum(lingering)}/{len(lingering)} runs")
    print(f"load_average_1m {load:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
