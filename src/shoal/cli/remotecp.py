"""`cp` with a context naming another node: the archive streamed both ways through that node's
API (GET/PUT /containers/{id}/archive: api/nodeops.py, Docker's archive endpoints), with the
same rules as a local copy: the node runs cli/containercp.py's container side, and this machine
its host side (host_target, unpack_to_host through the hardened unpacker; the source tarred as
is, links not followed)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.api.client import Client, quote_ref
from shoal.errors import NotFound

PATH_STAT = "x-shoal-path-stat"  # the source's name and kind, before its archive (base64 JSON)


class _ChunkReader(io.RawIOBase):
    """A response's chunks as a binary file (what the tar unpacker reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def copy_from(node: Client, args: argparse.Namespace, ref: str, src: str, dest: str, summary: bool) -> int:
    """`cp CONTAINER:SRC DEST|-` from the node; returns the size for the summary (0 without)."""
    from shoal.cli import containercp

    to_stdout = dest == "-"
    response = node.stream("GET", f"/containers/{quote_ref(ref)}/archive", {
        "path": src, "follow": "1" if args.follow_link else None, "host": None if to_stdout else "1"}, timeout=None)
    try:
        if to_stdout:
            for chunk in response.chunks():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return 0
        info = json.loads(base64.b64decode(response.headers[PATH_STAT]))
        contents = containercp._split_source(src)[2]
        target = containercp.host_target(info["name"], info["dir"], contents, dest)
        return containercp.unpack_to_host(io.BufferedReader(_ChunkReader(response.chunks()), 1 << 20), info["name"],
                                          target, contents, args.archive, measure=summary)
    finally:
        response.close()


def copy_to(node: Client, args: argparse.Namespace, src: str, ref: str, dest: str, summary: bool) -> int:
    """`cp SRC|- CONTAINER:DEST` to the node: the host source as a tar under its own name (or
    stdin's tar as it is); returns the size for the summary (0 without)."""
    from shoal.cli import containercp

    path = f"/containers/{quote_ref(ref)}/archive"
    if src == "-":
        def upload_stdin(writer: Any) -> None:
            while chunk := sys.stdin.buffer.read(1 << 20):
                writer.write(chunk)

        node.stream("PUT", path, {"path": dest}, upload=upload_stdin, timeout=None).close()
        return 0  # docker counts only what it tars itself
    if not os.path.lexists(src):
        raise NotFound(f"stat {src}: no such file or directory")
    name = Path(src).name or "."
    size = containercp.host_tar_size(src) if summary else 0

    def upload(writer: Any) -> None:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=name)  # links as links, as the local copy keeps them

    response = node.stream("PUT", path, {"path": dest, "name": name, "contents": "1" if src.endswith("/.") else None,
                                         "archive": "1" if args.archive else None}, upload=upload, timeout=None)
    response.close()
    return size
