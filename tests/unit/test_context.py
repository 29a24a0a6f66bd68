"""Contexts (api/contexts.py, cli/context.py): docker/cli's store layout and outputs, and which
endpoint a command uses (Docker's order: --context, -H, SHOAL_HOST, SHOAL_CONTEXT, config)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.api import contexts
from shoal.errors import InvalidArgument, NotFound, ShoalError


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_CONFIG", str(tmp_path / "cfg" / "config.json"))
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "root" / "run"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_SOCKET", "SHOAL_CERT_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(contexts, "flag_host", None)
    monkeypatch.setattr(contexts, "flag_context", None)
    return tmp_path / "cfg"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


def test_store_layout_is_dockers(cfg: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    proc = cli("context", "create", "prod", "--host", "tcp://10.1.2.3", "--tls-ca", str(ca), "--description", "the swarm")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "prod\n"
    assert proc.stderr == 'Successfully created context "prod"\n'
    digest = hashlib.sha256(b"prod").hexdigest()
    meta = json.loads((cfg / "contexts" / "meta" / digest / "meta.json").read_text())
    assert meta == {"Name": "prod", "Metadata": {"Description": "the swarm"},
                    "Endpoints": {"docker": {"Host": "tcp://10.1.2.3:2377", "SkipTLSVerify": False}}}
    tls = cfg / "contexts" / "tls" / digest / "docker" / "ca.pem"
    assert tls.read_text() == "CA"
    for d in (cfg / "contexts", cfg / "contexts" / "meta", cfg / "contexts" / "tls", tls.parent):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert tls.stat().st_mode & 0o777 == 0o600


def test_ls_use_show_rm(cfg: Path) -> None:
    sock = Path(os.environ["SHOAL_RUN"]) / "shoal.sock"
    proc = cli("context", "ls")
    assert proc.stdout.splitlines() == [
        "NAME        DESCRIPTION                              DOCKER ENDPOINT" + " " * (len(f"unix://{sock}") - 12) + "ERROR",
        f"default *   Current SHOAL_HOST based configuration   unix://{sock}   ",
    ]
    assert cli("context", "create", "b-local", "--host", "unix:///tmp/other.sock").returncode == 0
    assert cli("context", "create", "a-copy", "--from", "b-local", "--description", "copied").returncode == 0
    use = cli("context", "use", "b-local")
    assert (use.stdout, use.stderr) == ("b-local\n", 'Current context is now "b-local"\n')
    assert json.loads((cfg / "config.json").read_text()) == {"currentContext": "b-local"}
    assert (cfg / "config.json").stat().st_mode & 0o777 == 0o600
    lines = cli("context", "ls").stdout.splitlines()
    assert [line.split()[0:2] for line in lines[1:]] == [["a-copy", "copied"], ["b-local", "*"], ["default", "Current"]]
    assert "unix:///tmp/other.sock" in lines[1]
    assert cli("context", "show").stdout == "b-local\n"
    assert cli("context", "ls", "-q").stdout == "a-copy\nb-local\ndefault\n"
    assert cli("context", "ls", "--format", "{{.Name}}:{{.Current}}").stdout == "a-copy:false\nb-local:true\ndefault:false\n"
    rm = cli("context", "rm", "b-local")
    assert rm.returncode != 0 and 'context "b-local" is in use, set -f flag to force remove' in rm.stderr
    rm = cli("context", "rm", "-f", "b-local", "a-copy")
    assert rm.returncode == 0 and rm.stdout == "b-local\na-copy\n"
    assert cli("context", "show").stdout == "default\n"
    assert not list((cfg / "contexts" / "meta").iterdir())
    assert "currentContext" not in json.loads((cfg / "config.json").read_text())


def test_update_keeps_tls_and_changes_description(cfg: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    assert cli("context", "create", "xy", "--host", "tcp://h:1", "--tls-ca", str(ca)).returncode == 0
    up = cli("context", "update", "xy", "--description", "new")
    assert (up.returncode, up.stdout, up.stderr) == (0, "xy\n", 'Successfully updated context "xy"\n')
    ins = json.loads(cli("context", "inspect", "xy").stdout)[0]
    assert ins["Metadata"] == {"Description": "new"}
    assert ins["Endpoints"]["docker"]["Host"] == "tcp://h:1"
    assert ins["TLSMaterial"] == {"docker": ["ca.pem"]}
    assert cli("context", "update", "xy", "--host", "unix:///run/x.sock").returncode == 0
    ins = json.loads(cli("context", "inspect", "xy").stdout)[0]
    assert ins["Endpoints"]["docker"]["Host"] == "unix:///run/x.sock" and ins["TLSMaterial"] == {}
    assert cli("context", "update", "nope", "--description", "d").returncode != 0


def test_inspect_default(cfg: Path) -> None:
    out = json.loads(cli("context", "inspect").stdout)
    assert out == [{"Name": "default", "Metadata": {},
                    "Endpoints": {"docker": {"Host": f"unix://{os.environ['SHOAL_RUN']}/shoal.sock", "SkipTLSVerify": False}},
                    "TLSMaterial": {}, "Storage": {"MetadataPath": "<IN MEMORY>", "TLSPath": "<IN MEMORY>"}}]


@pytest.mark.parametrize("name,message", [
    ("", "context name cannot be empty"),
    ("default", '"default" is a reserved context name'),
    (" ", 'context name " " is invalid'),
    ("-x", 'context name "-x" is invalid'),
    ("a/b", 'context name "a/b" is invalid'),
    ("../../etc", 'context name "../../etc" is invalid'),
])
def test_invalid_names(cfg: Path, name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace('"', '"').replace(".", r"\.")):
        contexts.validate_name(name)


def test_bad_input_creates_nothing(cfg: Path, tmp_path: Path) -> None:
    for args, message in (
        (["--host", "http://x"], 'invalid host "http://x"'),
        (["--host", "tcp://h:99999", "--tls-ca", "/dev/null"], 'invalid host "tcp://h:99999"'),
        (["--host", "unix://relative.sock"], "must be absolute"),
        (["--host", "tcp://h:1", "--tls-ca", str(tmp_path / "missing")], "--tls-ca"),
        (["--host", "tcp://h:1", "--tls-ca", "/dev/null", "--tls-cert", "/dev/null"], "--tls-cert and --tls-key go together"),
        (["--host", "tcp://h:1"], "no swarm certificates"),
        (["--docker", "host=tcp://h:1,skip-tls-verify=true"], "skip-tls-verify is not supported"),
    ):
        proc = cli("context", "create", "bad", *args)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1
    assert not (cfg / "contexts" / "meta").exists() or not list((cfg / "contexts" / "meta").iterdir())
    assert cli("context", "create", "dup", "--host", "unix:///a.sock").returncode == 0
    dup = cli("context", "create", "dup", "--host", "unix:///b.sock")
    assert dup.returncode != 0 and 'context "dup" already exists' in dup.stderr


def test_resolution_order(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, host in (("one", "unix:///one.sock"), ("two", "unix:///two.sock"), ("three", "unix:///three.sock")):
        contexts.save(contexts.Context(name, host=host), replace_tls=True)
    assert contexts.endpoint().host == f"unix://{os.environ['SHOAL_RUN']}/shoal.sock"
    contexts.set_current("one")
    assert contexts.endpoint().host == "unix:///one.sock"
    monkeypatch.setenv("SHOAL_CONTEXT", "two")
    assert contexts.endpoint().host == "unix:///two.sock"
    monkeypatch.setenv("SHOAL_HOST", "unix:///env.sock")
    assert (contexts.current_name(), contexts.endpoint().host) == ("default", "unix:///env.sock")
    monkeypatch.setattr(contexts, "flag_host", "unix:///flag.sock")
    assert contexts.endpoint().host == "unix:///flag.sock"
    monkeypatch.setattr(contexts, "flag_context", "three")
    assert contexts.endpoint().host == "unix:///three.sock"
    monkeypatch.setattr(contexts, "flag_context", "nope")
    with pytest.raises(NotFound, match='context "nope": context not found'):
        contexts.endpoint()


def test_global_flags_on_the_command_line(cfg: Path) -> None:
    assert cli("context", "create", "other", "--host", "unix:///other.sock").returncode == 0
    assert cli("--context", "other", "context", "show").stdout == "other\n"
    assert cli("-c", "other", "context", "show").stdout == "other\n"
    assert cli("-H", "unix:///x.sock", "context", "show").stdout == "default\n"
    both = cli("-H", "unix:///x.sock", "-c", "other", "context", "show")
    assert both.returncode != 0 and "conflicting options: either specify --host or --context, not both" in both.stderr
    bad = cli("-H", "ftp://x", "ps")
    assert bad.returncode != 0 and 'invalid host "ftp://x"' in bad.stderr
    gone = cli("-c", "nope", "service", "ls")
    assert gone.returncode != 0 and 'context "nope": context not found' in gone.stderr
    # A unix socket nobody serves: the client names it, and no shoald is started for it.
    down = cli("-H", f"unix://{cfg}/none.sock", "service", "ls")
    assert down.returncode != 0 and f"Cannot connect to shoald at unix://{cfg}/none.sock" in down.stderr


def _node_certs(root: Path, tag: str) -> Path:
    """A node's certificates directory as swarm init/join leave it (contents are only compared)."""
    certs = root / "certificates"
    certs.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("swarm-root-ca.crt", "swarm-node.crt", "swarm-node.key"):
        tmp = certs / f".{name}.tmp"
        tmp.write_text(f"{tag} {name}")
        os.replace(tmp, certs / name)  # renewal and rotation rename new files into place
    return certs


