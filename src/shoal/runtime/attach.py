"""A live connection to a running container's stdio, through its conmon: the attach socket
(SOCK_SEQPACKET; each message conmon sends is one byte naming the stream, 2 stdout or 3 stderr,
then the data; what a client sends goes to the container's stdin, and a client's shutdown of
its writing side closes that stdin unless conmon was told --leave-stdin-open) and the control
FIFO `ctl` (`1 <rows> <cols>` resizes the terminal conmon holds for a -t container)."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import time
from typing import Any

from shoal.errors import Conflict, ShoalError

STDOUT, STDERR = 2, 3  # conmon's stream bytes on the attach socket
MAX_MESSAGE = 8192  # conmon reads its attach socket in messages of up to 8 KiB (CONN_SOCK_BUF_SIZE)


def check_attachable(c: Any, ref: str) -> None:
    """docker's errors for a container nobody can attach to (moby daemon/attach.go)."""
    from shoal.runtime import cgroups

    if c.state.status != "running":
        raise Conflict("You cannot attach to a stopped container, start it first")
    if cgroups.frozen(c.id):
        raise Conflict(f"container {ref} is paused, unpause the container before attach")


def open_socket(c: Any, wait: float = 5.0) -> socket.socket:
    """Connected to the container's attach socket. conmon makes it just after it reports the
    runtime's create done (measured: up to ~50 ms later), so a missing socket is waited for a
    while (a foreground `run` connects between create and start)."""
    deadline = time.monotonic() + wait
    dir_fd = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                # through /proc/self/fd: the socket's path may be longer than sun_path's 108 bytes
                sock.connect(f"/proc/self/fd/{dir_fd}/attach")
                return sock
            except OSError as exc:
                sock.close()
                if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                    raise ShoalError(f"attach to container {c.id}: {exc.strerror}") from None
            time.sleep(0.01)
    finally:
        os.close(dir_fd)


def send_stdin(sock: socket.socket, data: bytes) -> None:
    for start in range(0, len(data), MAX_MESSAGE):
        sock.sendall(data[start:start + MAX_MESSAGE])


def close_stdin(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # conmon has gone: the container's stdin with it


def resize(c: Any, rows: int, cols: int) -> None:
    """The container's terminal to rows x cols (conmon sets it on the pty and the container gets
    SIGWINCH). Ignored when there is no terminal or no conmon to hear it."""
    if rows <= 0 or cols <= 0 or not c.spec.tty:
        return
    try:
        fd = os.open(c.dir / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"1 {int(rows)} {int(cols)}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def exec_with_console(argv: list[str], rows: int, cols: int, stderr: Any = None,
                      timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], int]:
    """The runtime's `exec --tty` (argv from ContainerManager.exec_argv) with a console socket:
    the runtime hands over the master end of the terminal it made for the process, which is
    then the session (its size set here and on every resize; a terminal the runtime only
    inherited would keep its first size). Returns the runtime's process (its exit code is the
    command's) and the master's descriptor, which the caller closes."""
    directory = tempfile.mkdtemp(prefix="shoal-exec-")  # 0700, a short path for sun_path
    path = os.path.join(directory, "console")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        server.bind(path)
        server.listen(1)
        at = argv.index("exec") + 1
        proc = subprocess.Popen([*argv[:at], "--console-socket", path, *argv[at:]],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while not select.select([server], [], [], 0.05)[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                raise ShoalError("OCI runtime exec failed: the runtime handed over no terminal")
        conn, _ = server.accept()
        with conn:
            _, ancillary, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4))
        fds = [struct.unpack("i", data[:4])[0] for level, kind, data in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS]
        if not fds:
            proc.kill()
            proc.wait()
            raise ShoalError("OCI runtime exec failed: the runtime handed over no terminal")
        master = fds[0]
        os.set_inheritable(master, False)
        set_size(master, rows, cols)
        return proc, master
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def set_size(master: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
