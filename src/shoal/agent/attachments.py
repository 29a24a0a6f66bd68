"""The node's side of network attachments (moby's daemon/cluster/networks.go AttachNetwork and
DetachNetwork over swarmkit's agent): a container that `run --network X` connects to an
attachable swarm network X gets its address from the manager through this node's session
(never a node-local one, which another node could give too), on this node's copy of X (made
from the manager's record, with its VXLAN device and peers, as for a task); once the container
has left X (stopped, removed, or gone in a crash), the attachment is detached and the manager
frees the address.

Detaching follows the manager's view rather than each stop: every agent pass compares the
attachments the manager lists for this node (sent in its assignments) with the endpoints this
node's network state has, so a container stopped by the CLI, by conmon's reaper or while shoald
was down, and an attachment left by a manager restart, are all freed the same way."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from shoal.agent.session import NodeRemoved, SessionInvalid, Unreachable
from shoal.errors import NotFound, ShoalError

log = logging.getLogger("shoald.attachments")

# Seconds an attachment just given is left alone while its container connects (the address is
# asked for just before the container's veth is made, in the same start).
FRESH = 30.0
CALL_TIMEOUT = 30.0


class NodeAttachments:
    def __init__(self, agent: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.loop = loop
        self._lock = threading.Lock()
        self._fresh: dict[str, tuple[float, str]] = {}  # attachment ID -> (when given, network name)
        self._detaching: set[str] = set()
        self._attaching: dict[str, int] = {}  # container ID -> calls to the manager under way

    # ---- attach ------------------------------------------------------------------------------
    def provider(self, network: str, container_id: str, name: str, aliases: list[str]) -> str | None:
        """network/attach.py's cluster provider, from the runtime's thread (never the loop's)."""
        future = asyncio.run_coroutine_threadsafe(self.attach(network, container_id, name, aliases), self.loop)
        return future.result(timeout=CALL_TIMEOUT)

    async def attach(self, network: str, container_id: str, name: str = "",
                     aliases: list[str] | None = None) -> str | None:
        """The manager's address for the container on `network`, with this node's copy of the
        network ready; None when the manager has no swarm network of that name."""
        # The manager's next assignment set may list the attachment before its answer is read
        # here: until it is marked fresh, the agent pass must not take it for one whose
        # container left (it was detached so, and the container kept an address the manager
        # had freed).
        with self._lock:
            self._attaching[container_id] = self._attaching.get(container_id, 0) + 1
        try:
            try:
                answer = await self.agent.session.attach_network(network, container_id, name, list(aliases or []))
            except NotFound:
                return None
            except (SessionInvalid, Unreachable, NodeRemoved) as exc:
                raise ShoalError(f"Could not attach to network {network}: the manager did not answer: {exc}") from None
            record, net = answer["attachment"], answer["network"]
            with self._lock:
                self._fresh[record["id"]] = (time.monotonic(), net["name"])
        finally:
            with self._lock:
                left = self._attaching.pop(container_id) - 1
                if left:
                    self._attaching[container_id] = left
        try:
            await asyncio.to_thread(self._render, net)
        except BaseException:
            await self._detach(record["id"])
            raise
        return str(record["addresses"][0]).split("/")[0]

    def _render(self, record: dict[str, Any]) -> None:
        """This node's copy of the network as the manager made it (same ID and subnet), its
        bridge, and for an overlay network its VXLAN device with the peers of the other nodes."""
        from shoal.network import bridge, cleanup, overlay
        from shoal.network.store import NetworkStore

        store = NetworkStore()
        local = store.find(record["name"])
        if local is not None and local.id != record["id"]:
            if local.endpoints or local.scope != "swarm":
                raise ShoalError(f"Could not attach to network {record['name']}: this node has another network "
                                 "of that name")
            cleanup.remove_network(local.id, store)  # a removed swarm network's copy, unused
            local = None
        net = local if local is not None and local.swarm_id == record.get("swarm_id", local.swarm_id) \
            else store.adopt(record)
        # The next assignment set lists the network too (the dispatcher adds the networks of
        # the node's attachments); until then the agent's view has it from this answer.
        self.agent.networks = {**self.agent.networks, record["name"]: record}
        with store.lock():
            bridge.ensure_bridge(net)
        if net.driver == "overlay" and overlay.vni_of(net.options):
            overlay.sync(self.agent.networks)

    def networks(self) -> set[str]:
        """Names of the networks this node's containers are attached to (or attaching): kept on
        the node while they are (agent/netglue.py collect)."""
        node_id = self._node_id()
        with self._lock:
            fresh = {name for _when, name in self._fresh.values()}
        return fresh | {a["network"] for a in self.agent.attachments if a.get("node_id") == node_id}

    # ---- detach ------------------------------------------------------------------------------
    def _node_id(self) -> str:
        info = getattr(self.agent, "info", None)
        return info.node_id if info is not None else self.agent.node_id

    def reconcile(self) -> None:
        """Every agent pass (a thread): the node's attachments whose container has no endpoint
        with that address here any more are detached."""
        node_id = self._node_id()
        own = [a for a in self.agent.attachments if a.get("node_id") == node_id]
        now = time.monotonic()
        with self._lock:
            listed = {a["id"] for a in own}
            for aid, (when, _name) in list(self._fresh.items()):
                if aid not in listed and now - when > FRESH:
                    del self._fresh[aid]  # given, never listed (detached already, or lost)
        if not own:
            return
        from shoal.network.store import NetworkStore

        nets = {n.name: n for n in NetworkStore().list()}
        for a in own:
            net = nets.get(a["network"])
            ep = net.endpoints.get(a["container_id"]) if net is not None else None
            ip = str((a.get("addresses") or [""])[0]).split("/")[0]
            with self._lock:
                if ep is not None and ep.ip == ip:
                    self._fresh.pop(a["id"], None)  # connected: detached only once it leaves
                    continue
                given = self._fresh.get(a["id"])
                if given is not None and now - given[0] < FRESH or a["id"] in self._detaching \
                        or a["container_id"] in self._attaching:
                    continue
                self._detaching.add(a["id"])
            asyncio.run_coroutine_threadsafe(self._detach(a["id"]), self.loop)

    async def _detach(self, attachment_id: str) -> None:
        try:
            await self.agent.session.detach_network(attachment_id)
            with self._lock:
                self._fresh.pop(attachment_id, None)
        except (SessionInvalid, Unreachable, NodeRemoved, ShoalError) as exc:
            log.info("attachment %s not detached yet: %s", attachment_id, exc)
        finally:
            # Until the manager's next set drops it, it stays listed; a failed call is tried again.
            self.loop.call_later(2.0, self._done_detaching, attachment_id)

    def _done_detaching(self, attachment_id: str) -> None:
        with self._lock:
            self._detaching.discard(attachment_id)
