"""Boot Debian's own kernel in qemu (plain TCG emulation) on a cgroup v2-only host and run one
command in it, so shoal's runtime is tested on the cgroup layout most users have while this CI
machine is cgroup v1.

The guest has no disk of its own: the host's root filesystem is shared read-only over 9p
(virtio), with a tmpfs overlay on top, so crun, conmon, nft, python and the repo's .venv are the
host's very files. /tmp, /run and /var/lib/shoal are plain tmpfs (overlay upper dirs of the
containers cannot live on an overlay). cgroup v1 is switched off (`cgroup_no_v1=all`) and every
controller is enabled in the root's subtree_control. No network device: loopback only.

The kernel is Debian's linux-image-amd64, fetched with `apt-get download` and unpacked with
`dpkg-deb -x` into /var/cache/shoal-test, so the host's /boot and boot loader are never touched.
A second 9p share (read-write, a directory of the caller's) carries the command in and the
results out.

Run by hand:  python tests/cgroupv2/guest.py -- sh -c 'cat /proc/self/cgroup'
(SHOAL_GUEST_IO: the io directory, default /tmp/shoal-guest-io; SHOAL_GUEST_TIMEOUT: seconds, 1200.
The guest's /tmp, /run and /var/lib/shoal are its own tmpfs: put files for it in the io
directory, seen inside as /run/shoal-guest/io.)
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("SHOAL_TEST_CACHE", "/var/cache/shoal-test"))
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# Loaded before the root is mounted: virtio PCI, 9p over virtio, overlayfs.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
# Loaded at boot as well (the kernel would ask modprobe for each): what containers, bridges,
# veths and shoal's nftables table use. Anything else is loaded on demand by busybox modprobe.
EARLY_MODULES = ("veth", "bridge", "br_netfilter", "nf_tables", "nft_chain_nat", "nft_nat", "nft_masq",
                 "nft_ct", "nft_numgen", "nft_fib_inet", "nft_reject_inet", "nft_compat", "nf_conntrack",
                 "nf_nat", "xt_conntrack", "xt_MASQUERADE", "xt_addrtype")


class GuestUnavailable(Exception):
    """qemu or the kernel cannot be had on this machine (the reason is the message)."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _apt_install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env)
    if proc.returncode != 0:
        _run(["apt-get", "update", "-q"], env=env)
        proc = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env)
    if proc.returncode != 0:
        raise GuestUnavailable(f"apt-get install {package} failed: {proc.stderr.strip()[-300:]}")


def ensure_qemu() -> str:
    if shutil.which(QEMU) is None:
        if os.geteuid() != 0:
            raise GuestUnavailable(f"{QEMU} is not installed and installing it needs root")
        _apt_install("qemu-system-x86")
    path = shutil.which(QEMU)
    if path is None:
        raise GuestUnavailable(f"{QEMU} is still missing after installing qemu-system-x86")
    return path


@dataclass
class Kernel:
    version: str  # e.g. 6.1.0-57-amd64
    root: Path  # the unpacked package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _kernel_package() -> str:
    """The real package linux-image-amd64 stands for (linux-image-6.1.0-57-amd64)."""
    proc = _run(["apt-cache", "depends", "linux-image-amd64"])
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)", proc.stdout)
    if not found:
        _run(["apt-get", "update", "-q"])
        proc = _run(["apt-cache", "depends", "linux-image-amd64"])
        found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)", proc.stdout)
    if not found:
        raise GuestUnavailable(f"apt-cache knows no linux-image-amd64: {proc.stderr.strip()[-300:]}")
    return found[0]