def test_context_from_node_certificates_follows_them(cfg: Path) -> None:
    """`context create` of a tcp:// host without --tls-* follows this node's own certificates
    (no copy in the store): endpoint() reads whatever the node holds now, so a renewal or a root
    rotation does not leave the context with a certificate the manager refuses."""
    certs = _node_certs(Path(os.environ["SHOAL_ROOT"]), "old")
    assert cli("context", "create", "mgr", "--host", "tcp://198.18.0.1").returncode == 0
    ins = json.loads(cli("context", "inspect", "mgr").stdout)[0]
    assert ins["Metadata"] == {"NodeCertificates": str(certs)}
    assert ins["TLSMaterial"] == {}
    assert not contexts.tls_dir("mgr").exists()  # no copy of the node's key anywhere
    ep = contexts.endpoint("mgr")
    assert (ep.ca, ep.cert, ep.key, ep.follows) == (certs / "swarm-root-ca.crt", certs / "swarm-node.crt",
                                                    certs / "swarm-node.key", certs)
    before = ep.material_signature()
    _node_certs(Path(os.environ["SHOAL_ROOT"]), "renewed")
    ep = contexts.endpoint("mgr")
    assert ep.cert is not None and ep.cert.read_text() == "renewed swarm-node.crt"
    assert ep.material_signature() != before  # a client keeping a TLS context builds it again

    # update: the description, then the host alone, keep following; --tls-* makes it a copy.
    assert cli("context", "update", "mgr", "--description", "d").returncode == 0
    assert cli("context", "update", "mgr", "--host", "tcp://198.18.0.9:2377").returncode == 0
    ins = json.loads(cli("context", "inspect", "mgr").stdout)[0]
    assert ins["Metadata"] == {"Description": "d", "NodeCertificates": str(certs)}
    assert ins["Endpoints"]["docker"]["Host"] == "tcp://198.18.0.9:2377"
    # --from a following context follows too (a copy would go stale as the original would have).
    assert cli("context", "create", "mgr2", "--from", "mgr").returncode == 0
    assert contexts.endpoint("mgr2").follows == certs
    assert cli("context", "update", "mgr2", "--tls-ca", str(certs / "swarm-root-ca.crt")).returncode == 0
    ins = json.loads(cli("context", "inspect", "mgr2").stdout)[0]
    assert ins["Metadata"] == {"Description": "d"} and ins["TLSMaterial"] == {"docker": ["ca.pem"]}
    ep = contexts.endpoint("mgr2")
    assert ep.follows is None and ep.ca == contexts.tls_dir("mgr2") / "docker" / "ca.pem"

    # rm removes the context, never the directory it followed.
    assert cli("context", "rm", "mgr", "mgr2").returncode == 0
    assert sorted(p.name for p in certs.iterdir()) == ["swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"]


