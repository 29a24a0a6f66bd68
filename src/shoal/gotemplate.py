"""Go's text/template, the part `--format` uses, with docker/cli's functions (templates.go).

    {{.Names}}  {{.Config.Image}}  {{json .}}  {{json .Mounts}}  {{.Label "com.x"}}
    {{index .Config.Labels "com.x"}}  {{join .Args ","}}  {{.Name | upper}}  {{lower (index . "Name")}}
    {{range .Mounts}}{{.Source}} {{end}}  {{if .Labels}}x{{else}}y{{end}}  {{with .Config}}{{.Image}}{{end}}
    {{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{end}}  {{- trim markers -}}  {{/* comments */}}

Objects are the JSON-shaped dicts the CLI prints (docker's contexts and inspect documents).
A missing field whose name starts upper-case is Go's error on a struct (`can't evaluate field`);
a missing map key prints `<no value>`, as Go does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import InvalidArgument

_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*") | (?P<raw>`[^`]*`) | (?P<pipe>\|) | (?P<open>\() | (?P<close>\)) |
    (?P<decl>:=|=) | (?P<comma>,) |
    (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*) | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.) |
    (?P<num>-?\d+(?:\.\d+)?) | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
)""", re.X)


class TemplateError(InvalidArgument):
    """A template that does not parse or does not run: `template: ...`. Exit 1: docker/cli
    returns these from the command's RunE, never as a flag error (125); only inspect's and info's
    parse errors exit 64 there."""

    exit_code = 1

    command: list[tuple[str, Any]] | None = None  # the command that failed, for render(name=)


# --- values -------------------------------------------------------------------------------------

