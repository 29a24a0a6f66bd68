"""The layering the control API work relies on, read from the source: the model imports
nothing but the model (the manager's records must not reach into the runtime), and the control
API imports nothing of the HTTP layer or the CLI (they call it, never the other way)."""

from __future__ import annotations

import ast
from pathlib import Path

import shoal

SRC = Path(shoal.__file__).resolve().parent


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n == "shoal" or n.startswith("shoal.")]


def test_the_model_imports_nothing_but_the_model() -> None:
    wrong = {f"{p.name}: {name}" for p in (SRC / "model").glob("*.py") for name in _imports(p)
             if not name.startswith("shoal.model")}
    assert not wrong, sorted(wrong)


def test_the_control_api_imports_neither_the_http_layer_nor_the_cli() -> None:
    wrong = {f"{p.name}: {name}" for p in (SRC / "manager" / "controlapi").glob("*.py") for name in _imports(p)
             if name.startswith(("shoal.api", "shoal.cli"))}
    assert not wrong, sorted(wrong)


def test_the_runtime_takes_mount_and_ulimit_from_the_model() -> None:
    from shoal.model.container import Mount, Ulimit
    from shoal.runtime import spec

    assert spec.Mount is Mount and spec.Ulimit is Ulimit
