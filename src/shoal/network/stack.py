"""A stack's networks (from Compose `networks:`, ipam included) made real, for `stack deploy`."""

from __future__ import annotations

from shoal.errors import InvalidArgument, NotFound
from shoal.model.stack import NetworkSpec
from shoal.network.store import Network, NetworkStore


def ensure_network(spec: NetworkSpec, store: NetworkStore | None = None) -> Network:
    """Create the network if it does not exist yet (a redeploy reuses it); an external network
    must exist already, as Swarm requires."""
    store = store or NetworkStore()
    store.ensure_predefined()  # `host` and `none` exist on every node, as Docker's
    existing = store.find(spec.name)
    if spec.external:
        if existing is None:
            raise NotFound(f'network "{spec.name}" is declared as external, but could not be found. '
                           "You need to create a swarm-scoped network before the stack is deployed")
        return existing
    if existing is not None:
        return existing
    if spec.ipam.driver not in ("", "default"):
        raise InvalidArgument(f"network {spec.compose_name}: ipam driver {spec.ipam.driver!r} is not supported (only the default)")
    if len(spec.ipam.config) > 1:
        raise InvalidArgument(f"network {spec.compose_name}: shoal networks have one IPv4 subnet, ipam.config lists {len(spec.ipam.config)}")
    pool = spec.ipam.config[0] if spec.ipam.config else None
    return store.create(spec.name, driver=spec.driver or "overlay",
                        subnet=pool.subnet if pool else "", gateway=pool.gateway if pool else "",
                        ip_range=pool.ip_range if pool else "", internal=spec.internal, attachable=spec.attachable,
                        labels=dict(spec.labels), options=dict(spec.driver_opts))


def remove_network(spec: NetworkSpec, store: NetworkStore | None = None) -> bool:
    """`stack rm`: remove the stack's own (non-external) network; False if it was not there."""
    from shoal.network import cleanup

    if spec.external:
        return False
    store = store or NetworkStore()
    if store.find(spec.name) is None:
        return False
    cleanup.remove_network(spec.name, store)
    return True
