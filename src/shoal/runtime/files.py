"""/etc/hosts, /etc/resolv.conf and /etc/hostname as Docker writes them for a container."""

from __future__ import annotations

import re
from pathlib import Path

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
_LOCAL_NS = re.compile(r"^\s*nameserver\s+(127\.\S*|::1)\s*$")


def hosts(hostname: str, addresses: list[str], extra_hosts: list[str], entries: list[str],
          host_network: bool) -> str:
    if host_network:
        try:
            text = Path("/etc/hosts").read_text()
        except OSError:
            text = _LOCALHOST
    else:
        text = _LOCALHOST
    for item in extra_hosts:
        name, _, ip = item.partition(":")
        text += f"{ip}\t{name}\n"
    text += "".join(e if e.endswith("\n") else e + "\n" for e in entries)
    if not host_network:
        text += "".join(f"{ip}\t{hostname}\n" for ip in addresses)
    return text


def ext_servers_line(servers: list[str]) -> str:
    """libnetwork's note in the resolv.conf of a container the embedded resolver serves: the
    servers it forwards that container's other names to (`--dns`, a service's `dns:`). Only a
    note: the resolver reads them from the container's record."""
    return f"# ExtServers: [{' '.join(servers)}]\n"


def resolv_conf(dns: list[str], search: list[str], host_network: bool,
                options: list[str] | None = None, internal: bool = False) -> str:
    """The host's file; for a container with its own network, localhost nameservers cannot
    work, so they are dropped and Google's DNS fills in as Docker does. `options` given replace
    the host's options lines (libnetwork's resolvconf: each of dns, search, options the user's
    when given, else the host's). `internal`: the embedded resolver is the nameserver, which
    wants ndots:0 unless an ndots is set already (libnetwork's ResolverOptions): a short name
    is asked of it as it is, before any search domain (a wildcard record in one would answer
    for a service name)."""
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        host = ""
    if internal:
        given = options if options else [o for line in host.splitlines()
                                         if line.split()[:1] == ["options"] for o in line.split()[1:]]
        if not any(o.startswith("ndots:") for o in given):
            options = [*given, "ndots:0"]
    if options:
        host = "".join(line + "\n" for line in host.splitlines()
                       if not line.strip().startswith("options"))
        host += "options " + " ".join(options) + "\n"
    if dns or search:
        # The host's search domains stay unless the user gave some (libnetwork overrides only
        # what was asked for).
        lines = [line for line in host.splitlines()
                 if not line.strip().startswith(("nameserver", "search", "domain") if search else ("nameserver",))]
        lines += [f"nameserver {d}" for d in dns] if dns else [
            line for line in host.splitlines() if line.strip().startswith("nameserver")]
        if search:
            lines.append("search " + " ".join(search))
        return "\n".join(lines) + "\n"
    if host_network:
        return host
    lines = [line for line in host.splitlines() if not _LOCAL_NS.match(line)]
    if not any(line.strip().startswith("nameserver") for line in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"
