"""nft commands run in this process through libnftables, the library the `nft` binary is a thin
front for, instead of one `nft` process each.

A deploy made every node apply its rule set about six times and ask for Docker's DOCKER-USER
chain as often (bench/bench_cluster_deploy.py): each a new process that loads libnftables and
its libraries, resolves symbols and parses, most of its 5-20 ms of CPU on these shared cores,
when the kernel's transaction itself takes a few. The library takes the same text and gives
the same messages (what `nft` prints on stderr), so callers cannot tell the difference; where
it cannot be loaded (not installed, another ABI), the `nft` binary runs as before. Its
libraries (libnftables, libnftnl, libgmp, ...) add ~1.5 MiB to shoald's RSS, file-backed pages
the nodes of one machine share (measured 0.6 MiB of a node's PSS for every file it maps).

A context's netlink socket belongs to the network namespace of the thread that made it, so
there is one per (process, namespace), made on first use; calls are serialised, as
libnftables keeps some state outside its contexts."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from typing import Any

_lock = threading.Lock()
_lib: Any = None
_unavailable = False
# One context per (process, network namespace): a context's netlink socket stays in the
# namespace of the thread that made it, and a thread may have entered another (netns.run_in).
_contexts: dict[tuple[int, int], Any] = {}
_MAX_CONTEXTS = 4  # namespaces other than the process's own come and go: the oldest is freed


def _library() -> Any:
    global _lib, _unavailable
    if _lib is None and not _unavailable:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                getattr(lib, name).argtypes = [ctypes.c_void_p]
                getattr(lib, name).restype = ctypes.c_int
            for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                getattr(lib, name).argtypes = [ctypes.c_void_p]
                getattr(lib, name).restype = ctypes.c_char_p
            lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_filename.restype = ctypes.c_int
            _lib = lib
        except (OSError, AttributeError):
            _unavailable = True
    return _lib


def _context() -> tuple[Any, Any] | None:
    """(library, context) for the calling thread's process and network namespace, or None when
    the library cannot be used."""
    lib = _library()
    if lib is None:
        return None
    try:
        key = (os.getpid(), os.stat("/proc/thread-self/ns/net").st_ino)
    except OSError:
        return None
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT: its socket in this thread's namespace
        if not ctx or lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            return None
        # A context made before a fork (a cluster's zygote) is the parent's: its socket is
        # shared with it, so the child never uses or frees it; it makes its own.
        for old in [k for k in _contexts if k[0] != key[0]]:
            del _contexts[old]
        while len(_contexts) >= _MAX_CONTEXTS:
            lib.nft_ctx_free(_contexts.pop(next(iter(_contexts))))
        _contexts[key] = ctx
    return lib, ctx


def run(command: str) -> tuple[int, str, str]:
    """Run nft `command` (a script, as `nft -f -` reads it: a rule set, a `list ...`);
    (exit status, output, errors)."""
    with _lock:
        found = _context()
        if found is not None:
            lib, ctx = found
            # Read from a file, as `nft -f -` reads stdin: from a buffer, libnftables shows an
            # error against the first line of the script instead of the line at fault.
            fd = os.memfd_create("nft", os.MFD_CLOEXEC)
            try:
                os.write(fd, command.encode())
                os.lseek(fd, 0, os.SEEK_SET)
                source = f"/proc/self/fd/{fd}"
                rc = lib.nft_run_cmd_from_filename(ctx, source.encode())
            finally:
                os.close(fd)
            # Read at once: the next command of this context replaces both buffers.
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
            return (0 if rc == 0 else 1), out, err.replace(f"{source}:", "/dev/stdin:")
    proc = subprocess.run(["nft", "-f", "-"], input=command, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr
