"""The generated docs are what the code gives now: docs/compose-support.md from
shoal.compose.support, docs/user-guide.md from the CLI's argparse tree. When one fails, run
`.venv/bin/python scripts/gen-docs.py` and commit the result."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen-docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rel", ["docs/compose-support.md", "docs/user-guide.md"])
def test_committed_doc_is_what_the_generator_prints(gen_docs: ModuleType, rel: str) -> None:
    committed = (REPO / rel).read_text()
    assert committed == gen_docs.OUTPUTS[rel](), f"{rel} is stale: run .venv/bin/python scripts/gen-docs.py"


def test_compose_matrix_lists_every_key_of_the_table(gen_docs: ModuleType) -> None:
    from shoal.compose import support

    text = gen_docs.compose_support()
    for row in support.TABLE:
        assert f"| {row.scope} | `{row.key}` | {row.status} |" in text


def test_compose_matrix_covers_the_schema_s_service_and_deploy_keys() -> None:
    """Every key the compose-spec schema allows on a service, its deploy and the top level has a
    row, so the matrix says something about each (the loader warns about unlisted ones)."""
    import json

    from shoal.compose import support

    schema = json.loads((REPO / "src/shoal/compose/schema/compose-spec.json").read_text())
    defs = schema["definitions"]
    for scope, props in (("top", schema["properties"]), ("service", defs["service"]["properties"]),
                         ("service.deploy", defs["deployment"]["properties"])):
        missing = [key for key in props if support.status(scope, key) is None]
        assert not missing, f"{scope} keys without a row in shoal.compose.support: {missing}"


def test_every_command_is_in_the_guide_with_an_example(gen_docs: ModuleType) -> None:
    groups, others = gen_docs.commands()
    names = [c.name for cs in groups.values() for c in cs] + [c.name for c in others]
    assert "stack deploy" in names and "image build" in names
    guide = gen_docs.user_guide()
    for name in names:
        assert f"### shoal {name}\n" in guide
    without = [n for n in names if n not in gen_docs.EXAMPLES]
    assert not without, f"add an example to EXAMPLES in scripts/gen-docs.py for: {without}"
    orphans = [n for n in gen_docs.EXAMPLES if n not in names]
    assert not orphans, f"EXAMPLES names commands the CLI does not have: {orphans}"


def test_the_guide_renders_flags_and_shortcuts(gen_docs: ModuleType) -> None:
    guide = gen_docs.user_guide()
    deploy = guide[guide.index("### shoal stack deploy\n"):]
    deploy = deploy[:deploy.index("\n### ", 1)]
    assert "    shoal stack deploy [OPTIONS] STACK" in deploy
    assert "| `-c, --compose-file FILE` |" in deploy
    assert "Also: `shoal stack up`." in deploy
    build = guide[guide.index("### shoal image build\n"):]
    assert "`shoal build`" in build[:build.index("\n### ", 1)]
