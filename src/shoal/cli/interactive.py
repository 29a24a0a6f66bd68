"""`run -i/-t`, `attach` and `exec -i/-t`, here and on a remote node: the session itself is
cli/hijack.py's; this module sets it up as docker/cli's run.go, attach.go and exec.go do
(the terminal checked before anything is made, signals proxied only without a terminal, the
container's exit code as the command's, --rm honoured after it)."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from typing import Any

from shoal.cli import hijack
from shoal.errors import ShoalError

_PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "interactive", False) or getattr(args, "tty", False))


def check(args: argparse.Namespace) -> bytes:
    """Before anything is created: -it needs a terminal, the detach keys must parse."""
    hijack.check_tty(args.interactive, args.tty)
    return hijack.detach_keys(getattr(args, "detach_keys", None))


def _proxy(kill: Callable[[str], None], enabled: bool) -> dict[int, Any]:
    if not enabled:
        return {}

    def forward(signum: int, _frame: Any) -> None:
        try:
            kill(str(signum))
        except ShoalError:
            pass

    return {s: signal.signal(s, forward) for s in _PROXIED}


def _restore(old: dict[int, Any]) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)


def _proxied_session(conn: Any, *, stdin: bool, tty: bool, keys: bytes, kill: Callable[[str], None],
                     proxy: bool) -> bool:
    """The session with signals forwarded to the container while it lasts (docker: never with
    -t); the connection closed after. True when the user detached."""
    old = _proxy(kill, proxy)
    try:
        return hijack.session(conn, stdin=stdin, tty=tty, keys=keys)
    finally:
        conn.close()
        _restore(old)


# ---- local --------------------------------------------------------------------------------------


def run_local(mgr: Any, c: Any, args: argparse.Namespace, keys: bytes,
              before: Callable[[Any], None]) -> int:
    """A foreground `run -i/-t`: attached to conmon's socket before the process starts (no
    output is missed), then the session; the exit code, or 0 when detached."""
    return _start_attached(mgr, c, stdin=args.interactive, tty=args.tty, proxy=args.sig_proxy and not args.tty,
                           keys=keys, before=before)


def _start_attached(mgr: Any, c: Any, *, stdin: bool, tty: bool, proxy: bool, keys: bytes,
                    before: Callable[[Any], None]) -> int:
    from shoal.runtime import attach

    with mgr.attached(c):
        held: list[Any] = []

        def connect(created: Any) -> None:
            held.append(attach.open_socket(created))
            if tty:  # sized before the process runs (it may read its size at once)
                attach.resize(created, *hijack.terminal_size())
            before(created)

        try:
            mgr.start(c.id, before_start=connect)
            if not held:  # it was running already (`start -a` of a running container): attach
                held.append(attach.open_socket(c))
        except ShoalError:
            for sock in held:
                sock.close()
            if c.spec.auto_remove:
                mgr.remove(c.id, force=True)
            raise
        conn = hijack.LocalConn(held[0], mgr.get(c.id))
        if _proxied_session(conn, stdin=stdin, tty=tty, keys=keys, kill=lambda sig: mgr.kill(c.id, sig),
                            proxy=proxy):
            hijack.detached_message()
            return 0
        code = mgr.wait(c.id)
        if c.spec.auto_remove:
            mgr.remove(c.id, force=True, volumes_too=True)
    return int(code)


def start_local(mgr: Any, args: argparse.Namespace, before: Callable[[Any], None],
                daemon_error: Callable[[ShoalError], ShoalError]) -> int:
    """`start -a [-i]`: one container started with its output (and stdin) attached, as
    docker/cli's start.go; its exit code."""
    if len(args.containers) > 1:
        raise ShoalError("you cannot start and attach multiple containers at once")
    try:
        c = mgr.get(args.containers[0])
    except ShoalError as exc:
        raise daemon_error(exc) from None
    stdin = args.interactive and c.spec.open_stdin
    hijack.check_tty(stdin, c.spec.tty)
    keys = hijack.detach_keys(args.detach_keys)
    return _start_attached(mgr, c, stdin=stdin, tty=c.spec.tty, proxy=not c.spec.tty, keys=keys, before=before)


def attach_local(mgr: Any, args: argparse.Namespace, daemon_error: Callable[[ShoalError], ShoalError]) -> int:
    from shoal.runtime import attach

    keys = hijack.detach_keys(args.detach_keys)
    try:
        c = mgr.get(args.container)
        attach.check_attachable(c, args.container)
    except ShoalError as exc:  # the daemon's answers in docker: `Error response from daemon: ...`
        raise daemon_error(exc) from None
    stdin = c.spec.open_stdin and not args.no_stdin
    hijack.check_tty(not args.no_stdin, c.spec.tty)  # docker/cli's RunAttach: whatever OpenStdin is
    conn = hijack.LocalConn(attach.open_socket(c), c)
    if _proxied_session(conn, stdin=stdin, tty=c.spec.tty, keys=keys, kill=lambda sig: mgr.kill(c.id, sig),
                        proxy=args.sig_proxy and not c.spec.tty):
        hijack.detached_message()
        return 0
    return int(mgr.wait(c.id))


