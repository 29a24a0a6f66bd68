"""Hostile Dockerfiles and build contexts (issue 10, the builder's items): whatever a
Dockerfile or the tars it ADDs say, the builder writes only inside the image it builds, its
RUN steps cannot reach the host's loopback services, bad input is a one-line error, and a
killed build's leftovers are collected by the next build. Each case failed before its fix."""

from __future__ import annotations

import io
import os
import tarfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

UP = "../" * 40   # more `..` than any state root is deep: lands at the host's /


def _context(tmp_path: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(textwrap.dedent(dockerfile).lstrip())
    for rel, data in (files or {}).items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    return ctx


def _outside(tmp_path: Path) -> Path:
    """A host directory outside every image root the build makes; nothing may appear in it."""
    out = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    return out


def _no_build_mounts() -> None:
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if "build-tmp" in line or "/build/shoal-build-" in line]


# --- item 1: heredoc names and every write of the builder stay inside the image ----------------

def test_copy_heredoc_name_cannot_leave_the_image(shoal, busybox_image: str, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    name = UP + str(out / "copied").lstrip("/")
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        COPY <<{name} /
        pwned
        {name}
        """)
    proc = shoal("build", str(ctx))
    assert not (out / "copied").exists(), "COPY heredoc wrote outside the image"
    assert proc.returncode != 0
    assert "heredoc" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    _no_build_mounts()


def test_run_heredoc_script_name_cannot_leave_the_image(shoal, busybox_image: str, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    name = UP + str(out / "script").lstrip("/")
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN <<{name}
        #!/bin/sh
        echo pwned
        {name}
        """)
    proc = shoal("build", str(ctx))
    assert not (out / "script").exists(), "RUN heredoc script was written outside the image"
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    _no_build_mounts()


