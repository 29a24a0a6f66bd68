"""The rtnetlink requests shoald makes, sent on a raw NETLINK_ROUTE socket.

pyroute2 (kept for the CLI's cleanup and reconcile, which list every link) costs about a
millisecond of CPU per request on these machines, because it decodes every reply in Python through an asyncio
loop; a task's network took about ten such requests, under the network lock. The requests here
are built with struct and only wait for the kernel's acknowledgement (measured: a veth with its
address and route in ~1 ms instead of ~25 ms). The same few requests make a network's bridge and
list its addresses and the host's routes, so shoald never loads pyroute2 (9.6 MiB of memory)."""

from __future__ import annotations

import itertools
import os
import socket
import struct
from collections.abc import Iterator
from types import TracebackType

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x100, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 1, 4, 7, 11, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
RTNH_F_ONLINK = 4
FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE = 3, 6, 10, 15
FR_ACT_TO_TBL = 1
LOOPBACK_INDEX = 1  # lo is the first device of every network namespace

_HEADER = struct.Struct("=LHHLL")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_FIBRULE = _RTMSG  # fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(value: str) -> bytes:
    return value.encode() + b"\0"


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _mac(value: str) -> bytes:
    return bytes(int(octet, 16) for octet in value.split(":"))


def _u8(value: int) -> bytes:
    return struct.pack("=B", value)


