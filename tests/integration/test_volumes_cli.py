"""`shoal volume` with real containers: create with the local driver's options (a tmpfs, a bind
through moby's mount-option parsing, nfs refused cleanly when no server answers), used by
`run -v`, listed and filtered as docker/cli prints, refused removal while a container uses it,
pruned (anonymous only unless -a) with the space it held."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cli import volume as cli
from shoal.runtime import volumes
from tests.conftest import ROOT_ONLY

pytestmark = ROOT_ONLY


BUSYBOX = "localhost/busybox:test"


@pytest.fixture(scope="module", autouse=True)
def private_root(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path,
                 shoal_root: Path) -> Iterator[Path]:  # after the session root, which sets the env too
    """A state root of this module's own (its prunes remove everything unused)."""
    from tests.conftest import module_root

    with module_root(tmp_path_factory, busybox_tar, BUSYBOX) as root:
        yield root


def _err(result) -> str:
    return "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("Starting shoald"))


def test_create_inspect_ls_and_bad_options(shoal) -> None:
    assert shoal("volume", "create", "--label", "tier=db", "--label", "a", "h4v-plain", check=True).stdout == "h4v-plain\n"
    assert shoal("volume", "create", "h4v-plain", check=True).stdout == "h4v-plain\n"  # idempotent, as Docker's
    try:
        doc = json.loads(shoal("volume", "inspect", "h4v-plain", check=True).stdout)
        assert list(doc[0]) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
        assert doc[0]["Labels"] == {"a": "", "tier": "db"} and doc[0]["Options"] is None
        assert doc[0]["Mountpoint"].endswith("/volumes/h4v-plain/_data")
        assert shoal("volume", "inspect", "-f", "{{.Name}} {{json .Labels}}", "h4v-plain", check=True).stdout == \
            'h4v-plain {"a":"","tier":"db"}\n'
        listing = shoal("volume", "ls", check=True).stdout.splitlines()
        assert listing[0] == "DRIVER    VOLUME NAME" and "local     h4v-plain" in listing
        assert shoal("volume", "ls", "-q", "-f", "label=tier=db", check=True).stdout == "h4v-plain\n"
        assert shoal("volume", "ls", "-q", "-f", "label=tier=web").stdout == ""
        for args, message in [
            (("-o", "foo=bar", "h4v-bad"), 'create h4v-bad: invalid option: "foo"'),
            (("-o", "type=tmpfs", "h4v-bad"), 'create h4v-bad: missing required option: "device"'),
            (("-o", "o=size=1m", "h4v-bad"), 'create h4v-bad: missing required option: '),
            (("-d", "flocker", "h4v-bad"), 'create h4v-bad: error looking up volume plugin flocker: plugin "flocker" not found'),
            (("a/b",), 'create a/b: "a/b" includes invalid characters for a local volume name'),
        ]:
            result = shoal("volume", "create", *args)
            assert result.returncode == 1 and _err(result).startswith(f"Error response from daemon: {message}"), result.stderr
        assert "h4v-bad" not in shoal("volume", "ls", "-q").stdout.split()
        result = shoal("volume", "ls", "-f", "dangling=maybe")
        assert (result.returncode, _err(result)) == (1, "Error response from daemon: invalid filter 'dangling=[maybe]'\n")
        result = shoal("volume", "inspect", "h4v-plain", "h4v-none")
        assert result.returncode == 1 and json.loads(result.stdout)[0]["Name"] == "h4v-plain"
        assert _err(result) == "Error response from daemon: get h4v-none: no such volume\n"
    finally:
        shoal("volume", "rm", "h4v-plain")


