"""Docker's rules for the OCI config, users, logs and the layered rootfs view (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.errors import InvalidArgument, ShoalError
from shoal.runtime import logs, oci
from shoal.runtime.layers import LayeredView, find_executable
from shoal.runtime.spec import ContainerSpec, Mount, Ulimit
from shoal.runtime.users import resolve_user

CID = "0123456789abcdef" * 4
IMAGE = {"config": {"Entrypoint": ["/entry"], "Cmd": ["serve", "--port=80"],
                    "Env": ["PATH=/usr/bin:/bin", "MODE=prod"], "WorkingDir": "/app",
                    "User": "web", "StopSignal": "SIGQUIT", "Labels": {"a": "1"}}}


def plan(**kw) -> oci.ProcessPlan:
    return oci.plan_process(ContainerSpec(image="x", **kw), IMAGE, CID, "host-name")


def test_entrypoint_and_cmd_merge_like_docker():
    assert plan().argv == ["/entry", "serve", "--port=80"]
    assert plan(cmd=["sh"]).argv == ["/entry", "sh"]
    # --entrypoint drops the image CMD
    assert plan(entrypoint=["bash"]).argv == ["bash"]
    assert plan(entrypoint=["bash"], cmd=["-c", "x"]).argv == ["bash", "-c", "x"]
    # --entrypoint "" clears the entrypoint and keeps the image CMD
    assert plan(entrypoint=[]).argv == ["serve", "--port=80"]
    with pytest.raises(InvalidArgument, match="No command specified"):
        oci.plan_process(ContainerSpec(image="x"), {"config": {}}, CID)


def test_env_user_workdir_hostname_and_labels():
    p = plan(env=["MODE=dev", "EXTRA=1"], labels={"b": "2"})
    assert p.env == ["PATH=/usr/bin:/bin", "MODE=dev", "EXTRA=1"]
    assert (p.user, p.workdir, p.stop_signal) == ("web", "/app", "SIGQUIT")
    assert p.hostname == CID[:12]
    assert p.labels == {"a": "1", "b": "2"}
    assert plan(hostname="box").hostname == "box"
    assert plan(network="host").hostname == "host-name"
    assert plan(user="root", workdir="/w", stop_signal="SIGINT").user == "root"


def test_process_env_adds_path_hostname_home_term():
    p = oci.plan_process(ContainerSpec(image="x", cmd=["sh"], env=["A=1"]), {"config": {}}, CID)
    user = resolve_user("", "root:x:0:0:root:/root:/bin/sh\n", "")
    env = oci.process_env(p, user, tty=True)
    assert env == [f"PATH={oci.DEFAULT_PATH}", f"HOSTNAME={CID[:12]}", "TERM=xterm", "A=1", "HOME=/root"]


def test_config_json_has_docker_defaults_and_limits():
    spec = ContainerSpec(image="x", nano_cpus=100_000_000, memory=50 * 1024 * 1024, pids_limit=20,
                         read_only=True, init=True, ulimits=[Ulimit("nofile", 100, 200)],
                         sysctls={"net.ipv4.ip_forward": "1"}, cap_drop=["NET_RAW"], cap_add=["SYS_ADMIN"],
                         mounts=[Mount(type="tmpfs", target="/run")])
    p = oci.plan_process(spec, IMAGE, CID)
    user = resolve_user("0", None, None)
    cfg = oci.build_config(spec=spec, plan=p, user=user, rootfs="/r", extra_mounts=[], netns="",
                           cgroups_path="/shoal/x", init_binary="/usr/bin/tini-static")
    res = cfg["linux"]["resources"]
    assert res["cpu"] == {"period": 100000, "quota": 10000}
    assert res["memory"] == {"limit": 52428800} and res["pids"] == {"limit": 20}
    assert cfg["root"] == {"path": "/r", "readonly": True}
    assert cfg["process"]["args"][:2] == ["/sbin/docker-init", "--"]
    assert {"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/tini-static",
            "options": ["rbind", "ro"]} in cfg["mounts"]
    caps = cfg["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in caps and "CAP_SYS_ADMIN" in caps and "CAP_CHOWN" in caps
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"] and "/proc/sys" in cfg["linux"]["readonlyPaths"]
    assert {"type": "network"} in cfg["linux"]["namespaces"]
    assert any(m["destination"] == "/dev/shm" for m in cfg["mounts"])
    host = oci.build_config(spec=ContainerSpec(image="x", network="host"), plan=p, user=user, rootfs="/r",
                            extra_mounts=[], netns=None, cgroups_path="/shoal/x")
    assert all(ns["type"] != "network" for ns in host["linux"]["namespaces"])


def test_bad_ulimit_and_sysctl_rejected():
    p = plan()
    user = resolve_user("0", None, None)
    with pytest.raises(InvalidArgument, match="invalid ulimit type: bogus"):
        oci.build_config(spec=ContainerSpec(image="x", ulimits=[Ulimit("bogus", 1, 1)]), plan=p, user=user,
                         rootfs="/r", extra_mounts=[], netns="", cgroups_path="/c")
    with pytest.raises(InvalidArgument, match="not allowed"):
        oci.build_config(spec=ContainerSpec(image="x", sysctls={"vm.swappiness": "1"}), plan=p, user=user,
                         rootfs="/r", extra_mounts=[], netns="", cgroups_path="/c")


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"


def test_users_and_groups_by_name_and_number():
    u = resolve_user("app", PASSWD, GROUP)
    assert (u.uid, u.gid, u.additional_gids, u.home) == (1000, 1000, [50], "/home/app")
    u = resolve_user("app:staff", PASSWD, GROUP)
    assert (u.uid, u.gid, u.additional_gids) == (1000, 50, [])
    u = resolve_user("1000", PASSWD, GROUP)
    assert (u.uid, u.gid) == (1000, 1000)
    u = resolve_user("4242:99", PASSWD, GROUP)
    assert (u.uid, u.gid, u.home) == (4242, 99, "/")
    assert resolve_user("", PASSWD, GROUP).uid == 0
    with pytest.raises(ShoalError, match="unable to find user ghost: no matching entries in passwd file"):
        resolve_user("ghost", PASSWD, GROUP)
    with pytest.raises(ShoalError, match="unable to find group nogrp"):
        resolve_user("app:nogrp", PASSWD, GROUP)


def test_k8s_file_lines_rendered_like_docker_logs(tmp_path: Path):
    log = tmp_path / "ctr.log"
    log.write_bytes(
        b"2026-11-26T23:57:57.767172357+00:00 stdout F hi\n"
        b"2026-11-26T23:57:57.800000000+01:00 stdout P par\n"
        b"2026-11-26T23:57:57.900000000+01:00 stderr F oops\n"
        b"2026-11-26T23:57:58.000000000+01:00 stdout F tial\n"
        b"2026-11-26T23:57:59.000000000+00:00 stdout F \n"
        b"2026-11-26T23:57:59.5+00:00 stdout P end"
    )
    lines = logs.read_lines(log)
    assert [(line.stream, line.data) for line in lines] == [
        ("stdout", b"hi\n"), ("stderr", b"oops\n"), ("stdout", b"partial\n"), ("stdout", b"\n"),
        ("stdout", b"end"),
    ]
    assert lines[0].docker_time() == "2026-11-26T23:57:57.767172357Z"
    assert lines[2].docker_time() == "2026-11-26T22:57:57.800000000Z"
    assert lines[4].docker_time() == "2026-11-26T23:57:59.500000000Z"


def test_follow_stops_when_done_and_drains(tmp_path: Path):
    log = tmp_path / "ctr.log"
    log.write_bytes(b"2026-11-26T23:57:57.1+00:00 stdout F one\n")
    calls = []

    def done() -> bool:
        if not calls:
            with log.open("ab") as f:
                f.write(b"2026-11-26T23:57:57.2+00:00 stderr F two\n")
        calls.append(1)
        return True

    assert [line.data for line in logs.follow(log, done, poll=0.01)] == [b"one\n", b"two\n"]


def _symlink(target: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_layered_view_follows_symlinks_whiteouts_and_path(tmp_path: Path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "bin").mkdir(parents=True)
    (lower / "bin" / "busybox").write_text("#!")
    (lower / "bin" / "busybox").chmod(0o755)
    _symlink("busybox", lower / "bin" / "sh")
    _symlink("/bin/busybox", lower / "bin" / "gone")
    (lower / "etc").mkdir()
    (lower / "etc" / "passwd").write_text("old\n")
    (lower / "etc" / "data.txt").write_text("x")
    _symlink("bin", lower / "usrbin")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "passwd").write_text("new\n")
    (upper / "bin").mkdir()
    if os.geteuid() == 0:
        os.mknod(upper / "bin" / "gone", 0o600 | 0o020000, 0)  # an overlay whiteout
    view = LayeredView([upper, lower])
    assert view.read_text("/etc/passwd") == "new\n"
    assert find_executable(view, "sh", "/usr/local/bin:/bin") == ("/bin/sh", True)
    assert find_executable(view, "/usrbin/sh", "") == ("/usrbin/sh", True)
    assert find_executable(view, "data.txt", "/etc") == ("/etc/data.txt", False)
    assert find_executable(view, "nosuch", "/bin") is None
    if os.geteuid() == 0:
        assert find_executable(view, "gone", "/bin") is None


# ---- the default security profile (issue 10 item 5) ------------------------------------------

from shoal.runtime import hostsec, seccomp  # noqa: E402

V1 = hostsec.HostFacts(capabilities=hostsec.CAPABILITY_NAMES, seccomp=True, cgroup_v2=False)
V2 = hostsec.HostFacts(capabilities=hostsec.CAPABILITY_NAMES, seccomp=True, cgroup_v2=True)
ROOT = resolve_user("0", None, None)


@pytest.fixture(autouse=True)
def _private_run_root(tmp_path, monkeypatch):
    """The compiled filter is cached under the run root: the test's own, not the machine's."""
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))


def config(host=V1, user=ROOT, **kw):
    spec = ContainerSpec(image="x", **kw)
    return oci.build_config(spec=spec, plan=oci.plan_process(spec, IMAGE, CID), user=user, rootfs="/r",
                            extra_mounts=[], netns="", cgroups_path="/c", host=host)


def _names(cfg, action="SCMP_ACT_ALLOW", with_args=False):
    return {n for r in cfg["linux"]["seccomp"]["syscalls"] if r["action"] == action
            and bool(r.get("args")) == with_args for n in r["names"]}


def test_capabilities_follow_dockers_rules():
    caps = lambda **kw: oci.capabilities(ContainerSpec(image="x", **kw), V1)  # noqa: E731
    assert caps() == oci.DEFAULT_CAPABILITIES
    assert caps(cap_drop=["chown", "CAP_KILL"]) == [c for c in oci.DEFAULT_CAPABILITIES
                                                   if c not in ("CAP_CHOWN", "CAP_KILL")]
    assert caps(cap_add=["net_admin"])[-1] == "CAP_NET_ADMIN"
    assert caps(cap_add=["ALL"], cap_drop=["SYS_ADMIN"]) == [c for c in hostsec.CAPABILITY_NAMES if c != "CAP_SYS_ADMIN"]
    assert caps(cap_drop=["all"], cap_add=["KILL", "kill"]) == ["CAP_KILL"]
    assert caps(privileged=True, cap_drop=["ALL"]) == list(hostsec.CAPABILITY_NAMES)
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_BOGUS"'):
        caps(cap_add=["bogus"])
    # a non-root process keeps only the bounding set, as execve leaves it (moby SetCapabilities)
    app = resolve_user("1000", None, None)
    assert config(user=app)["process"]["capabilities"] == {"bounding": oci.DEFAULT_CAPABILITIES}
    assert set(config()["process"]["capabilities"]) == {"bounding", "effective", "permitted"}


def test_cgroup_namespace_private_on_v2_host_on_v1():
    has_cgroupns = lambda cfg: {"type": "cgroup"} in cfg["linux"]["namespaces"]  # noqa: E731
    assert has_cgroupns(config(host=V2)) and not has_cgroupns(config(host=V1))
    assert has_cgroupns(config(host=V1, cgroupns="private"))
    assert not has_cgroupns(config(host=V2, cgroupns="host"))
    with pytest.raises(InvalidArgument, match="invalid cgroup namespace mode: shared"):
        oci.validate_security(ContainerSpec(image="x", cgroupns="shared"), V1)


def test_default_seccomp_is_dockers():
    cfg = config()
    sec = cfg["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO"
    assert sec["architectures"][0] == "SCMP_ARCH_X86_64" or os.uname().machine != "x86_64"
    allowed = _names(cfg)
    refused = _names(cfg, "SCMP_ACT_ERRNO")
    assert {"read", "write", "openat", "execve", "socket", "chroot"} <= allowed
    # what a default container may not do: namespaces, mounts, the keyring, bpf, userfaultfd
    for name in ("unshare", "setns", "mount", "umount2", "keyctl", "add_key", "request_key", "bpf",
                 "userfaultfd", "pivot_root", "kexec_load", "open_by_handle_at"):
        assert name not in allowed and name in refused, name
    # clone only without namespace flags; clone3 falls back to clone (ENOSYS)
    clone = [r for r in sec["syscalls"] if r["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in sec["syscalls"]
    keyring = [r for r in sec["syscalls"] if "keyctl" in r["names"]]
    assert keyring and all(r.get("errnoRet") == 1 for r in keyring)
    assert "/proc/interrupts" in cfg["linux"]["maskedPaths"]
    assert cfg["annotations"][seccomp.BPF_ANNOTATION]  # compiled once, handed to crun


def test_capabilities_unlock_their_syscalls():
    admin = config(cap_add=["SYS_ADMIN"])
    allowed = _names(admin)
    assert {"unshare", "setns", "mount", "umount2", "clone", "clone3", "bpf", "sethostname"} <= allowed
    assert "keyctl" not in allowed and "userfaultfd" not in allowed
    assert not any(set(r["names"]) & allowed for r in admin["linux"]["seccomp"]["syscalls"]
                   if r["action"] != "SCMP_ACT_ALLOW" and not r.get("args"))
    assert "bpf" in _names(config(cap_add=["BPF"])) and "bpf" not in _names(config())
    assert "chroot" not in _names(config(cap_drop=["SYS_CHROOT"]))
    assert {"ptrace", "process_vm_readv"} <= _names(config())
    assert "pidfd_getfd" in _names(config(cap_add=["SYS_PTRACE"])) and "pidfd_getfd" not in _names(config())


def test_translation_conditions_arches_and_kernel():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
               "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                           {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
               "syscalls": [
                   {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
                   {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
                   {"names": ["c"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
                   {"names": ["d"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "3.0"}},
                   {"names": ["e"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_A", "CAP_B"]}},
                   {"names": ["f"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "excludes": {"caps": ["CAP_A"]}},
                   {"name": "g", "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
               ]}
    arm = seccomp.translate(profile, ["CAP_A"], machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [r["names"] for r in arm["syscalls"]] == [["a"], ["d"], ["g"]]
    x86 = seccomp.translate(profile, ["CAP_A", "CAP_B"], machine="x86_64")
    assert [r["names"] for r in x86["syscalls"]] == [["b"], ["d"], ["e"], ["g"]]
    none = seccomp.translate(profile, [], machine="x86_64")
    assert {"names": ["f"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22} in none["syscalls"]
    assert none["syscalls"][-1]["args"] == [{"index": 1, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]


def test_security_opts_and_loosening():
    assert "seccomp" not in config(security_opt=["seccomp=unconfined"])["linux"]
    priv = config(privileged=True)
    assert "seccomp" not in priv["linux"] and priv["linux"]["maskedPaths"] == [] == priv["linux"]["readonlyPaths"]
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in priv["linux"]["devices"])
    assert all("ro" not in m["options"] for m in priv["mounts"] if m["type"] in ("sysfs", "cgroup"))
    assert config(security_opt=["no-new-privileges"])["process"]["noNewPrivileges"] is True
    assert config(security_opt=["no-new-privileges=false"])["process"]["noNewPrivileges"] is False
    assert config(security_opt=["systempaths=unconfined"])["linux"]["maskedPaths"] == []
    custom = '{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}'
    sec = config(security_opt=[f"seccomp={custom}"])
    assert sec["linux"]["seccomp"]["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    assert "annotations" not in sec  # crun compiles a custom profile itself
    for bad, why in (("foo", 'invalid --security-opt 1: "foo"'), ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
                     ("no-new-privileges=maybe", "invalid --security-opt 2"),
                     ('seccomp={"defaultAction":"SCMP_ACT_NOPE"}', "unknown defaultAction"),
                     ('seccomp={"syscalls":[{"names":["x"],"action":"SCMP_ACT_ALLOW","args":[{"op":"LIKE"}]}]}',
                      "bad argument condition")):
        with pytest.raises(InvalidArgument, match=why):
            oci.validate_security(ContainerSpec(image="x", security_opt=[bad]), V1)


def test_apparmor_only_where_the_host_has_it():
    assert "apparmorProfile" not in config()["process"]
    armored = hostsec.HostFacts(capabilities=hostsec.CAPABILITY_NAMES, seccomp=True, cgroup_v2=False,
                                apparmor_profile="docker-default")
    assert config(host=armored)["process"]["apparmorProfile"] == "docker-default"
    assert config(host=armored, security_opt=["apparmor=mine"])["process"]["apparmorProfile"] == "mine"
    assert "apparmorProfile" not in config(host=armored, security_opt=["apparmor=unconfined"])["process"]
    assert "apparmorProfile" not in config(host=armored, privileged=True)["process"]


def test_swarm_tasks_carry_cap_drop_and_security_opt():
    from shoal.agent.taskspec import container_spec
    from shoal.model.cluster import Node, Task

    task = Task(id="t1", service_id="s1", service_name="st_web", slot=1,
                spec={"image": "x", "cap_add": ["NET_ADMIN"], "cap_drop": ["CHOWN"],
                      "security_opt": ["no-new-privileges"]})
    spec = container_spec(task, Node(id="n1", hostname="h"))
    assert (spec.cap_add, spec.cap_drop, spec.security_opt) == (["NET_ADMIN"], ["CHOWN"], ["no-new-privileges"])


def test_swarm_task_stop_timeout_drops_the_fraction_as_moby():
    """moby's containerAdapter.shutdown stops with int(StopGracePeriod.Seconds): a compose
    `stop_grace_period: 1500ms` waits 1 s and 900ms kills at once (shoal rounded them to 2 and
    1)."""
    from shoal.agent.taskspec import container_spec
    from shoal.model.cluster import Node, Task

    def timeout(grace: float) -> int:
        task = Task(id="t1", service_id="s1", service_name="st_web", slot=1,
                    spec={"image": "x", "stop_grace_period": grace})
        return container_spec(task, Node(id="n1", hostname="h")).stop_timeout

    assert [timeout(g) for g in (1.5, 2.5, 0.9, 10.0)] == [1, 2, 0, 10]
