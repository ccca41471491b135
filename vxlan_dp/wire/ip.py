"""Outer IPv4/IPv6 and UDP headers, built whole so the egress raw socket sends them as they are.

IPv4 (RFC 791): no options, DF clear (like the kernel's vxlan `df unset`), TTL 64; the kernel
fills a zero Identification on IP_HDRINCL sockets and rewrites the checksum, but we compute it
so the bytes are correct on their own. UDP over IPv4 may carry checksum 0 (RFC 7348 sec. 5,
RFC 768); over IPv6 the checksum is mandatory (RFC 8200 sec. 8.1) and computed here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import WireError

__all__ = [
    "IPV4_HLEN", "IPV6_HLEN", "UDP_HLEN", "IPPROTO_UDP", "IPPROTO_GRE",
    "internet_checksum", "encode_ipv4", "encode_ipv6", "encode_udp", "udp6_checksum",
    "Ipv4Header", "decode_ipv4",
]

IPV4_HLEN = 20
IPV6_HLEN = 40
UDP_HLEN = 8
IPPROTO_UDP = 17
IPPROTO_GRE = 47

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 one's-complement sum, returned complemented and folded to 16 bits."""
    if len(data) % 2:
        data += b"\x00"
    s = initial + _sum16(data)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def encode_ipv4(src: bytes, dst: bytes, proto: int, payload_len: int, *,
                ttl: int = 64, tos: int = 0, ident: int = 0) -> bytes:
    total = IPV4_HLEN + payload_len
    hdr = _IPV4.pack(0x45, tos, total, ident, 0, ttl, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]


def encode_ipv6(src: bytes, dst: bytes, next_header: int, payload_len: int, *,
                hop_limit: int = 64, flow_label: int = 0) -> bytes:
    return _IPV6.pack((6 << 28) | (flow_label & 0xFFFFF), payload_len, next_header, hop_limit, src, dst)


def encode_udp(sport: int, dport: int, payload_len: int, checksum: int = 0) -> bytes:
    return _UDP.pack(sport, dport, UDP_HLEN + payload_len, checksum)


def udp6_checksum(src: bytes, dst: bytes, udp_header: bytes, payload: bytes) -> int:
    """UDP checksum over the IPv6 pseudo-header (RFC 8200 sec. 8.1); 0 is sent as 0xffff."""
    length = len(udp_header) + len(payload)
    pseudo = src + dst + struct.pack("!IxxxB", length, IPPROTO_UDP)
    c = internet_checksum(pseudo + udp_header[:6] + b"\x00\x00" + payload)
    return c or 0xFFFF


class Ipv4Header(NamedTuple):
    header_len: int
    total_len: int
    proto: int
    src: bytes
    dst: bytes


def decode_ipv4(buf: bytes) -> Ipv4Header:
    """The IPv4 header a raw IPv4 socket hands us in front of the payload."""
    if len(buf) < IPV4_HLEN:
        raise WireError("malformed", "shorter than an IPv4 header")
    vihl, _tos, total, _id, _frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(buf)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < IPV4_HLEN or len(buf) < ihl:
        raise WireError("malformed", "bad IPv4 header length")
    return Ipv4Header(ihl, total, proto, src, dst)
