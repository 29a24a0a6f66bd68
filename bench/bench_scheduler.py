"""Benchmark: the scheduler alone placing 100,000 tasks on 1,000 simulated nodes (issue 11's
target: under 10 s; Swarm2k placed about 95,000 on about 2,400 nodes).

The nodes have 2-16 CPUs and 4-64 GiB, 70 % carry a zone label (a, b, c or d), a few are down
or drained. The tasks belong to 40 services of 2,500: half reserve CPU and memory, a third are
constrained away from zone d, a quarter spread over the zone label, a fifth have at most 5
replicas per node. Printed separately:

- the pure core (manager/scheduling): the node set and tasks loaded, then one tick;
- one pass through a real SQLite store (manager/scheduler.reconcile in one transaction, in a
  temporary directory): reading the store, the core, and writing 100,000 assignments; then the
  next pass (which reads those writes back) and one with nothing new (what a quiet manager
  pass costs the scheduler);
- placement quality: tasks per schedulable node (max / min), tasks left pending.

    .venv/bin/python bench/bench_scheduler.py [--nodes 1000] [--tasks 100000] [--services 40]

Needs no root; the store lives in a temporary directory, removed at the end."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shoal.manager import scheduler  # noqa: E402
from shoal.manager.constraints import compile_all  # noqa: E402
from shoal.manager.scheduling import Scheduler, TaskInfo, describe_spec  # noqa: E402
from shoal.model.cluster import Node, NodeResources, NodeStatus, Task, TaskState  # noqa: E402
from shoal.store import SQLiteStore  # noqa: E402

GIB = 1 << 30
ZONES = "abcd"


def make_nodes(count: int, rng: random.Random) -> list[Node]:
    nodes = []
    for i in range(count):
        labels = {"zone": rng.choice(ZONES)} if rng.random() < 0.7 else {}
        roll = rng.random()
        state, availability = ("down", "active") if roll < 0.01 else ("ready", "drain") if roll < 0.02 else ("ready", "active")
        nodes.append(Node(
            id=f"node{i:05d}", hostname=f"sim-{i:05d}", role="manager" if i < 3 else "worker", availability=availability,
            labels=labels, resources=NodeResources(rng.choice((2, 4, 8, 16)) * 1_000_000_000, rng.choice((4, 8, 16, 32, 64)) * GIB),
            status=NodeStatus(state=state, addr=f"10.{i >> 8}.{i & 255}.1"),
        ))
    return nodes


def service_spec(index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": f"app{index}:v1", "placement": {}}
    if index % 2 == 0:
        spec["resources"] = {"reservations": {"nano_cpus": 25_000_000, "memory_bytes": 32 << 20}}
    if index % 3 == 0:
        spec["placement"]["constraints"] = ["node.labels.zone!=d", "node.role==worker"]
    if index % 4 == 0:
        spec["placement"]["preferences"] = ["node.labels.zone"]
    if index % 5 == 0:
        spec["placement"]["max_replicas_per_node"] = 5
    return spec


def quality(counts: dict[str, int], nodes: list[Node]) -> str:
    usable = [counts.get(n.id, 0) for n in nodes if n.status.state == "ready" and n.availability == "active"]
    return f"tasks per schedulable node: max {max(usable)}, min {min(usable)}, mean {sum(usable) / len(usable):.1f}"


class Clock:
    """Wall and CPU time: on a shared machine the CPU time is the steadier figure."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        took = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return took


def fmt(took: tuple[float, float]) -> str:
    return f"{took[0]:6.2f} s (CPU {took[1]:5.2f} s)"


