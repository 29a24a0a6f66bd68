"""The client's end of an interactive session (`run -i/-t`, `attach`, `exec -i/-t` on a remote
node), as docker/cli's hijack.go: stdin copied to the container (its end closes the
container's stdin: docker's CloseWrite), the container's output to stdout and stderr apart
(one stream, raw, with a terminal), the terminal in raw mode while attached with -t and its
size followed (SIGWINCH), and the detach keys (Ctrl-P Ctrl-Q, or --detach-keys) read from
stdin with a terminal only, as moby's copyEscapable.

Two connections carry it: conmon's attach socket for a local container (runtime/attach.py),
and a WebSocket to a remote node's API (api/attachapi.py), written out here over the client's
own socket (mutual TLS), so the CLI loads no HTTP library. On the WebSocket binary messages
carry the streams (from the node: docker's stdcopy frames, an 8-byte header [stream, 0, 0, 0,
size big-endian] before each chunk, without a terminal; raw bytes with one; to the node:
stdin); text messages carry JSON control: to the node {"resize": [rows, cols]} and
{"close_stdin": true}, from it {"exit": code} or {"error": message, "exit_code": n} last."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import struct
import sys
from collections import deque
from typing import Any

from shoal.errors import InvalidArgument, ShoalError

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
STDOUT, STDERR = 1, 2  # docker's stdcopy stream numbers
# moby/term's ASCII table: ctrl-@ is 0, ctrl-a 1 ... ctrl-z 26, then ctrl-[ \ ] ^ _
_CTRL = ["ctrl-@", *[f"ctrl-{chr(c)}" for c in range(ord("a"), ord("z") + 1)],
         "ctrl-[", "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]


def detach_keys(text: str | None) -> bytes:
    """moby/term ToBytes: comma-separated keys, each one character or ctrl-<key>."""
    keys = DEFAULT_DETACH_KEYS if not text else text
    codes = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            codes += key.encode()
            continue
        lowered = key.lower()
        if lowered not in _CTRL:
            raise InvalidArgument(f"Invalid detach keys ({keys}) provided: Unknown character: '{key}'")
        codes.append(_CTRL.index(lowered))
    return bytes(codes)


class EscapeMatcher:
    """moby/term's escapeProxy: bytes that may start the detach sequence are held back; a full
    match detaches (never sent), a mismatch sends what was held."""

    def __init__(self, keys: bytes) -> None:
        self.keys, self.pos = keys, 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            if b != self.keys[self.pos]:
                out += self.keys[:self.pos]
                self.pos = 0
                if b != self.keys[0]:
                    out.append(b)
                    continue
            self.pos += 1
            if self.pos == len(self.keys):
                self.pos = 0
                return bytes(out), True
        return bytes(out), False


def check_tty(stdin: bool, tty: bool) -> None:
    """docker/cli's In().CheckTty: -it needs a terminal on stdin (exit 1)."""
    if tty and stdin and not os.isatty(sys.stdin.fileno()):
        raise ShoalError("the input device is not a TTY")


def terminal_size() -> tuple[int, int]:
    for fd in (sys.stdout.fileno(), sys.stdin.fileno()):
        try:
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
        except OSError:
            continue
    return 0, 0


# ---- the connections -----------------------------------------------------------------------
#
# Each one is non-blocking: what goes to the container waits in an outgoing queue and is written
# when the connection can take it, so a container that writes while its stdin is full (`cat`
# fed more than the buffers hold) never deadlocks the single loop below.

_AGAIN: tuple[type[BaseException], ...] = (BlockingIOError, InterruptedError)
try:
    import ssl as _ssl

    _AGAIN += (_ssl.SSLWantReadError, _ssl.SSLWantWriteError)
except ImportError:  # pragma: no cover - the standard library has it
    pass


class _Queued:
    """The outgoing queue: whole units (a SEQPACKET message, a WebSocket frame, a chunk of a
    terminal's input), each written in one piece or retried as it is (TLS wants the same
    bytes again after a short write)."""

    def __init__(self) -> None:
        self._out: deque[bytes] = deque()
        self._queued = 0
        self._close_stdin = False

    def backlog(self) -> int:
        return self._queued

    def want_write(self) -> bool:
        return bool(self._out) or self._close_stdin

    def _write(self, unit: bytes) -> int:
        raise NotImplementedError

    def _stdin_closed(self) -> None:
        pass

    def flush(self) -> None:
        """Write what the connection takes now; OSError when the container's side has gone."""
        while self._out:
            unit = self._out[0]
            try:
                n = self._write(unit)
            except _AGAIN:
                return
            except OSError:
                self._out.clear()  # the other side has gone: nothing queued will get there
                self._queued, self._close_stdin = 0, False
                raise
            if n < len(unit):
                self._out[0] = unit[n:]
                self._queued -= n
                return
            self._out.popleft()
            self._queued -= len(unit)
        if self._close_stdin:
            self._close_stdin = False
            self._stdin_closed()

    def _queue(self, unit: bytes) -> None:
        self._out.append(unit)
        self._queued += len(unit)

    def close_stdin(self) -> None:
        self._close_stdin = True
        self.flush()


