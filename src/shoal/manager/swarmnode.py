"""A node's place in a swarm, and the swarm-wide operations a manager answers: `swarm init`,
`join`, `join-token`, `update`, `leave`, and the node records `node ls/update/rm` change.

Three states, as dockerd's LocalNodeState, with shoal's one-node default kept:
- never initialised: shoald is a one-node manager on its own store, with no CA and no TCP
  listener (what shoal always was; Docker needs `swarm init` for that, shoal does not);
- manager (`swarm init`): the cluster's root CA, this node's manager certificate and the join
  tokens exist, and api/tcp.py serves the cluster on `--listen-addr` (port 2377);
- worker (`swarm join` with a worker token): the node holds a worker certificate and talks to
  the managers only through its agent's session (agent/session_https.py).

What the node remembers of its swarm is `<root>/swarm/state.json` (role, cluster, addresses);
certificates live in `<root>/certificates` (manager/ca.py CertStore); the cluster record (join
tokens, `swarm update` settings) is the store's "cluster" object, so a replicated store carries
it to other managers later."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.agent.session import DEFAULT_HEARTBEAT_PERIOD
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.manager import ca
from shoal.manager.cachild import CAChild, CAView
from shoal.manager.caserver import NodeJoin
from shoal.manager.serviceview import DEFAULT_HISTORY_LIMIT
from shoal.model.cluster import AVAILABILITIES, ManagerStatus, Node, NodeStatus, TLSInfo
from shoal.store.base import Store

DEFAULT_PORT = 2377
DEFAULT_HEARTBEAT = DEFAULT_HEARTBEAT_PERIOD  # seconds (Swarm: 5 s; ours meets the node-loss target)
DEFAULT_TASK_HISTORY = DEFAULT_HISTORY_LIMIT
CLUSTER_KIND = "cluster"
CLUSTER_NAME = "default"

# docker/cli and dockerd's words, with `shoal` for `docker`.
ALREADY_IN_SWARM = ('This node is already part of a swarm. Use "shoal swarm leave" to leave this swarm '
                    'and join another one.')
NOT_IN_SWARM = 'This node is not part of a swarm'
NOT_A_MANAGER = ('This node is not a swarm manager. Worker nodes can\'t be used to view or modify '
                 'cluster state. Please run this command on a manager node or promote the current '
                 'node to a manager.')
NO_INIT = ('This node is not a swarm manager. Use "shoal swarm init" or "shoal swarm join" to '
           'connect this node to swarm and try again.')
LEAVE_LAST_MANAGER = ('You are attempting to leave the swarm on a node that is participating as a '
                      'manager. Removing the last manager erases all current state of the swarm. '
                      'Use `--force` to ignore this message.')
SECOND_MANAGER = ('joining as a manager is not supported yet: a second manager needs the replicated '
                  'store (etcd) that shoal does not have yet; join as a worker '
                  '("shoal swarm join-token worker" on the manager)')


@dataclass
class LocalState:
    """`<root>/swarm/state.json`."""

    role: str  # "manager" or "worker"
    node_id: str
    cluster_id: str
    listen_addr: str = ""  # host:port the TCP listener binds (managers)
    advertise_addr: str = ""  # host:port other nodes reach this node at
    managers: list[str] = field(default_factory=list)  # host:port of the managers (workers)


def split_addr(addr: str, default_port: int = DEFAULT_PORT, what: str = "--listen-addr") -> tuple[str, int]:
    """`ADDR[:PORT]`, `[V6]:PORT` -> (host, port). An interface name is not taken (Docker
    resolves one; shoal asks for the address)."""
    text = addr.strip()
    if text.startswith("tcp://"):
        text = text[6:]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        host = "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {addr!r}: an IP address is expected") from None
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise InvalidArgument(f"invalid {what} {addr!r}: invalid port {port_text!r}")
    return host, int(port_text) if port_text else default_port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _global_addresses() -> list[str]:
    """The node's global-scope IPv4 addresses (`ip -j -4 addr show scope global`)."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True,
                             text=True, check=True, timeout=10).stdout
        return [a["local"] for link in json.loads(out) for a in link.get("addr_info", []) if a.get("local")]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return []