def ensure_kernel() -> Kernel:
    """Debian's kernel, unpacked in the cache (downloaded once, never installed). One already
    unpacked is used as it is: asking apt which is current costs seconds on every run."""
    done = sorted(CACHE.glob("linux-image-*-amd64/.complete"), key=lambda p: p.stat().st_mtime)
    if done:
        root = done[-1].parent
        return Kernel(root.name.removeprefix("linux-image-"), root)
    package = _kernel_package()
    version = package.removeprefix("linux-image-")
    root = CACHE / package
    kernel = Kernel(version, root)
    if (root / ".complete").exists():
        return kernel
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{package}_*.deb"):
        old.unlink()
    # _apt cannot write into a root-only cache; apt then downloads as root and says so on stderr.
    proc = _run(["apt-get", "download", package], cwd=CACHE)
    debs = list(CACHE.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise GuestUnavailable(f"apt-get download {package} failed: {proc.stderr.strip()[-300:]}")
    shutil.rmtree(root, ignore_errors=True)
    proc = _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    if proc.returncode != 0:
        raise GuestUnavailable(f"dpkg-deb -x {debs[0]} failed: {proc.stderr.strip()}")
    debs[0].unlink()
    # modules.dep and modules.alias are made by the package's postinst (depmod); busybox's
    # depmod writes them the same way, for the guest's busybox modprobe.
    proc = _run([str(BUSYBOX), "depmod", "-b", str(root), version])
    if proc.returncode != 0:
        raise GuestUnavailable(f"busybox depmod failed: {proc.stderr.strip()}")
    (root / ".complete").touch()
    return kernel


def module_deps(kernel: Kernel) -> dict[str, list[str]]:
    """Module name -> its .ko path and the paths of what it needs, from modules.dep."""
    out: dict[str, list[str]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        name = Path(path).name.removesuffix(".ko").replace("-", "_")
        out[name] = [path, *deps.split()]
    return out


def load_order(kernel: Kernel, names: tuple[str, ...]) -> list[str]:
    """The .ko paths to insmod, dependencies first, each once."""
    deps = module_deps(kernel)
    by_path = {v[0]: v for v in deps.values()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in by_path.get(path, [path])[1:]:
            visit(dep)
        order.append(path)

    for name in names:
        if name in deps:
            visit(deps[name][0])
    return order


INIT = r"""#!/bin/busybox sh
# First stage: busybox only. Mount the host's root read-only over 9p, put a tmpfs overlay on it,
# give it fresh /proc /sys /dev /run /tmp and a cgroup2-only /sys/fs/cgroup, then hand over.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "shoal-guest: stage1 $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /boot-modules); do insmod /modules/$m || echo "shoal-guest: insmod $m failed"; done
mkdir -p /lower /upper /newroot /io
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || exec sh
mount -t tmpfs -o size=1024m,mode=0755 upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w shoalroot /newroot || exec sh
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t mqueue mqueue /newroot/dev/mqueue
# The checkout under test (and its .venv) may live under a path the guest gets a fresh tmpfs for
# (a CI clone in /tmp): keep those directories of the host's root visible through the tmpfs.
i=0
for p in @KEEP@; do mkdir -p /keep/$i; mount --bind /newroot$p /keep/$i; i=$((i+1)); done
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0700 shoal /newroot/var/lib/shoal 2>/dev/null || { mkdir -p /newroot/var/lib/shoal && mount -t tmpfs -o mode=0700 shoal /newroot/var/lib/shoal; }
i=0
for p in @KEEP@; do mkdir -p /newroot$p; mount --move /keep/$i /newroot$p; i=$((i+1)); done
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup
for c in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control || echo "shoal-guest: cannot enable $c"
done
mkdir -p /newroot/run/shoal-guest/io
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 shoalio /newroot/run/shoal-guest/io || exec sh
# The kernel asks for modules it needs (an nft expression, a link type) through modprobe: the
# host has no kmod, so busybox's modprobe reads the unpacked package's modules.dep.
mkdir -p /newroot/lib/modules/@VERSION@
mount --bind /newroot@MODULES@ /newroot/lib/modules/@VERSION@
cp /bin/busybox /newroot/run/shoal-guest/busybox
ln -s busybox /newroot/run/shoal-guest/modprobe
echo /run/shoal-guest/modprobe > /proc/sys/kernel/modprobe
for m in @EARLY@; do /newroot/run/shoal-guest/busybox chroot /newroot /run/shoal-guest/modprobe $m 2>/dev/null; done
umount /dev /sys /proc
echo "shoal-guest: switching root"
exec switch_root /newroot /run/shoal-guest/busybox sh /run/shoal-guest/io/stage2.sh
"""

STAGE2 = r"""# Second stage, in the host's root: run the command, report, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
# The host's ~/.shoal (a current context naming another shoald) is not the guest's.
export SHOAL_CONFIG=/run/shoal-guest/config/config.json
io=/run/shoal-guest/io
bb=/run/shoal-guest/busybox
ip link set lo up
hostname shoal-guest
echo "shoal-guest: ready $(cut -d' ' -f1 /proc/uptime)s"
cut -d' ' -f1 /proc/uptime > $io/ready
cd @CWD@
@ENV@ sh $io/cmd.sh > $io/output 2>&1 < /dev/null
echo $? > $io/rc
echo "shoal-guest: done rc=$(cat $io/rc) $(cut -d' ' -f1 /proc/uptime)s"
sync
echo o > /proc/sysrq-trigger
$bb sleep 5
$bb poweroff -f
"""


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data); directories have no data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nameb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + nameb)
        out.write(b"\0" * (-(110 + len(nameb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


# Directories the guest mounts a fresh tmpfs on; a checkout below one of them is carried through.
_GUEST_TMPFS = ("/tmp", "/run", "/var/lib/shoal")


def kept_paths(paths: list[str]) -> list[str]:
    """Those of `paths` (the working directory, the venv) that lie under a guest tmpfs."""
    keep: list[str] = []
    for p in paths:
        real = os.path.realpath(p)
        if any(real == t or real.startswith(t + "/") for t in _GUEST_TMPFS) and real not in keep:
            if not any(real.startswith(k + "/") for k in keep):
                keep.append(real)
    return keep


def build_initramfs(kernel: Kernel, dest: Path, keep: list[str] | None = None) -> Path:
    order = load_order(kernel, BOOT_MODULES)
    early = [m for m in EARLY_MODULES if m in module_deps(kernel)]
    init = (INIT.replace("@VERSION@", kernel.version).replace("@MODULES@", str(kernel.modules))
            .replace("@EARLY@", " ".join(early)).replace("@KEEP@", " ".join(shlex.quote(k) for k in keep or [])))
    entries: list[tuple[str, int, bytes]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "proc", "sys", "dev", "modules", "tmp")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()))
    entries.append(("init", stat.S_IFREG | 0o755, init.encode()))
    names = []
    for path in order:
        name = Path(path).name
        names.append(name)
        entries.append((f"modules/{name}", stat.S_IFREG | 0o644, (kernel.modules / path).read_bytes()))
    entries.append(("boot-modules", stat.S_IFREG | 0o644, " ".join(names).encode()))
    dest.write_bytes(_cpio(entries))
    return dest


@dataclass
class Result:
    returncode: int | None  # None: the guest never finished the command
    output: str  # the command's stdout and stderr
    console: str  # the serial console (kernel and init messages)
    boot_seconds: float | None  # guest uptime when the command started
    wall_seconds: float


def run(command: list[str], io_dir: Path, *, cwd: str = "/", env: dict[str, str] | None = None,
        timeout: float = 600, smp: int = 2, memory_mb: int = 2048) -> Result:
    """Boot the guest, run `command` (argv) in `cwd` as root, power off; io_dir receives the
    command's output (`output`) and exit status (`rc`) and may hold files for it."""
    if os.geteuid() != 0:
        raise GuestUnavailable("booting the guest needs root (its 9p share exports / as root)")
    if not BUSYBOX.exists():
        raise GuestUnavailable("busybox-static is not installed (/bin/busybox)")
    qemu = ensure_qemu()
    kernel = ensure_kernel()
    io_dir.mkdir(parents=True, exist_ok=True)
    for name in ("rc", "output", "ready"):
        (io_dir / name).unlink(missing_ok=True)
    initrd = build_initramfs(kernel, io_dir / "initramfs.cpio", kept_paths([cwd, sys.prefix]))
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    (io_dir / "stage2.sh").write_text(STAGE2.replace("@CWD@", shlex.quote(cwd)).replace("@ENV@", f"env {envs}" if envs else ""))
    (io_dir / "cmd.sh").write_text("exec " + shlex.join(command) + "\n")
    append = ("console=ttyS0 panic=-1 quiet loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 "
              "rdinit=/init tsc=reliable mitigations=off")
    argv = [qemu, "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(smp),
            "-m", str(memory_mb), "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot", "-nic", "none",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", append,
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={io_dir},mount_tag=shoalio,security_model=none,multidevs=remap"]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        console = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:  # subprocess.run kills qemu before raising
        console = (e.stdout or b"").decode(errors="replace") + "\n[shoal: guest timed out]"
    wall = time.monotonic() - start
    rc_text = (io_dir / "rc").read_text().strip() if (io_dir / "rc").exists() else ""
    ready = (io_dir / "ready").read_text().strip() if (io_dir / "ready").exists() else ""
    output = (io_dir / "output").read_text(errors="replace") if (io_dir / "output").exists() else ""
    return Result(int(rc_text) if rc_text.isdigit() else None, output, console,
                  float(ready) if ready else None, wall)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    io_dir = Path(os.environ.get("SHOAL_GUEST_IO", "/tmp/shoal-guest-io"))
    try:
        result = run(argv or ["sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/cgroup.subtree_control"],
                     io_dir, cwd=os.getcwd(), timeout=float(os.environ.get("SHOAL_GUEST_TIMEOUT", "1200")))
    except GuestUnavailable as e:
        print(f"guest: {e}", file=sys.stderr)
        return 2
    print(result.console, file=sys.stderr)
    print(result.output, end="")
    print(f"guest: rc={result.returncode} ready after {result.boot_seconds}s (guest uptime), "
          f"{result.wall_seconds:.1f}s wall", file=sys.stderr)
    return 1 if result.returncode is None else result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
