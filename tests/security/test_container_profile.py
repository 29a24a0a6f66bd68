"""Issue 10 item 5: the default container profile, for real (crun, the CLI as a user runs it).

A default container runs under Docker's seccomp filter (Debian's containers-common profile with
Docker's rules for namespaces, mounts and the keyring on top), with Docker's capabilities,
masked and read-only /proc and /sys paths; it cannot make a user namespace or call keyctl, bpf
or userfaultfd. `--security-opt seccomp=unconfined`, `--cap-add/--cap-drop` and `--privileged`
loosen it as Docker's do. The raw syscalls are made by a tiny static C program compiled here
with gcc and imported with the busybox files as an image of the test's own."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

PROBE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
/* Each argument names a syscall to try; prints "<name> ok" or "<name> <strerror>". */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i];
        long r = -1;
        errno = 0;
        if (!strcmp(n, "keyctl")) r = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1);
        else if (!strcmp(n, "bpf")) r = syscall(SYS_bpf, 0x7fff /* no such command: EINVAL */, NULL, 0);
        else if (!strcmp(n, "userfaultfd")) r = syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */);
        else if (!strcmp(n, "unshare-user")) r = syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */);
        printf("%s %s\n", n, r >= 0 ? "ok" : strerror(errno));
    }
    return 0;
}
"""
REFUSED = "Operation not permitted"
CALLS = ("keyctl", "bpf", "userfaultfd", "unshare-user")


