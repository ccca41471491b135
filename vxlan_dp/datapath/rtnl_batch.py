"""Many link requests to the kernel at once: encoded by pyroute2, sent pipelined on one socket.

pyroute2's request API waits for each answer before the next request goes, and spends most of
a request's time in its own machinery (an asyncio loop per call); for 1,000 networks that is
thousands of round trips one after another. Here each request is one pyroute2 `ifinfmsg`,
encoded once; up to CHUNK of them go to the kernel in one send() and their acks are read back
by sequence number (each message asks for one: NLM_F_ACK). The kernel handles every message
of a send in order and answers each, a failed one included (netlink_rcv_skb,
net/netlink/af_netlink.c), so one bad request fails alone. CHUNK keeps the acks of one send
inside the socket's default receive buffer.

Invariants: `run` returns one errno per request, in order (0 = done), and never raises for a
request the kernel refused; a socket-level failure raises OSError. Synchronous, no event loop:
call it where pyroute2 calls go (datapath/netlink.py).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ..linux import IFF_UP

__all__ = ["LinkRequest", "LinkInfo", "run", "new_bridge", "set_link", "delete_link", "delete_group",
           "operstates", "links", "IF_OPER_UP"]

CHUNK = 64                  # requests per send(); their acks fit the default receive buffer
GET_CHUNK = 16              # link queries per send(); their answers (a few KiB each) fit it too
_HDR = struct.Struct("=IHHII")      # struct nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")     # struct ifinfomsg: family, type, index, flags, change
_RTA = struct.Struct("=HH")         # struct rtattr: len, type
IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE = 3, 10, 16      # include/uapi/linux/if_link.h
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_INFO_KIND, IFLA_INFO_DATA = 18, 20, 27, 1, 2
IFLA_TUN_MULTI_QUEUE = 7
NLMSG_DONE = 3
IF_OPER_UP = 6                      # RFC 2863 operstate "up" (include/uapi/linux/if.h)
RTEXT_FILTER_SKIP_STATS = 1 << 3    # include/uapi/linux/rtnetlink.h: answers without counters


@dataclass(frozen=True)
class LinkRequest:
    """One RTM_NEWLINK / RTM_DELLINK: `attrs` as pyroute2 names them (IFLA_*)."""
    kind: int                           # RTM_NEWLINK or RTM_DELLINK
    index: int = 0
    attrs: tuple[tuple[str, Any], ...] = ()
    flags: int = 0                      # NLM_F_* beyond REQUEST | ACK
    up: bool | None = None              # ifi_flags IFF_UP set (True) or cleared (False)


def new_bridge(name: str) -> LinkRequest:
    return LinkRequest(RTM_NEWLINK, attrs=(("IFLA_IFNAME", name),
                                           ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})),
                       flags=NLM_F_CREATE | NLM_F_EXCL)


def set_link(index: int, *, up: bool | None = None, **attrs: Any) -> LinkRequest:
    """do_setlink: `mtu=`, `master=`, `ifalias=`, `group=` (IFLA_ names in lower case)."""
    return LinkRequest(RTM_NEWLINK, index, tuple((f"IFLA_{k.upper()}", v) for k, v in attrs.items()), up=up)


def delete_link(index: int) -> LinkRequest:
    return LinkRequest(RTM_DELLINK, index)


def delete_group(group: int) -> LinkRequest:
    """Every link of `group`, in one unregister batch (rtnl_group_dellink ->
    unregister_netdevice_many, net/core/rtnetlink.c): the RCU grace periods that one deletion
    after another each wait for are waited for once."""
    return LinkRequest(RTM_DELLINK, 0, (("IFLA_GROUP", group),))


def _messages(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, start, end) of each netlink message in one datagram."""
    off = 0
    while off + _HDR.size <= len(buf):
        length, kind, _, seq, _ = _HDR.unpack_from(buf, off)
        yield kind, seq, off, off + length
        off += max(length, _HDR.size) + 3 & ~3


def _encode(req: LinkRequest, seq: int) -> bytes:
    m = ifinfmsg()
    m["header"]["type"] = req.kind
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | req.flags
    m["header"]["sequence_number"] = seq
    m["index"] = req.index
    if req.up is not None:
        m["flags"] = IFF_UP if req.up else 0
        m["change"] = IFF_UP
    m["attrs"] = list(req.attrs)
    m.encode()
    return bytes(m.data)


def run(requests: Sequence[LinkRequest], sock: socket.socket | None = None) -> list[int]:
    """Send every request, CHUNK per send(), and return each one's errno (0: done), in order."""
    own = sock is None
    s = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        if own:
            s.bind((0, 0))
        out = [0] * len(requests)
        for start in range(0, len(requests), CHUNK):
            chunk = range(start, min(start + CHUNK, len(requests)))
            s.send(b"".join(_encode(requests[i], i + 1) for i in chunk))
            pending = set(chunk)
            while pending:
                buf = s.recv(1 << 16)
                for kind, seq, off, _ in _messages(buf):
                    if kind == NLMSG_ERROR and seq - 1 in pending:
                        (err,) = struct.unpack_from("=i", buf, off + _HDR.size)
                        out[seq - 1] = -err
                        pending.discard(seq - 1)
        return out
    finally:
        if own:
            s.close()