def test_run_heredoc_script_still_runs(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN <<EOF
        #!/bin/sh
        echo from-script > /script-ran
        EOF
        RUN test "$(cat /script-ran)" = from-script && test ! -e /.shoal-heredoc
        """)
    proc = shoal("build", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workdir_through_an_image_symlink_stays_inside(shoal, busybox_image: str, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN ln -s / /hostroot
        WORKDIR /hostroot{out}/made-by-workdir
        RUN pwd > /where
        """)
    proc = shoal("build", str(ctx))
    assert not (out / "made-by-workdir").exists(), "WORKDIR created a directory on the host"
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scratch_removal_does_not_follow_symlinks_a_step_made(shoal, busybox_image: str, tmp_path: Path) -> None:
    """The builder removes a failed step's upper directory; the symlinks the RUN step made
    there (here to host directories) must not be followed while removing it."""
    out = _outside(tmp_path)
    (out / "sub").mkdir()
    os.chmod(out, 0o755)
    os.chmod(out / "sub", 0o755)
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN ln -s {out} /link && ln -s {out}/sub /link2 && exit 3
        """)
    proc = shoal("build", str(ctx))
    assert proc.returncode != 0 and "returned a non-zero code: 3" in proc.stderr, proc.stdout + proc.stderr
    modes = (oct(os.stat(out).st_mode & 0o7777), oct(os.stat(out / "sub").st_mode & 0o7777))
    assert modes == ("0o755", "0o755"), f"the builder changed host directories' modes: {modes}"


# --- item 2: ADD of a local tar extracts with the layer rules ----------------------------------

def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    return info


def test_add_tar_hardlink_above_root_then_same_name_file(shoal, busybox_image: str, tmp_path: Path) -> None:
    out = _outside(tmp_path)
    victim = out / "victim"
    victim.write_text("original\n")
    data = _tar([(_entry("x", tarfile.LNKTYPE, UP + str(victim).lstrip("/")), None),
                 (_entry("x"), b"overwritten\n")])
    ctx = _context(tmp_path, """
        FROM scratch
        ADD evil.tar /
        """, {"evil.tar": data})
    proc = shoal("build", str(ctx))
    assert victim.read_text() == "original\n", "ADD overwrote a host file through a hard link"
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    _no_build_mounts()


def test_add_tar_long_path_symlink_trick(shoal, busybox_image: str, tmp_path: Path) -> None:
    """CVE-2025-4517: symlinks whose resolved path passes PATH_MAX defeat tarfile's filter,
    so a later symlink leads out of the destination and a file is written through it."""
    out = _outside(tmp_path)
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = ""
    for step in steps:
        members.append((_entry(os.path.join(path, comp), tarfile.DIRTYPE), None))
        members.append((_entry(os.path.join(path, step), tarfile.SYMTYPE, comp), None))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((_entry(linkpath, tarfile.SYMTYPE, "../" * len(steps)), None))
    members.append((_entry("escape", tarfile.SYMTYPE, linkpath + "/.." * (len(steps) + 1) + str(out)), None))
    members.append((_entry("escape/flag"), b"pwned\n"))
    ctx = _context(tmp_path, """
        FROM scratch
        ADD evil.tar /
        """, {"evil.tar": _tar(members)})
    proc = shoal("build", str(ctx))
    assert not (out / "flag").exists(), "ADD wrote through a symlink out of the image"
    assert "Traceback" not in proc.stderr, proc.stderr
    _no_build_mounts()


def test_add_tar_into_symlinked_dirs_of_the_image(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A tar's `lib/f` under an image whose /lib is a symlink: followed inside the image as a
    chroot would (Docker extracts chrooted), never onto the host."""
    out = _outside(tmp_path)
    data = _tar([(_entry("lib/f"), b"in-image\n"),
                 (_entry("h1", mode=0o600), b"hard\n"), (_entry("h2", tarfile.LNKTYPE, "h1"), None)])
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN mkdir -p {out} && ln -s {out} /lib
        ADD evil.tar /
        RUN test "$(cat {out}/f)" = in-image && test "$(stat -c %h:%a /h2)" = 2:600
        """, {"evil.tar": data})
    proc = shoal("build", str(ctx))
    assert not (out / "f").exists(), "ADD wrote through an image symlink onto the host"
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- item 11: bad instruction values are one-line errors ----------------------------------------

@pytest.mark.parametrize("line", ["STOPSIGNAL ²", "EXPOSE " + "9" * 5000, "WORKDIR /a\\x00b"])
def test_bad_values_are_one_line_errors(shoal, busybox_image: str, tmp_path: Path, line: str) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\n" + line.replace("\\x00", "\x00") + "\n")
    proc = shoal("build", str(ctx))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("spec,what", [("99999999999999999999", "uid for user 99999999999999999999"),
                                       ("4294967296", "uid for user 4294967296"),
                                       ("0:99999999999999999999", "gid for group 99999999999999999999"),
                                       ("\u0661\u0662\u0663", "uid for user \u0661\u0662\u0663")])
def test_chown_ids_are_32_bit_ascii_numbers_or_names(shoal, busybox_image: str, tmp_path: Path, spec: str,
                                                     what: str) -> None:
    """Past 32 bits an id reached lchown (an OverflowError traceback); Arabic-Indic digits were
    taken as a number. Both are names, which the image does not have: one line."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY --chown={spec} f /f\n", {"f": b"x"})
    proc = shoal("build", "-q", str(ctx))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1:] == [
        f"COPY failed: unable to convert uid/gid chown string to host mapping: can't find {what}: "
        f"no such {what.split()[2]}: {what.split()[-1]}"], proc.stderr


def test_a_dockerfile_line_past_buildkits_limit_is_refused(shoal, busybox_image: str, tmp_path: Path) -> None:
    """BuildKit's scanner refuses a line past 65535 bytes; a 100MB LABEL line took 75 s and 2GB
    of memory to build. 65535 bytes still build; one more (a two-byte character) is refused."""
    ok = _context(tmp_path, f"FROM {busybox_image}\nLABEL a={'x' * (65535 - 8)}\n")
    proc = shoal("build", "-q", str(ok))
    assert proc.returncode == 0, proc.stderr
    shoal("rmi", proc.stdout.strip())
    for line in ("LABEL a=" + "\u00e9" * 32764, "LABEL a=" + "x" * (20 << 20)):
        ctx = _context(tmp_path, f"FROM {busybox_image}\nLABEL b=c\n{line}\n")
        proc = shoal("build", str(ctx), timeout=60)
        assert proc.returncode == 1, proc.stderr[-300:]
        assert proc.stderr.strip().splitlines()[-1] == \
            "Error: Dockerfile:3: dockerfile line greater than max allowed size of 65535", proc.stderr[-300:]


