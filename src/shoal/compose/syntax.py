"""Parsers for compose's small value languages, each matching the Go function docker uses:
durations (time.ParseDuration), sizes (go-units RAMInBytes), CPUs (opts.ParseCPUs), short
volume specs (compose-go format.ParseVolume) and short port specs (go-connections
nat.ParsePortSpec). They raise ValueError with a message; callers add the file and key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NS = 2**63 - 1


def parse_duration_ns(text: str) -> int:
    """Go's time.ParseDuration: "1m30s", "500ms", "1.5h", "0"; a sign is allowed."""
    original = text
    if not isinstance(text, str):
        raise ValueError(f'time: invalid duration "{text}"')
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    total = Decimal(0)
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None or match.group(1) in ("", "."):
            if match is None and re.match(r"[0-9.]+$", text[pos:]):
                raise ValueError(f'time: missing unit in duration "{original}"')
            if match is None and re.match(r"[0-9.]+[a-zA-Zµμ]+", text[pos:]):
                unit = re.match(r"[0-9.]+([a-zA-Zµμ]+)", text[pos:])
                assert unit is not None
                raise ValueError(
                    f'time: unknown unit "{unit.group(1)}" in duration "{original}"'
                )
            raise ValueError(f'time: invalid duration "{original}"')
        total += Decimal(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if total > _MAX_NS:
        raise ValueError(f'time: invalid duration "{original}"')
    return sign * int(total)


def parse_duration(text: object) -> float:
    """Seconds as a float, from a Go duration string."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: must be a string such as \"10s\"")
    return parse_duration_ns(text) / 1e9


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_MULT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


_MAX_INT64 = (1 << 63) - 1


def parse_size(value: object) -> int:
    """go-units RAMInBytes: binary multiples, case-insensitive, optional i/b ("50M" = 50 MiB).
    A bare integer is bytes."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size: '{value}'")
        return value
    if isinstance(value, float):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"invalid size: '{value}'")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid size: {value!r}")
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"invalid size: '{value}'")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid size: '{value}'") from None
    unit = (match.group(2) or "").lower()
    size = number * _SIZE_MULT.get(unit, 1)
    if size > _MAX_INT64:  # go-units fails past int64; Python would print thousands of digits
        raise ValueError(f"invalid size: '{value[:40]}': value out of range")
    return int(size)


