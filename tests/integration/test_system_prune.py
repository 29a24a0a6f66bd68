"""`system df`, the prunes and `builder prune` on real images, containers, volumes and networks:
each reclaims exactly what it should (a running container's image, volume and network are never
touched), prints docker/cli's sections and `Total reclaimed space`, and asks first unless -f."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cli import system
from shoal.errors import ShoalError
from shoal.runtime import diskusage
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


def _df(shoal) -> dict[str, list[str]]:
    out = shoal("system", "df", "--format", "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                check=True).stdout
    return {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}


def test_system_df_and_prunes_reclaim_exactly_the_unused(shoal, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN head -c 20000 /dev/zero > /step1\n"
                                    "RUN head -c 30000 /dev/zero > /step2\nCMD [\"sleep\", \"300\"]\n")
    shoal("build", "-q", "-t", "localhost/h4-built:v1", str(ctx), check=True, timeout=180)
    # A second build of another Dockerfile, whose tag is then taken away: its steps are dangling.
    (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN head -c 40000 /dev/zero > /other\n"
                                    "RUN echo two > /two\nRUN echo three > /three\n")
    shoal("build", "-q", "-t", "localhost/h4-gone:v1", str(ctx), check=True, timeout=180)
    shoal("rmi", "--no-prune", "localhost/h4-gone:v1", check=True)
    running = shoal("run", "-d", "--name", "h4-running", "-v", "h4-used:/u", "localhost/h4-built:v1",
                    check=True).stdout.strip()
    stopped = shoal("run", "--name", "h4-stopped", "-v", "/anon", BUSYBOX, "sh", "-c",
                    "head -c 5000 /dev/zero > /written; head -c 7000 /dev/zero > /anon/a", check=True)
    del stopped
    stopped_id = shoal("ps", "-aq", "--no-trunc", "-f", "name=h4-stopped").stdout.strip() or \
        next(line.split()[0] for line in shoal("ps", "-a", "--no-trunc").stdout.splitlines() if "h4-stopped" in line)
    shoal("network", "create", "h4-unused", check=True)
    try:
        df = _df(shoal)
        assert df["Containers"][:2] == ["2", "1"]
        assert df["Containers"][3].startswith("5kB (")  # the stopped one's 5000 written bytes
        # Both volumes are referenced (a stopped container holds its volume, as in Docker).
        assert df["Local Volumes"] == ["2", "2", "7kB", "0B (0%)"]
        assert int(df["Build Cache"][0]) >= 1

        declined = shoal("system", "prune", "--volumes", input="n\n")
        assert declined.returncode == 0 and declined.stdout == system.system_prune_warning(False, True, {}) + " [y/N] "
        assert stopped_id in shoal("ps", "-aq", "--no-trunc").stdout

        out = shoal("system", "prune", "--volumes", "-f", check=True).stdout
        sections = out.split("\n\n")
        assert sections[0] == f"Deleted Containers:\n{stopped_id}"
        assert sections[1] == "Deleted Networks:\nh4-unused"
        assert sections[2].startswith("Deleted Volumes:\n") and "h4-used" not in sections[2]
        # The removed image's top step is a dangling image (image prune), the step below it
        # (a parent, which image prune keeps) is dangling build cache.
        assert any(s.startswith("Deleted Images:\ndeleted: sha256:") for s in sections)
        assert any(s.startswith("Deleted build cache objects:\n") for s in sections)
        assert out.endswith("\n") and out.splitlines()[-1].startswith("Total reclaimed space: ")
        # 5000 + 7000 bytes of the container and volume, 40000 of the dangling step at least.
        assert _bytes(out.splitlines()[-1].split(": ")[1]) >= 52_000
        assert running in shoal("ps", "-q", "--no-trunc").stdout
        assert "h4-used" in shoal("volume", "ls", "-q").stdout.split()
        assert "localhost/h4-built" in shoal("images").stdout

        again = shoal("system", "prune", "-a", "-f", check=True).stdout
        assert "localhost/h4-built" not in again  # its container runs
        assert "localhost/h4-built" in shoal("images").stdout
        assert _df(shoal)["Containers"][:2] == ["1", "1"]
    finally:
        shoal("rm", "-f", running)
        shoal("network", "rm", "h4-unused")
    cleared = shoal("image", "prune", "-a", "-f", check=True).stdout
    assert "untagged: localhost/h4-built:v1" in cleared
    shoal("volume", "rm", "h4-used", check=True)


def _bytes(text: str) -> float:
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in ("kB", "MB", "GB", "B"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise AssertionError(text)


def test_builder_prune_keeps_what_a_tagged_image_is_built_on_unless_all(shoal,
                                                                          tmp_path: Path) -> None:
    from shoal.image.store import ImageStore

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN head -c 11000 /dev/zero > /a\n"
                                    "RUN head -c 12000 /dev/zero > /b\n")
    shoal("build", "-q", "-t", "localhost/h4-cache:v1", str(ctx), check=True, timeout=180)
    store = ImageStore()
    cached = [i for i in diskusage.cache_image_ids(store) if i in {im.id for im in store.list()}]
    assert cached
    try:
        declined = shoal("builder", "prune", input="\n")
        assert declined.stdout == system.BUILDER_WARNING + " [y/N] "
        assert _df(shoal)["Build Cache"][2:] == ["0B", "0B"]  # every layer is the tagged image's
        kept = shoal("builder", "prune", "-f", check=True).stdout
        assert kept == "Total reclaimed space: 0B\n"  # every step is what the tagged image is built on
        assert shoal("builder", "prune", "-a", "-f", "--keep-storage", "1g", check=True).stdout == \
            "Total reclaimed space: 0B\n"  # the cache holds less than that: nothing goes
        out = shoal("builder", "prune", "-a", "-f", check=True).stdout
        assert out.startswith("Deleted build cache objects:\n")
        removed = out.split("\n\n")[0].splitlines()[1:]
        assert removed and all(len(r) == 64 for r in removed)
        # The steps' layers are the tagged image's too: only the steps' own records (config and
        # manifest blobs) go, and the image stays whole.
        assert 0 < _bytes(out.splitlines()[-1].split(": ")[1]) < 11_000
        assert shoal("run", "--rm", "localhost/h4-cache:v1", "wc", "-c", "/a", "/b", check=True).stdout.split()[:1] == ["11000"]
        assert not set(diskusage.cache_image_ids(ImageStore())) & {"sha256:" + r for r in removed}
        result = shoal("builder", "prune", "-f", "--filter", "color=blue")
        assert (result.returncode, result.stderr.splitlines()[-1]) == (1, "Error response from daemon: invalid filter 'color'")
    finally:
        shoal("rmi", "localhost/h4-cache:v1")


def test_df_table_matches_docker_golden() -> None:
    rows = [diskusage.Usage(t) for t in ("Images", "Containers", "Local Volumes", "Build Cache")]
    assert system.df_rows(rows)[0] == {"Active": "0", "Reclaimable": "0B", "Size": "0B", "TotalCount": "0",
                                       "Type": "Images"}
    assert list(system.df_rows(rows)[0]) == sorted(system.df_rows(rows)[0])  # --format json: Go's sorted keys
    from shoal.cli.format import table

    assert table(("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"),
                 [[r[k] for k in ("Type", "TotalCount", "Active", "Size", "Reclaimable")]
                  for r in system.df_rows(rows)]) == (
        "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n"
        "Images          0         0         0B        0B\n"
        "Containers      0         0         0B        0B\n"
        "Local Volumes   0         0         0B        0B\n"
        "Build Cache     0         0         0B        0B\n")
    rows[0].size, rows[0].reclaimable = 2_000_000, 500_000
    assert system.df_rows(rows)[0]["Reclaimable"] == "500kB (25%)"


def test_events_filters_and_templates_see_docker_messages() -> None:
    raw = {"revision": 7, "type": "container", "action": "start", "id": "c0ffee", "name": "web.1",
           "attributes": {"image": "web:v1", "name": "web.1", "com.example": "x"}, "time": 1700000000.25}
    msg = system.docker_message(raw)
    assert (msg["Type"], msg["Action"], msg["status"], msg["from"], msg["scope"]) == ("container", "start", "start",
                                                                                     "web:v1", "local")
    assert msg["Actor"] == {"ID": "c0ffee", "Attributes": raw["attributes"]}
    assert (msg["time"], msg["timeNano"]) == (1700000000, 1700000000250000000)
    match = system.event_matches
    assert match(msg, {"type": ["container", "service"], "event": ["start"]})
    assert not match(msg, {"type": ["service"]})
    assert match(msg, {"container": ["web.1"]}) and match(msg, {"container": ["c0ffee"]})
    assert not match(msg, {"service": ["web.1"]})
    assert match(msg, {"image": ["web:v1"]}) and match(msg, {"label": ["com.example=x"]})
    assert not match(msg, {"label": ["com.example=y"]}) and match(msg, {"scope": ["local"]})
    from shoal.cli.format import render_template

    assert render_template("{{.Type}} {{.Action}} {{.Actor.Attributes.name}}", msg) == "container start web.1"
    # templates read Go's field names, json prints Go's JSON names (events.Message)
    assert render_template("{{.ID}} {{.Status}} {{.From}} {{.Scope}} {{.Time}} {{.TimeNano}}", msg) == \
        "c0ffee start web:v1 local 1700000000 1700000000250000000"
    assert render_template("{{json .}}", msg) == (
        '{"status":"start","id":"c0ffee","from":"web:v1","Type":"container","Action":"start","Actor":{"ID":"c0ffee",'
        '"Attributes":{"image":"web:v1","name":"web.1","com.example":"x"}},"scope":"local","time":1700000000,'
        '"timeNano":1700000000250000000}')
    with pytest.raises(ShoalError, match="can't evaluate field Nope"):
        render_template("{{.Nope}}", msg)
    # the deprecated status/id/from are a container's and an image's only (moby's events.Log), omitempty
    secret = system.docker_message({"type": "secret", "action": "create", "id": "s1", "time": 1.0,
                                    "attributes": {"name": "pw"}})
    assert list(secret) == ["Type", "Action", "Actor", "scope", "time", "timeNano"]
    assert render_template("{{.ID}}|{{.Actor.ID}}|{{.Scope}}", secret) == "|s1|swarm"
    assert match(secret, {"secret": ["pw"]}) and match(secret, {"secret": ["s1"]})


def test_system_events_since_until_filter(shoal) -> None:
    shoal("secret", "create", "h4_evt", "-", input="e", check=True)
    shoal("secret", "rm", "h4_evt", check=True)
    out = shoal("system", "events", "--since", "10m", "--until", "0s", "--filter", "type=secret",
                "--filter", "event=remove", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
                check=True).stdout
    assert out.splitlines()[-1] == "secret remove h4_evt" and "create" not in out
    result = shoal("events", "--since", "0", "--no-follow", "--filter", "colour=red")
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == "Error response from daemon: invalid filter 'colour'"
    later = shoal("events", "--since", "10m", "--until", "0s", "-f", "secret=h4_evt", check=True).stdout.splitlines()
    assert len(later) == 2 and later[0].split()[1:3] == ["secret", "create"] and later[0].endswith("(name=h4_evt)")


def test_system_prune_question_is_docker_s_template() -> None:
    """docker/cli system prune's confirmationTemplate, rendered with and without filters."""
    assert system.system_prune_warning(True, True, {"label": ["b=2", "a"], "until": ["24h"]}) == (
        "WARNING! This will remove:\n"
        "  - all stopped containers\n"
        "  - all networks not used by at least one container\n"
        "  - all anonymous volumes not used by at least one container\n"
        "  - all images without at least one container associated to them\n"
        "  - all build cache\n"
        "\n"
        "  Items to be pruned will be filtered with:\n"
        "  - label=a\n"
        "  - label=b=2\n"
        "  - until=24h\n"
        "\n"
        "Are you sure you want to continue?")
    assert system.system_prune_warning(False, False, {}).endswith(
        "  - all dangling images\n  - unused build cache\n\nAre you sure you want to continue?")