def test_tmpfs_and_bind_volumes_mounted_for_a_container_and_in_use(shoal, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "from-host").write_text("hello-bind\n")
    shoal("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=2m,uid=1000,nosuid",
          "h4v-tmp", check=True)
    shoal("volume", "create", "-o", "type=none", "-o", f"device={host}", "-o", "o=bind,ro", "h4v-bind", check=True)
    made: list[str] = []
    try:
        out = shoal("run", "--rm", "-v", "h4v-tmp:/t", "-v", "h4v-bind:/b", BUSYBOX, "sh", "-c",
                    "grep ' /t ' /proc/mounts; cat /b/from-host; stat -c %u /t", check=True).stdout
        assert "tmpfs /t tmpfs" in out and "size=2048k" in out
        assert "hello-bind" in out and "\n1000\n" in out
        # The volumes' _data are mounts on the host now, as the local driver makes them: `nosuid`
        # a flag of the tmpfs, `bind,ro` a bind remounted read-only (moby/sys/mount's remount-ro).
        host_mounts = {line.split()[4]: line.split()[5] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
        assert "nosuid" in host_mounts[str(volumes.data_dir("h4v-tmp"))].split(",")
        assert "ro" in host_mounts[str(volumes.data_dir("h4v-bind"))].split(",")
        cid = shoal("run", "-d", "-v", "h4v-tmp:/t", BUSYBOX, "sleep", "300", check=True).stdout.strip()
        made.append(cid)
        refused = shoal("volume", "rm", "h4v-tmp", "h4v-bind")
        assert refused.returncode == 1 and refused.stdout == "h4v-bind\n"
        assert _err(refused) == f"Error response from daemon: remove h4v-tmp: volume is in use - [{cid}]\n"
        assert shoal("volume", "ls", "-q", "-f", "dangling=false", check=True).stdout.split() == ["h4v-tmp"]
        assert (host / "from-host").read_text() == "hello-bind\n"  # the bind's source survives its volume
        shoal("rm", "-f", cid, check=True)
        made.remove(cid)
        assert shoal("volume", "rm", "h4v-tmp", check=True).stdout == "h4v-tmp\n"
        assert str(volumes.data_dir("h4v-tmp")) not in Path("/proc/self/mounts").read_text()
        assert not volumes.data_dir("h4v-tmp").parent.exists()
    finally:
        for cid in made:
            shoal("rm", "-f", cid)
        shoal("volume", "rm", "-f", "h4v-tmp", "h4v-bind")


def test_nfs_options_reach_the_mount_call_and_fail_cleanly(shoal) -> None:
    """No NFS server answers here (198.18.0.0/15 is reserved for tests): the mount call is made
    with Docker's options and its failure is one line; nothing is left mounted."""
    shoal("volume", "create", "-o", "type=nfs", "-o", "o=addr=198.18.255.254,ro,soft,timeo=5,retrans=0,nfsvers=4",
          "-o", "device=:/export", "h4v-nfs", check=True)
    try:
        result = shoal("run", "--rm", "-v", "h4v-nfs:/n", BUSYBOX, "true", timeout=90)
        assert result.returncode != 0
        err = _err(result).strip().splitlines()[-3]  # then run.go's withHelp lines
        assert "failed to mount local volume: mount :/export:" in err and "flags: 0x1" in err
        assert "data: addr=198.18.255.254,soft,timeo=5,retrans=0,nfsvers=4" in err
        assert str(volumes.data_dir("h4v-nfs")) not in Path("/proc/self/mounts").read_text()
    finally:
        shoal("volume", "rm", "-f", "h4v-nfs")


def test_mount_options_are_parsed_as_moby() -> None:
    flags, data = volumes.parse_options("bind,ro,nosuid,size=1m,rprivate")
    assert data == "size=1m" and flags == 4096 | 1 | 2 | (1 << 18) | 16384
    assert volumes.parse_options("rw,ro")[0] == 1 and volumes.parse_options("ro,rw")[0] == 0
    assert volumes.parse_options("defaults,addr=1.2.3.4")[1] == "defaults,addr=1.2.3.4"
    assert volumes.mount_options({"type": "nfs", "device": ":/x", "o": "addr=localhost,rw"}) == (":/x", "addr=127.0.0.1,rw")
    with pytest.raises(Exception, match="missing device in volume options"):
        volumes.mount_options({"type": "tmpfs"})


def test_prune_removes_only_unused_anonymous_volumes_unless_all(shoal) -> None:
    anon_cid = shoal("run", "-v", "/anon", BUSYBOX, "sh", "-c", "head -c 3000 /dev/zero > /anon/f",
                     check=True)
    del anon_cid
    anon = [v.name for v in volumes.list_volumes() if v.anonymous]
    assert anon, "run -v /path made an anonymous volume"
    shoal("container", "prune", "-f", check=True)
    shoal("volume", "create", "--label", "keep=yes", "h4v-named", check=True)
    busy = shoal("run", "-d", "-v", "h4v-busy:/x", BUSYBOX, "sleep", "300", check=True).stdout.strip()
    try:
        declined = shoal("volume", "prune", input="n\n")
        assert (declined.returncode, declined.stdout) == (0, cli.PRUNE_WARNING + " [y/N] ")
        assert set(anon) <= set(shoal("volume", "ls", "-q").stdout.split())
        pruned = shoal("volume", "prune", input="y\n", check=True).stdout
        assert pruned.startswith(cli.PRUNE_WARNING + " [y/N] Deleted Volumes:\n")
        assert all(name in pruned for name in anon) and "h4v-named" not in pruned
        assert pruned.endswith("\nTotal reclaimed space: 3kB\n")
        left = shoal("volume", "ls", "-q").stdout.split()
        assert "h4v-named" in left and "h4v-busy" in left and not set(anon) & set(left)
        assert shoal("volume", "prune", "-f", "-a", "--filter", "label!=keep=yes", check=True).stdout == \
            "Total reclaimed space: 0B\n"  # h4v-busy is in use, h4v-named filtered out
        out = shoal("volume", "prune", "-a", "-f", check=True).stdout
        assert out == "Deleted Volumes:\nh4v-named\n\nTotal reclaimed space: 0B\n"
        result = shoal("volume", "prune", "-a", "--filter", "all=1", "-f")
        assert (result.returncode, _err(result)) == (
            1, "Error: conflicting options: cannot specify both --all and --filter all=1\n")
    finally:
        shoal("rm", "-f", busy)
        shoal("volume", "rm", "-f", "h4v-busy", "h4v-named")
    assert os.path.isdir(volumes.volumes_root())


def test_list_output_matches_docker_golden(capsys: pytest.CaptureFixture[str]) -> None:
    vols = [volumes.Volume(name=n, created_at=0.0, labels=lab)
            for n, lab in (("volume", None), ("baz", {"foo": "bar"}))]
    cli.print_list(vols, None, False)
    assert capsys.readouterr().out == "DRIVER    VOLUME NAME\nlocal     baz\nlocal     volume\n"  # (local rows)
    cli.print_list(vols, "{{ .Name }} {{ .Driver }} {{ .Labels }}", False)
    assert capsys.readouterr().out == "baz local foo=bar\nvolume local \n"  # volume-list-with-format.golden
    many = [volumes.Volume(name=f"volume-{i}-foo", created_at=0.0) for i in (1, 10, 2)]
    cli.print_list(many, None, True)
    assert capsys.readouterr().out == "volume-1-foo\nvolume-2-foo\nvolume-10-foo\n"  # volume-list-sort.golden
    doc = volumes.Volume(name="volume", created_at=0.0).to_api()
    assert [k for k in doc if k != "CreatedAt"] == ["Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]


def test_a_stack_mounts_a_volume_made_by_volume_create(shoal, tmp_path: Path) -> None:
    """An external volume with the local driver's options, used by a stack's task: the task's
    container mounts the tmpfs `volume create` described."""
    import time

    shoal("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=3m", "h4v-stack", check=True)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"services:\n  app:\n    image: {BUSYBOX}\n"
                       "    command: [sh, -c, 'grep \" /data \" /proc/mounts; exec sleep 300']\n"
                       "    stop_grace_period: 1s\n    volumes: [data:/data]\n"
                       "volumes:\n  data:\n    external: true\n    name: h4v-stack\n")
    try:
        shoal("stack", "deploy", "-c", str(compose), "h4vs", check=True)
        deadline = time.monotonic() + 30
        logs = ""
        while time.monotonic() < deadline and "size=3072k" not in logs:
            time.sleep(0.3)
            logs = shoal("service", "logs", "--raw", "h4vs_app").stdout
        assert "tmpfs /data tmpfs" in logs and "size=3072k" in logs
        refused = shoal("volume", "rm", "h4v-stack")
        assert refused.returncode == 1 and "volume is in use - [" in refused.stderr
    finally:
        shoal("stack", "rm", "h4vs")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and shoal("volume", "rm", "h4v-stack").returncode != 0:
            time.sleep(0.3)
    assert "h4v-stack" not in shoal("volume", "ls", "-q").stdout.split()


def test_a_stack_volume_s_driver_opts_make_the_volume_on_the_node(shoal, tmp_path: Path) -> None:
    """docker/cli's convertVolumeToMount: a stack volume's driver_opts travel with the mount and
    the node makes the volume with them when its task first uses it."""
    import time

    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"services:\n  app:\n    image: {BUSYBOX}\n"
                       "    command: [sh, -c, 'grep \" /cache \" /proc/mounts; exec sleep 300']\n"
                       "    stop_grace_period: 1s\n    deploy: {replicas: 2}\n    volumes: [cache:/cache]\n"
                       "volumes:\n  cache:\n    driver_opts: {type: tmpfs, device: tmpfs, o: size=4m}\n")
    try:
        shoal("stack", "deploy", "-c", str(compose), "h4vo", check=True)
        deadline = time.monotonic() + 30
        logs = ""
        while time.monotonic() < deadline and logs.count("size=4096k") < 2:
            time.sleep(0.3)
            logs = shoal("service", "logs", "--raw", "h4vo_app").stdout
        assert logs.count("tmpfs /cache tmpfs") == 2 and logs.count("size=4096k") == 2
        doc = json.loads(shoal("volume", "inspect", "h4vo_cache", check=True).stdout)[0]
        assert doc["Options"] == {"device": "tmpfs", "o": "size=4m", "type": "tmpfs"}
        # One mount for both tasks (they started together): not two tmpfs stacked on _data.
        data = str(volumes.data_dir("h4vo_cache"))
        assert [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()].count(data) == 1
    finally:
        shoal("stack", "rm", "h4vo")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and shoal("volume", "rm", "h4vo_cache").returncode != 0:
            time.sleep(0.3)
    assert str(volumes.data_dir("h4vo_cache")) not in Path("/proc/self/mounts").read_text()