@pytest.fixture(scope="module")
def probe_image(shoal, busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """localhost/shoal-probe:test: the busybox files plus /bin/probe, a static binary."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(work / "probe"), str(work / "probe.c")], check=True)
    tar_path = work / "probe-rootfs.tar"
    shutil.copy(busybox_tar, tar_path)
    with tarfile.open(tar_path, "a") as tar:
        tar.add(str(work / "probe"), arcname="bin/probe")
    ref = "localhost/shoal-probe:test"
    shoal("import", str(tar_path), ref, check=True)
    return ref

# run.go's withHelp after a refusal of `run` (exit 125)
RUN_HELP = "\n\nRun 'shoal run --help' for more information"


def _run(shoal, *args: str) -> str:
    proc = shoal("run", "--rm", "--network", "none", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _results(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines())


def _status(out: str, field: str) -> str:
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in {out!r}")


def test_default_container_runs_under_a_seccomp_filter(shoal, busybox_image: str) -> None:
    out = _run(shoal, busybox_image, "grep", "Seccomp:", "/proc/self/status")
    assert out == "Seccomp:\t2\n"


def test_default_refuses_user_namespaces_keyctl_bpf_userfaultfd(shoal, probe_image: str) -> None:
    got = _results(_run(shoal, probe_image, "probe", *CALLS))
    assert got == {name: REFUSED for name in CALLS}
    # busybox's unshare(1) too, as a user would try it
    proc = shoal("run", "--rm", "--network", "none", probe_image, "unshare", "-U", "true")
    assert proc.returncode != 0 and REFUSED in proc.stdout + proc.stderr


def test_unconfined_lets_the_same_calls_through(shoal, probe_image: str) -> None:
    out = _run(shoal, "--security-opt", "seccomp=unconfined", probe_image, "sh", "-c",
               "grep Seccomp: /proc/self/status; probe keyctl bpf userfaultfd unshare-user")
    assert _status(out, "Seccomp") == "0"
    got = _results("\n".join(out.splitlines()[1:]))
    # the kernel answers now: keyctl, userfaultfd (user mode) and unshare succeed; bpf with a
    # command that does not exist says so
    assert got == {"keyctl": "ok", "bpf": "Invalid argument", "userfaultfd": "ok", "unshare-user": "ok"}


def test_exec_runs_under_the_same_filter(shoal, probe_image: str) -> None:
    name = "shoal-profile-exec"
    shoal("run", "-d", "--name", name, "--network", "none", probe_image, "sleep", "60", check=True)
    try:
        proc = shoal("exec", name, "sh", "-c", "grep Seccomp: /proc/self/status; probe keyctl unshare-user")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == ["Seccomp:\t2", f"keyctl {REFUSED}", f"unshare-user {REFUSED}"]
    finally:
        shoal("rm", "-f", name)


def test_cap_sys_admin_unlocks_what_docker_gates_behind_it(shoal, probe_image: str) -> None:
    got = _results(_run(shoal, "--cap-add", "SYS_ADMIN", probe_image, "probe", *CALLS))
    # unshare and bpf follow the capability; the keyring and userfaultfd stay closed, as in Docker
    assert got == {"keyctl": REFUSED, "bpf": "Invalid argument", "userfaultfd": REFUSED, "unshare-user": "ok"}


def test_cap_drop_removes_the_capability(shoal, busybox_image: str) -> None:
    default = int(_status(_run(shoal, busybox_image, "cat", "/proc/self/status"), "CapEff"), 16)
    dropped = int(_status(_run(shoal, "--cap-drop", "chown", "--cap-drop", "CAP_NET_RAW", busybox_image,
                               "cat", "/proc/self/status"), "CapEff"), 16)
    assert default & 1 and default & (1 << 13)  # CAP_CHOWN, CAP_NET_RAW among Docker's defaults
    assert dropped == default & ~1 & ~(1 << 13)
    only = int(_status(_run(shoal, "--cap-drop", "ALL", "--cap-add", "KILL", busybox_image,
                            "cat", "/proc/self/status"), "CapEff"), 16)
    assert only == 1 << 5
    proc = shoal("run", "--rm", "--network", "none", busybox_image, "chown", "1:1", "/tmp")
    assert proc.returncode == 0, proc.stderr
    proc = shoal("run", "--rm", "--network", "none", "--cap-drop", "CHOWN", busybox_image, "chown", "1:1", "/tmp")
    assert proc.returncode != 0 and REFUSED in proc.stderr + proc.stdout


def test_unknown_capability_is_refused_before_anything_is_made(shoal, busybox_image: str, shoal_root: Path) -> None:
    def containers() -> set[Path]:
        d = shoal_root / "containers"
        return set(d.iterdir()) if d.is_dir() else set()

    before = containers()
    proc = shoal("run", "--rm", "--network", "none", "--cap-add", "NOT_A_CAP", busybox_image, "true")
    assert proc.returncode == 125
    assert proc.stderr.strip() == 'shoal: unknown capability: "CAP_NOT_A_CAP"' + RUN_HELP
    assert containers() == before


def test_privileged_gets_every_capability_no_filter_and_the_host_devices(shoal, busybox_image: str) -> None:
    host_bounding = int(_status(Path("/proc/self/status").read_text(), "CapBnd"), 16)
    out = _run(shoal, "--privileged", busybox_image, "sh", "-c",
               "cat /proc/self/status; wc -c < /proc/interrupts; ls /dev")
    assert int(_status(out, "CapEff"), 16) == host_bounding
    assert _status(out, "Seccomp") == "0"
    lines = out.splitlines()
    assert "null" in lines and "loop-control" in lines  # host devices beyond Docker's defaults
    assert any(line.strip().isdigit() and int(line) > 0 for line in lines)  # /proc/interrupts unmasked


def test_masked_paths_include_proc_interrupts(shoal, busybox_image: str) -> None:
    script = ('echo "[$(cat /proc/interrupts)]"; echo "[$(cat /proc/keys)]"; echo "[$(ls -A /sys/firmware)]"; '
              'grep -E " /proc/(sys|irq) " /proc/mounts; true')
    out = _run(shoal, busybox_image, "sh", "-c", script).splitlines()
    assert out[:3] == ["[]", "[]", "[]"]
    assert all(" ro," in line for line in out[3:]) and len(out) == 5
    # systempaths=unconfined (and --privileged) show them, as in Docker
    loose = _run(shoal, "--security-opt", "systempaths=unconfined", busybox_image, "sh", "-c", script).splitlines()
    assert loose[0] != "[]" and "CPU0" in loose[0]


def test_no_new_privileges(shoal, busybox_image: str) -> None:
    assert _status(_run(shoal, busybox_image, "cat", "/proc/self/status"), "NoNewPrivs") == "0"
    out = _run(shoal, "--security-opt", "no-new-privileges", busybox_image, "cat", "/proc/self/status")
    assert _status(out, "NoNewPrivs") == "1"


def test_seccomp_profile_file(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A profile FILE in Docker's format: here the default without mkdir."""
    profile = json.loads(Path("/usr/share/containers/seccomp.json").read_text())
    for call in profile["syscalls"]:
        call["names"] = [n for n in call["names"] if n not in ("mkdir", "mkdirat")]
    path = tmp_path / "no-mkdir.json"
    path.write_text(json.dumps(profile))
    ok = shoal("run", "--rm", "--network", "none", busybox_image, "mkdir", "/tmp/x")
    assert ok.returncode == 0, ok.stderr
    proc = shoal("run", "--rm", "--network", "none", "--security-opt", f"seccomp={path}", busybox_image,
                 "mkdir", "/tmp/x")
    assert proc.returncode != 0 and "can't create directory" in proc.stderr + proc.stdout


def test_security_opt_errors_read_as_dockers(shoal, busybox_image: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    proc = shoal("run", "--rm", "--security-opt", f"seccomp={missing}", busybox_image, "true")
    assert proc.returncode == 125
    assert proc.stderr.strip() == (f"shoal: opening seccomp profile ({missing}) failed: open {missing}: "
                                   "no such file or directory" + RUN_HELP)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = shoal("run", "--rm", "--security-opt", f"seccomp={bad}", busybox_image, "true")
    assert proc.returncode == 125 and f"compacting json for seccomp profile ({bad}) failed" in proc.stderr
    proc = shoal("run", "--rm", "--security-opt", "bogus=1", busybox_image, "true")
    assert proc.returncode == 125 and proc.stderr.strip() == 'shoal: invalid --security-opt 2: "bogus=1"' + RUN_HELP
    proc = shoal("run", "--rm", "--security-opt", "bogus", busybox_image, "true")
    assert proc.returncode == 125 and proc.stderr.strip() == 'shoal: invalid --security-opt: "bogus"' + RUN_HELP


def test_inspect_shows_the_profile(shoal, busybox_image: str) -> None:
    name = "shoal-profile-inspect"
    proc = shoal("create", "--name", name, "--cap-drop", "NET_RAW", "--security-opt", "seccomp=unconfined",
                 busybox_image, "true")
    assert proc.returncode == 0, proc.stderr
    try:
        host = json.loads(shoal("inspect", name, check=True).stdout)[0]["HostConfig"]
        assert host["SecurityOpt"] == ["seccomp=unconfined"] and host["CapDrop"] == ["NET_RAW"]
        assert "/proc/interrupts" in host["MaskedPaths"] and host["CgroupnsMode"] == "host"
    finally:
        shoal("rm", "-f", name)


def test_cgroup_namespace_is_the_hosts_on_cgroup_v1(shoal, busybox_image: str) -> None:
    """This machine is cgroup v1 (hybrid): Docker's default there is the host's cgroup
    namespace, so the container sees its own cgroup's full path; --cgroupns private hides it.
    (The v2 decision is a unit test: tests/unit/test_runtime_spec.py.)"""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.skip("a cgroup v2 host")
    default = _run(shoal, busybox_image, "cat", "/proc/self/cgroup")
    assert ":/shoal/" in default
    private = _run(shoal, "--cgroupns", "private", busybox_image, "cat", "/proc/self/cgroup")
    assert ":/shoal/" not in private and ":/\n" in private


def test_compiled_filter_is_the_one_crun_makes(shoal_root: Path, tmp_path: Path) -> None:
    """shoal hands crun the default filter compiled (crun's slowest start step otherwise): the
    program must be byte for byte what crun compiles from the same linux.seccomp section, which
    crun keeps in its state directory while the container runs. (shoal_root: the program is
    cached under the session's run root, not the machine's.)"""
    if shutil.which("crun") is None:
        pytest.skip("crun is not installed")
    from shoal.runtime import cgroups, oci, seccomp
    from shoal.runtime.spec import ContainerSpec
    from shoal.runtime.users import resolve_user

    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    state = tmp_path / "crun-state"
    for adds in ([], ["SYS_ADMIN"], ["ALL"]):
        spec = ContainerSpec(image="x", network="none", cap_add=adds)
        plan = oci.ProcessPlan(entrypoint=[], cmd=["/bin/busybox", "sleep", "30"], env=[], user="",
                               workdir="/", hostname="probe", stop_signal="SIGTERM")
        cfg = oci.build_config(spec=spec, plan=plan, user=resolve_user("0", None, None), rootfs=str(rootfs),
                               extra_mounts=[], netns="", cgroups_path="/shoal/shoal-bpf-check")
        ours = seccomp.compile_bpf(cfg["linux"]["seccomp"])
        assert ours and cfg["annotations"][seccomp.BPF_ANNOTATION]
        del cfg["annotations"]  # let crun compile the section itself
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        cid = "shoal-bpf-check"
        try:
            # no pipes: the detached container would hold them open until it exits
            subprocess.run(["crun", f"--root={state}", "run", "-d", "--bundle", str(tmp_path), cid],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            theirs = (state / cid / "seccomp.bpf").read_bytes()
        finally:
            subprocess.run(["crun", f"--root={state}", "delete", "-f", cid], capture_output=True)
            # crun's delete leaves the path it made under a controller directory no hierarchy is
            # mounted on (hugetlb here), and the shared parent: removed as shoal removes its own
            cgroups.remove(cid)
        assert ours == theirs, adds


def test_build_run_steps_get_the_default_profile(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\n"
        "RUN grep -E '^(Seccomp|CapEff):' /proc/self/status > /profile\n"
        "RUN unshare -U true 2>/unshare.err || echo refused > /unshare\n")
    tag = "localhost/shoal-profile-build:test"
    proc = shoal("build", "--no-cache", "-t", tag, str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        out = _run(shoal, tag, "cat", "/profile", "/unshare")
        assert _status(out, "Seccomp") == "2"
        assert int(_status(out, "CapEff"), 16) == 0xa80425fb  # Docker's 14 default capabilities
        assert out.splitlines()[-1] == "refused"
    finally:
        shoal("rmi", tag)


def test_swarm_tasks_get_the_profile_and_their_service_caps(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A stack's task runs under the same filter; its service's cap_drop and cap_add apply."""
    import time

    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        f"services:\n  probe:\n    image: {busybox_image}\n    command: [sleep, '300']\n"
        "    stop_grace_period: 1s\n    cap_drop: [CHOWN]\n    cap_add: [NET_ADMIN]\n")

    def task() -> str | None:
        rows = shoal("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.splitlines()
        return next((r.split()[0] for r in rows if r.split()[1].startswith("shoalprof_probe.")), None)

    try:
        proc = shoal("stack", "deploy", "-c", str(compose), "shoalprof")
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 60
        while (cid := task()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cid, "no task container"
        status = shoal("exec", cid, "cat", "/proc/1/status").stdout
        assert _status(status, "Seccomp") == "2"
        assert int(_status(status, "CapEff"), 16) == (0xA80425FB & ~1) | (1 << 12)  # -CHOWN +NET_ADMIN
    finally:
        shoal("stack", "rm", "shoalprof")
        deadline = time.monotonic() + 30
        while task() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
