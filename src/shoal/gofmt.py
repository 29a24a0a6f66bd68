"""Go's formatting of strings where Docker's messages and outputs show them, so shoal's read the
same: strconv.Quote (what `%q` and `%#v` print)."""

from __future__ import annotations


def quote(text: str) -> str:
    """strconv.Quote: `"a\\"b\\n"`; control characters as \\xNN, other unprintable runes as \\uNNNN or
    \\UNNNNNNNN, printable ones as they are."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