def _mac_text(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def index(name: str) -> int | None:
    """The interface's index in the calling thread's namespace, or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


class Rtnl:
    """One NETLINK_ROUTE socket, in the network namespace of the thread that opens it (it stays
    there when used from another thread)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its acknowledgement; a kernel error is an OSError with
        its errno."""
        seq = next(self._seq)
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
                        + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply_type, _flags, reply_seq, _pid = _HEADER.unpack_from(data, offset)
                if reply_type == NLMSG_ERROR and reply_seq == seq:
                    (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                    if error:
                        raise OSError(-error, f"{what}: {os.strerror(-error)}")
                    return
                offset += (length + 3) & ~3

    def dump(self, msg_type: int, body: bytes, header_size: int, what: str) -> list[tuple[bytes, dict[int, bytes]]]:
        """Every object a dump request returns: (its fixed header, its attributes by type)."""
        seq = next(self._seq)
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        found = []
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply_type, _flags, reply_seq, _pid = _HEADER.unpack_from(data, offset)
                if reply_seq == seq:
                    if reply_type == NLMSG_DONE:
                        return found
                    if reply_type == NLMSG_ERROR:
                        (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                        if error:
                            raise OSError(-error, f"{what}: {os.strerror(-error)}")
                        return found
                    start = offset + _HEADER.size
                    found.append((data[start:start + header_size],
                                  _attrs(data, start + header_size, offset + length)))
                offset += (length + 3) & ~3

    # ---- links ---------------------------------------------------------------------------------
    def add_bridge(self, name: str, mtu: int) -> None:
        body = (_IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name)) + _attr(IFLA_MTU, _u32(mtu))
                + _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, _name("bridge"))))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add bridge {name}")

    def add_veth(self, name: str, peer: str, *, peer_netns_fd: int, peer_mac: str, mtu: int, master: int) -> None:
        """A veth pair: `name` in this namespace, up, enslaved to `master`; `peer` in the
        namespace of `peer_netns_fd`, with its MAC address, down (the kernel configures the peer
        before the pair is joined, so asking for it up here fails with ENOTCONN)."""
        peer_msg = (_IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer))
                    + _attr(IFLA_ADDRESS, _mac(peer_mac)) + _attr(IFLA_MTU, _u32(mtu))
                    + _attr(IFLA_NET_NS_FD, _u32(peer_netns_fd)))
        linkinfo = _attr(IFLA_INFO_KIND, _name("veth")) + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_msg))
        body = (_IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(name)) + _attr(IFLA_MTU, _u32(mtu))
                + _attr(IFLA_MASTER, _u32(master)) + _attr(IFLA_LINKINFO, linkinfo))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name}")

    def add_vxlan(self, name: str, *, vni: int, local: str, port: int, mtu: int, master: int) -> None:
        """A VXLAN device enslaved to `master`: no learning (the forwarding entries are static,
        programmed from the manager's view) and ARP answered from its neighbour table (proxy);
        no default destination, so nothing unknown is flooded to other nodes."""
        data = (_attr(IFLA_VXLAN_ID, _u32(vni)) + _attr(IFLA_VXLAN_LOCAL, socket.inet_aton(local))
                + _attr(IFLA_VXLAN_LEARNING, _u8(0)) + _attr(IFLA_VXLAN_PROXY, _u8(1))
                + _attr(IFLA_VXLAN_PORT, struct.pack("!H", port)))
        linkinfo = _attr(IFLA_INFO_KIND, _name("vxlan")) + _attr(IFLA_INFO_DATA, data)
        body = (_IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name)) + _attr(IFLA_MTU, _u32(mtu))
                + _attr(IFLA_MASTER, _u32(master)) + _attr(IFLA_LINKINFO, linkinfo))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add vxlan {name}")

    def links(self) -> list[dict[str, object]]:
        """Every link of this namespace: index, name, kind, alias, master index, up."""
        out: list[dict[str, object]] = []
        for header, attrs in self.dump(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0), _IFINFO.size, "list links"):
            _family, _type, idx, flags, _change = _IFINFO.unpack(header)
            kind = ""
            if IFLA_LINKINFO in attrs:
                info = attrs[IFLA_LINKINFO]
                kind = _attrs(info, 0, len(info)).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
            out.append({"index": idx, "name": attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(), "kind": kind,
                        "address": _mac_text(attrs.get(IFLA_ADDRESS, b"")),
                        "alias": attrs.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode(),
                        "master": struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0,
                        "up": bool(flags & IFF_UP)})
        return out

    # ---- neighbour and forwarding entries (a VXLAN device's static peers) ---------------------
    def neighbours(self, link: int) -> dict[str, str]:
        """The link's IPv4 neighbour entries: address -> MAC."""
        out = {}
        for header, attrs in self.dump(RTM_GETNEIGH, _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0), _NDMSG.size,
                                       "list neighbours"):
            family, idx, _state, _flags, _type = _NDMSG.unpack(header)
            if family == socket.AF_INET and idx == link and NDA_DST in attrs and NDA_LLADDR in attrs:
                out[socket.inet_ntoa(attrs[NDA_DST])] = _mac_text(attrs[NDA_LLADDR])
        return out

    def set_neighbour(self, link: int, address: str, mac: str) -> None:
        body = (_NDMSG.pack(socket.AF_INET, link, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, socket.inet_aton(address))
                + _attr(NDA_LLADDR, _mac(mac)))
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"set neighbour {address}")

    def delete_neighbour(self, link: int, address: str) -> None:
        body = _NDMSG.pack(socket.AF_INET, link, 0, 0, 0) + _attr(NDA_DST, socket.inet_aton(address))
        self.request(RTM_DELNEIGH, 0, body, f"delete neighbour {address}")

    def fdb(self, link: int) -> dict[str, str]:
        """The link's own forwarding entries (`bridge fdb ... self`) with a remote: MAC -> the
        remote's IPv4 address."""
        out = {}
        for header, attrs in self.dump(RTM_GETNEIGH, _NDMSG.pack(socket.AF_BRIDGE, 0, 0, 0, 0), _NDMSG.size,
                                       "list forwarding entries"):
            family, idx, _state, flags, _type = _NDMSG.unpack(header)
            dst = attrs.get(NDA_DST, b"")
            if family == socket.AF_BRIDGE and idx == link and flags & NTF_SELF and len(dst) == 4 \
                    and NDA_LLADDR in attrs:
                out[_mac_text(attrs[NDA_LLADDR])] = socket.inet_ntoa(dst)
        return out

    def set_fdb(self, link: int, mac: str, remote: str) -> None:
        body = (_NDMSG.pack(socket.AF_BRIDGE, link, NUD_PERMANENT, NTF_SELF, 0) + _attr(NDA_LLADDR, _mac(mac))
                + _attr(NDA_DST, socket.inet_aton(remote)))
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"set forwarding entry {mac}")

    def delete_fdb(self, link: int, mac: str, remote: str) -> None:
        body = (_NDMSG.pack(socket.AF_BRIDGE, link, 0, NTF_SELF, 0) + _attr(NDA_LLADDR, _mac(mac))
                + _attr(NDA_DST, socket.inet_aton(remote)))
        self.request(RTM_DELNEIGH, 0, body, f"delete forwarding entry {mac}")

    def set_alias(self, link: int, alias: str) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, link, 0, 0) + _attr(IFLA_IFALIAS, alias.encode()),
                     f"set alias of link {link}")

    def set_address(self, link: int, mac: str) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, link, 0, 0) + _attr(IFLA_ADDRESS, _mac(mac)),
                     f"set address of link {link}")

    def set_up(self, link: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, link, IFF_UP, IFF_UP), f"set link {link} up")

    def delete(self, name: str) -> bool:
        """Delete a link by name; False when there is none."""
        try:
            self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name)),
                         f"delete link {name}")
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                return False
            raise
        return True

    # ---- addresses and routes -----------------------------------------------------------------
    def add_address(self, link: int, address: str, prefixlen: int) -> None:
        packed = socket.inet_aton(address)
        body = (_IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, link)
                + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {address}/{prefixlen}")

    def delete_address(self, link: int, address: str, prefixlen: int) -> None:
        packed = socket.inet_aton(address)
        body = (_IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, link)
                + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))
        self.request(RTM_DELADDR, 0, body, f"delete address {address}/{prefixlen}")

    def addresses(self, link: int) -> list[tuple[str, int]]:
        """The IPv4 addresses of a link: (address, prefix length)."""
        out = []
        for header, attrs in self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0), _IFADDR.size,
                                       "list addresses"):
            family, prefixlen, _flags, _scope, index = _IFADDR.unpack(header)
            address = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if family == socket.AF_INET and index == link and address:
                out.append((socket.inet_ntoa(address), prefixlen))
        return out

    def routes(self) -> list[tuple[str, int, int]]:
        """The main table's IPv4 routes with a destination: (destination, prefix length, output
        link index or 0)."""
        out = []
        for fields, attrs, table in self._ipv4_routes():
            if table != RT_TABLE_MAIN or RTA_DST not in attrs:
                continue
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
            out.append((socket.inet_ntoa(attrs[RTA_DST]), fields[1], oif))
        return out

    def _ipv4_routes(self) -> Iterator[tuple[tuple[int, ...], dict[int, bytes], int]]:
        """Every IPv4 route of every table: (rtmsg fields, attributes, table), the table from
        RTA_TABLE where the kernel gives one (tables past 255 fit only there)."""
        for header, attrs in self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0),
                                       _RTMSG.size, "list routes"):
            fields = _RTMSG.unpack(header)
            if fields[0] != socket.AF_INET:
                continue
            table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else fields[4]
            yield fields, attrs, table

    def add_default_route(self, gateway: str, link: int) -> None:
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _attr(RTA_OIF, _u32(link)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")

    # ---- policy routing (the routing mesh's rules and their tables, network/mesh.py) -----------
    def _table_routes(self, table: int) -> list[bytes]:
        """The delete requests' bodies for every IPv4 route of `table`."""
        out = []
        for fields, attrs, tb in self._ipv4_routes():
            if tb != table:
                continue
            family, dst_len, src_len, tos, _tb, proto, scope, kind, _flags = fields
            body = _RTMSG.pack(family, dst_len, src_len, tos, table if table < 256 else 0, proto, scope, kind, 0)
            body += _attr(RTA_TABLE, _u32(table))
            for key in (RTA_DST, RTA_GATEWAY, RTA_OIF):
                if key in attrs:
                    body += _attr(key, attrs[key])
            out.append(body)
        return out

    def flush_table(self, table: int) -> None:
        """`ip route flush table TABLE`."""
        for body in self._table_routes(table):
            try:
                self.request(RTM_DELROUTE, 0, body, f"delete route of table {table}")
            except OSError as exc:
                if exc.errno != 3:  # ESRCH: gone meanwhile
                    raise

    def replace_default_route(self, gateway: str, link: int, table: int) -> None:
        """`ip route replace default via GATEWAY dev LINK onlink table TABLE`."""
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, table if table < 256 else 0, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                            RTN_UNICAST, RTNH_F_ONLINK)
                + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _attr(RTA_OIF, _u32(link))
                + _attr(RTA_TABLE, _u32(table)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"default route via {gateway} in table {table}")

    @staticmethod
    def _rule(priority: int, mark: int, iif: str, table: int) -> bytes:
        return (_FIBRULE.pack(socket.AF_INET, 0, 0, 0, table if table < 256 else 0, 0, 0, FR_ACT_TO_TBL, 0)
                + _attr(FRA_PRIORITY, _u32(priority)) + _attr(FRA_FWMARK, _u32(mark))
                + _attr(FRA_IIFNAME, _name(iif)) + _attr(FRA_TABLE, _u32(table)))

    def rules(self, priority: int) -> list[tuple[int, str, int]]:
        """The IPv4 rules of this priority: (fwmark, incoming interface, table)."""
        out = []
        for header, attrs in self.dump(RTM_GETRULE, _FIBRULE.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0),
                                       _FIBRULE.size, "list rules"):
            family, _dst, _src, _tos, table, _r1, _r2, _action, _flags = _FIBRULE.unpack(header)
            prio = struct.unpack("=I", attrs[FRA_PRIORITY])[0] if FRA_PRIORITY in attrs else 0
            if family != socket.AF_INET or prio != priority:
                continue
            if FRA_TABLE in attrs:
                table = struct.unpack("=I", attrs[FRA_TABLE])[0]
            mark = struct.unpack("=I", attrs[FRA_FWMARK])[0] if FRA_FWMARK in attrs else 0
            out.append((mark, attrs.get(FRA_IIFNAME, b"").rstrip(b"\0").decode(), table))
        return out

    def add_rule(self, priority: int, mark: int, iif: str, table: int) -> None:
        """`ip rule add priority P fwmark MARK iif IIF table TABLE`."""
        self.request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, self._rule(priority, mark, iif, table),
                     f"add rule fwmark {mark:#x} iif {iif}")

    def delete_rule(self, priority: int, mark: int, iif: str, table: int) -> None:
        self.request(RTM_DELRULE, 0, self._rule(priority, mark, iif, table), f"delete rule fwmark {mark:#x} iif {iif}")
