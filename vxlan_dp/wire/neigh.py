"""ARP (RFC 826) and IPv6 Neighbor Discovery (RFC 4861) as neighbour suppression sees them.

Pure functions over one untagged Ethernet frame; csrc/neigh.c makes the same decisions byte
for byte (tests/unit/test_neigh.py checks both against Scapy and each other).

`parse` accepts only what a host would accept (anything else is None, and the frame is
forwarded as it would be without suppression):
- ARP: Ethernet type 0x0806, at least 42 bytes, hardware type 1 (Ethernet), protocol 0x0800,
  lengths 6 and 4, operation 1 (request) or 2 (reply), a unicast sender hardware address;
- ND: Ethernet type 0x86DD, IPv6 with next header 58 (no extension headers), hop limit 255
  (RFC 4861 sec. 7.1.1 / 7.1.2: anything else was forwarded by a router and is invalid), the
  payload inside the frame, ICMPv6 type 135 (NS) or 136 (NA), code 0, at least 24 bytes, a
  valid ICMPv6 checksum, a unicast target, and options none of which has length 0.

Who may be answered (`is_request`): a request that would be flooded (group destination MAC)
for another host's address. Never answered, so they still reach every host:
- gratuitous ARP (sender IP == target IP) and ARP probes (sender IP 0.0.0.0, RFC 5227 sec. 2.1);
- duplicate-address detection: an NS from the unspecified address (RFC 4862 sec. 5.4.2).

What teaches the table when snooping (`announcement`): an ARP reply or a gratuitous ARP with
a non-zero sender IP (sender IP -> sender MAC); an NA with a Target Link-Layer Address option
(target -> that option's MAC).

Answers (`arp_reply`, `neighbor_advert`) are what the owner of the address would send: an ARP
reply to the requester's hardware address; an NA from the target address to the NS source
with S=1 and O=1 (RFC 4861 sec. 7.2.4: O is cleared by a proxy answering with its own
link-layer address; we answer with the owner's own, so the owner's flags apply) and a Target
Link-Layer Address option, hop limit 255.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .ethernet import ETH_P_ARP, ETH_P_IPV6, is_multicast
from .ip import internet_checksum

__all__ = ["ARP_REQUEST", "ARP_REPLY", "ND_NS", "ND_NA", "NeighMsg", "parse", "is_request",
           "announcement", "arp_reply", "neighbor_advert", "icmp6_checksum"]

ARP_REQUEST, ARP_REPLY, ND_NS, ND_NA = 1, 2, 135, 136
IPPROTO_ICMPV6 = 58
ARP_LEN = 42                    # Ethernet 14 + ARP for IPv4 over Ethernet 28
ND_MIN = 14 + 40 + 24           # Ethernet + IPv6 + NS/NA without options
_ND_SLLA, _ND_TLLA = 1, 2       # option types, RFC 4861 sec. 4.6.1
_NA_S, _NA_O = 0x40, 0x20
_ZERO4, _ZERO16 = bytes(4), bytes(16)


class NeighMsg(NamedTuple):
    kind: int                   # ARP_REQUEST | ARP_REPLY | ND_NS | ND_NA
    sender_mac: bytes           # ARP sha; ND: the Ethernet source
    sender_ip: bytes            # ARP spa; ND: the IPv6 source
    target_ip: bytes            # ARP tpa; ND: the target address
    lladdr: bytes | None        # ND: the SLLA (NS) or TLLA (NA) option's address, if any


def icmp6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """ICMPv6 checksum over the IPv6 pseudo-header (RFC 4443 sec. 2.3, RFC 8200 sec. 8.1)."""
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + icmp)


def parse(frame: bytes) -> NeighMsg | None:
    if len(frame) < 14:
        return None
    etype = frame[12] << 8 | frame[13]
    if etype == ETH_P_ARP:
        return _parse_arp(frame)
    if etype == ETH_P_IPV6:
        return _parse_nd(frame)
    return None


def _parse_arp(f: bytes) -> NeighMsg | None:
    if len(f) < ARP_LEN or f[14:20] != b"\x00\x01\x08\x00\x06\x04" or f[20] != 0:
        return None
    op = f[21]
    sha = f[22:28]
    if op not in (ARP_REQUEST, ARP_REPLY) or is_multicast(sha):
        return None
    return NeighMsg(op, sha, f[28:32], f[38:42], None)


def _parse_nd(f: bytes) -> NeighMsg | None:
    if len(f) < ND_MIN or f[14] >> 4 != 6 or f[20] != IPPROTO_ICMPV6 or f[21] != 255:
        return None
    plen = f[18] << 8 | f[19]
    if plen < 24 or 54 + plen > len(f):
        return None
    icmp = f[54:54 + plen]
    kind = icmp[0]
    if kind not in (ND_NS, ND_NA) or icmp[1] != 0:
        return None
    src, dst = f[22:38], f[38:54]
    if icmp6_checksum(src, dst, icmp) != 0:
        return None
    target = icmp[8:24]
    if target[0] == 0xFF:
        return None
    want = _ND_SLLA if kind == ND_NS else _ND_TLLA
    lladdr = None
    at = 24
    while at < plen:
        if at + 2 > plen or icmp[at + 1] == 0:
            return None         # RFC 4861 sec. 4.6: an option of length 0 voids the message
        olen = icmp[at + 1] * 8
        if at + olen > plen:
            return None
        if icmp[at] == want and olen >= 8 and lladdr is None:
            lladdr = icmp[at + 2:at + 8]
        at += olen
    return NeighMsg(kind, f[6:12], src, target, lladdr)


def is_request(frame: bytes, m: NeighMsg) -> bool:
    """A request suppression may answer: flooded (group destination), not DAD, not gratuitous."""
    if not is_multicast(frame[:6]):
        return False
    if m.kind == ARP_REQUEST:
        return m.sender_ip != _ZERO4 and m.sender_ip != m.target_ip
    return m.kind == ND_NS and m.sender_ip != _ZERO16


def announcement(m: NeighMsg) -> tuple[bytes, bytes] | None:
    """(ip, mac) a snooping table learns from this message, if any."""
    if m.kind in (ARP_REQUEST, ARP_REPLY):
        if m.sender_ip == _ZERO4 or (m.kind == ARP_REQUEST and m.sender_ip != m.target_ip):
            return None
        return m.sender_ip, m.sender_mac
    if m.kind == ND_NA and m.lladdr is not None and not is_multicast(m.lladdr):
        return m.target_ip, m.lladdr
    return None


def arp_reply(m: NeighMsg, mac: bytes) -> bytes:
    """The ARP reply the owner of m.target_ip (at `mac`) sends to the requester."""
    return (m.sender_mac + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x02"
            + mac + m.target_ip + m.sender_mac + m.sender_ip)


def neighbor_advert(m: NeighMsg, mac: bytes) -> bytes:
    """The solicited NA the owner of m.target_ip (at `mac`) sends to the soliciting node."""
    icmp = bytearray(struct.pack("!BBHB3x16sBB6s", ND_NA, 0, 0, _NA_S | _NA_O, m.target_ip,
                                 _ND_TLLA, 1, mac))
    struct.pack_into("!H", icmp, 2, icmp6_checksum(m.target_ip, m.sender_ip, bytes(icmp)))
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), IPPROTO_ICMPV6, 255, m.target_ip, m.sender_ip)
    return m.sender_mac + mac + b"\x86\xdd" + ip6 + bytes(icmp)
