"""`network connect|disconnect` (docker/cli cli/command/network/{connect,disconnect}.go; moby's
daemon/container_operations.go for the errors). A running container gets (or loses) a veth and
an address in its namespace at once, its /etc/hosts and the embedded DNS follow; a stopped one
only has the network recorded for its next start, as Docker does."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from shoal.errors import InvalidArgument, ShoalError

_SHARED = "container sharing network namespace with another container or host cannot be connected to any other network"


def _daemon(exc: ShoalError) -> ShoalError:
    exc.from_daemon = True  # type: ignore[attr-defined]
    exc.exit_code = 1
    return exc


def refresh_dns(c) -> None:
    """shoald serves the embedded resolver: it re-reads the container's networks (and every
    container's names) as after `run` (POST /v1/containers/{id}/dns)."""
    netns = (c.network or {}).get("netns")
    if not netns:
        return
    from shoal.api.client import connect

    with connect() as client:
        client.post(f"/containers/{c.id}/dns", {"netns": netns})


def _node(args: argparse.Namespace) -> Any:
    """The API client of the node a tcp:// context names (cli/main.py sets args.node), else None:
    that node connects its container (POST /node/networks/{net}/connect: api/nodeops.py)."""
    if getattr(args, "node", None) is None:
        return None
    from shoal.cli import remote

    return remote.client(args)


def cmd_connect(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is None:
        connect(args.network, args.container, list(args.alias), args.ip or "")
    else:
        from shoal.api.client import quote_ref

        node.request("POST", f"/node/networks/{quote_ref(args.network)}/connect", None,
                     {"container": args.container, "aliases": list(args.alias), "ip": args.ip or ""})
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is None:
        disconnect(args.network, args.container)
    else:
        from shoal.api.client import quote_ref

        node.request("POST", f"/node/networks/{quote_ref(args.network)}/disconnect", None,
                     {"container": args.container, "force": bool(args.force)})
    return 0


cmd_connect.on_node = cmd_disconnect.on_node = True  # type: ignore[attr-defined] # cli/main.py


def connect(network: str, container: str, aliases: list[str], ip: str) -> None:
    """`network connect` on this node (in the CLI's process, or in shoald for a remote CLI)."""
    from shoal.network import attach
    from shoal.network.store import NetworkStore
    from shoal.runtime.manager import ContainerManager
    from shoal.runtime.state import Container

    from shoal.cli.swarmattach import use_manager_addresses

    use_manager_addresses()  # an attachable swarm network: the manager's address
    mgr = ContainerManager()
    try:
        store = NetworkStore()
        found = store.find(network)
        if found is None and not attach.has_cluster():
            store.get(network)  # `network X not found`, before the container is looked at
        c = mgr.get(container)
        mode = c.spec.network
        if mode == "host" or mode == "none" or mode.startswith("container:"):
            raise InvalidArgument(_SHARED)
        hostname = c.config.get("Hostname") or c.id[:12]
        if found is None:
            # Maybe a swarm network this node has no copy of yet: a running container's attach
            # asks the manager, which makes the copy (or says `network X not found`).
            if c.state.status != "running":
                store.get(network)
            ep = attach.connect(c.id, network, aliases=aliases, name=c.name, hostname=hostname, ip=ip)
        net = found or store.get(network)
        if found is not None and net.name in _networks_of(c):
            raise ShoalError(f"endpoint with name {c.name} already exists in network {net.name}")
        if found is not None and c.state.status == "running":
            ep = attach.connect(c.id, net.name, aliases=aliases, name=c.name, hostname=hostname, ip=ip)
        elif ip and c.state.status != "running":
            attach.wanted_ip(net, ip)  # a bad address fails now, not at the next start
        with c.locked():
            fresh = Container.load(c.dir)
            fresh.spec.extra_networks.append({"network": net.name, "aliases": list(aliases), "ip": ip})
            if c.state.status == "running":
                fresh.network.setdefault("networks", []).append(net.name)
                fresh.network.setdefault("addresses", []).append(ep.ip)
                # appended in place: the file is bind-mounted, a new inode would not be seen
                with open(fresh.dir / "hosts", "a") as hosts:
                    hosts.write(f"{ep.ip}\t{hostname}\n")
            fresh.save()
        if c.state.status == "running" and not net.predefined:
            with contextlib.suppress(ShoalError):
                refresh_dns(fresh)
    except ShoalError as exc:
        raise _daemon(exc) from None


def disconnect(network: str, container: str) -> None:
    """`network disconnect` on this node (in the CLI's process, or in shoald for a remote CLI)."""
    from shoal.network import attach
    from shoal.network.store import NetworkStore
    from shoal.runtime.manager import ContainerManager
    from shoal.runtime.state import Container

    mgr = ContainerManager()
    try:
        net = NetworkStore().get(network)
        c = mgr.get(container)
        if c.spec.network == "host" and net.name == "host":
            raise InvalidArgument("cannot disconnect container from host network - container was created in host network mode")
        if net.name not in _networks_of(c):
            raise ShoalError(f"container {c.id} is not connected to network {net.name}")
        ep = None
        if c.state.status == "running":
            ep = attach.disconnect(c.id, net.name)
        with c.locked():
            fresh = Container.load(c.dir)
            extras = [e for e in fresh.spec.extra_networks if e["network"] != net.name]
            if _is_primary(fresh, net.id) and extras:
                # the next start makes the next network eth0; with none left, the container
                # keeps its first network for its next start (Docker's would start on none)
                fresh.spec.network, fresh.spec.network_aliases = extras[0]["network"], list(extras[0].get("aliases") or [])
                extras = extras[1:]
            fresh.spec.extra_networks = extras
            if ep is not None:
                nets = fresh.network.get("networks") or []
                fresh.network["networks"] = [n for n in nets if n != net.name]
                fresh.network["addresses"] = [a for a in fresh.network.get("addresses") or [] if a != ep.ip]
                path = fresh.dir / "hosts"
                lines = [line for line in path.read_text().splitlines(keepends=True)
                         if not line.startswith(f"{ep.ip}\t")]
                with open(path, "r+") as hosts:  # in place: the file is bind-mounted
                    hosts.write("".join(lines))
                    hosts.truncate()
            fresh.save()
        if ep is not None and not net.predefined:
            with contextlib.suppress(ShoalError):
                refresh_dns(fresh)
    except ShoalError as exc:
        raise _daemon(exc) from None


def _is_primary(c, network_id: str) -> bool:
    from shoal.network.store import NetworkStore

    first = "bridge" if c.spec.network == "default" else c.spec.network
    try:
        return NetworkStore().get(first).id == network_id
    except ShoalError:
        return False


def _networks_of(c) -> list[str]:
    """The networks a container is (or will be, once started) on, by name."""
    if c.state.status == "running":
        return list((c.network or {}).get("networks") or [])
    first = "bridge" if c.spec.network == "default" else c.spec.network
    return [first] + [e["network"] for e in c.spec.extra_networks]


def register_verbs(nsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = nsub.add_parser("connect", help="Connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="Add network-scoped alias for the container")
    p.add_argument("--ip", help="IPv4 address (e.g., \"172.30.100.104\")")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="Disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="Force the container to disconnect from a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)