# --- item 13: a killed build's leftovers are collected by the next build ------------------------

def _build_leftovers(shoal_root: Path) -> list[str]:
    from shoal.build import network as build_network

    found = [str(p) for p in (shoal_root / "image" / "build-tmp").glob("*")]
    found += [str(p) for p in (shoal_root / "run" / "build").glob("*")]
    found += [str(p) for p in (shoal_root / "run" / "build-net").glob("ip-*")]
    found += [str(p) for p in (shoal_root / "run" / "build-net").glob("ns/*")]
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if str(shoal_root) in line and
                  ("build-tmp" in line or "/run/build" in line)]
    with open("/proc/net/dev") as f:
        found += [build_network.bridge_name()] if build_network.bridge_name() + ":" in f.read() else []
    return found


def test_killed_build_is_collected_by_the_next(shoal, busybox_image: str, shoal_root: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    assert not _build_leftovers(shoal_root)
    marker = f"shoal-h1-{uuid.uuid4().hex[:8]}"
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        COPY Dockerfile /
        RUN sleep 300; echo {marker}
        """)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "build", str(ctx)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _sleepers(marker):
            time.sleep(0.1)
        assert proc.poll() is None, "the build ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _build_leftovers(shoal_root), "nothing was left to collect: the test shows nothing"
        again = _context(tmp_path, f"FROM {busybox_image}\nLABEL again=1\n")
        done = shoal("build", str(again))
        assert done.returncode == 0, done.stdout + done.stderr
        assert not _build_leftovers(shoal_root)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _sleepers(marker):
            time.sleep(0.1)
        assert not _sleepers(marker), "the killed build's RUN step still runs"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _sleepers(marker):
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shoal("build", str(_context(tmp_path, f"FROM {busybox_image}\nLABEL cleanup=1\n")))


def _sleepers(marker: str) -> list[int]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in p.read_bytes().decode(errors="replace"):
                out.append(int(p.parent.name))
        except (OSError, ValueError):
            pass
    return out


# --- item 6: RUN steps have a network of their own -----------------------------------------------

class _Listener:
    """A TCP server answering `reply` to every connection, counting them."""

    def __init__(self, host: str, reply: bytes) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                conn.sendall(self.reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def _ip(*args: str) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def outside() -> Iterator[tuple[str, int]]:
    """A stand-in for the internet: a namespace of the test's own behind a veth, addressed
    from 198.18.0.0/15 (RFC 2544, for tests), with a TCP server saying `outside-ok`. Its only
    route is the veth's /30: a step's packet can answer only if it was NATed to the host."""
    import subprocess
    import sys

    tag = uuid.uuid4().hex[:6]
    ns, host_if = f"shoal-h1-{tag}", f"shoalh1o{tag}"
    third = int(tag[:2], 16)
    host_ip, ns_ip = f"198.18.{third}.1", f"198.18.{third}.2"
    server = None
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{ns_ip}',0));s.listen(8);print(s.getsockname()[1],flush=True)\n"
                "while True:\n c,_=s.accept();c.sendall(b'outside-ok');c.close()\n")
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield ns_ip, port
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_run_reaches_outside_but_not_host_loopback(shoal, busybox_image: str, tmp_path: Path,
                                                   outside: tuple[str, int]) -> None:
    listener = _Listener("127.0.0.1", b"host-secret")
    ip, port = outside
    try:
        ctx = _context(tmp_path, f"""
            FROM {busybox_image}
            RUN out="$(nc -w 5 {ip} {port} </dev/null)"; echo "outside says: $out"; test "$out" = outside-ok
            RUN if nc -w 2 127.0.0.1 {listener.port} </dev/null | grep -q host-secret; then echo REACHED-HOST; exit 1; fi
            """)
        proc = shoal("build", "--no-cache", str(ctx))
        assert "REACHED-HOST" not in proc.stdout.splitlines() and listener.accepted == 0, \
            "a RUN step reached a service on the host's 127.0.0.1"
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "outside says: outside-ok" in proc.stdout
        # --network host is there when asked for; none has no way out.
        host = shoal("build", "--no-cache", "--network", "host", str(_context(tmp_path, f"""
            FROM {busybox_image}
            RUN test "$(nc -w 2 127.0.0.1 {listener.port} </dev/null)" = host-secret
            """)))
        assert host.returncode == 0, host.stdout + host.stderr
        none = shoal("build", "--no-cache", "--network", "none", str(_context(tmp_path, f"""
            FROM {busybox_image}
            RUN ! nc -w 2 {ip} {port} </dev/null
            """)))
        assert none.returncode == 0, none.stdout + none.stderr
        bad = shoal("build", "--network", "nope", str(_context(tmp_path, f"FROM {busybox_image}\n")))
        assert bad.returncode != 0 and "network mode" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        listener.close()
    from shoal.build import network as build_network

    with open("/proc/net/dev") as f:
        assert build_network.bridge_name() not in f.read(), "the build bridge outlived the build"
    assert not list((shoal_run_dir() / "build-net" / "ns").glob("*"))


def shoal_run_dir() -> Path:
    return Path(os.environ["SHOAL_RUN"])


def test_step_workdir_with_dotdot_stays_inside(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A base image's config may carry any WorkingDir (`../../..` included): the RUN step's
    working directory is made inside the step's root whatever it says."""
    import tempfile

    from shoal.image.store import ImageStore
    from shoal.runtime.build_step import run_build_step

    out = _outside(tmp_path)
    image = ImageStore().resolve(busybox_image)
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        upper = Path(scratch) / "upper"
        upper.mkdir()
        log = Path(scratch) / "log"
        with log.open("wb") as stdout:
            code = run_build_step(image.rootfs_dirs(), upper, ["/bin/pwd"], ["PATH=/bin"], "0",
                                  UP + str(out / "wd").lstrip("/"), stdout, network="none")
        assert not (out / "wd").exists(), "the step's working directory was made on the host"
        assert code == 0, log.read_text()
        assert log.read_text().strip() == str(out / "wd")


# --- ADD of a URL ------------------------------------------------------------------------------------

def _serve(handler: Any) -> Iterator[str]:
    """Serve `handler` on the host's loopback for as long as the fixture using it lasts."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web() -> Iterator[str]:
    """An HTTP server on the host's loopback (the builder fetches ADD URLs itself, as dockerd
    does): `/big/N` is N MiB of zeros, sent a MiB at a time; any other path is a short body."""
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            mib = int(self.path.split("/")[2]) if self.path.startswith("/big/") else 0
            self.send_response(200)
            self.send_header("Content-Length", str(mib << 20 if mib else 6))
            self.end_headers()
            try:
                if not mib:
                    self.wfile.write(b"hello\n")
                for _ in range(mib):
                    self.wfile.write(bytes(1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    yield from _serve(Handler)


@pytest.mark.parametrize("path", ["/a/%2e%2e", "/%2e", "/a/.%2e"])
def test_add_url_naming_dot_or_dotdot_is_a_one_line_error(shoal, busybox_image: str, tmp_path: Path, web: str,
                                                          path: str) -> None:
    """The file's name is the URL path's last part, decoded: `..` or `.` was joined to the
    download directory and written to (an IsADirectoryError traceback)."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nADD {web}{path} /d/\n")
    proc = shoal("build", str(ctx))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"ADD failed: cannot determine filename for source {web}{path}"


