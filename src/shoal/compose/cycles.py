"""`depends_on` cycles. `docker stack deploy` never reads depends_on (docker/cli's convert has no
use for it), so a stack file with a cycle deploys there. shoal honours depends_on: a service's
first tasks wait for its dependencies (manager/orchestrator.py waiting_on), and a cycle would wait
for ever. So a deploy warns of each cycle and drops the ordering between the services of it;
`stack config` prints depends_on as written, as docker's does."""

from __future__ import annotations

from typing import Any


def _dependencies(service: Any) -> list[str]:
    if not isinstance(service, dict):
        return []
    raw = service.get("depends_on")
    if isinstance(raw, list):
        return [str(name) for name in raw]
    if isinstance(raw, dict):
        return [str(name) for name in raw]
    return []


def _first_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        # Iterative depth-first walk: a file can chain thousands of services.
        path: list[str] = [root]
        on_path = {root}
        iters = [iter(graph.get(root, []))]
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                iters.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            if nxt in done or nxt not in graph:
                continue  # an undefined service is left to the converter (it drops it)
            path.append(nxt)
            on_path.add(nxt)
            iters.append(iter(graph[nxt]))
    return None


def find_cycle(services: dict[str, Any]) -> list[str] | None:
    """The first cycle found, as a path that ends where it starts (`a b c a`), or None.
    Services are visited in name order so the message is the same on every run."""
    return _first_cycle({name: _dependencies(svc) for name, svc in services.items()})


def break_cycles(services: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
    """The services with no depends_on left between the services of any cycle, and the cycles
    (each as find_cycle gives it). A cycle is found, its services' dependencies on one another
    dropped, and the search run again until none is left: each cycle reported is one the file
    has, and a dependency on or from a service outside it is kept. Services not changed are
    the same objects; a changed one is a copy (the caller's mapping is left as written)."""
    graph = {name: _dependencies(svc) for name, svc in services.items()}
    cycles: list[list[str]] = []
    while (cycle := _first_cycle(graph)) is not None:
        cycles.append(cycle)
        members = set(cycle)
        for name in members:
            graph[name] = [dep for dep in graph[name] if dep not in members]
    if not cycles:
        return services, []
    out: dict[str, Any] = {}
    for name, svc in services.items():
        kept = set(graph[name])
        raw = svc.get("depends_on") if isinstance(svc, dict) else None
        if isinstance(raw, list) and any(str(dep) not in kept for dep in raw):
            svc = {**svc, "depends_on": [dep for dep in raw if str(dep) in kept]}
        elif isinstance(raw, dict) and any(str(dep) not in kept for dep in raw):
            svc = {**svc, "depends_on": {dep: c for dep, c in raw.items() if str(dep) in kept}}
        out[name] = svc
    return out, cycles