def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def text(value: Any) -> str:
    """How Go prints a value: `[a b]`, `map[k:v]`, `true`; an absent one (None) as empty, as the
    CLI's objects mean it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(text(v) if v is not None else "<nil>" for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{text(value[k])}" for k in sorted(value)) + "]"
    return str(value)


class _NoValue:
    def __str__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


def go_json(value: Any, context: bool = False) -> str:
    """docker's `json` function: compact, UTF-8 kept, HTML characters not escaped
    (SetEscapeHTML(false)). `context`: a formatter context (a `--format json` row), which docker
    marshals through a map, so its keys are sorted and <, >, & escaped by json.Marshal."""
    if isinstance(value, _NoValue):
        value = None
    out = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=context)
    out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if context:
        out = out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return out


def _labels(obj: Any) -> dict[str, str]:
    """A row's labels: a dict, or docker's `k=v,k2=v2` column."""
    raw = obj.get("Labels") if isinstance(obj, Mapping) else None
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, str):
        return dict(p.split("=", 1) if "=" in p else (p, "") for p in raw.split(",") if p)
    return {}


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, NO_VALUE if not isinstance(key, int) else None)
        elif isinstance(value, (list, tuple, str)):
            try:
                value = value[int(key)]
            except (IndexError, ValueError):
                raise TemplateError(f"template: error calling index: index out of range: {key}") from None
        else:
            raise TemplateError(f"template: error calling index: can't index item of type {type(value).__name__}")
    return value


def _pad(source: Any, prefix: int, suffix: int) -> str:
    s = text(source)
    return s if s == "" else " " * int(prefix) + s + " " * int(suffix)


def _truncate(source: Any, length: int) -> str:
    s = text(source)
    return s if len(s) < int(length) else s[: int(length)]


def _printf(fmt: str, *args: Any) -> str:
    """Go's common verbs: %s %v %d %q %%; width flags as Python's."""
    values = iter(args)

    def verb(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        value = next(values, None)
        spec, kind = m.group(1), m.group(2)
        if kind == "q":
            return json.dumps(text(value), ensure_ascii=False)
        if kind == "d":
            return ("%" + spec + "d") % int(value)
        return ("%" + spec + "s") % text(value)

    return re.sub(r"%%|%([-+ 0#]*\d*(?:\.\d+)?)([svdq])", verb, fmt)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def run(a: Any, *bs: Any) -> bool:
        return any(op(a, b) for b in bs) if op is _eq else op(a, bs[0])

    return run


def _eq(a: Any, b: Any) -> bool:
    return a == b


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # docker/cli templates.basicFunctions
    "json": go_json,
    "split": lambda s, sep: text(s).split(sep),
    "join": lambda items, sep: sep.join(text(i) for i in (items or [])),
    "title": lambda s: re.sub(r"\b[a-z]", lambda m: m.group(0).upper(), text(s)),
    "lower": lambda s: text(s).lower(),
    "upper": lambda s: text(s).upper(),
    "pad": _pad,
    "truncate": _truncate,
    # Go's builtins
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "print": lambda *a: "".join(text(v) for v in a),
    "println": lambda *a: " ".join(text(v) for v in a) + "\n",
    "printf": _printf,
    "not": lambda v: not truthy(v),
    "and": lambda *a: next((v for v in a if not truthy(v)), a[-1]),
    "or": lambda *a: next((v for v in a if truthy(v)), a[-1]),
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
}

# Go's own functions, without docker/cli's (swarmkit's templates have only these and its own).
BUILTINS: dict[str, Callable[..., Any]] = {
    k: FUNCTIONS[k] for k in ("index", "len", "print", "println", "printf", "not", "and", "or",
                              "eq", "ne", "lt", "le", "gt", "ge")}


# --- parsing ------------------------------------------------------------------------------------

@dataclass
class _Node:
    kind: str  # text | action | if | range | with
    value: str = ""
    pipe: list[list[tuple[str, Any]]] = field(default_factory=list)
    decl: list[str] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)  # the else branch
    pos: int = 0  # where the action's pipeline begins in the template (for errors' line:col)


def _tokens(source: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    source = source.strip()
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"template: unexpected {source[pos:].strip()!r} in command")
        pos = m.end()
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind == "str":
            out.append(("lit", json.loads(raw)))
        elif kind == "raw":
            out.append(("lit", raw[1:-1]))
        elif kind == "num":
            out.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "ident" and raw in ("true", "false", "nil"):
            out.append(("lit", {"true": True, "false": False, "nil": None}[raw]))
        else:
            out.append((kind, raw))
    return out


def _pipeline(tokens: list[tuple[str, Any]]) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """(declared variables, commands); a parenthesised group is kept as ("group", commands)."""
    decl: list[str] = []
    if any(k == "decl" for k, _ in tokens):
        at = next(i for i, (k, _) in enumerate(tokens) if k == "decl")
        decl = [v for k, v in tokens[:at] if k == "var"]
        tokens = tokens[at + 1:]
    commands: list[list[tuple[str, Any]]] = [[]]
    stack: list[list[list[tuple[str, Any]]]] = []
    for kind, value in tokens:
        if kind == "pipe":
            commands.append([])
        elif kind == "open":
            stack.append(commands)
            commands = [[]]
        elif kind == "close":
            if not stack:
                raise TemplateError("template: unexpected right paren")
            inner = commands
            commands = stack.pop()
            commands[-1].append(("group", inner))
        else:
            commands[-1].append((kind, value))
    if stack:
        raise TemplateError("template: unclosed left paren")
    if any(not c for c in commands):
        raise TemplateError("template: missing command")
    return decl, commands


def parse(template: str) -> list[_Node]:
    root: list[_Node] = []
    # open blocks: (block, in its else branch, opened by an {{else if}}: its {{end}} closes the
    # block it continues too)
    stack: list[tuple[_Node, bool, bool]] = []
    current = root
    pos = 0
    pending_trim = False
    for m in _ACTION.finditer(template):
        chunk = template[pos:m.start()]
        if pending_trim:
            chunk = chunk.lstrip()
        if m.group(1):
            chunk = chunk.rstrip()
        if chunk:
            current.append(_Node("text", chunk))
        pos = m.end()
        pending_trim = bool(m.group(3))
        raw_body = m.group(2)
        at = m.start(2) + len(raw_body) - len(raw_body.lstrip())
        body = raw_body.strip()
        if body.startswith("/*"):
            continue
        word, _, rest = body.partition(" ")
        rest = rest.strip()
        if word in ("if", "range", "with"):
            decl, pipe = _pipeline(_tokens(rest))
            node = _Node(word, pipe=pipe, decl=decl, pos=at + len(word) + 1)
            current.append(node)
            stack.append((node, False, False))
            current = node.body
        elif word == "else":
            if not stack or stack[-1][1]:
                raise TemplateError("template: unexpected {{else}}")
            node, _, chained = stack.pop()
            stack.append((node, True, chained))
            current = node.other
            if rest.startswith("if ") or rest.startswith("with "):  # {{else if x}}
                kind, _, cond = rest.partition(" ")
                decl, pipe = _pipeline(_tokens(cond))
                inner = _Node(kind, pipe=pipe, decl=decl, pos=at)
                current.append(inner)
                stack.append((inner, False, True))
                current = inner.body
        elif word == "end":
            if not stack:
                raise TemplateError("template: unexpected {{end}}")
            _, _, chained = stack.pop()
            while chained:
                _, _, chained = stack.pop()
            if stack:
                node, in_else, _ = stack[-1]
                current = node.other if in_else else node.body
            else:
                current = root
        else:
            decl, pipe = _pipeline(_tokens(body))
            current.append(_Node("action", pipe=pipe, decl=decl, pos=at))
    if stack:
        raise TemplateError("template: unexpected EOF")
    tail = template[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        current.append(_Node("text", tail))
    return root


# --- execution ----------------------------------------------------------------------------------

class GoMap(dict):  # type: ignore[type-arg]
    """A value that is a Go map, not a struct: a missing key is `<no value>` whatever its case,
    or Go's `map has no entry for key` under missingkey=error (`strict`)."""