class LocalConn(_Queued):
    """conmon's attach socket of a local container."""

    def __init__(self, sock: socket.socket, container: Any) -> None:
        super().__init__()
        self.sock, self.container = sock, container
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        return False

    def read(self) -> list[tuple[int, bytes]] | None:
        from shoal.runtime import attach

        try:
            data = self.sock.recv(attach.MAX_MESSAGE + 1)
        except _AGAIN:
            return []
        if not data:
            return None
        return [(STDERR if data[0] == attach.STDERR else STDOUT, data[1:])]

    def _write(self, unit: bytes) -> int:
        return self.sock.send(unit)  # SEQPACKET: the whole message or EAGAIN

    def send_stdin(self, data: bytes) -> None:
        from shoal.runtime import attach

        for start in range(0, len(data), attach.MAX_MESSAGE):
            self._queue(data[start:start + attach.MAX_MESSAGE])
        self.flush()

    def _stdin_closed(self) -> None:
        from shoal.runtime import attach

        attach.close_stdin(self.sock)

    def resize(self, rows: int, cols: int) -> None:
        from shoal.runtime import attach

        attach.resize(self.container, rows, cols)

    def close(self) -> None:
        self.sock.close()


class PtyConn(_Queued):
    """The master end of the terminal the runtime made for a local `exec -t`."""

    def __init__(self, master: int) -> None:
        super().__init__()
        self.master = master
        os.set_blocking(master, False)

    def fileno(self) -> int:
        return self.master

    def pending(self) -> bool:
        return False

    def read(self) -> list[tuple[int, bytes]] | None:
        try:
            data = os.read(self.master, 65536)
        except _AGAIN:
            return []
        except OSError:  # EIO: the process and its terminal are gone
            return None
        return [(STDOUT, data)] if data else None

    def _write(self, unit: bytes) -> int:
        return os.write(self.master, unit)

    def send_stdin(self, data: bytes) -> None:
        self._queue(data)
        self.flush()

    def resize(self, rows: int, cols: int) -> None:
        from shoal.runtime import attach

        attach.set_size(self.master, rows, cols)

    def close(self) -> None:
        os.close(self.master)


