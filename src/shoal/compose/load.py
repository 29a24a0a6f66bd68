"""Read compose files: YAML 1.2 scalars as docker compose's Go parser reads them, duplicate keys
rejected, and the line of every key kept so that later errors can point into the file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.compose import pyyaml  # noqa: F401 - before yaml: its unused patterns not compiled (~9 ms)
import yaml

from shoal.compose.errors import ComposeError

Path_ = tuple[str | int, ...]

# YAML 1.2 core schema. PyYAML speaks YAML 1.1, where `4000:80` is a base-60 integer and `on`
# is true; Go's yaml.v3 (what docker compose uses) reads both as strings.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+)$")
_OCTAL = re.compile(r"^0[0-7]+$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_MAX_NODES = 200_000  # a bound against alias bombs ("billion laughs")


# libyaml's parser when PyYAML was built with it (ten times faster); the resolver and the
# constructors below are Python either way.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    yaml_implicit_resolvers: dict[Any, Any] = {}


_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _construct_bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    # Go's yaml.v3 reads integers with strconv.ParseInt(s, 0, 64): 0x, 0o, 0b and a leading 0
    # (octal, as in `mode: 0440`) all keep their base.
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0o", "0x", "0b"):
        return sign * int(digits, 0)
    if _OCTAL.match(digits):
        return sign * int(digits, 8)
    return sign * int(digits, 10)


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


def _flatten_mapping(loader: _Loader, node: yaml.MappingNode) -> None:
    """Merge keys as Go's yaml.v3 decodes them: a mapping's own keys win over merged ones, and
    in `<<: [*a, *b]` a's keys win over b's (the YAML merge spec). PyYAML 6.0.4's own
    flatten_mapping tells keys apart by the id() of their text, which libyaml's parser makes
    anew for each scalar, so there the last mapping won. A second `<<` in one mapping is
    yaml.v3's duplicate key."""
    sources: list[yaml.MappingNode] = []
    merge_line = 0
    index = 0
    while index < len(node.value):
        key_node, value_node = node.value[index]
        if key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.tag == "tag:yaml.org,2002:value":
                key_node.tag = "tag:yaml.org,2002:str"
            index += 1
            continue
        if merge_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping key '<<' already defined at line {merge_line}",
                key_node.start_mark)
        merge_line = key_node.start_mark.line + 1
        del node.value[index]
        items = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for item in items:
            if not isinstance(item, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {item.id}",
                    item.start_mark)
            _flatten_mapping(loader, item)
            sources.append(item)
    if not sources:
        return
    taken: set[Any] = set()
    merged = []
    for source in sources:
        for pair in source.value:
            key = pair[0]
            ident = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else id(key)
            if ident not in taken:
                taken.add(ident)
                merged.append(pair)
    node.value = merged + node.value  # the mapping's own keys come last and so win


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    _flatten_mapping(loader, node)
    out: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (dict, list)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a string", key_node.start_mark
            )
        if isinstance(key, bool):
            key = "true" if key else "false"
        key = str(key)
        if not getattr(key_node, "_shoal_merged", False):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"mapping key {key!r} already defined at line {seen[key]}",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _construct_local_tag(loader: _Loader, suffix: str, node: yaml.Node) -> Any:
    """A local tag (`!reset []`, `!override {...}`, compose-spec's merge hints) means nothing to
    yaml.v3 decoding into docker/cli's map: the node is read as if untagged, a scalar as its
    text (resolve keeps an unknown tag's value a string)."""
    if isinstance(node, yaml.MappingNode):
        return _construct_mapping(loader, node)
    if isinstance(node, yaml.SequenceNode):
        return [loader.construct_object(item, deep=True) for item in node.value]
    return str(loader.construct_scalar(node))


_Loader.add_multi_constructor("!", _construct_local_tag)
# Timestamps stay text (Go reads `2024-01-01` into a string for a compose value).
_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


@dataclass
class ComposeFile:
    """One parsed file. `lines` maps a key path to the line it is written on."""

    path: Path
    name: str  # as the user gave it, for messages
    data: dict[str, Any]
    lines: dict[Path_, int] = field(default_factory=dict)


