"""cli/hijack.py's pieces without a container: the detach keys as moby/term's ToBytes and
escape proxy, and the WebSocket client's reading of the node's messages (stdcopy frames apart
by stream, raw bytes with a terminal, the result message) over a real socket pair."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from shoal.cli import hijack
from shoal.errors import InvalidArgument


def test_detach_keys_parse_as_moby() -> None:
    assert hijack.detach_keys(None) == b"\x10\x11"  # ctrl-p,ctrl-q
    assert hijack.detach_keys("ctrl-a,x,ctrl-@,ctrl-\\,ctrl-_") == b"\x01x\x00\x1c\x1f"
    assert hijack.detach_keys("CTRL-Z") == b"\x1a"
    with pytest.raises(InvalidArgument, match=r"Invalid detach keys \(ctrl-1\) provided: Unknown character: 'ctrl-1'"):
        hijack.detach_keys("ctrl-1")


def test_escape_matcher_holds_a_prefix_and_gives_it_back_on_a_mismatch() -> None:
    m = hijack.EscapeMatcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)  # held: it may be the start of the keys
    assert m.feed(b"c") == (b"\x10c", False)  # not the keys: sent after all
    assert m.feed(b"\x10\x10") == (b"\x10", False)
    assert m.feed(b"\x11rest") == (b"", True)  # detached across two reads; nothing sent
    one = hijack.EscapeMatcher(b"q")
    assert one.feed(b"aq") == (b"a", True)


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 65536 else \
        bytes([127]) + struct.pack(">Q", n)
    return head + payload


def _stdcopy(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def _unmask(raw: bytes) -> tuple[int, bytes]:
    opcode, n, at = raw[0] & 0x0F, raw[1] & 0x7F, 2
    assert raw[1] & 0x80, "a client's frames are masked"
    if n == 126:
        n, at = struct.unpack(">H", raw[2:4])[0], 4
    mask = raw[at:at + 4]
    return opcode, bytes(c ^ mask[i % 4] for i, c in enumerate(raw[at + 4:at + 4 + n]))


def test_websocket_streams_apart_and_the_result() -> None:
    client, node = socket.socketpair()
    try:
        conn = hijack.WsConn(client, tty=False)
        big = b"y" * 70000
        node.sendall(_server_frame(2, _stdcopy(1, b"out") + _stdcopy(2, b"err"))
                     + _server_frame(2, _stdcopy(1, big))
                     + _server_frame(1, json.dumps({"exit": 3}).encode()) + _server_frame(8, b"\x03\xe8"))
        node.shutdown(socket.SHUT_WR)
        got: list[tuple[int, bytes]] = []
        while (chunks := conn.read()) is not None:
            got += chunks
        assert got[:2] == [(hijack.STDOUT, b"out"), (hijack.STDERR, b"err")]
        assert b"".join(d for s, d in got[2:] if s == hijack.STDOUT) == big
        assert conn.result == {"exit": 3}
        conn.send_stdin(b"typed")
        conn.resize(24, 80)
        sent = node.recv(65536)
        opcode, payload = _unmask(sent)
        assert (opcode, payload) == (2, b"typed")
    finally:
        client.close()
        node.close()


def test_websocket_with_a_terminal_is_raw() -> None:
    client, node = socket.socketpair()
    try:
        conn = hijack.WsConn(client, tty=True)
        node.sendall(_server_frame(2, b"\x1b[J$ "))
        assert conn.read() == [(hijack.STDOUT, b"\x1b[J$ ")]
    finally:
        client.close()
        node.close()
