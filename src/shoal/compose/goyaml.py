"""YAML printed as Go's gopkg.in/yaml.v3 encoder prints it (what `docker stack config` uses,
with SetIndent(2)): map keys in yaml.v3's natural order, strings quoted only when yaml.v3 would
read them back as something else, numbers and durations as Go formats them.

The model handed in is plain Python data already shaped as docker/cli's typed model
(dockermodel.py): a dict keeps its order (Go struct fields), except `Sorted` dicts (Go maps),
whose keys are sorted here. Go-only scalar types are small wrappers (GoFloat32, Literal).
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from functools import cmp_to_key
from typing import Any


class Sorted(dict):  # type: ignore[type-arg]
    """A Go map: printed with its keys in yaml.v3's order."""


class GoFloat32(float):
    """A float32 field (max_failure_ratio): printed with float32's shortest digits."""


# --- Go number formatting ----------------------------------------------------------------------


def _shortest_digits(value: float, bits: int) -> tuple[str, int]:
    """(digits, decimal point position) of the shortest decimal that reads back as `value`."""
    if bits == 64:
        text = f"{value:.17e}"
        for precision in range(1, 18):
            candidate = f"{value:.{precision - 1}e}"
            if float(candidate) == value:
                text = candidate
                break
    else:
        target = struct.unpack("f", struct.pack("f", value))[0]
        text = f"{value:.8e}"
        for precision in range(1, 10):
            candidate = f"{value:.{precision - 1}e}"
            if struct.unpack("f", struct.pack("f", float(candidate)))[0] == target:
                text = candidate
                break
    mantissa, _, exponent = text.partition("e")
    digits = mantissa.replace(".", "").lstrip("-").rstrip("0") or "0"
    return digits, int(exponent) + 1


def go_float(value: float, bits: int = 64) -> str:
    """strconv.FormatFloat(value, 'g', -1, bits), as fmt's %v and yaml.v3 print floats."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    value = abs(value)
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value, bits)
    exponent = point - 1
    # Shortest formatting decides between %e and %f with precision 6, as Go's strconv does.
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_sprint(value: Any) -> str:
    """fmt.Sprint of a value decoded from YAML (labels, environment, sysctls...)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, list):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "map[" + " ".join(f"{k}:{go_sprint(v)}" for k, v in items) + "]"
    return str(value)


_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9))


def go_duration(ns: int) -> str:
    """time.Duration(ns).String(): 1m30s, 10s, 1.5s, 500ms, 0s."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                whole, frac = divmod(ns, size)
                text = str(whole)
                if frac:
                    text += "." + str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
                return sign + text + unit
    out = ""
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds, frac = divmod(rest, 10**9)
    text = str(seconds)
    if frac:
        text += "." + str(frac).rjust(9, "0").rstrip("0")
    if hours:
        out = f"{hours}h{minutes}m"
    elif minutes:
        out = f"{minutes}m"
    return sign + out + text + "s"


# --- yaml.v3's key order (sorter.go keyList.Less) ----------------------------------------------


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _key_less(a: str, b: str) -> bool:
    ar, br = a, b
    digits = False
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            digits = ar[i].isdigit()
            continue
        al, bl = _is_letter(ar[i]), _is_letter(br[i])
        if al and bl:
            return ar[i] < br[i]
        if al or bl:
            return al if digits else bl
        an = bn = 0
        if ar[i] == "0" or br[i] == "0":
            j = i - 1
            while j >= 0 and ar[j].isdigit():
                if ar[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and ar[ai].isdigit():
            an = an * 10 + int(ar[ai])
            ai += 1
        bi = i
        while bi < len(br) and br[bi].isdigit():
            bn = bn * 10 + int(br[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ar[i] < br[i]
    return len(ar) < len(br)


def sort_keys(keys: list[str]) -> list[str]:
    return sorted(keys, key=cmp_to_key(lambda a, b: -1 if _key_less(a, b) else
                                       (1 if _key_less(b, a) else 0)))


# --- when yaml.v3 quotes a string --------------------------------------------------------------

_OLD_BOOL = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO",
             "off", "Off", "OFF"}
_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d?-\d\d?(?:(?:[Tt]|[ \t]+)\d\d?:\d\d:\d\d(?:\.\d*)?"
                        r"(?:[ \t]*(?:Z|[-+]\d\d?(?::\d\d)?))?)?$")
_RESOLVED = {"true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL", "~",
             ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
             ".nan", ".NaN", ".NAN", "<<", ""}


def _go_int(text: str) -> bool:
    """strconv.ParseInt(text without "_", 0, 64) succeeds (or ParseUint): 12, -0x1f, 0o17, 0b1."""
    plain = text.replace("_", "")
    body = plain[1:] if plain[:1] in "+-" else plain
    return bool(re.fullmatch(r"0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[0-9]+", body))


def resolves_to_other(text: str) -> bool:
    """yaml.v3's resolve(): would this plain text read back as a non-string?"""
    if text in _RESOLVED:
        return True
    first = text[0]
    if first in "0123456789+-.":
        if _TIMESTAMP.match(text):
            return True
        if _go_int(text):
            return True
        plain = text.replace("_", "")
        if _FLOAT.match(plain):
            return True
        if re.fullmatch(r"-?0b[01]+|-?0o[0-7]+", plain):
            return True
    return False


def needs_double_quotes(text: str) -> bool:
    return resolves_to_other(text) or bool(_BASE60.match(text)) or text in _OLD_BOOL


# --- the emitter -------------------------------------------------------------------------------


def dump(model: Any) -> str:
    """The document as yaml.v3's Encoder with SetIndent(2) writes it."""
    import yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        yaml_implicit_resolvers: dict[Any, Any] = {}  # every plain scalar reads as a string

        def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
            return super().increase_indent(flow, False)

    def scalar(dumper: yaml.SafeDumper, text: str, style: str | None = None) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        if "\n" in data:
            return scalar(dumper, data, "|")
        if needs_double_quotes(data):
            return scalar(dumper, data, '"')
        return scalar(dumper, data)

    def represent_mapping(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
        keys = sort_keys(list(data)) if isinstance(data, Sorted) else list(data)
        node = yaml.MappingNode("tag:yaml.org,2002:map", [], flow_style=False)
        for key in keys:
            node.value.append((dumper.represent_data(str(key)), dumper.represent_data(data[key])))
        if not node.value:
            node.flow_style = True
        return node

    def represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
        node = dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=False)
        if not data:
            node.flow_style = True
        return node

    # Multi-representers: the model's marker subclasses of dict and int print as their base.
    Dumper.add_multi_representer(str, represent_str)
    Dumper.add_multi_representer(dict, represent_mapping)
    Dumper.add_multi_representer(list, represent_list)
    Dumper.add_representer(bool, lambda d, b: scalar(d, "true" if b else "false"))
    Dumper.add_multi_representer(int, lambda d, i: scalar(d, str(int(i))))
    Dumper.add_representer(type(None), lambda d, _n: scalar(d, "null"))

    def represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
        text = go_float(value, 32 if isinstance(value, GoFloat32) else 64)
        text = {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(text, text)
        return scalar(dumper, text)

    Dumper.add_multi_representer(float, represent_float)
    # SafeDumper's own exact-type representers would win over the multi ones above.
    for exact, func in ((str, represent_str), (dict, represent_mapping),
                        (list, represent_list), (float, represent_float)):
        Dumper.add_representer(exact, func)
    Dumper.add_representer(int, lambda d, i: scalar(d, str(int(i))))
    return str(yaml.dump(model, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=1_000_000_000))