def choose_advertise_host(listen_host: str) -> str:
    """As dockerd: the listen address if it is one, else the node's only address; several make
    the user choose (dockerd's words)."""
    if listen_host not in ("0.0.0.0", "::"):
        return listen_host
    found = _global_addresses()
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidArgument("could not find the system's IP address - specify one with --advertise-addr")
    raise InvalidArgument("could not choose an IP address to advertise since this system has multiple "
                          f"addresses ({', '.join(found)}) - specify one with --advertise-addr")


def parse_duration(text: str, what: str) -> float:
    """A Go duration (`90m`, `2160h0m0s`, `1.5s`) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'invalid argument "{text}" for "{what}" flag: time: invalid duration "{text}"')
    return sum(float(n) * units[u] for n, u in parts)


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for whole seconds and fractions of them (`5s`, `2160h0m0s`)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms" if seconds else "0s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    frac = f"{seconds - whole:.9f}".rstrip("0").lstrip("0").rstrip(".")
    sec = f"{s}{frac if frac != '.' else ''}s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


class SwarmNode:
    """This node's swarm state and the manager-side operations on it. Methods that touch the
    store run in a worker thread of the daemon (they are short SQLite transactions)."""

    def __init__(self, root: Path, store: Store, node_id: str) -> None:
        self.root = root
        self.store = store
        self.default_node_id = node_id
        self.certs = ca.CertStore(root / "certificates", self._keys())
        # Whatever needs cryptography on the common paths (init, signing at join and renewal,
        # the root CA parsed at the listener's start) runs in this child: never in shoald.
        self.ca_child = CAChild(root)
        self.state_path = root / "swarm" / "state.json"
        self.local = self._load()
        # Set by api/tcp.py while the listener serves: the CA routes' state (tokens, root CA).
        self.ca_server: Any = None
        # begin and finish of a root rotation, one at a time (each runs in a worker thread)
        self._rotation_lock = threading.Lock()

    def _keys(self) -> Any:
        from shoal.store.secretbox import FileKeys

        return FileKeys(self.root / "keys")

    # ---- local state ------------------------------------------------------------------------
    def _load(self) -> LocalState | None:
        return self.read_state(self.root)

    @staticmethod
    def read_state(root: Path) -> LocalState | None:
        path = root / "swarm" / "state.json"
        try:
            data = json.loads(path.read_text())
            return LocalState(**{k: v for k, v in data.items() if k in LocalState.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ShoalError(f"{path}: not a swarm state file ({exc})") from None

    def _save(self, state: LocalState | None) -> None:
        if state is None:
            self.state_path.unlink(missing_ok=True)
        else:
            paths.ensure_private_dir(self.state_path.parent)
            tmp = self.state_path.with_name(f".state.{os.getpid()}.tmp")
            paths.write_file(tmp, json.dumps(asdict(state), indent=1) + "\n")
            os.replace(tmp, self.state_path)
        self.local = state

    @property
    def node_id(self) -> str:
        return self.local.node_id if self.local else self.default_node_id

    @property
    def is_worker(self) -> bool:
        """A joined worker: its shoald runs only the agent, with the HTTPS session."""
        return self.local is not None and self.local.role == "worker"

    @property
    def initialised(self) -> bool:
        return self.local is not None and self.local.role == "manager"

    def require_manager(self) -> None:
        if self.is_worker:
            raise Unavailable(NOT_A_MANAGER)

    def require_initialised(self) -> None:
        if not self.initialised:
            raise Unavailable(NOT_A_MANAGER if self.is_worker else NO_INIT)

    # ---- the cluster record -----------------------------------------------------------------
    def cluster(self) -> dict[str, Any] | None:
        if not self.initialised:
            return None
        assert self.local is not None
        return self.store.get(CLUSTER_KIND, self.local.cluster_id)

    def settings(self) -> dict[str, Any]:
        record = self.cluster() or {}
        spec = record.get("spec") or {}
        return {"cert_expiry": float(spec.get("cert_expiry", ca.DEFAULT_NODE_CERT_EXPIRY.total_seconds())),
                "heartbeat_period": float(spec.get("heartbeat_period", DEFAULT_HEARTBEAT)),
                "task_history_limit": int(spec.get("task_history_limit", DEFAULT_TASK_HISTORY))}

    def tokens(self) -> ca.JoinTokens:
        record = self.cluster()
        if record is None:
            raise Unavailable(NO_INIT)
        return ca.JoinTokens.from_dict(record["join_tokens"])

    def root_ca(self, with_key: bool = True) -> ca.RootCA:
        """The root CA parsed here (cryptography loaded in shoald): for a root rotation, a
        rare operation. The common paths ask ca_child."""
        expiry = dt.timedelta(seconds=self.settings()["cert_expiry"])
        return self.certs.load_root_ca(expiry, with_key=with_key)

    def ca_view(self) -> CAView:
        """The root CA as the CA routes keep it, parsed by the child (which then signs)."""
        return self.ca_child.view(dt.timedelta(seconds=self.settings()["cert_expiry"]))

    def root_pem(self) -> ca.RootPEM:
        return ca.RootPEM(self.certs.root_pem())

    def manager_addr(self) -> str:
        assert self.local is not None
        return self.local.advertise_addr

    # ---- swarm init -------------------------------------------------------------------------
    def init(self, listen_addr: str = "", advertise_addr: str = "", cert_expiry: float | None = None,
             heartbeat_period: float | None = None, task_history_limit: int | None = None) -> tuple[str, str, str]:
        """Make this one-node manager the first manager of a cluster others can join. Returns
        (node ID, worker token, manager address). Nothing is written unless every argument is
        good; the node keeps its ID, so its tasks and `node ls`'s `*` stay as they were."""
        if self.local is not None:
            raise Conflict(ALREADY_IN_SWARM)
        listen_host, listen_port = split_addr(listen_addr or f"0.0.0.0:{DEFAULT_PORT}")
        if advertise_addr:
            adv_host, adv_port = split_addr(advertise_addr, listen_port, "--advertise-addr")
            if adv_host in ("0.0.0.0", "::"):
                raise InvalidArgument(f"advertise address must be a non-zero IP address: {advertise_addr}")
        else:
            adv_host, adv_port = choose_advertise_host(listen_host), listen_port
        expiry = ca.check_cert_expiry(dt.timedelta(seconds=cert_expiry if cert_expiry is not None
                                                   else ca.DEFAULT_NODE_CERT_EXPIRY.total_seconds()))
        heartbeat = _check_heartbeat(heartbeat_period if heartbeat_period is not None else DEFAULT_HEARTBEAT)
        history = _check_history(task_history_limit if task_history_limit is not None else DEFAULT_TASK_HISTORY)
        _check_port_free(listen_host, listen_port)
        cluster_id = ca.new_node_id()
        node_id = self.default_node_id
        # the root CA and this manager's certificate, made and written by the child
        made = self.ca_child.call("init", expiry=expiry.total_seconds(), node_id=node_id, cluster_id=cluster_id)
        tokens = ca.JoinTokens.from_dict(made["tokens"])
        advertise = join_host_port(adv_host, adv_port)
        now = time.time()
        try:
            with self.store.transaction() as tx:
                tx.create(CLUSTER_KIND, {
                    "id": cluster_id, "name": CLUSTER_NAME, "created_at": now, "updated_at": now,
                    "spec": {"cert_expiry": expiry.total_seconds(), "heartbeat_period": heartbeat,
                             "task_history_limit": history},
                    "join_tokens": tokens.to_dict(),
                    "tls_info": made["desired"],
                })
                current = tx.get("node", node_id)
                node = Node.from_dict(current) if current else Node(id=node_id, hostname=socket.gethostname())
                node.role = "manager"
                node.status.addr = adv_host
                node.manager_status = ManagerStatus(leader=True, reachability="reachable", addr=advertise)
                node.tls_info = TLSInfo.from_api(made["tls_info"])
                node.updated_at = now
                record = node.to_dict()
                if current:
                    tx.update("node", dict(record, version=current["version"]))
                else:
                    tx.create("node", record)
        except BaseException:
            self.certs.remove()
            raise
        self._save(LocalState("manager", node_id, cluster_id, join_host_port(listen_host, listen_port), advertise))
        return node_id, tokens.worker, advertise

    # ---- join-token, update -----------------------------------------------------------------
    def join_token(self, role: str, rotate: bool = False) -> str:
        self.require_initialised()
        if role not in ("worker", "manager"):
            raise InvalidArgument(f"unknown role {role}")
        if not rotate:
            return self.tokens().get(role)
        root_ca = self.root_pem()  # its digest is all a token needs
        with self.store.transaction() as tx:
            record = tx.get(CLUSTER_KIND, self.local.cluster_id)  # type: ignore[union-attr]
            tokens = ca.JoinTokens.from_dict(record["join_tokens"])
            token = tokens.rotate(role, root_ca)
            tx.update(CLUSTER_KIND, dict(record, join_tokens=tokens.to_dict(), updated_at=time.time()))
        if self.ca_server is not None:  # the listener admits only the new token from now on
            self.ca_server.tokens = tokens
        return token

    def update(self, cert_expiry: float | None = None, heartbeat_period: float | None = None,
               task_history_limit: int | None = None) -> None:
        self.require_initialised()
        changes: dict[str, Any] = {}
        if cert_expiry is not None:
            changes["cert_expiry"] = ca.check_cert_expiry(dt.timedelta(seconds=cert_expiry)).total_seconds()
        if heartbeat_period is not None:
            changes["heartbeat_period"] = _check_heartbeat(heartbeat_period)
        if task_history_limit is not None:
            changes["task_history_limit"] = _check_history(task_history_limit)
        with self.store.transaction() as tx:
            record = tx.get(CLUSTER_KIND, self.local.cluster_id)  # type: ignore[union-attr]
            tx.update(CLUSTER_KIND, dict(record, spec=dict(record["spec"], **changes), updated_at=time.time()))
        if "cert_expiry" in changes and self.ca_server is not None:
            self.ca_server.root_ca = self.ca_server.root_ca.with_expiry(dt.timedelta(seconds=changes["cert_expiry"]))

    # ---- the CA service's callbacks ---------------------------------------------------------
    def on_node_joined(self, join: NodeJoin) -> None:
        """A node passed the token check: record it, or refuse before anything is signed."""
        if join.role == ca.MANAGER_ROLE:
            raise ShoalError(SECOND_MANAGER)
        now = time.time()
        addr = _host_of(join.advertise_addr) or (join.remote_addr or "")
        with self.store.transaction() as tx:
            for other in tx.list("node"):
                known = Node.from_dict(other)
                if other.get("hostname") != join.hostname or known.state == "down":
                    continue
                if addr and known.addr == addr and known.role == "worker":
                    # The same machine joining again (`swarm leave --force` then `swarm join`, as
                    # a script does at once): the node it was is gone, taken for Down now rather
                    # than refused until its heartbeats run out, as Swarm lets it join again.
                    known.status = NodeStatus(state="down", message="the node joined the swarm again", addr=addr)
                    known.updated_at = now
                    tx.update("node", known.to_dict())
                    continue
                raise ShoalError(f'a node with hostname "{join.hostname}" is already part of this swarm '
                                 f'(node {other["id"]}); give this node another hostname, or remove '
                                 f'that one ("shoal node rm")')
            node = Node(id=join.node_id, hostname=join.hostname, role="worker", created_at=now, state="unknown",
                        addr=addr)
            node.manager_status = None
            tx.create("node", node.to_dict())

    def role_of(self, node_id: str) -> str | None:
        """The role the manager records for a node, for certificate renewal; None once removed."""
        record = self.store.get("node", node_id)
        if record is None:
            return None
        return ca.MANAGER_ROLE if record.get("role") == "manager" else ca.WORKER_ROLE

    def renew_own_certificate(self) -> ca.NodeIdentity:
        """A manager signs its own new key and certificate (same ID, the role the store records,
        the cluster's current --cert-expiry), as a worker asks its manager for one: the old pair
        stays until the new one is checked and written (by the child)."""
        self.require_initialised()
        current = self.own_facts().identity
        role = self.role_of(current.node_id) or ca.MANAGER_ROLE
        answer = self.ca_child.call("renew_own", role=role, expiry=self.settings()["cert_expiry"])
        return ca.NodeFacts.from_json(answer["facts"].encode()).identity

    def own_facts(self) -> ca.NodeFacts:
        """This node's certificate as NodeFacts: stored beside it, or parsed by the child."""
        facts = self.certs.facts()
        if facts is None:
            facts = ca.NodeFacts.from_json(self.ca_child.call("facts")["facts"].encode())
        return facts

    # ---- root CA rotation (`swarm ca --rotate`; manager/carotation.py counts) ------------------
    def record_tls_info(self, node_id: str, cert_pem: bytes, trust_root_pem: bytes,
                        tls_info: dict[str, str] | None = None) -> None:
        """What the CA just issued to a node, as its TLSInfo: the manager knows it without the
        node telling (shoal's simplification of swarmkit's node description report); the
        rotation's reconciler reads it. `tls_info`: already computed by the child that signed."""
        info = TLSInfo.from_api(tls_info if tls_info is not None else ca.node_tls_info(cert_pem, trust_root_pem))
        with self.store.transaction() as tx:
            record = tx.get("node", node_id)
            if record is None:
                return
            node = Node.from_dict(record)
            node.tls_info = info
            tx.update("node", dict(node.to_dict(), version=record["version"]))

    def begin_ca_rotation(self, desired: ca.RootCA | None = None) -> ca.RootCA:
        """`swarm ca --rotate`: a new root whose key signs from now on (its certificate
        cross-signed by the current root rides along with every certificate), the cluster's
        desired TLSInfo names it, and this manager's own certificate comes from it at once.
        Trusted root and join tokens change only when the reconciler finishes. During a
        rotation, another replaces it (as swarmkit's ForceRotate). `desired`: the root the
        user brought (--ca-cert/--ca-key, checked by ca.desired_root), else a new one."""
        self.require_initialised()
        with self._rotation_lock:
            return self._begin_ca_rotation(desired)

    def _begin_ca_rotation(self, desired: ca.RootCA | None = None) -> ca.RootCA:
        current = self.root_ca()
        trusted = self.certs.load_trusted_root_ca(current.cert_expiry) if current.rotating else current
        if desired is None:  # swarmkit starts over from the trusted root: a newer root replaces it
            rotating = ca.begin_rotation(trusted)
        else:
            rotating = ca.rotate_to(current, trusted, desired)
        # This manager's certificate from the new signer first: a signer that fails (an external
        # CA that stopped answering) leaves nothing changed, no rotation half begun.
        ident = self.certs.identity()
        cert, key = rotating.issue(ident.node_id, self.role_of(ident.node_id) or ca.MANAGER_ROLE, ident.cluster_id)
        rotating.verify_node_cert(cert)
        self.certs.save_root_ca(rotating)
        with self.store.transaction() as tx:
            record = tx.get(CLUSTER_KIND, self.local.cluster_id)  # type: ignore[union-attr]
            tx.update(CLUSTER_KIND, dict(record, tls_info=ca.desired_tls_info(rotating),
                                         root_rotation=rotating.rotating, updated_at=time.time()))
        if self.ca_server is not None:
            self.ca_server.root_ca = rotating
        self.certs.save_node(cert, key)
        self.record_tls_info(self.node_id, cert, rotating.cert_pem)
        return rotating

    def rotation_status(self) -> tuple[bool, dict[str, str], Any]:
        """(in progress, desired TLSInfo, carotation.Progress) for the CLI and the reconciler."""
        from shoal.manager import carotation

        self.require_initialised()
        server = self.ca_server
        if server is not None:  # what the listener keeps: nothing parsed here
            rotating, desired = server.root_ca.rotating, server.desired
        else:
            root_ca = self.root_ca(with_key=False)
            rotating, desired = root_ca.rotating, ca.desired_tls_info(root_ca)
        return rotating, desired, carotation.progress(self.store.list("node"), desired)

    def finish_ca_rotation(self, expected_signer: bytes | None = None) -> ca.RootCA:
        """The reconciler saw every node on the new signer: the new root becomes the only one,
        both join tokens are made again (they carry the root's digest). This manager keeps its
        certificate (it chains to the new root directly, and to the old one through the
        cross-signed certificate, for nodes that have not fetched the new root yet)."""
        self.require_initialised()
        with self._rotation_lock:
            return self._finish_ca_rotation(expected_signer)

    def _finish_ca_rotation(self, expected_signer: bytes | None) -> ca.RootCA:
        current = self.root_ca()
        if expected_signer is not None and current.signing_cert_pem != expected_signer:
            raise ShoalError("the root CA rotation the reconciler saw converge was replaced by another")
        new_root, tokens = ca.finish_rotation(current)
        self.certs.save_root_ca(new_root)
        with self.store.transaction() as tx:
            record = tx.get(CLUSTER_KIND, self.local.cluster_id)  # type: ignore[union-attr]
            tx.update(CLUSTER_KIND, dict(record, tls_info=ca.desired_tls_info(new_root), root_rotation=False,
                                         join_tokens=tokens.to_dict(), updated_at=time.time()))
        if self.ca_server is not None:
            self.ca_server.root_ca = new_root
            self.ca_server.tokens = tokens
        cert, _ = self.certs.load_node()
        self.record_tls_info(self.node_id, cert, new_root.cert_pem)
        return new_root

    # ---- swarm join (the joining node's side) -----------------------------------------------
    async def join(self, manager_addr: str, token: str, advertise_addr: str = "", listen_addr: str = "") -> str:
        """Join the swarm of `manager_addr` as a worker: the certificate from the manager, then
        the local state. The node's ID becomes the one the manager gave; the caller restarts
        shoald so that only the agent runs, with the HTTPS session."""
        from shoal.agent import join as joining

        if self.local is not None:
            raise Conflict(ALREADY_IN_SWARM)
        ca.parse_join_token(token)  # "invalid join token" before anything is sent
        if advertise_addr:
            host, port = split_addr(advertise_addr, DEFAULT_PORT, "--advertise-addr")
            advertise = join_host_port(host, port)
        else:
            advertise = ""
        listen = join_host_port(*split_addr(listen_addr)) if listen_addr else ""
        busy = [s["name"] for s in self.store.list("service")]
        if busy:
            raise Conflict(f"this node runs services of its own ({', '.join(sorted(busy)[:5])}); remove them "
                           '("shoal stack rm", "shoal service rm") before joining a swarm')
        joining.base_url(manager_addr)  # a bad address is refused before anything else
        ident = await joining.join(manager_addr, token, socket.gethostname(), advertise, self.certs.directory,
                                   keys=self.certs.keys)
        manager = joining.base_url(manager_addr)[len("https://"):-len(ca.CA_API_PREFIX)]
        role = "manager" if ident.is_manager else "worker"
        self._save(LocalState(role, ident.node_id, ident.cluster_id, listen, advertise, [manager]))
        paths.write_file(self.root / "node_id", ident.node_id + "\n")  # the daemon's ID from now on
        self._forget_nodes()
        return role

    def _forget_nodes(self) -> None:
        """The node records of this node's own store (its one-node past): a worker's cluster is
        the manager's, and a node that left starts afresh under a new ID."""
        with self.store.transaction() as tx:
            for node in tx.list("node"):
                tx.delete("node", node["id"])

    # ---- swarm leave ------------------------------------------------------------------------
    def leave(self, force: bool = False) -> None:
        """A worker forgets its swarm (it becomes a one-node manager again, with a new ID: the
        cluster keeps its record as Down, as Docker's). The last manager leaves only with
        --force: the CA, the tokens and the other nodes' records go; services stay, as this
        node keeps running as a one-node manager."""
        if self.local is None:
            raise Unavailable(NOT_IN_SWARM)
        if self.local.role == "manager":
            if not force:
                raise Unavailable(LEAVE_LAST_MANAGER)
            with self.store.transaction() as tx:
                if tx.get(CLUSTER_KIND, self.local.cluster_id) is not None:
                    tx.delete(CLUSTER_KIND, self.local.cluster_id)
                for node in tx.list("node"):
                    if node["id"] == self.local.node_id:
                        own = Node.from_dict(node)
                        own.manager_status = ManagerStatus(leader=True, addr="")
                        own.tls_info = TLSInfo()
                        tx.update("node", dict(own.to_dict(), version=node["version"]))
                    else:
                        tx.delete("node", node["id"])
            self.certs.remove()
            self.ca_child.stop()
            self._save(None)
            return
        self.certs.remove()
        self._save(None)
        (self.root / "node_id").unlink(missing_ok=True)  # a new one-node identity at restart
        self._forget_nodes()


