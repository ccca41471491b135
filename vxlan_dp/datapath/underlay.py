"""Underlay sockets and facts: receive endpoints, egress raw sockets, underlay MTU.

Outer UDP checksums: received ones are the kernel's to judge (it drops what does not verify);
IPv4 ones may be zero; over IPv6 a vxlan socket accepts zero too (RFC 7348 sec. 5), GRE-in-UDP
does not. What we send verifies anywhere: computed over IPv6, zero or correct over IPv4.

Receive: one UDP socket per (local, port) for vxlan / gre-udp, with UDP_GRO when offloads are
on; one raw IPPROTO_GRE socket per local address for gre (IPv4 raw sockets deliver the IP
header too). Egress: one IPPROTO_RAW socket per address family (IP_HDRINCL), so every packet
carries the outer header we built, with its per-flow UDP source port (split super-frames may
leave through the Dataplane's own UDP_SEGMENT sockets instead: csrc/gsosock.c). All sockets are non-blocking, with IP_FREEBIND so a daemon
starts, and keeps its sockets, while the underlay address is absent (it may come back).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from pyroute2 import IPRoute

from ..linux import (IP_FREEBIND, IPPROTO_GRE, IPV6_FREEBIND, SO_RCVBUFFORCE, SO_SNDBUFFORCE, SOL_UDP, UDP_GRO,
                     UDP_NO_CHECK6_RX)
from .netlink import netlink_call

__all__ = ["open_endpoint", "open_endpoints", "open_tx_socket", "underlay_mtu", "gro_enabled", "UnderlayError"]

log = logging.getLogger(__name__)

_BUF = 8 << 20



class UnderlayError(RuntimeError):
    pass


def _family(local: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET


def _bufsize(sock: socket.socket, rcv: bool) -> None:
    opt, fallback = (SO_RCVBUFFORCE, socket.SO_RCVBUF) if rcv else (SO_SNDBUFFORCE, socket.SO_SNDBUF)
    try:
        sock.setsockopt(socket.SOL_SOCKET, opt, _BUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, fallback, _BUF)


def open_endpoints(kind: str, local: str, port: int, n: int, *, gro: bool = False) -> list[socket.socket]:
    """`n` receive sockets on one (local, port), one per queue: with n > 1 each has SO_REUSEPORT,
    and the kernel hands each datagram to one of them by a hash of its addresses and ports
    (net/ipv4/udp.c, reuseport_select_sock), so every flow stays on one queue, in order.
    Only for UDP kinds: a raw GRE socket gets a copy of every packet, never a share."""
    if n > 1 and kind == "gre":
        raise ValueError("a raw GRE endpoint has one socket")
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(open_endpoint(kind, local, port, gro=gro, reuseport=n > 1))
    except Exception:
        for s in socks:
            s.close()
        raise
    return socks


def open_endpoint(kind: str, local: str, port: int, *, gro: bool = False,
                  reuseport: bool = False) -> socket.socket:
    """The receive socket; with `gro` (UDP kinds) UDP_GRO is asked for: `gro_enabled(sock)`
    says whether the kernel took it (the Dataplane must then be told to split what it returns)."""
    fam = _family(local)
    if kind == "gre":
        sock = socket.socket(fam, socket.SOCK_RAW, IPPROTO_GRE)
    else:
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        if fam == socket.AF_INET6:
            if kind != "gre":  # raw sockets refuse IPV6_V6ONLY with EINVAL
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == "vxlan":
                # RFC 7348 sec. 5: a zero UDP checksum MUST be accepted, over IPv6 too (a kernel
                # peer with udp6zerocsumtx sends them); the kernel's UDPv6 drops them unless
                # told (udp(7) UDP_NO_CHECK6_RX, what the kernel vxlan's udp6zerocsumrx sets).
                # GRE-in-UDP keeps the RFC 6935/8086 default: a zero checksum is dropped.
                sock.setsockopt(SOL_UDP, UDP_NO_CHECK6_RX, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        _bufsize(sock, rcv=True)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((local, 0 if kind == "gre" else port))
        if gro and kind != "gre":
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            except OSError as e:
                log.info("UDP_GRO refused on %s:%d (%s); receiving datagram by datagram", local, port,
                         e.strerror or e)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        what = f"{kind} {local}" if kind == "gre" else f"{kind} {local}:{port}"
        raise UnderlayError(f"cannot open the {what} socket: {e.strerror or e}") from e
    return sock


def gro_enabled(sock: socket.socket) -> bool:
    """True if UDP_GRO is on for `sock` (udp(7): getsockopt reports it)."""
    if sock.type != socket.SOCK_DGRAM:
        return False
    try:
        return bool(sock.getsockopt(SOL_UDP, UDP_GRO))
    except OSError:
        return False


def open_tx_socket(version: int) -> socket.socket:
    fam = socket.AF_INET6 if version == 6 else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
    _bufsize(sock, rcv=False)
    sock.setblocking(False)
    return sock


@netlink_call
def underlay_mtu(local: str) -> int | None:
    """MTU of the interface that holds `local`, or None when no interface has it (yet)."""
    with IPRoute() as ipr:
        addrs = ipr.get_addr(address=ipaddress.ip_address(local).compressed)
        if not addrs:
            return None
        link = ipr.get_links(addrs[0]["index"])[0]
        return int(link.get("IFLA_MTU"))
