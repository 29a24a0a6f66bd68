"""`depends_on` cycles refused at load, as compose-go's graph does: a cycle means no service of
it can ever start first, and a deploy would only wait out its timeout."""

from __future__ import annotations

from typing import Any

from shoal.compose.errors import ComposeError


def _dependencies(service: Any) -> list[str]:
    if not isinstance(service, dict):
        return []
    raw = service.get("depends_on")
    if isinstance(raw, list):
        return [str(name) for name in raw]
    if isinstance(raw, dict):
        return [str(name) for name in raw]
    return []


def find_cycle(services: dict[str, Any]) -> list[str] | None:
    """The first cycle found, as a path that ends where it starts (`a b c a`), or None.
    Services are visited in name order so the message is the same on every run."""
    graph = {name: _dependencies(svc) for name, svc in services.items()}
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
                continue  # an undefined service is reported by the converter, with its key
            path.append(nxt)
            on_path.add(nxt)
            iters.append(iter(graph[nxt]))
    return None


def check_cycles(config: dict[str, Any], where: str = "") -> None:
    services = config.get("services")
    if not isinstance(services, dict):
        return
    cycle = find_cycle(services)
    if cycle is not None:
        raise ComposeError(f"dependency cycle detected: {' -> '.join(cycle)}", where=where)
