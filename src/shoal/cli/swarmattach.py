"""In a swarm, a container the CLI starts on an attachable swarm network takes the address the
manager gives it (network/attach.py's cluster provider, through this node's shoald and its
session to the manager: agent/attachments.py), as dockerd's AttachNetwork; outside a swarm
every network is the node's own and nothing is asked."""

from __future__ import annotations


def use_manager_addresses() -> None:
    """Set the provider when this node is in a swarm (its state file): before a start. Not in
    shoald, which runs these commands for a remote CLI (api/nodeops.py): it has its own provider
    (daemon.py, in process), which a call back into its own API must not replace."""
    from shoal import paths

    if not (paths.state_root() / "swarm" / "state.json").exists():
        return
    from shoal.network import attach

    if attach.has_cluster():
        return
    attach.set_cluster(_attach)


def _attach(network: str, container_id: str, name: str, aliases: list[str]) -> str | None:
    from shoal.api.client import connect

    with connect() as client:
        found = client.post(f"/containers/{container_id}/attach", {"network": network, "name": name,
                                                                   "aliases": aliases})
    address = found.get("address")
    return address if isinstance(address, str) else None