class GoStruct(dict):  # type: ignore[type-arg]
    """A Go struct whose JSON names differ from its field names (events.Message: `{{.ID}}` in a
    template, `"id"` in `{{json .}}`): the dict holds what `json` marshals, `fields` maps each
    Go field name to its key there; `hidden` are fields json leaves out (omitempty, or shoal's
    own that templates may still read)."""

    def __init__(self, data: Mapping[str, Any], fields: Mapping[str, str],
                 hidden: Mapping[str, Any] | None = None) -> None:
        super().__init__(data)
        self.fields = dict(fields)
        self.hidden = dict(hidden or {})

    def field(self, name: str) -> Any:
        if name in self.fields:
            return self.get(self.fields[name], "")  # omitted by omitempty: Go's zero value
        if name in self:
            return self[name]
        if name in self.hidden:
            return self.hidden[name]
        raise TemplateError(f"template: can't evaluate field {name}")


class _Scope:
    def __init__(self, root: Any, context: bool, functions: Mapping[str, Callable[..., Any]] | None = None,
                 strict: bool = False) -> None:
        self.vars: dict[str, Any] = {"$": root}
        self.context = context  # the root is a formatter context (its json is a sorted map)
        self.functions = FUNCTIONS if functions is None else functions
        self.strict = strict


def _field(value: Any, name: str, strict: bool = False) -> Any:
    if isinstance(value, GoStruct):
        return value.field(name)
    if isinstance(value, GoMap) and name not in value:
        if strict:
            raise TemplateError(f'template: map has no entry for key "{name}"')
        return NO_VALUE
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        if name[:1].isupper():
            raise TemplateError(f"template: can't evaluate field {name}")
        return NO_VALUE
    if value is None or isinstance(value, _NoValue):
        return NO_VALUE
    raise TemplateError(f"template: can't evaluate field {name} in type {type(value).__name__}")


def _chain(value: Any, path: str, strict: bool = False) -> Any:
    for part in [p for p in path.split(".") if p]:
        value = _field(value, part, strict)
    return value


def _operand(token: tuple[str, Any], dot: Any, scope: _Scope) -> Any:
    kind, value = token
    if kind == "lit":
        return value
    if kind == "field":
        return dot if value == "." else _chain(dot, value, scope.strict)
    if kind == "var":
        name, _, path = value.partition(".")
        if name not in scope.vars:
            raise TemplateError(f"template: undefined variable: {name}")
        return _chain(scope.vars[name], path, scope.strict)
    if kind == "group":
        return _run_pipe(value, dot, scope)
    if kind == "ident":
        return _call(value, [], dot, scope)
    raise TemplateError(f"template: unexpected {value!r} in operand")


def _call(name: str, args: list[Any], dot: Any, scope: _Scope) -> Any:
    func = scope.functions.get(name)
    if func is None:
        raise TemplateError(f'template: function "{name}" not defined')
    try:
        return func(*args)
    except TemplateError:
        raise
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"template: error calling {name}: {exc}") from None


def _run_command(command: list[tuple[str, Any]], dot: Any, scope: _Scope, piped: list[Any]) -> Any:
    head, rest = command[0], command[1:]
    if head[0] == "ident":
        if head[1] not in scope.functions:
            raise TemplateError(f'template: function "{head[1]}" not defined')
        args = [_operand(t, dot, scope) for t in rest] + piped
        if head[1] == "json" and scope.context and len(args) == 1 and args[0] is scope.vars["$"]:
            return go_json(args[0], context=True)
        return _call(head[1], args, dot, scope)
    if head[0] == "field" and head[1] != "." and (rest or piped):
        # a method with arguments: docker's contexts have `.Label "key"` (container, image, ...)
        *path, method = head[1].strip(".").split(".")
        target = _chain(dot, ".".join(path))
        args = [_operand(t, dot, scope) for t in rest] + piped
        if method == "Label" and len(args) == 1:
            return _labels(target).get(str(args[0]), "")
        raise TemplateError(f"template: can't give argument to non-function {head[1]}")
    if rest:
        raise TemplateError(f"template: can't give argument to non-function {head[1]}")
    return _operand(head, dot, scope)