def test_df_verbose_with_nothing_matches_docker_golden(capsys: pytest.CaptureFixture[str]) -> None:
    """formatter's TestDiskUsageContextFormatWrite, verbose table case."""
    rows = [diskusage.Usage(t) for t in ("Images", "Containers", "Local Volumes", "Build Cache")]
    system.print_df_verbose(rows, 0.0)
    assert capsys.readouterr().out == (
        "Images space usage:\n\n"
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE      SHARED SIZE   UNIQUE SIZE   CONTAINERS\n"
        "\nContainers space usage:\n\n"
        "CONTAINER ID   IMAGE     COMMAND   LOCAL VOLUMES   SIZE      CREATED   STATUS    NAMES\n"
        "\nLocal Volumes space usage:\n\n"
        "VOLUME NAME   LINKS     SIZE\n"
        "\nBuild cache usage: 0B\n\n"
        "CACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED\n")


def test_system_info_events_df_and_prune_reach_the_context_s_node(shoal) -> None:
    """With a tcp:// endpoint, `system info|events|df|prune` and `builder prune` go to that node
    (here nothing listens: the connection fails), never act on this machine."""
    env = {"SHOAL_HOST": "tcp://127.0.0.1:9"}
    for args in (("system", "info"), ("system", "events", "--no-follow"), ("system", "df"), ("system", "prune", "-f"),
                 ("builder", "prune", "-f")):
        result = shoal(*args, env=env)
        assert result.returncode != 0 and "127.0.0.1:9" in result.stderr and "not supported yet" not in result.stderr
