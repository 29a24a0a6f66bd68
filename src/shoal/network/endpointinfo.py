"""A container's NetworkSettings.Networks, as `docker inspect` shows them (moby's
EndpointSettings): one entry per network the container is on, from this node's network files.
Here rather than in runtime/inspect.py, which imports nothing from network/."""

from __future__ import annotations

from typing import Any

from shoal.network.store import NetworkStore


def _names(c: Any) -> list[str]:
    """The container's networks, its first one first: those of its spec (attached at each
    start) and those it was connected to while running."""
    spec = c.spec
    names = ["bridge" if spec.network == "default" else spec.network]
    names += [str(e["network"]) for e in spec.extra_networks or () if e.get("network")]
    names += [n for n in (c.network.get("networks") or ()) if isinstance(n, str)]
    return [n for n in dict.fromkeys(names) if n]


def endpoint_settings(c: Any, store: NetworkStore | None = None) -> dict[str, dict[str, Any]]:
    """name -> EndpointSettings. NetworkID is the ID `network ls` shows (a swarm network's:
    the cluster's, the same on every node); the addresses are those of a running container's
    endpoint, empty otherwise, as moby's for a stopped container."""
    store = store or NetworkStore()
    aliases = {str(e["network"]): list(e.get("aliases") or []) for e in c.spec.extra_networks or ()
               if e.get("network")}
    out: dict[str, dict[str, Any]] = {}
    for ref in _names(c):
        net = store.find(ref)
        if net is None:
            continue  # removed meanwhile (a stopped container keeps its spec)
        ep = net.endpoints.get(c.id) if c.state.status == "running" else None
        given = c.spec.network_aliases if ref in (c.spec.network, "bridge" if c.spec.network == "default" else "") \
            else aliases.get(ref, [])
        out[net.name] = {
            "IPAMConfig": None, "Links": None, "Aliases": list(given) or None,
            "MacAddress": ep.mac if ep is not None else "", "DriverOpts": None,
            "NetworkID": net.shown_id, "EndpointID": "",
            "Gateway": net.gateway if ep is not None else "",
            "IPAddress": ep.ip if ep is not None else "",
            "IPPrefixLen": int(net.subnet.split("/")[1]) if ep is not None and net.subnet else 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None,
        }
    return out


def with_networks(doc: dict[str, Any], c: Any) -> dict[str, Any]:
    """runtime/inspect.py's document of `c` with its NetworkSettings.Networks."""
    doc["NetworkSettings"]["Networks"] = endpoint_settings(c)
    return doc
