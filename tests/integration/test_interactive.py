"""Interactive containers (issue 13 item 6, issue 11 item 3): `run -i` with stdin piped (EOF
closes the container's stdin; stdout and stderr kept apart), `run -it` on a terminal (a real pty
from python's pty module: raw mode, the window size, Ctrl-P Ctrl-Q and --detach-keys), `attach`
with stdin and --no-stdin, `exec -i` and `exec -it`, the exit codes, and `the input device is
not a TTY`. Each locally (real crun and conmon) and on a remote node: a real shoald of its own
that ran `swarm init` on 127.0.0.1, reached over TCP and mutual TLS through a context (the
fixture of test_remote_context.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, module_root  # tests/conftest.py
from test_remote_context import Node, cli, node  # noqa: F401 - the remote node's fixture

pytestmark = ROOT_ONLY
IMAGE = "localhost/busybox:test"
_LIVE: list[Terminal] = []  # CLIs on a pty not yet waited for: killed after a failed check


class Terminal:
    """The CLI on a pty of its own, as a user's terminal runs it."""

    def __init__(self, env: dict[str, str], *args: str, rows: int = 33, cols: int = 101) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the shoal CLI, its stdio the pty's slave
            try:
                os.execve(sys.executable, [sys.executable, "-m", "shoal", *args], env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.seen = b""
        _LIVE.append(self)

    def expect(self, needle: bytes, timeout: float = 30, since: int = 0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen[since:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never came; the terminal showed {self.seen[-600:]!r}"
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the CLI ended before {needle!r}; it showed {self.seen[-600:]!r}"
                self.seen += chunk
        return self.seen

    def until(self, command: bytes, needle: bytes, timeout: float = 30) -> None:
        """`command` typed again until its output shows `needle` (what it waits for is
        asynchronous: a resize travels through the node and conmon)."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(command)
            try:
                self.expect(needle, timeout=1)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                _LIVE.remove(self)
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the CLI did not end; it showed {self.seen[-600:]!r}")


    def kill(self) -> None:
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        _LIVE.remove(self)


Shoal = Callable[..., subprocess.CompletedProcess[bytes]]


def _cleanup(on_node: Callable[..., subprocess.CompletedProcess[bytes]]) -> None:
    """After a failed check too: no CLI left on a pty, no container left on the node."""
    for term in list(_LIVE):
        term.kill()
    left = on_node("ps", "-aq").stdout.split()
    if left:
        on_node("rm", "-f", *[c.decode() for c in left])
    assert not left, f"containers left behind: {left}"


def _checks(shoal: Shoal, env: dict[str, str], prefix: list[str], on_node: Shoal) -> None:
    try:
        _each_check(shoal, env, prefix, on_node)
    finally:
        _cleanup(on_node)


def _each_check(shoal: Shoal, env: dict[str, str], prefix: list[str], on_node: Shoal) -> None:
    """The same checks for a local and a remote context: `shoal` runs the CLI through the
    context under test, `on_node` directly on the node that holds the containers."""
    # run -i, stdin piped: what it reads comes back, EOF ends `cat`, stderr stays stderr.
    piped = shoal("run", "-i", "--rm", IMAGE, "sh", "-c", "cat; echo err >&2; exit 5", input=b"hi\nthere\n")
    assert (piped.returncode, piped.stdout, piped.stderr) == (5, b"hi\nthere\n", b"err\n")
    # more than every buffer between here and the container holds, while it writes it back: the
    # client never blocks on a full stdin with the output unread (it deadlocked once)
    big = os.urandom(1 << 20) * 16
    echoed = shoal("run", "-i", "--rm", IMAGE, "cat", input=big)
    assert echoed.returncode == 0 and echoed.stdout == big, (echoed.returncode, len(echoed.stdout), echoed.stderr)
    missing = shoal("run", "-i", "--rm", IMAGE, "nosuchcmd", input=b"")
    assert missing.returncode == 127 and b'exec: "nosuchcmd": executable file not found' in missing.stderr
    # -t needs a terminal on stdin when stdin is attached: docker's error, exit 1, nothing made.
    no_tty = shoal("run", "-it", "--rm", IMAGE, "true", input=b"")
    assert no_tty.returncode == 1 and b"the input device is not a TTY" in no_tty.stderr
    assert on_node("ps", "-aq").stdout == b""
    bad_keys = shoal("run", "-t", "--detach-keys", "ctrl-1", IMAGE, "true")
    assert bad_keys.returncode != 0 and b"Invalid detach keys" in bad_keys.stderr

    # run -it: a shell on a terminal of the window's size, raw (Ctrl-C is a byte, not a signal),
    # its exit code the command's.
    # (sized before the process starts: its first `stty size` already has it)
    term = Terminal(env, *prefix, "run", "-it", "--rm", IMAGE, "sh", "-c", "stty size; exec sh")
    term.expect(b"33 101")
    term.expect(b"# ")
    term.send(b"echo T=$TERM\r")
    term.expect(b"T=xterm")
    term.resize(20, 70)
    term.until(b"stty size\r", b"20 70")  # the resize reaches the container's terminal
    # (a child shell that says so once it is the terminal's foreground group, then becomes the sleep)
    term.send(b"sh -c 'echo $((6*7))-go; exec sleep 30'\r")
    term.expect(b"42-go")
    interrupted = len(term.seen)
    term.send(b"\x03")  # Ctrl-C reaches the shell's sleep through the container's terminal
    term.expect(b"# ", since=interrupted)  # the prompt again (what was typed before it is flushed)
    term.send(b"echo rc=$?\r")
    term.expect(b"rc=130", timeout=10)  # well before the 30 s sleep would have ended
    term.send(b"exit 3\r")
    assert term.wait() == 3
    assert on_node("ps", "-aq").stdout == b""  # --rm

    # Ctrl-P Ctrl-Q detaches; the container runs on; attach (with stdin) gets the same shell.
    term = Terminal(env, *prefix, "run", "-it", "--name", "keep", IMAGE, "sh")
    try:
        term.expect(b"# ")
        term.send(b"X=kept\r")
        term.send(b"\x10\x11")
        assert term.wait() == 0
        assert b"read escape sequence" in term.seen
        assert on_node("inspect", "-f", "{{.State.Status}}", "keep").stdout == b"running\n"
        fields = "{{.Config.Tty}} {{.Config.OpenStdin}} {{.Config.StdinOnce}} {{.Config.AttachStdin}} " \
                 "{{.Config.AttachStdout}}"
        assert shoal("inspect", "-f", fields, "keep").stdout == b"true true true true true\n"
        term = Terminal(env, *prefix, "attach", "--detach-keys", "ctrl-x,y", "keep")
        term.send(b"echo got-$X\r")
        term.expect(b"got-kept")
        term.send(b"\x18y")  # the custom keys detach too
        assert term.wait() == 0
        term = Terminal(env, *prefix, "attach", "keep")
        term.send(b"exit 4\r")
        assert term.wait() == 4
    finally:
        on_node("rm", "-f", "keep")

    # attach to a container with a terminal needs one on stdin unless --no-stdin, -i or not
    assert shoal("run", "-d", "-t", "--name", "tt", IMAGE, "sleep", "300").returncode == 0
    try:
        refused = shoal("attach", "tt", input=b"")
        assert refused.returncode == 1 and b"the input device is not a TTY" in refused.stderr
    finally:
        on_node("rm", "-f", "tt")

    # attach to a `run -d -i` container: stdin goes in; --no-stdin only watches; a client that
    # leaves does not close the container's stdin (no StdinOnce without an attached run); the
    # attached commands end with the container, with its code.
    script = 'while read l; do [ "$l" = end ] && exit 9; echo got-$l; done; exit 8'
    made = shoal("run", "-d", "-i", "--name", "cat", IMAGE, "sh", "-c", script)
    assert made.returncode == 0, made.stderr
    assert shoal("inspect", "-f", fields, "cat").stdout == b"false true false false false\n"  # docker's for -d -i
    try:
        watcher = subprocess.Popen([sys.executable, "-m", "shoal", *prefix, "attach", "--no-stdin", "cat"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = subprocess.Popen([sys.executable, "-m", "shoal", *prefix, "attach", "cat"], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write(b"one\n")
        first.stdin.flush()
        assert first.stdout.readline() == b"got-one\n"
        first.kill()  # gone without a word: the container's stdin stays open
        first.communicate(timeout=30)
        assert on_node("inspect", "-f", "{{.State.Status}}", "cat").stdout == b"running\n"
        second = shoal("attach", "cat", input=b"two\nend\n")
        assert (second.returncode, second.stdout) == (9, b"got-two\n"), second.stderr
        out, err = watcher.communicate(timeout=30)
        # (it may have attached after `one` was answered: output is live, not replayed)
        assert watcher.returncode == 9 and out.endswith(b"got-two\n"), (out, err)
    finally:
        on_node("rm", "-f", "cat")

    # create -i / -it, then start -a -i: the same session, its exit code.
    assert shoal("create", "-i", "--name", "job", IMAGE, "sh", "-c", "cat; echo e >&2; exit 4").returncode == 0
    assert shoal("create", "-it", "--name", "tjob", IMAGE, "sh", "-c", "read l; echo got-$l; exit 2").returncode == 0
    try:
        started = shoal("start", "-a", "-i", "job", input=b"fed\n")
        assert (started.returncode, started.stdout, started.stderr) == (4, b"fed\n", b"e\n")
        two = shoal("start", "-a", "job", "tjob")
        assert two.returncode == 1 and b"you cannot start and attach multiple containers at once" in two.stderr
        term = Terminal(env, *prefix, "start", "-ai", "tjob")
        term.send(b"hello\r")
        term.expect(b"got-hello")
        assert term.wait() == 2
    finally:
        on_node("rm", "-f", "job", "tjob")

    # exec -i and -it in a running container.
    assert shoal("run", "-d", "--name", "box", IMAGE, "sleep", "300").returncode == 0
    try:
        fed = shoal("exec", "-i", "box", "sh", "-c", "cat; echo e >&2; exit 6", input=b"in\n")
        assert (fed.returncode, fed.stdout, fed.stderr) == (6, b"in\n", b"e\n")
        not_fed = shoal("exec", "box", "cat", input=b"ignored\n")  # without -i: no stdin
        assert (not_fed.returncode, not_fed.stdout) == (0, b"")
        no_tty = shoal("exec", "-it", "box", "sh", input=b"")
        assert no_tty.returncode == 1 and b"the input device is not a TTY" in no_tty.stderr
        missing = shoal("exec", "-i", "box", "nosuchcmd")
        assert missing.returncode == 127
        term = Terminal(env, *prefix, "exec", "-it", "box", "sh", rows=41, cols=99)
        term.expect(b"# ")
        term.send(b"stty size\r")
        term.expect(b"41 99")
        term.resize(30, 80)  # followed while the exec runs
        term.until(b"stty size\r", b"30 80")
        term.send(b"exit 7\r")
        assert term.wait() == 7
    finally:
        on_node("rm", "-f", "box")


@pytest.fixture(scope="module")
def own_root(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Path]:
    """A state root of this module's own: its checks count every container in it."""
    with module_root(tmp_path_factory, busybox_tar, IMAGE) as root:
        yield root


def test_interactive_locally(own_root: Path) -> None:  # noqa: ARG001 - SHOAL_ROOT is set to it
    env = dict(os.environ)

    def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "shoal", *args], input=input, capture_output=True,
                              env=env, timeout=120)

    _checks(run, env, [], run)


def test_interactive_on_a_remote_node(node: Node) -> None:  # noqa: F811 - the imported fixture
    def on_node(*args: str) -> subprocess.CompletedProcess[bytes]:
        return cli(node.env, *args)

    _checks(node.shoal, node.client_env, ["-c", "far"], on_node)
    assert not (node.base / "client" / "containers").exists()  # nothing ran on the client