def parse_cpus(value: object) -> int:
    """opts.ParseCPUs: a decimal number of CPUs -> nano CPUs ("0.1" -> 100000000)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid CPU value {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"failed to parse {value!r} as a rational number") from None
    if not number.is_finite():
        raise ValueError(f"failed to parse {value!r} as a rational number")
    nano = number * 1_000_000_000
    if nano != nano.to_integral_value():
        raise ValueError("value is too precise")
    if nano < 0 or nano > _MAX_NS:
        raise ValueError(f"invalid CPU value {value!r}")
    return int(nano)


@dataclass
class VolumeShort:
    type: str
    source: str
    target: str
    read_only: bool = False
    nocopy: bool = False
    propagation: str = ""
    selinux: str = ""
    options: list[str] = field(default_factory=list)


_PROPAGATIONS = {"rprivate", "private", "rshared", "shared", "rslave", "slave"}


def parse_volume(spec: str) -> VolumeShort:
    """`[source:]target[:mode]`; a source starting with `.`, `/` or `~` is a bind mount."""
    if not spec:
        raise ValueError("invalid empty volume spec")
    if len(spec) <= 2:
        return VolumeShort(type="volume", source="", target=spec)
    parts = spec.split(":")
    if any(p == "" for p in parts):
        raise ValueError(f"invalid spec: {spec}: empty section between colons")
    if len(parts) > 3:
        raise ValueError(f"invalid spec: {spec}: too many colons")
    result = VolumeShort(type="volume", source="", target=parts[0])
    if len(parts) >= 2:
        result.source, result.target = parts[0], parts[1]
    if len(parts) == 3:
        for option in parts[2].split(","):
            if option == "ro":
                result.read_only = True
            elif option == "rw":
                result.read_only = False
            elif option == "nocopy":
                result.nocopy = True
            elif option in _PROPAGATIONS:
                result.propagation = option
            elif option in ("z", "Z"):
                result.selinux = option
            # other options are ignored, as compose-go does
    if result.source[:1] in (".", "/", "~"):
        result.type = "bind"
    return result


@dataclass
class PortShort:
    target: int
    published: int  # 0 = not published / picked by the manager
    protocol: str
    host_ip: str = ""


_PORT_RANGE = re.compile(r"^(\d{1,10})(?:-(\d{1,10}))?$")  # bounded: int() of thousands of digits fails


def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    match = _PORT_RANGE.match(text)
    if match is None:
        raise ValueError(f"invalid {what} port: {text!r} in {spec!r}")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else start
    if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start:
        raise ValueError(f"invalid {what} port range: {text!r} in {spec!r}")
    return start, end


def host_ip_warnings(shorts: list[PortShort]) -> list[str]:
    """docker/cli's convertPortToPortConfig, as its loader reads a file: swarm publishes on every
    address, so a host IP is dropped with a warning per binding (one per container port, its
    host port or range as written), unless it is the unspecified address."""
    import ipaddress

    by_target: dict[int, list[int]] = {}
    for short in shorts:
        if short.host_ip and not ipaddress.ip_address(short.host_ip).is_unspecified:
            by_target.setdefault(short.target, []).append(short.published)
    out = []
    for short in shorts:
        published = by_target.pop(short.target, None)
        if published is None:
            continue
        host_port = "" if not published[0] else (
            f"{published[0]}-{published[-1]}" if len(published) > 1 else str(published[0]))
        host = f"[{short.host_ip}]" if ":" in short.host_ip else short.host_ip
        out.append(f"ignoring IP-address ({host}:{host_port}:{short.target}/{short.protocol}) "
                   "service will listen on '0.0.0.0'")
    return out


def _is_ip(text: str) -> bool:
    """Go's net.ParseIP: a dotted IPv4 or an IPv6 address, no zone."""
    import ipaddress

    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_port(spec: object) -> list[PortShort]:
    """`[ip:][published[-end]:]target[-end][/proto]`, as nat.ParsePortSpec and docker/cli's
    convertPortToPortConfig: one entry per port. The IP is what is left of the last two
    colon-separated parts (`::1:80:80` too) and must be an address; a host range needs a
    container range of its size or a single container port, which then is published on each
    port of the host range (the schema's 'ports' format refuses the rest)."""
    if isinstance(spec, bool):
        raise ValueError(f"invalid port: {spec!r}")
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"invalid port: {spec!r}")
    parts = spec.split(":")
    host_ip = ":".join(parts[:-2])
    published = parts[-2] if len(parts) > 1 else ""
    target, _, protocol = parts[-1].partition("/")
    protocol = protocol.lower() or "tcp"
    if host_ip.startswith("["):  # [::1]:80:80
        if not host_ip.endswith("]"):
            raise ValueError(f"invalid IP address {host_ip}: in {spec!r}")
        host_ip = host_ip[1:-1]
    if host_ip and not _is_ip(host_ip):
        raise ValueError(f"invalid IP address: {host_ip!r} in {spec!r}")
    if not target:
        raise ValueError(f"no port specified: {spec!r}")
    t_start, t_end = _port_range(target, "container", spec)
    p_start = p_end = 0
    if published:
        p_start, p_end = _port_range(published, "host", spec)
        if p_end - p_start != t_end - t_start and t_end != t_start:
            raise ValueError(
                f"invalid ranges specified for container and host ports: {target!r} and "
                f"{published!r} in {spec!r}"
            )
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {protocol!r} in {spec!r}")
    if published and t_start == t_end:
        # One container port on a host range: swarm publishes it on every port of the range.
        return [PortShort(target=t_start, published=pub, protocol=protocol, host_ip=host_ip)
                for pub in range(p_start, p_end + 1)]
    return [PortShort(target=t_start + offset, published=p_start + offset if published else 0,
                      protocol=protocol, host_ip=host_ip)
            for offset in range(t_end - t_start + 1)]