def test_add_url_is_streamed_not_held_in_memory(shoal, busybox_image: str, tmp_path: Path, web: str) -> None:
    """The builder read an ADDed URL's whole body into memory: a big file took a builder's
    (or a node daemon's) memory. Under a 1GiB address-space limit a 1100MiB download was a
    MemoryError; streamed to the scratch directory it needs a few MiB."""
    import resource
    import subprocess
    import sys

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    ctx = _context(tmp_path, f"FROM {busybox_image}\nADD {web}/big/1100 /big\nRUN test $(stat -c %s /big) = {1100 << 20}\n")
    proc = subprocess.run([sys.executable, "-m", "shoal", "build", "-q", str(ctx)], capture_output=True, text=True,
                          timeout=300, preexec_fn=limited, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    shoal("rmi", proc.stdout.strip())


# --- trees deeper than Python's recursion or longer than PATH_MAX ---------------------------------

DEEP_RUNS = {
    "deep": "cd /tmp && i=0; while [ $i -lt 1500 ]; do mkdir a; cd a; i=$((i+1)); done; echo deep > f",
    "long": "cd /tmp && n=$(printf 'n%.0s' $(seq 250)) && i=0; "
            "while [ $i -lt 20 ]; do mkdir $n && cd $n; i=$((i+1)); done; echo deep > f",
}


@pytest.mark.parametrize("kind", sorted(DEEP_RUNS))
def test_a_step_nesting_directories_past_walks_leaves_no_scratch(shoal, busybox_image: str, shoal_root: Path,
                                                                 tmp_path: Path, kind: str) -> None:
    """A RUN step nesting directories 1500 deep, or 20 deep with 250-character names (longer
    than PATH_MAX): the builder's scratch removal (os.walk, shutil.rmtree: recursive, whole
    paths) gave up and left the tree, and the next build, collecting it, died with a
    RecursionError or ENAMETOOLONG traceback: every build on the host failed from then on."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN {DEEP_RUNS[kind]}\n")
    proc = shoal("build", str(ctx), timeout=300)
    assert proc.returncode != 0
    assert not list((shoal_root / "image" / "build-tmp").glob("*")), "the failed build's scratch was left"
    # and the step itself is refused in one line (the layer walks recursed: a traceback)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "made a layer shoal cannot store: tmp/" in proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.strip().endswith("is more than 512 directories deep" if kind == "deep"
                                        else "is a path longer than the system allows"), proc.stderr[-500:]
    after = shoal("build", "-q", str(_context(tmp_path, f"FROM {busybox_image}\nLABEL after={kind}\n")))
    assert after.returncode == 0, after.stderr[-2000:]


def test_a_context_deeper_than_a_layer_is_a_one_line_error(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A build context (a cloned repository, an unpacked upload) nesting directories 1500 deep:
    reading it (os.walk) was a RecursionError traceback. More than 512 levels (what a layer
    holds) is refused naming the directory."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY . /ctx\n")
    fd = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1500):
            os.mkdir("a", dir_fd=fd)
            deeper = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)
    try:
        proc = shoal("build", str(ctx))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: error checking context: 'a/a/a/")
        assert proc.stderr.strip().endswith("has directories more than 512 levels deep"), proc.stderr[-300:]
    finally:
        import subprocess

        subprocess.run(["rm", "-rf", "--", str(ctx)], check=False)  # deeper than shutil.rmtree goes


# --- the context changing under the build ---------------------------------------------------

@pytest.mark.parametrize("copy", ["COPY d/f /x", "COPY d /x", "ADD d/f /x"])
def test_a_context_dir_swapped_for_a_link_is_not_followed(shoal_root: Path, busybox_image: str,
                                                          tmp_path: Path, copy: str) -> None:
    """The context is read in place, its links resolved when the build starts; a directory
    of it swapped for a link to a host directory while an earlier step ran was followed by
    path, and the host's file was copied into the image."""
    import subprocess
    import sys

    outside = _outside(tmp_path)
    (outside / "f").write_text("host secret\n")
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN sleep 5\n{copy}\n", {"d/f": b"public\n"})
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "build", "--no-cache", "-t", "h6swap:t", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("Step 2/3"):
            (ctx / "d").rename(ctx / "d.real")
            (ctx / "d").symlink_to(outside)
    assert proc.wait(timeout=120) == 1, "".join(out)
    assert out[-1].startswith(f"{copy.split()[0]} failed: failed to copy files: d"), "".join(out)
    assert "Traceback" not in "".join(out)
    with open("/proc/self/mountinfo") as f:   # this session's root only: others may be building
        assert not [line for line in f if str(shoal_root) in line]


def test_a_socket_in_the_context_is_skipped(shoal, busybox_image: str, tmp_path: Path) -> None:
    """go-archive skips sockets when the CLI tars the context; shoal made one in the image."""
    import socket

    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY . /all\nRUN test ! -e /all/sock && test -f /all/f\n",
                   {"f": b"x"})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ctx / "sock"))
        proc = shoal("build", "--no-cache", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_context_names_that_are_not_utf8_are_copied(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A context's names are bytes (Go's tar carries them as such); one that is not UTF-8 was
    a UnicodeEncodeError traceback from the cache key. Newlines and 255-byte names too."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY . /all\nCOPY d* /d/\n"
                             "RUN test -f \"$(printf '/all/a\\nb')\" && test -f /all/" + "x" * 255 +
                             " && test -f /d/in && test -f \"$(printf '/all/bad\\377')\"\n",
                   {"a\nb": b"1", "x" * 255: b"2"})
    (ctx / os.fsdecode(b"bad\xff")).write_bytes(b"3")
    (ctx / os.fsdecode(b"d\xfe")).mkdir()
    (ctx / os.fsdecode(b"d\xfe") / "in").write_bytes(b"4")
    proc = shoal("build", "--no-cache", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_layer_built_twice_leaves_the_image_runnable(shoal, busybox_image: str, tmp_path: Path) -> None:
    """`COPY f /f` twice makes the same layer twice; the next RUN's overlay was refused (ELOOP:
    the same lowerdir twice), as was every container of the image."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY f /f\nCOPY f /f\nRUN cat /f\n", {"f": b"x"})
    proc = shoal("build", "--no-cache", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr


HELLO_SHA256 = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"   # b"hello\n"


@pytest.mark.parametrize("flag,source,error", [
    (HELLO_SHA256, "{web}/f", None),
    ("sha256:" + "0" * 64, "{web}/f", f"ADD failed: digest mismatch {HELLO_SHA256}: sha256:" + "0" * 64),
    ("sha256:00", "{web}/f", "invalid checksum digest format: sha256:00"),
    (HELLO_SHA256, "f", "checksum can't be specified for non-HTTP(S) sources"),
])
def test_add_checksum_is_verified(shoal, busybox_image: str, tmp_path: Path, web: str, flag: str, source: str,
                                  error: str | None) -> None:
    """`ADD --checksum=` was accepted and ignored: a download that was not the pinned file went
    into the image (and the flag on a context file was taken too), where buildkit refuses both."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nADD --checksum={flag} {source.format(web=web)} /f\n"
                             "RUN test \"$(cat /f)\" = hello\n", {"f": b"hello\n"})
    proc = shoal("build", "--no-cache", str(ctx))
    if error is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == error, proc.stderr


