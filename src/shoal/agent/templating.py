"""Swarm's templates, expanded on the node for one task (swarmkit template/context.go, expand.go,
getter.go), with Go's text/template (shoal.gotemplate) and swarmkit's function set.

Two contexts, as swarmkit's:
- `expand`: the task's env values, hostname and mount sources/targets: `.Service.ID/Name/Labels`,
  `.Node.ID/Hostname/Platform.OS/Architecture`, `.Task.ID/Name/Slot`;
- `expand_payload`: the data of a secret or config made with `--template-driver golang`, the same
  fields plus `env "NAME"` (the task's environment as its spec gives it, unexpanded), `secret
  "target"` and `config "target"` (the data, not expanded, of another secret or config *this task*
  has, named by its target; any other is `secret target X not found`).

The template is named "expansion" and maps are read with missingkey=error, so errors read as
swarmkit's: `template: expansion:1:13: executing "expansion" at <secret "unknowntarge...>: error
calling secret: secret target unknowntarget not found`. A payload's error is wrapped as moby's
container start wraps the templated getter's (`unable to get config from config store: failed to
expand templated config <ID>: ...`).

Node.Hostname and Node.Platform are filled in for payloads too: moby's executor passes no node
description to the templated getter, so Docker leaves them empty there, which its documentation
does not say; swarmkit's context fills them whenever it is given the node."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shoal.errors import ShoalError
from shoal.gotemplate import BUILTINS, GoMap, TemplateError, render
from shoal.model.cluster import Node, Task

NAME = "expansion"  # swarmkit's newTemplate: template.New("expansion")
SECRET_DIR = "/run/secrets/"


def _join(sep: str, *items: str) -> str:
    """swarmkit's funcMap "join": the separator first, then the strings."""
    return sep.join(items)


FUNCTIONS: dict[str, Callable[..., Any]] = dict(BUILTINS, join=_join)


def container_name(task: Task) -> str:
    """naming.Task: `webapp_web.1.<task id>`, the container's name."""
    return f"{task.name}.{task.id}"


def context(task: Task, node: Node) -> dict[str, Any]:
    """template.NewContext: the values a template may use (a struct in Go: only these fields)."""
    return {
        "Service": {"ID": task.service_id, "Name": task.service_name,
                    "Labels": GoMap(task.spec.get("labels") or {})},
        "Node": {"ID": node.id, "Hostname": node.hostname,
                 "Platform": {"Architecture": node.platform.architecture, "OS": node.platform.os}},
        # A global task has no slot: the node's ID stands for it.
        "Task": {"ID": task.id, "Name": container_name(task),
                 "Slot": str(task.slot) if task.slot else (task.node_id or node.id)},
    }


def expand(text: str, task: Task, node: Node) -> str:
    """Context.Expand: `text` as a template on the task's context; TemplateError when it does
    not parse or run."""
    if "{{" not in text:
        return text
    return render(text, context(task, node), functions=FUNCTIONS, name=NAME, strict=True)


def file_name(kind: str, ref: Mapping[str, Any]) -> str:
    """The reference's File.Name as docker/cli writes it: a secret's target relative to
    /run/secrets when it is there."""
    target = str(ref.get("target") or ref.get("source") or "")
    if kind == "secret" and target.startswith(SECRET_DIR):
        return target[len(SECRET_DIR):]
    return target


def _names(kind: str, ref: Mapping[str, Any]) -> set[str]:
    """What `secret`/`config` may call the reference: its File.Name, or the path the node
    keeps (a bare target given to Docker is stored here as /run/secrets/x, or /x for a config)."""
    target = str(ref.get("target") or "")
    return {file_name(kind, ref), target, target.removeprefix("/")} - {""}


# data(kind, source name) -> the object's data, as the task's assignment holds it
DataGetter = Callable[[str, str], bytes]


def expand_payload(kind: str, object_id: str, data: bytes, task: Task, node: Node,
                   get: DataGetter) -> bytes:
    """ExpandSecretSpec / ExpandConfigSpec for the task; ShoalError with moby's text when the
    template fails."""
    spec = task.spec

    def env(variable: str) -> str:
        for entry in spec.get("env") or []:
            key, sep, value = str(entry).partition("=")
            if sep and key == variable:
                return value
        return ""

    def getter(wanted: str) -> Callable[[str], str]:
        def lookup(target: str) -> str:
            for ref in spec.get(f"{wanted}s") or []:
                if str(target) in _names(wanted, ref):
                    return get(wanted, str(ref["source"])).decode(errors="surrogateescape")
            raise ValueError(f"{wanted} target {target} not found")
        return lookup

    functions = dict(FUNCTIONS, env=env, secret=getter("secret"), config=getter("config"))
    try:
        text = render(data.decode(errors="surrogateescape"), context(task, node),
                      functions=functions, name=NAME, strict=True)
    except TemplateError as exc:
        raise ShoalError(f"unable to get {kind} from {kind} store: failed to expand templated "
                         f"{kind} {object_id}: {exc}") from None
    return text.encode(errors="surrogateescape")
