"""Secrets and configs: the control API's rules (swarmkit's names, sizes, errors, the in-use
refusal, dockerd's lookups), sealing at rest, and the CLI's tables and `inspect --pretty` against
docker/cli's formatter golden files (cli/command/{secret,config}/testdata)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from shoal.cli import secret as cli
from shoal.errors import Conflict, InvalidArgument, NotFound
from shoal.manager import files
from shoal.manager.controlapi import secrets as objects
from shoal.model.secret import FileObject, go_time
from shoal.store import SQLiteStore


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path / "root"))
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def test_create_seals_a_secret_and_keeps_a_config_as_data(store: SQLiteStore, tmp_path: Path) -> None:
    made = objects.create(store, "secret", "db_password", b"hunter2-very-secret", {"env": "prod"})
    raw = store.get("secret", made.id)
    assert "sealed" in raw and "data" not in raw
    assert b"hunter2" not in (tmp_path / "state.db").read_bytes()
    assert "hunter2" not in str(made.to_api("secret"))
    api = made.to_api("secret")
    assert list(api) == ["ID", "Version", "CreatedAt", "UpdatedAt", "Spec"]
    assert api["Spec"] == {"Name": "db_password", "Labels": {"env": "prod"}}
    cfg = objects.create(store, "config", "nginx.conf", b"worker_processes 1;\n", template_driver="golang")
    assert cfg.to_api("config")["Spec"] == {
        "Name": "nginx.conf", "Labels": {}, "Data": base64.b64encode(b"worker_processes 1;\n").decode(),
        "Templating": {"Name": "golang"}}


def test_swarmkit_validation_words(store: SQLiteStore) -> None:
    objects.create(store, "secret", "a", b"x")
    with pytest.raises(Conflict, match=r"^rpc error: code = AlreadyExists desc = secret a already exists$"):
        objects.create(store, "secret", "a", b"y")
    for bad in ("-a", "a-", "a/b", "x" * 65, "a b"):
        with pytest.raises(InvalidArgument, match="invalid name, only 64"):
            objects.create(store, "secret", bad, b"x")
    with pytest.raises(InvalidArgument, match="name must be provided"):
        objects.create(store, "config", "", b"x")
    with pytest.raises(InvalidArgument, match=r"desc = secret data must be larger than 0 and less than 512000 bytes$"):
        objects.create(store, "secret", "big", b"x" * 500 * 1024)
    objects.create(store, "secret", "justunder", b"x" * (500 * 1024 - 1))
    with pytest.raises(InvalidArgument, match="config data must be larger than 0 and less than 1024000 bytes"):
        objects.create(store, "config", "empty", b"")
    with pytest.raises(InvalidArgument, match="template driver 'jinja' not supported"):
        objects.create(store, "config", "tpl", b"x", template_driver="jinja")
    assert sorted(o.name for o in objects.list_objects(store, "secret")) == ["a", "justunder"]


def test_lookup_and_filters_as_dockerd(store: SQLiteStore) -> None:
    one = objects.create(store, "config", "web-one", b"1", {"tier": "front"})
    two = objects.create(store, "config", "web-two", b"2", {"tier": "back", "x": ""})
    assert objects.get(store, "config", one.id).name == "web-one"
    assert objects.get(store, "config", "web-two").id == two.id
    assert objects.get(store, "config", two.id[:6]).id == two.id
    with pytest.raises(NotFound, match="^config nope not found$"):
        objects.get(store, "config", "nope")
    names = lambda f: sorted(o.name for o in objects.list_objects(store, "config", f))  # noqa: E731
    assert names({"name": ["web"]}) == ["web-one", "web-two"]  # a prefix
    assert names({"names": ["web"]}) == []  # exact
    assert names({"label": ["tier=back"]}) == ["web-two"]
    assert names({"label": ["tier"]}) == ["web-one", "web-two"]
    assert names({"label": ["tier", "x"]}) == ["web-two"]
    assert names({"id": [one.id[:5]], "name": ["web-t"]}) == ["web-one", "web-two"]
    with pytest.raises(InvalidArgument, match="^invalid filter 'driver'$"):
        objects.list_objects(store, "config", {"driver": ["x"]})


def test_in_use_refused_with_swarmkit_words(store: SQLiteStore) -> None:
    made = objects.create(store, "secret", "token", b"t")
    with store.transaction() as tx:
        for name in ("api", "worker"):
            tx.create("service", {"id": name, "name": name,
                                  "spec": {"secrets": [{"source": "token", "target": "/run/secrets/token"}]}})
    with pytest.raises(InvalidArgument) as err:
        objects.remove(store, "secret", "token")
    assert str(err.value) == ("rpc error: code = InvalidArgument desc = secret 'token' is in use by the "
                              "following services: api, worker")
    with store.transaction() as tx:
        tx.delete("service", "worker")
    with pytest.raises(InvalidArgument, match="is in use by the following service: api$"):
        objects.remove(store, "secret", made.id)
    assert store.get("secret", made.id) is not None  # nothing removed
    with store.transaction() as tx:
        tx.delete("service", "api")
    assert objects.remove(store, "secret", "token").id == made.id
    assert store.list("secret") == []


def test_stack_deploy_uses_an_external_secret_and_leaves_a_users_secret_alone(store: SQLiteStore) -> None:
    mine = objects.create(store, "secret", "shared", b"mine")
    stack = {"name": "app", "secrets": {"s": {"name": "shared", "external": True}},
             "services": {"web": {"name": "app_web", "secrets": [{"source": "shared", "target": "/run/secrets/s"}]}}}
    with store.transaction() as tx:
        files.apply_files(tx, stack, {})
    assert stack["services"]["web"]["secrets"][0]["digest"] == mine.digest
    # A stack that defines (not external) a secret of the same name updates it, but stack rm
    # does not take the user's secret away.
    stack2 = {"name": "app", "secrets": {"s": {"name": "shared"}}, "services": {}}
    with store.transaction() as tx:
        assert files.apply_files(tx, stack2, {"secret": {"shared": base64.b64encode(b"new").decode()}}) == \
            ["Updating secret shared"]
    with store.transaction() as tx:
        assert files.remove_files(tx, "app") == []
    assert store.get("secret", mine.id) is not None
    with pytest.raises(InvalidArgument, match="less than 512000 bytes"):
        with store.transaction() as tx:
            files.apply_files(tx, {"name": "b", "secrets": {"x": {"name": "b_x"}}, "services": {}},
                              {"secret": {"b_x": base64.b64encode(b"x" * 600_000).decode()}})


def test_go_time() -> None:
    assert go_time(0) == "0001-01-01T00:00:00Z"
    assert go_time(1700000000.0) == "2023-11-14T22:13:20Z"
    assert go_time(1700000000.5) == "2023-11-14T22:13:20.5Z"
    assert cli.parse_go_time("2023-11-14T22:13:20.5Z") == 1700000000.5
    assert cli.pretty_time("2023-11-14T22:13:20.5Z") == "2023-11-14 22:13:20.5 +0000 utc"
    assert FileObject.from_dict(FileObject("i", "n", "d", data="eA==").to_dict()).config_data() == b"x"


def _api(kind: str, name: str, driver: str = "", labels: dict[str, str] | None = None, now: float = 0.0) -> dict:
    obj = FileObject(id=f"ID-{name}", name=name, digest="", labels=labels or {},
                     created_at=now - 2 * 3600, updated_at=now - 3600).to_api(kind)
    if driver:
        obj["Spec"]["Driver"] = {"Name": driver}
    return obj


def test_list_tables_match_docker_golden(capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    secrets = [_api("secret", "1-foo", now=now), _api("secret", "10-foo", "driver", now=now),
               _api("secret", "2-foo", "driver", now=now)]
    cli.print_list("secret", secrets, None, False, now)
    assert capsys.readouterr().out == (  # secret-list-sort.golden
        "ID          NAME      DRIVER    CREATED       UPDATED\n"
        "ID-1-foo    1-foo               2 hours ago   About an hour ago\n"
        "ID-2-foo    2-foo     driver    2 hours ago   About an hour ago\n"
        "ID-10-foo   10-foo    driver    2 hours ago   About an hour ago\n")
    configs = [_api("config", n, now=now) for n in ("1-foo", "10-foo", "2-foo")]
    cli.print_list("config", configs, None, False, now)
    assert capsys.readouterr().out == (  # config-list-sort.golden
        "ID          NAME      CREATED       UPDATED\n"
        "ID-1-foo    1-foo     2 hours ago   About an hour ago\n"
        "ID-2-foo    2-foo     2 hours ago   About an hour ago\n"
        "ID-10-foo   10-foo    2 hours ago   About an hour ago\n")
    two = [_api("secret", "foo", now=now), _api("secret", "bar", labels={"label": "label-bar"}, now=now)]
    cli.print_list("secret", two, "{{ .Name }} {{ .Labels }}", False, now)
    assert capsys.readouterr().out == "bar label=label-bar\nfoo \n"  # secret-list-with-format.golden
    cli.print_list("secret", two, None, True, now)
    assert capsys.readouterr().out == "ID-bar\nID-foo\n"  # secret-list-with-quiet-option.golden


def test_inspect_pretty_matches_docker_golden() -> None:
    obj = FileObject(id="secretID", name="secretName", digest="", labels={"lbl1": "value1"}).to_api("secret")
    obj["Spec"]["Driver"] = {"Name": "driver"}
    assert cli.pretty("secret", obj) == (  # secret-inspect-pretty.simple.golden
        "ID:              secretID\n"
        "Name:              secretName\n"
        "Labels:\n"
        " - lbl1=value1\n"
        "Driver:            driver\n"
        "Created at:        0001-01-01 00:00:00 +0000 utc\n"
        "Updated at:        0001-01-01 00:00:00 +0000 utc")
    cfg = FileObject(id="configID", name="configName", digest="", labels={"lbl1": "value1"},
                     data=base64.b64encode(b"payload here").decode()).to_api("config")
    assert cli.pretty("config", cfg) == (  # config-inspect-pretty.simple.golden
        "ID:\t\t\tconfigID\n"
        "Name:\t\t\tconfigName\n"
        "Labels:\n"
        " - lbl1=value1\n"
        "Created at:            \t0001-01-01 00:00:00 +0000 utc\n"
        "Updated at:            \t0001-01-01 00:00:00 +0000 utc\n"
        "Data:\n"
        "payload here")


def test_cli_reads_data_as_docker(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="^secret file is required$"):
        cli.read_data("secret", "")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match=f"^error reading from {empty}: data is empty$"):
        cli.read_data("secret", str(empty))
    with pytest.raises(Exception, match=f"^error reading from {tmp_path}/nope: open {tmp_path}/nope: no such file or directory$"):
        cli.read_data("config", str(tmp_path / "nope"))
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2_000_000)
    assert len(cli.read_data("secret", str(big))) == 2 * 500 * 1024  # the rest is the daemon's to refuse
    with pytest.raises(InvalidArgument, match="empty name"):
        cli.parse_labels(["=x"])
    assert cli.parse_labels(["a=b", "c"]) == {"a": "b", "c": ""}