def exec_local(argv: list[str], args: argparse.Namespace) -> int:
    """`exec -t` here: the runtime's exec with a console socket, its terminal's master end the
    session (so resizes reach the process), its exit code the command's."""
    from shoal.runtime import attach

    keys = hijack.detach_keys(args.detach_keys)
    rows, cols = hijack.terminal_size()
    proc, master = attach.exec_with_console(argv, rows, cols)
    conn = hijack.PtyConn(master)
    try:
        detached = hijack.session(conn, stdin=args.interactive, tty=True, keys=keys)
    finally:
        conn.close()
    if detached:  # docker leaves the process running; it has lost its terminal's reader here
        hijack.detached_message()
        return 0
    return proc.wait()


# ---- remote (a tcp:// context) ------------------------------------------------------------------


def _finish(conn: hijack.WsConn, detached: bool, host: str, what: str) -> int:
    if detached:
        hijack.detached_message()
        return 0
    result = conn.result
    if "error" in result:
        error = ShoalError(str(result["error"]))
        error.from_daemon = True  # type: ignore[attr-defined]
        if isinstance(result.get("exit_code"), int):
            error.exit_code = result["exit_code"]
        raise error
    if "exit" not in result:
        raise ShoalError(f"the connection to {host} was cut before {what} ended")
    return int(result["exit"])


def _remote_session(args: argparse.Namespace, path: str, params: dict[str, Any], *, stdin: bool, tty: bool,
                    keys: bytes, kill: Callable[[str], None], proxy: bool, what: str) -> int:
    from shoal.cli import remote

    rows, cols = hijack.terminal_size() if tty else (0, 0)
    params = dict(params, h=rows or None, w=cols or None)
    conn = hijack.WsConn.open(remote.client(args), path, params, tty)
    detached = _proxied_session(conn, stdin=stdin, tty=tty, keys=keys, kill=kill, proxy=proxy)
    return _finish(conn, detached, args.node.host, what)


def run_remote(args: argparse.Namespace, container_id: str, keys: bytes) -> int:
    from shoal.cli import remote

    def kill(sig: str) -> None:
        remote.client(args).request("POST", f"/containers/{container_id}/kill", {"signal": sig})

    return _remote_session(args, f"/containers/{container_id}/attach/ws", {"start": "1",
                           "stdin": "1" if args.interactive else None},
                           stdin=args.interactive, tty=args.tty, keys=keys, kill=kill,
                           proxy=args.sig_proxy and not args.tty,
                           what=f"container {container_id[:12]} exited")


def start_remote(args: argparse.Namespace) -> int:
    from shoal.api.client import quote_ref
    from shoal.cli import remote

    if len(args.containers) > 1:
        raise ShoalError("you cannot start and attach multiple containers at once")
    ref = quote_ref(args.containers[0])
    config = remote.client(args).request("GET", f"/containers/{ref}/json", None).get("Config") or {}
    tty, stdin = bool(config.get("Tty")), bool(args.interactive and config.get("OpenStdin"))
    hijack.check_tty(stdin, tty)
    keys = hijack.detach_keys(args.detach_keys)

    def kill(sig: str) -> None:
        remote.client(args).request("POST", f"/containers/{ref}/kill", {"signal": sig})

    return _remote_session(args, f"/containers/{ref}/attach/ws", {"start": "1", "stdin": "1" if stdin else None},
                           stdin=stdin, tty=tty, keys=keys, kill=kill, proxy=not tty, what="the container's run")


def attach_remote(args: argparse.Namespace) -> int:
    from shoal.api.client import quote_ref
    from shoal.cli import remote

    keys = hijack.detach_keys(args.detach_keys)
    ref = quote_ref(args.container)
    info = remote.client(args).request("GET", f"/containers/{ref}/json", None)
    config = info.get("Config") or {}
    tty, stdin = bool(config.get("Tty")), bool(config.get("OpenStdin")) and not args.no_stdin
    hijack.check_tty(not args.no_stdin, tty)  # docker/cli's RunAttach: whatever OpenStdin is

    def kill(sig: str) -> None:
        remote.client(args).request("POST", f"/containers/{ref}/kill", {"signal": sig})

    return _remote_session(args, f"/containers/{ref}/attach/ws", {"stdin": "1" if stdin else None},
                           stdin=stdin, tty=tty, keys=keys, kill=kill, proxy=args.sig_proxy and not tty,
                           what="the attach")


def exec_remote(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from shoal.api.client import quote_ref

    keys = check(args)
    config = dict(body, tty=bool(args.tty), stdin=bool(args.interactive))
    return _remote_session(args, f"/containers/{quote_ref(args.container)}/exec/ws",
                           {"config": json.dumps(config)}, stdin=args.interactive, tty=args.tty,
                           keys=keys, kill=lambda _sig: None, proxy=False, what="the exec")