def _run_pipe(pipe: list[list[tuple[str, Any]]], dot: Any, scope: _Scope) -> Any:
    value: Any = None
    for i, command in enumerate(pipe):
        try:
            value = _run_command(command, dot, scope, [value] if i else [])
        except TemplateError as exc:
            if exc.command is None:  # the innermost command that failed is the error's place
                exc.command = command
            raise
    return value


def _execute(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "action":
            value = _run_pipe(node.pipe, dot, scope)
            if node.decl:
                scope.vars[node.decl[0]] = value
            else:
                out.append(str(value) if isinstance(value, _NoValue) else text(value))
        elif node.kind in ("if", "with"):
            value = _run_pipe(node.pipe, dot, scope)
            if node.decl:
                scope.vars[node.decl[0]] = value
            if truthy(value) and not isinstance(value, _NoValue):
                _execute(node.body, value if node.kind == "with" else dot, scope, out)
            else:
                _execute(node.other, dot, scope, out)
        elif node.kind == "range":
            value = _run_pipe(node.pipe, dot, scope)
            if isinstance(value, Mapping):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, (list, tuple)):
                items = list(enumerate(value))
            elif value is None or isinstance(value, _NoValue):
                items = []
            elif isinstance(value, int):
                items = [(i, i) for i in range(value)]
            else:
                raise TemplateError(f"template: range can't iterate over {text(value)}")
            if not items:
                _execute(node.other, dot, scope, out)
            for key, item in items:
                if len(node.decl) == 1:
                    scope.vars[node.decl[0]] = item
                elif len(node.decl) == 2:
                    scope.vars[node.decl[0]], scope.vars[node.decl[1]] = key, item
                _execute(node.body, item, scope, out)


def _command_text(command: list[tuple[str, Any]]) -> str:
    """parse.CommandNode.String(): the command as written, its arguments joined by a space."""
    from shoal.gofmt import quote

    words = []
    for kind, value in command:
        if kind == "group":
            words.append("(" + " | ".join(_command_text(c) for c in value) + ")")
        elif kind != "lit":
            words.append(str(value))
        elif isinstance(value, str):
            words.append(quote(value))
        elif value is None or isinstance(value, bool):
            words.append("nil" if value is None else str(value).lower())
        else:
            words.append(str(value))
    return " ".join(words)


def _locate(exc: TemplateError, template: str, name: str, node: _Node) -> TemplateError:
    """Go's error for a template called `name`: `template: NAME:LINE:COL: executing "NAME" at
    <COMMAND>: ...` (the command cut at 20 characters, as parse.ErrorContext does); a function
    that is not defined is Go's parse error, `template: NAME:LINE: ...`."""
    message = str(exc).removeprefix("template: ")
    context = _command_text(exc.command) if exc.command else ""
    found = template.find(context, node.pos) if context else -1
    pos = found if found >= 0 else node.pos
    before = template[:pos]
    line = 1 + before.count("\n")
    column = pos - (before.rfind("\n") + 1)
    if message.startswith("function ") and message.endswith(" not defined"):
        return TemplateError(f"template: {name}:{line}: {message}")
    if len(context) > 20:
        context = context[:20] + "..."
    return TemplateError(f'template: {name}:{line}:{column}: executing "{name}" at <{context}>: {message}')


def render(template: str, obj: Any, context: bool = False, *,
           functions: Mapping[str, Callable[..., Any]] | None = None, name: str = "",
           strict: bool = False) -> str:
    """Run `template` on `obj` as Go's text/template with docker's functions; `context`: obj is
    a list command's row (docker's formatter context). `functions` replaces docker/cli's set
    (BUILTINS are Go's own); `name` makes errors say where, as Go's do for a named template;
    `strict` is Option("missingkey=error") for GoMap values."""
    nodes = parse(template)
    out: list[str] = []
    scope = _Scope(obj, context, functions, strict)
    if not name:
        _execute(nodes, obj, scope, out)
        return "".join(out)
    try:
        _execute(nodes, obj, scope, out)
    except TemplateError as exc:
        raise _locate(exc, template, name, _failed_node(nodes, exc) or _Node("text")) from None
    return "".join(out)


def _failed_node(nodes: list[_Node], exc: TemplateError) -> _Node | None:
    """The action whose pipeline holds the failed command (searched in the parsed tree)."""
    for node in nodes:
        if node.kind != "text" and exc.command is not None and _holds(node.pipe, exc.command):
            return node
        found = _failed_node(node.body, exc) or _failed_node(node.other, exc)
        if found is not None:
            return found
    return None


def _holds(pipe: list[list[tuple[str, Any]]], command: list[tuple[str, Any]]) -> bool:
    for cmd in pipe:
        if cmd is command:
            return True
        if any(kind == "group" and _holds(value, command) for kind, value in cmd):
            return True
    return False
