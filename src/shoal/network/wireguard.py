"""Encrypted overlay networks (`--opt encrypted`): a node's VXLAN traffic of its encrypted
networks goes inside one WireGuard interface per node, so its UDP 4789 never crosses the node
link in clear.

Docker's overlay driver encrypts with ESP in transport mode (xfrm); the kernels shoal targets
may lack ESP and AES-GCM altogether, so shoal uses WireGuard: the kernel's (`ip link add type
wireguard`) when it has it, else wireguard-go, the WireGuard authors' userspace implementation,
on a TUN device. Both are configured the same way, with `wg` (wireguard-tools).

- Addressing: each node has a tunnel address in TUNNEL_NET (class E, 240.0.0.0/4: reserved,
  used by no real network and refused by most stacks, Linux routes it; it cannot clash with a
  task subnet or with the mesh's 169.254.0.0/16 loopback mapping), allocated by the manager's
  dispatcher. An encrypted network's VXLAN device sends from this node's tunnel address to the
  peers' (overlay.py), which the kernel routes into the WireGuard interface; WireGuard sends
  them, encrypted, to the peer's node address on UDP WG_PORT.
- Keys: each node makes its X25519 keypair itself, in memory, at every registration with its
  manager (every shoald start, every new session, and at least every ROTATION: the agent then
  opens a new session; the static keypair rotates with them);
  the private key reaches `wg` through a pipe (`/dev/fd/N`), never a file. The public key goes
  to the manager in the node description; the manager sends each node its tunnel address and
  the peers (public key, endpoint, tunnel address) with its encrypted networks. WireGuard itself
  makes new session keys every two minutes (its REKEY_AFTER_TIME).
- wireguard-go is a process of the node's shoald: started by it (its own session, so containers'
  traffic keeps flowing while shoald restarts), made again when it dies, removed with the last
  encrypted network of the node; a new shoald removes the one a previous one left (its key is
  gone with that process) before making its own.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import paths

log = logging.getLogger("shoald.network")

WG_PORT = 51820  # WireGuard's usual port; each node (or cluster node's namespace) has its own
TUNNEL_NET = ipaddress.IPv4Network("240.83.0.0/16")  # the nodes' tunnel addresses (class E)
# WireGuard's own overhead over IPv4 is 60 bytes (IP 20, UDP 8, its header and tag 32); wg-quick
# leaves 80 (IPv6). The interface takes 1420 as wg-quick does, and an encrypted network's MTU
# leaves VXLAN's 50 bytes below it.
WG_MTU = 1420
ENCRYPTED_MTU = WG_MTU - 50
SOCKET_DIR = Path("/var/run/wireguard")  # wireguard-go's and wg's UAPI sockets (fixed in both)
TUN = Path("/dev/net/tun")
START_TIMEOUT = 5.0
TIMEOUT = 10.0


def binary() -> str:
    """wireguard-go's path: SHOAL_WIREGUARD_GO, else looked up on PATH ("" when missing; set
    empty, it is not used at all)."""
    given = os.environ.get("SHOAL_WIREGUARD_GO")
    if given is not None:
        return given if os.access(given, os.X_OK) else ""
    return shutil.which("wireguard-go") or ""


@functools.cache
def kernel_has_wireguard() -> bool:
    """The kernel's own answer: a WireGuard link made in a throw-away namespace (loads the
    module when it can be loaded; gone with the namespace)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        proc = subprocess.run(["unshare", "--net", "ip", "link", "add", "wgprobe", "type", "wireguard"],
                              capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def unavailable() -> str:
    """Why this node cannot carry an encrypted overlay network ("" when it can)."""
    if shutil.which("wg") is None:
        return "wg (wireguard-tools), which configures WireGuard, is not installed"
    if kernel_has_wireguard():
        return ""
    if not binary():
        return "the kernel has no WireGuard (CONFIG_WIREGUARD) and wireguard-go is not installed"
    if not TUN.exists():
        return f"the kernel has no WireGuard (CONFIG_WIREGUARD) and no {TUN} for wireguard-go"
    return ""


# The node description's entry (Description.Engine.Plugins, where Docker lists its network and
# volume drivers) saying this node can carry encrypted overlay networks, and with what; the
# scheduler places an encrypted network's tasks only on nodes that list it.
PLUGIN_TYPE = "Encryption"


def plugins() -> list[dict[str, str]]:
    """What this node adds to its description's plugins: [] when it cannot make a WireGuard
    interface, else the implementation it would use (the kernel's `wireguard`, or
    `wireguard-go`). SHOAL_WIREGUARD_GO set empty (or to a missing file) is the ops/test
    override for a machine where wireguard-go must not be used."""
    if unavailable():
        return []
    return [{"type": PLUGIN_TYPE, "name": "wireguard" if kernel_has_wireguard() else "wireguard-go"}]


def interface_name(root: Path | None = None) -> str:
    """`swg-<root hash>` (`swg-shoal` for the default root): one per node; named for its state
    root because wireguard-go's socket directory is shared by every namespace of the machine."""
    import hashlib

    root_text = str(root or paths.state_root())
    return "swg-shoal" if root_text == "/var/lib/shoal" else f"swg-{hashlib.sha256(root_text.encode()).hexdigest()[:6]}"


# ---- keys ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    private: str = field(repr=False)  # base64, in this process's memory only
    public: str


_identity_lock = threading.Lock()
_identity: Identity | None = None  # the key the interface has (the manager was given it)
_pending: Identity | None = None  # the key sent in a registration not answered yet


def new_identity() -> Identity:
    """A keypair from `wg genkey`/`wg pubkey` through pipes (never a file): the tool every
    WireGuard node has, where cryptography's X25519 would cost every node ~10 MiB of memory
    just to hold a key (a one-node shoald loads no cryptography at all)."""
    private = _run("wg", "genkey").strip()
    proc = subprocess.run(["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        raise OSError(f"wg pubkey: {proc.stderr.strip() or proc.returncode}")
    return Identity(private=private, public=proc.stdout.strip())


def rotate() -> dict[str, Any]:
    """A new keypair for this node, for its next registration: what the node description
    carries ({} when the node cannot do WireGuard). It replaces the current key only at
    `commit`, once the manager has it."""
    global _pending
    if unavailable():
        return {}
    with _identity_lock:
        _pending = new_identity()
        return {"key": _pending.public, "port": WG_PORT}


def commit(sent: dict[str, Any]) -> None:
    """The manager took the registration that carried `sent`: its key is the node's now (the
    interface is given it at the next sync, the peers get it from the manager)."""
    global _identity, _pending
    with _identity_lock:
        if _pending is not None and sent.get("key") == _pending.public:
            _identity, _pending = _pending, None


ROTATION = 24 * 3600.0  # seconds a node keeps its static keypair at most (SHOAL_WIREGUARD_ROTATE)


def rotation_period() -> float:
    """How long a session keeps its key: the agent then registers again with a new one (agent.py)."""
    try:
        return max(1.0, float(os.environ.get("SHOAL_WIREGUARD_ROTATE") or ROTATION))
    except ValueError:
        return ROTATION


def identity() -> Identity | None:
    with _identity_lock:
        return _identity


def valid_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except ValueError:
        return False


# ---- the interface --------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)  # ordered: a tunnel's peers are kept sorted (compared as a whole)
class Peer:
    key: str  # its public key
    endpoint: str  # its node address:port
    tunnel: str  # its tunnel address


@dataclass(frozen=True)
class Tunnel:
    address: str  # this node's tunnel address
    peers: tuple[Peer, ...]


class _State:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.applied: tuple[Tunnel, str] | None = None  # what was made, with the public key
        self.swept = False


_lock = threading.Lock()
_state = _State()


def _run(*args: str, pass_fds: tuple[int, ...] = ()) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT, pass_fds=pass_fds)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise OSError(f"{' '.join(args[:4])}: {detail}")
    return proc.stdout


def _pid_file(name: str) -> Path:
    return paths.run_root() / f"{name}.pid"


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _wireguard_go_pid(name: str) -> int | None:
    """The wireguard-go of `name` a shoald of this root started (its pid file, checked against
    the process's command line so that a reused pid is never signalled)."""
    try:
        pid = int(_pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if any(part.endswith(b"wireguard-go") for part in cmdline[:1]) and name.encode() in cmdline:
        return pid
    return None


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove(name: str | None = None) -> bool:
    """The node's WireGuard interface and its wireguard-go, whoever started them (this process,
    or a shoald that crashed). Returns whether there was anything to remove."""
    name = name or interface_name()
    found = False
    with _lock:
        if name == interface_name() and _state.proc is not None:
            found = True
            _state.proc.terminate()
            try:
                _state.proc.wait(3.0)
            except subprocess.TimeoutExpired:
                _state.proc.kill()
                _state.proc.wait()
            _state.proc = None
        if _link_exists(name):
            found = True
            subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=TIMEOUT)
        pid = _wireguard_go_pid(name)
        if pid is not None:
            found = True
            _stop_pid(pid)
        _pid_file(name).unlink(missing_ok=True)
        (SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)  # left by a wireguard-go killed -9
        if name == interface_name():
            _state.applied = None
    return found


def _start(name: str) -> None:
    """The interface: the kernel's, else wireguard-go's TUN device (its own session: it outlives
    a shoald that is restarted, as the containers do)."""
    if kernel_has_wireguard():
        _run("ip", "link", "add", name, "type", "wireguard")
    else:
        exe = binary()
        if not exe:
            raise OSError(unavailable())
        _state.proc = subprocess.Popen([exe, "-f", name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, "LOG_LEVEL": "error"})
        paths.write_file(_pid_file(name), f"{_state.proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while not (_link_exists(name) and (SOCKET_DIR / f"{name}.sock").exists()):
            if _state.proc.poll() is not None:
                raise OSError(f"wireguard-go {name} exited with status {_state.proc.returncode}")
            if time.monotonic() > deadline:
                raise OSError(f"wireguard-go {name} made no interface in {START_TIMEOUT:.0f} s")
            time.sleep(0.02)
    from shoal.network.store import owner_tag

    _run("ip", "link", "set", "dev", name, "mtu", str(WG_MTU), "alias", owner_tag(), "up")


def _set_key(name: str, ident: Identity) -> None:
    """The private key through a pipe: never in a file, never on a command line."""
    read, write = os.pipe()
    try:
        os.write(write, (ident.private + "\n").encode())
        os.close(write)
        write = -1
        _run("wg", "set", name, "listen-port", str(WG_PORT), "private-key", f"/dev/fd/{read}", pass_fds=(read,))
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def _peers(name: str) -> dict[str, tuple[str, str]]:
    """The interface's peers: public key -> (endpoint, allowed IPs)."""
    out = {}
    for line in _run("wg", "show", name, "dump").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 4:
            out[parts[0]] = (parts[2], parts[3])
    return out


def _configure(name: str, want: Tunnel, ident: Identity) -> None:
    _set_key(name, ident)
    prefix = f"{want.address}/{TUNNEL_NET.prefixlen}"
    have = _run("ip", "-o", "-4", "addr", "show", "dev", name).split()
    addrs = [have[i + 1] for i, word in enumerate(have[:-1]) if word == "inet"]
    for addr in addrs:
        if addr != prefix:
            _run("ip", "addr", "del", addr, "dev", name)
    if prefix not in addrs:
        _run("ip", "addr", "add", prefix, "dev", name)
    wanted = {p.key: (p.endpoint, f"{p.tunnel}/32") for p in want.peers if p.key != ident.public}
    current = _peers(name)
    args: list[str] = []
    for key in current.keys() - wanted.keys():
        args += ["peer", key, "remove"]
    for key, (endpoint, allowed) in sorted(wanted.items()):
        if current.get(key) != (endpoint, allowed):
            args += ["peer", key, "endpoint", endpoint, "allowed-ips", allowed]
    if args:
        _run("wg", "set", name, *args)


def sync(want: Tunnel | None) -> bool:
    """The node's WireGuard interface made `want` (None: no encrypted network here, so none);
    made again when its wireguard-go died or its link went. Cheap when nothing changed (every
    agent pass). Returns whether the interface is there, configured."""
    name = interface_name()
    if not _state.swept:
        # A previous shoald's interface and process: their key died with that process.
        remove(name)
        _state.swept = True
    if want is None:
        if _state.applied is not None or _state.proc is not None:
            remove(name)
            log.info("removed WireGuard interface %s", name)
        return False
    ident = identity()
    if ident is None:
        return False  # not registered yet: no key the manager knows
    with _lock:
        alive = _link_exists(name) and (_state.proc is None or _state.proc.poll() is None)
        if alive and _state.applied == (want, ident.public):
            return True
    if not alive:
        if _state.applied is not None or _state.proc is not None:
            log.warning("WireGuard interface %s is gone: made again", name)
        remove(name)
    with _lock:
        if not _link_exists(name):
            _start(name)
        _configure(name, want, ident)
        _state.applied = (want, ident.public)
    log.info("WireGuard %s: %s, %d peers", name, want.address, len(want.peers))
    return True