def test_an_images_volumes_are_anonymous_volumes_seeded_from_the_image(shoal, tmp_path: Path) -> None:
    """moby: each VOLUME of the image no mount covers is an anonymous volume, seeded with the
    image's files there at the first start, listed by `volume ls`, out of HostConfig.Binds and out
    of a commit, and removed with the container by `rm -v` (and by `--rm`)."""
    ctx = tmp_path / "volctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN mkdir -p /data /cache && echo seeded > /data/seed\n"
                                    'VOLUME /data\nVOLUME ["/cache", "/covered"]\n')
    shoal("build", "-q", "-t", "h4v-volimg:1", str(ctx), check=True)
    before = set(shoal("volume", "ls", "-q", check=True).stdout.split())
    shoal("run", "-d", "--name", "h4v-img", "--network", "none", "-v", "h4v-named:/covered",
          "h4v-volimg:1", "sleep", "60", check=True)
    try:
        out = shoal("exec", "h4v-img", "sh", "-c", "cat /data/seed; echo more > /data/new; "
                    "grep -c ' /data \\| /cache \\| /covered ' /proc/self/mounts", check=True).stdout.split()
        assert out == ["seeded", "3"], out
        info = json.loads(shoal("inspect", "h4v-img", check=True).stdout)[0]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert set(mounts) == {"/data", "/cache", "/covered"}, mounts
        anon = {mounts[d]["Name"] for d in ("/data", "/cache")}
        assert mounts["/covered"]["Name"] == "h4v-named" and all(len(n) == 64 for n in anon), mounts
        assert info["HostConfig"]["Binds"] == ["h4v-named:/covered"], info["HostConfig"]["Binds"]
        assert set(shoal("volume", "ls", "-q", check=True).stdout.split()) - before == anon | {"h4v-named"}
        shoal("commit", "h4v-img", "h4v-volimg:committed", check=True)
        committed = shoal("run", "--rm", "--network", "none", "h4v-volimg:committed", "ls", "/data", check=True)
        assert committed.stdout.split() == ["seed"], committed.stdout  # `new` was in the volume
    finally:
        shoal("rm", "-f", "-v", "h4v-img")
    left = set(shoal("volume", "ls", "-q", check=True).stdout.split()) - before
    assert left == {"h4v-named"}, left  # named volumes stay, as with docker rm -v
    shoal("volume", "rm", "h4v-named", check=True)
    shoal("rmi", "h4v-volimg:1", "h4v-volimg:committed")