def bench_core(nodes: list[Node], specs: list[dict[str, Any]], per_service: int) -> None:
    tasks = []
    for s, spec in enumerate(specs):
        info = describe_spec(spec)
        tasks.extend(TaskInfo(f"s{s:03d}t{i:05d}", f"svc{s:03d}", 1, "", int(TaskState.PENDING), int(TaskState.RUNNING),
                              info, (float(i), i)) for i in range(per_service))
    clock = Clock()
    core = Scheduler()
    core.load(nodes, tasks)
    loaded = clock.lap()
    decisions = core.process_preassigned() + core.tick(0.0)
    ticked = clock.lap()
    counts: dict[str, int] = {}
    by_service: dict[str, dict[str, int]] = {}
    pending = 0
    for d in decisions:
        if d.new.node_id:
            counts[d.new.node_id] = counts.get(d.new.node_id, 0) + 1
            per = by_service.setdefault(d.new.service_id, {})
            per[d.new.node_id] = per.get(d.new.node_id, 0) + 1
        else:
            pending += 1
    # Per service, over the nodes it may use: how uneven its tasks are.
    worst = (0, "")
    for s, spec in enumerate(specs):
        match = compile_all(describe_spec(spec).constraints) if describe_spec(spec).constraints else (lambda n: True)
        usable = [n for n in nodes if n.status.state == "ready" and n.availability == "active" and match(n)]
        per = by_service.get(f"svc{s:03d}", {})
        spread = max(per.get(n.id, 0) for n in usable) - min(per.get(n.id, 0) for n in usable)
        worst = max(worst, (spread, f"svc{s:03d}"))
    total = (loaded[0] + ticked[0], loaded[1] + ticked[1])
    print(f"pure core, {len(tasks)} tasks on {len(nodes)} nodes: load {fmt(loaded)}, tick {fmt(ticked)}, "
          f"total {fmt(total)}")
    print(f"  {quality(counts, nodes)}; pending {pending}")
    print(f"  per service over the nodes it may use, the largest max-min difference: {worst[0]} ({worst[1]})")


def bench_store(nodes: list[Node], specs: list[dict[str, Any]], per_service: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-sched-"))
    try:
        store = SQLiteStore(tmp / "state.db")
        start = time.perf_counter()
        with store.transaction() as tx:
            for n in nodes:
                tx.create("node", n.to_dict())
            for s, spec in enumerate(specs):
                tx.create("service", {"id": f"svc{s:03d}", "name": f"svc{s:03d}", "spec": spec, "spec_version": 1})
                for i in range(per_service):
                    t = Task(id=f"s{s:03d}t{i:05d}", service_id=f"svc{s:03d}", service_name=f"svc{s:03d}", slot=i + 1,
                             spec_version=1, spec=spec, created_at=float(i))
                    t.advance(TaskState.PENDING, "pending task scheduling", now=0.0)
                    tx.create("task", t.to_dict())
        print(f"store: {len(specs) * per_service} pending tasks written in {time.perf_counter() - start:.1f} s (setup)")
        scheduler.reset()
        clock = Clock()
        with store.transaction() as tx:
            scheduler.reconcile(tx, 1.0)
        first = clock.lap()
        with store.transaction() as tx:
            scheduler.reconcile(tx, 2.0)
        second = clock.lap()
        with store.transaction() as tx:
            scheduler.reconcile(tx, 3.0)
        third = clock.lap()
        counts: dict[str, int] = {}
        pending = 0
        for raw in store.list("task"):
            if raw["status"]["state"] == "assigned":
                counts[raw["node_id"]] = counts.get(raw["node_id"], 0) + 1
            else:
                pending += 1
        print(f"store pass: first {fmt(first)} (read, schedule, write every assignment, commit)")
        print(f"  next: {fmt(second)} (the store decodes the 100,000 records just written), "
              f"then with nothing new {fmt(third)}")
        print(f"  {quality(counts, nodes)}; pending {pending}")
        store.close()
    finally:
        scheduler.reset()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=40)
    parser.add_argument("--no-store", action="store_true", help="the pure core only")
    opts = parser.parse_args()
    rng = random.Random(11)
    nodes = make_nodes(opts.nodes, rng)
    specs = [service_spec(i) for i in range(opts.services)]
    per_service = opts.tasks // opts.services
    bench_core(nodes, specs, per_service)
    if not opts.no_store:
        bench_store(nodes, specs, per_service)
    print("target (issue 11): the scheduler alone, 100,000 tasks on 1,000 nodes, under 10 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