def _mark_merged_keys(node: yaml.Node, budget: list[int]) -> None:
    """`<<: *base` followed by an explicit key is an override, not a duplicate: flag the keys
    that come from merges before construction flattens them."""
    stack = [node]
    visited: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        budget[0] -= 1
        if budget[0] < 0:
            raise yaml.YAMLError("document is too large (too many aliased nodes)")
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    sources = (
                        value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    )
                    for source in sources:
                        if isinstance(source, yaml.MappingNode):
                            for inherited_key, _ in source.value:
                                inherited_key._shoal_merged = True
                stack.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


_MAX_DEPTH = 64
_MAX_EXPANDED = 1_000_000


def _check_size(node: yaml.Node) -> None:
    """Reject documents that expand too far through aliases, nest too deep, or refer to
    themselves: later passes copy the data, so `&a [*a, *a]` chains must stop here."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def measure(current: yaml.Node, depth: int) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if depth > _MAX_DEPTH:
            raise yaml.YAMLError(f"document is nested more than {_MAX_DEPTH} levels deep")
        if key in active:
            raise yaml.YAMLError("an alias refers to the node that contains it")
        active.add(key)
        total = 1
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                total += measure(key_node, depth + 1) + measure(value_node, depth + 1)
        elif isinstance(current, yaml.SequenceNode):
            for item in current.value:
                total += measure(item, depth + 1)
        if total > _MAX_EXPANDED:
            raise yaml.YAMLError("document is too large once its aliases are expanded")
        active.discard(key)
        sizes[key] = total
        return total

    measure(node, 0)


def _collect_lines(node: yaml.Node, lines: dict[Path_, int]) -> None:
    budget = _MAX_NODES
    stack: list[tuple[yaml.Node, Path_]] = [(node, ())]
    while stack:
        current, path = stack.pop()
        budget -= 1
        if budget < 0 or len(path) > 64:
            continue
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                sub = (*path, str(key_node.value))
                lines[sub] = key_node.start_mark.line + 1  # explicit keys follow merged ones
                stack.append((value_node, sub))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                sub = (*path, index)
                lines.setdefault(sub, item.start_mark.line + 1)
                stack.append((item, sub))


def parse_yaml(text: str, name: str) -> tuple[Any, dict[Path_, int]]:
    """Parse the first YAML document, as yaml.v3's Unmarshal does (docker stack deploy reads a
    file's first document and never looks at the rest: a trailing `---` is no error); errors
    name the file and the line."""
    loader = _Loader(text)
    try:
        node = loader.get_node() if loader.check_node() else None  # check_node: stream start
        if node is None:
            return None, {}
        _check_size(node)
        _mark_merged_keys(node, [_MAX_NODES])
        data = loader.construct_document(node)
        lines: dict[Path_, int] = {}
        _collect_lines(node, lines)
        return data, lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = exc.problem or exc.context or "invalid YAML"
        raise ComposeError(f"invalid YAML: {problem}", where=where) from None
    except (yaml.YAMLError, ValueError, RecursionError, OverflowError) as exc:
        raise ComposeError(f"invalid YAML: {exc}", where=name) from None
    finally:
        loader.dispose()


def read_compose_file(path: Path, name: str | None = None, text: str | None = None) -> ComposeFile:
    """Read and parse one compose file (`text` given: stdin). The top level must be a mapping."""
    shown = name or str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ComposeError("no such file or directory", where=shown) from None
        except IsADirectoryError:
            raise ComposeError("is a directory, not a compose file", where=shown) from None
        except UnicodeDecodeError:
            raise ComposeError("not a UTF-8 text file", where=shown) from None
        except OSError as exc:
            raise ComposeError(exc.strerror or str(exc), where=shown) from None
    data, lines = parse_yaml(text, shown)
    if data is None:
        raise ComposeError("empty compose file", where=shown)
    if not isinstance(data, dict):
        raise ComposeError("Top-level object must be a mapping", where=shown)
    return ComposeFile(path=path, name=shown, data=data, lines=lines)


def locate(files: list[ComposeFile], path: Path_) -> str:
    """`file:line` of the last file that writes `path` (or its nearest parent), for errors about
    the merged config; the first file's name when no file writes it."""
    for length in range(len(path), 0, -1):
        prefix = path[:length]
        for compose_file in reversed(files):
            line = compose_file.lines.get(prefix)
            if line is not None:
                return f"{compose_file.name}:{line}"
    return files[0].name if files else ""