def test_a_tasks_image_volumes_go_with_its_container(shoal, tmp_path: Path) -> None:
    """swarmkit's container adapter removes a task's container with RemoveVolumes: the anonymous
    volumes of its image's VOLUMEs go with it (they were left behind, one set per task ever run)."""
    import time

    ctx = tmp_path / "volctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX}\nVOLUME /data\n")
    shoal("build", "-q", "-t", "h4v-taskvol:1", str(ctx), check=True)
    before = set(shoal("volume", "ls", "-q", check=True).stdout.split())
    try:
        shoal("service", "create", "--detach", "--name", "h4v-tv", "--stop-grace-period", "1s",
              "h4v-taskvol:1", "sleep", "600", check=True)
        deadline = time.monotonic() + 30
        made: set[str] = set()
        while time.monotonic() < deadline and not made:
            time.sleep(0.3)
            made = set(shoal("volume", "ls", "-q", check=True).stdout.split()) - before
        assert len(made) == 1 and len(next(iter(made))) == 64, made
    finally:
        shoal("service", "rm", "h4v-tv")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(shoal("volume", "ls", "-q").stdout.split()) - before:
        time.sleep(0.3)
    assert not set(shoal("volume", "ls", "-q").stdout.split()) - before
    shoal("rmi", "h4v-taskvol:1")
