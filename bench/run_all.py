"""Run every benchmark in bench/ in turn (what `make bench` does).

    sudo .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Each bench/bench_*.py prints its own figures; this runs them one after another (never in
parallel: they would disturb each other's timings), shows how long each took and ends with a
summary. Exit status 1 if any benchmark exited non-zero. --quick skips the slow ones (listed in
SLOW with their usual duration on the 2-core development VM). bench/compare-swarm is not run:
it installs and starts Docker, so it is run on its own."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Skipped by --quick: the ones that take minutes or move hundreds of megabytes.
SLOW = {
    "bench_archive": "about 80 s",
    "bench_network": "about 2.5 min",
    "bench_mesh": "about 10 min: alternated runs, two sustained minutes each way, a 2-node cluster",
    "bench_registry": "about 60 s: a 256 MB push and pull",
    "bench_stack": "about 50 s: 50 tasks started and removed",
    "bench_images": "about 40 s: 500 images, 100 MB layers",
    "bench_scheduler": "about 60 s: 100,000 tasks through a SQLite store",
    "bench_cluster_failure": "about 60 s: 3 four-node clusters, a worker's link cut and healed in each",
    "bench_cluster": "about 2 min: 6 four-node clusters, the seed stack deployed on 3 and idle 12 s",
    "bench_agents": "about 80 s: 100 simulated agents join and heartbeat, 2 x 30 s measured",
    "bench_overlay": "about 40 s: a 3-node cluster, iperf3 between tasks on one node and across nodes",
    "bench_soak": "60 min: shoald's memory over an hour of deploy/scale/rm cycles (--minutes to shorten)",
}


def benchmarks() -> list[Path]:
    return sorted(p for p in HERE.glob("bench_*.py") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the slow benchmarks: " + ", ".join(sorted(SLOW)))
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (bench_stack or stack)")
    opts = parser.parse_args()
    chosen = benchmarks()
    if opts.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in (x.removesuffix(".py") for x in opts.only)}
        unknown = wanted - {p.stem for p in chosen}
        if unknown:
            print(f"run_all: no such benchmark: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [p for p in chosen if p.stem in wanted]
    results: list[tuple[str, str, float]] = []
    for path in chosen:
        if opts.quick and path.stem in SLOW:
            results.append((path.stem, f"skipped (--quick; {SLOW[path.stem]})", 0.0))
            continue
        print(f"=== {path.name}", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.run([sys.executable, str(path)], cwd=HERE.parent).returncode
        except KeyboardInterrupt:
            print(f"=== {path.name}: interrupted", flush=True)
            return 130
        took = time.monotonic() - start
        results.append((path.stem, "ok" if code == 0 else f"FAILED (exit {code})", took))
        print(f"=== {path.name}: exit {code} after {took:.0f} s\n", flush=True)
    width = max(len(name) for name, _, _ in results) if results else 0
    print("summary:")
    for name, status, took in results:
        print(f"  {name:<{width}}  {status}" + (f"  {took:.0f} s" if took else ""))
    return 1 if any(status.startswith("FAILED") for _, status, _ in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