def _host_of(addr: str) -> str:
    if not addr:
        return ""
    try:
        return split_addr(addr, DEFAULT_PORT, "--advertise-addr")[0]
    except InvalidArgument:
        return ""


def _check_heartbeat(seconds: float) -> float:
    if not 0.1 <= seconds <= 24 * 3600:
        raise InvalidArgument(f"invalid dispatcher heartbeat period {go_duration(seconds)}: from 100ms to 24h")
    return seconds


def _check_history(limit: int) -> int:
    if limit < 0:
        raise InvalidArgument(f"invalid task history limit {limit}: it cannot be negative")
    return limit


def _check_port_free(host: str, port: int) -> None:
    """dockerd fails `swarm init` when it cannot listen; so does shoal, before writing anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ShoalError(f"failed to listen on remote API address: listen tcp {join_host_port(host, port)}: "
                             f"bind: {exc.strerror.lower() if exc.strerror else exc}") from None


# ---- node records: `node update`, `node rm` -------------------------------------------------
def resolve_node(nodes: list[dict[str, Any]], ref: str, self_id: str) -> dict[str, Any]:
    """Docker's lookup: `self`, full ID, hostname, then a unique ID prefix."""
    if ref == "self":
        ref = self_id
    for obj in nodes:
        if obj["id"] == ref:
            return obj
    named = [n for n in nodes if n.get("hostname") == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [n for n in nodes if n["id"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1 or len(named) > 1:
        raise InvalidArgument(f"node {ref} is ambiguous ({len(prefixed) or len(named)} matches found)")
    raise NotFound(f"node {ref} not found")


def update_node(store: Store, ref: str, self_id: str, *, availability: str | None = None,
                role: str | None = None, label_add: dict[str, str] | None = None,
                label_rm: list[str] | None = None) -> str:
    """`node update`: the node's spec (availability, role, labels), one transaction."""
    with store.transaction() as tx:
        record = resolve_node(tx.list("node"), ref, self_id)
        node = Node.from_dict(record)
        if availability is not None:
            if availability.lower() not in AVAILABILITIES:  # moby's convert/node.go words
                raise InvalidArgument(f'invalid Availability: "{availability}"')
            node.availability = availability.lower()
        node.labels.update(label_add or {})  # docker/cli adds, then removes
        for key in label_rm or []:
            if key not in node.labels:
                raise InvalidArgument(f"key {key} doesn't exist in node's labels")
            del node.labels[key]
        if role is not None and role.lower() not in ("worker", "manager"):
            raise InvalidArgument(f'invalid Role: "{role}"')
        role = role.lower() if role is not None else None
        if role is not None and role != node.role:
            if role == "manager":
                raise InvalidArgument("promoting a node to manager is not supported yet: several managers need "
                                      "the replicated store (etcd) that shoal does not have yet")
            managers = [n for n in tx.list("node") if n.get("role") == "manager"]
            if len(managers) <= 1:
                raise Conflict("rpc error: code = FailedPrecondition desc = attempting to demote the last "
                               "manager of the swarm")
        node.updated_at = time.time()
        tx.update("node", dict(node.to_dict(), version=record["version"]))
        return node.id


def remove_node(store: Store, ref: str, self_id: str, force: bool = False) -> str:
    """`node rm`, with swarmkit's preconditions (controlapi RemoveNode)."""
    with store.transaction() as tx:
        record = resolve_node(tx.list("node"), ref, self_id)
        node = Node.from_dict(record)
        if node.role == "manager" or node.id == self_id:
            raise Conflict(f"rpc error: code = FailedPrecondition desc = node {node.id} is a cluster manager "
                           "and is a member of the raft cluster. It must be demoted to worker before removal")
        if not force and node.state == "ready":
            raise Conflict(f"rpc error: code = FailedPrecondition desc = node {node.id} is not down and can't be "
                           "removed")
        # swarmkit's BlacklistedCertificates: the node's certificate is refused from now on
        # (tlsconfig.require_role), whatever it still holds. Kept for good: swarmkit drops an
        # entry once the certificate expires; one small record per removed node here.
        if tx.get(REMOVED_NODE_KIND, node.id) is None:
            tx.create(REMOVED_NODE_KIND, {"id": node.id, "removed_at": time.time()})
        _orphan_tasks(tx, node.id)
        tx.delete("node", node.id)
        return node.id


REMOVED_NODE_KIND = "removed_node"
ORPHANED_MESSAGE = "Task belonged to a node that has been deleted"  # swarmkit's controlapi orphanNodeTasks


def removed_node_ids(store: Store) -> set[str]:
    """The nodes `node rm` removed: their certificates are refused."""
    return {r["id"] for r in store.list(REMOVED_NODE_KIND)}


def _orphan_tasks(tx: Any, node_id: str) -> None:
    """swarmkit's orphanNodeTasks, in the removal's transaction: the node can no longer report
    its tasks, so those not yet stopped are ORPHANED; the orchestrator replaces them."""
    from shoal.model.cluster import Task, TaskState, TaskStatus

    now = time.time()
    for raw in tx.list("task"):
        if raw.get("node_id") != node_id:
            continue
        task = Task.from_dict(raw)
        if task.status.state >= TaskState.COMPLETE:
            continue
        task.status = TaskStatus(state=TaskState.ORPHANED, timestamp=now, message=ORPHANED_MESSAGE,
                                 container_id=task.status.container_id)
        tx.update("task", dict(task.to_dict(), version=raw["version"]))