def _masked(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455's client masking, XOR with the 4-byte key repeated, done as one big-integer XOR
    (a byte at a time in Python was the bottleneck: 5 MiB/s of stdin to a node)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class WsConn(_Queued):
    """A WebSocket (RFC 6455) over the client's socket to the node: client frames masked, the
    node's read as they come; the node's last text message is the session's result."""

    def __init__(self, sock: socket.socket, tty: bool, buffered: bytes = b"") -> None:
        super().__init__()
        self.sock, self.tty, self.buf = sock, tty, bytearray(buffered)
        self.result: dict[str, Any] = {}
        self._closed = False
        sock.setblocking(False)

    @classmethod
    def open(cls, client: Any, path: str, params: dict[str, Any], tty: bool) -> WsConn:
        import urllib.parse

        from shoal.api.client import request_target

        url = request_target(path) + "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        key = base64.b64encode(os.urandom(16)).decode()
        sock = client._connect(60.0)  # the client's own TCP+mutual TLS (or unix) connection
        head = (f"GET {url} HTTP/1.1\r\nHost: shoald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        try:
            sock.sendall(head.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ShoalError(f"shoald at {client.where} closed the connection during GET {path}")
                data += chunk
        except OSError as exc:
            sock.close()
            raise ShoalError(f"shoald at {client.where} did not answer GET {path}: {exc}") from exc
        header, _, rest = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 101:
            headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
            want = int(headers.get("content-length", "0"))
            try:
                while len(rest) < want and (chunk := sock.recv(65536)):
                    rest += chunk
            finally:
                sock.close()
            client._raise(status, rest)
        return cls(sock, tty, rest)

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        return self._parse(peek=True) is not None or bool(getattr(self.sock, "pending", lambda: 0)())

    def _parse(self, peek: bool = False) -> tuple[int, bytes] | None:
        b = self.buf
        if len(b) < 2:
            return None
        opcode, length, at = b[0] & 0x0F, b[1] & 0x7F, 2
        if length == 126:
            if len(b) < 4:
                return None
            length, at = struct.unpack(">H", b[2:4])[0], 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, at = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < at + length:
            return None
        payload = bytes(b[at:at + length])
        if not peek:
            del b[:at + length]
        return opcode, payload

    def read(self) -> list[tuple[int, bytes]] | None:
        """The streams' chunks now readable; None once the node has ended the session."""
        if self._parse(peek=True) is None:
            try:
                chunk = self.sock.recv(65536)
            except _AGAIN:
                return []
            if not chunk:
                return None
            self.buf += chunk
        out: list[tuple[int, bytes]] = []
        while (frame := self._parse()) is not None:
            opcode, payload = frame
            if opcode == 0x8:  # close
                self._closed = True
                return out or None
            if opcode == 0x9:  # ping
                self._send(0xA, payload)
            elif opcode == 0x1:
                self.result = json.loads(payload)
            elif opcode in (0x2, 0x0):
                if self.tty:
                    out.append((STDOUT, payload))
                else:
                    while len(payload) >= 8:
                        stream, size = payload[0], struct.unpack(">I", payload[4:8])[0]
                        out.append((STDERR if stream == STDERR else STDOUT, payload[8:8 + size]))
                        payload = payload[8 + size:]
        return out

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        return head + mask + _masked(payload, mask)

    def _send(self, opcode: int, payload: bytes) -> None:
        self._queue(self._frame(opcode, payload))
        self.flush()

    def _write(self, unit: bytes) -> int:
        return self.sock.send(unit)

    def send_stdin(self, data: bytes) -> None:
        self._send(0x2, data)

    def control(self, message: dict[str, Any]) -> None:
        self._send(0x1, json.dumps(message).encode())

    def _stdin_closed(self) -> None:
        self.control({"close_stdin": True})

    def resize(self, rows: int, cols: int) -> None:
        if rows > 0 and cols > 0:
            self.control({"resize": [rows, cols]})

    def close(self) -> None:
        """What is still queued and a close frame, given two seconds (a detach sends the last
        keys typed before the detach keys)."""
        try:
            if not self._closed:
                self._queue(self._frame(0x8, struct.pack(">H", 1000)))
            self.sock.settimeout(2.0)
            while self._out:
                self.sock.sendall(self._out.popleft())
        except OSError:
            pass
        self.sock.close()


# ---- the session -------------------------------------------------------------------------------


_BACKLOG = 1 << 20  # stdin queued for the container before the loop stops reading more


def session(conn: Any, *, stdin: bool, tty: bool, keys: bytes | None = None) -> bool:
    """Copy both ways until the container's output ends; True when the user detached."""
    import termios
    import tty as ttymod

    in_fd = sys.stdin.fileno()
    raw = tty and stdin and os.isatty(in_fd)
    saved = termios.tcgetattr(in_fd) if raw else None
    old_winch = None
    if tty:
        def winch(_signum: int, _frame: Any) -> None:
            try:
                conn.resize(*terminal_size())
            except OSError:
                pass

        old_winch = signal.signal(signal.SIGWINCH, winch)
        winch(0, None)
    escape = EscapeMatcher(keys) if tty and stdin and keys else None
    reading = stdin
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        if raw:
            ttymod.setraw(in_fd, termios.TCSANOW)  # as moby/term: typed-ahead input is kept
        while True:
            if conn.pending():
                ready, writable = [conn], []
            else:
                # stdin is read only while what it gave has mostly gone (the container reads)
                watch = [conn, in_fd] if reading and conn.backlog() < _BACKLOG else [conn]
                ready, writable, _ = select.select(watch, [conn] if conn.want_write() else [], [])
            if writable:
                try:
                    conn.flush()
                except OSError:
                    reading = False  # the container's stdin has gone: its output still comes
            if conn in ready:
                chunks = conn.read()
                if chunks is None:
                    return False
                for stream, data in chunks:
                    target = err if stream == STDERR else out
                    target.write(data)
                    target.flush()
            if reading and in_fd in ready:
                data = os.read(in_fd, 65536)
                if not data:
                    reading = False
                    try:
                        conn.close_stdin()
                    except OSError:
                        pass
                    continue
                detached = False
                if escape is not None:
                    data, detached = escape.feed(data)
                try:
                    if data:
                        conn.send_stdin(data)
                except OSError:
                    reading = False  # the container's stdin has gone: its output still comes
                if detached:
                    return True
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)


def detached_message() -> None:
    """What docker prints when the detach keys were read (moby's term.EscapeError)."""
    print("read escape sequence", file=sys.stderr)