def test_followed_directory_gone_is_one_line(cfg: Path) -> None:
    certs = _node_certs(Path(os.environ["SHOAL_ROOT"]), "x")
    assert cli("context", "create", "left", "--host", "tcp://198.18.0.1:2377").returncode == 0
    (certs / "swarm-node.key").unlink()
    with pytest.raises(ShoalError, match=f'context "left": .* node certificates in {certs}, and swarm-node.key is missing'):
        contexts.endpoint("left")
    for name in ("swarm-root-ca.crt", "swarm-node.crt"):
        (certs / name).unlink()
    certs.rmdir()
    proc = cli("--context", "left", "node", "ls")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and 'context "left"' in proc.stderr and str(certs) in proc.stderr, proc.stderr
    assert "swarm-root-ca.crt, swarm-node.crt, swarm-node.key are missing" in proc.stderr
    # Still listed, inspected and removed like any context.
    assert "left" in cli("context", "ls", "-q").stdout
    assert cli("context", "rm", "left").returncode == 0


def test_meta_with_a_relative_source_is_refused(cfg: Path) -> None:
    contexts.save(contexts.Context("rel", host="tcp://h:1", node_certs="/abs"), replace_tls=True)
    meta = contexts.meta_dir("rel") / "meta.json"
    data = json.loads(meta.read_text())
    assert data["Metadata"] == {"NodeCertificates": "/abs"}
    data["Metadata"]["NodeCertificates"] = "../../etc"
    meta.write_text(json.dumps(data))
    with pytest.raises(ShoalError, match="NodeCertificates must be an absolute directory path"):
        contexts.endpoint("rel")