def _get_link(index: int) -> bytes:
    m = ifinfmsg()
    m["header"]["type"] = RTM_GETLINK
    m["header"]["flags"] = NLM_F_REQUEST
    m["header"]["sequence_number"] = index
    m["index"] = index
    m["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    m.encode()
    return bytes(m.data)


def operstates(indexes: Sequence[int], sock: socket.socket, cache: dict[int, bytes]) -> dict[int, int]:
    """RFC 2863 operstate (IF_OPER_*) of each link, asked GET_CHUNK at a time on `sock` (bound);
    a link that is gone is left out. `cache` keeps each encoded query for the next look.
    Only IFLA_OPERSTATE is read from each answer: walking its attributes costs far less than
    decoding the whole message, for a wait that looks at 1,000 links many times a second."""
    out: dict[int, int] = {}
    todo = list(indexes)
    for start in range(0, len(todo), GET_CHUNK):
        chunk = todo[start:start + GET_CHUNK]
        sock.send(b"".join(cache.get(i) or cache.setdefault(i, _get_link(i)) for i in chunk))
        pending = set(chunk)
        while pending:
            buf = sock.recv(1 << 18)
            for kind, seq, off, end in _messages(buf):
                if kind == NLMSG_ERROR:
                    pending.discard(seq)
                elif kind == RTM_NEWLINK and seq in pending:
                    pending.discard(seq)
                    span = _attrs(buf, off + _HDR.size + _IFI.size, end).get(IFLA_OPERSTATE)
                    if span is not None:
                        out[seq] = buf[span[0]]
    return out


@dataclass(frozen=True)
class LinkInfo:
    index: int
    kind: str | None                    # IFLA_INFO_KIND: "tun", "bridge", ...
    alias: str | None                   # IFLA_IFALIAS
    master: int | None                  # IFLA_MASTER: the bridge it is a port of
    group: int                          # IFLA_GROUP
    multi_queue: bool = False           # a TAP's IFLA_TUN_MULTI_QUEUE


def _attrs(buf: bytes, a: int, end: int) -> dict[int, tuple[int, int]]:
    """rtattr type -> (start, end) of its payload, from `a` to `end`."""
    out: dict[int, tuple[int, int]] = {}
    while a + _RTA.size <= end:
        alen, atype = _RTA.unpack_from(buf, a)
        if alen < _RTA.size:
            break
        out[atype & 0x3FFF] = (a + _RTA.size, a + alen)     # without NLA_F_NESTED / BYTEORDER
        a += alen + 3 & ~3
    return out


def _text(buf: bytes, span: tuple[int, int] | None) -> str | None:
    return None if span is None else buf[span[0]:span[1]].split(b"\0", 1)[0].decode(errors="replace")


def links() -> dict[str, LinkInfo]:
    """Every link of this network namespace by name, from one dump, reading only the
    attributes asked for (a full pyroute2 decode of 2,000 links took seconds of CPU)."""
    m = ifinfmsg()
    m["header"]["type"] = RTM_GETLINK
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    m["header"]["sequence_number"] = 1
    m["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    m.encode()
    out: dict[str, LinkInfo] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.send(bytes(m.data))
        while True:
            buf = s.recv(1 << 18)
            for kind, _, off, end in _messages(buf):
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", buf, off + _HDR.size)
                    raise OSError(-err, os.strerror(-err))
                if kind == RTM_NEWLINK:
                    (index,) = struct.unpack_from("=i", buf, off + _HDR.size + 4)
                    at = _attrs(buf, off + _HDR.size + _IFI.size, end)
                    name = _text(buf, at.get(IFLA_IFNAME))
                    info = _attrs(buf, *at[IFLA_LINKINFO]) if IFLA_LINKINFO in at else {}
                    link_kind = _text(buf, info.get(IFLA_INFO_KIND))
                    data = _attrs(buf, *info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {}
                    mq = IFLA_TUN_MULTI_QUEUE in data and buf[data[IFLA_TUN_MULTI_QUEUE][0]] != 0
                    master = struct.unpack_from("=I", buf, at[IFLA_MASTER][0])[0] if IFLA_MASTER in at else None
                    group = struct.unpack_from("=I", buf, at[IFLA_GROUP][0])[0] if IFLA_GROUP in at else 0
                    if name is not None:
                        out[name] = LinkInfo(index, link_kind, _text(buf, at.get(IFLA_IFALIAS)), master, group,
                                             link_kind == "tun" and mq)