def test_copy_parents_is_refused_not_ignored(shoal, busybox_image: str, tmp_path: Path) -> None:
    """`COPY --parents a/b/c /x/` is buildkit's /x/a/b/c; shoal took the flag and wrote /x/c."""
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY --parents a/b/c /x/\n", {"a/b/c": b"1"})
    proc = shoal("build", "--no-cache", str(ctx))
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "COPY --parents is not supported by shoal build", proc.stderr
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY --parents=false a/b/c /x/\n", {"a/b/c": b"1"})
    assert shoal("build", "--no-cache", str(ctx)).returncode == 0


@pytest.fixture
def tar_web(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on the host's loopback serving `/t.tar`, a tar holding `inner`."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    served = tmp_path / f"served-{uuid.uuid4().hex[:8]}"
    served.mkdir()
    with tarfile.open(served / "t.tar", "w") as tar:
        info = tarfile.TarInfo("inner")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    yield from _serve(functools.partial(Quiet, directory=str(served)))


@pytest.mark.parametrize("add,check", [
    ("ADD {web}/t.tar /d/", "test -f /d/t.tar && test ! -e /d/inner"),
    ("ADD --unpack=true {web}/t.tar /d/", "test -f /d/inner && test ! -e /d/t.tar"),
    ("ADD t.tar /d/", "test -f /d/inner && test ! -e /d/t.tar"),
    ("ADD --unpack=false t.tar /d/", "test -f /d/t.tar && test ! -e /d/inner"),
])
def test_add_unpacks_a_remote_archive_only_when_asked(shoal, busybox_image: str, tmp_path: Path, tar_web: str,
                                                      add: str, check: str) -> None:
    """A URL's archive is not extracted (the Dockerfile reference) unless --unpack; a local one
    is, unless --unpack=false (which was taken and ignored)."""
    local = io.BytesIO()
    with tarfile.open(fileobj=local, mode="w") as tar:
        info = tarfile.TarInfo("inner")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    ctx = _context(tmp_path, f"FROM {busybox_image}\n{add.format(web=tar_web)}\nRUN {check}\n",
                   {"t.tar": local.getvalue()})
    proc = shoal("build", "--no-cache", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr
