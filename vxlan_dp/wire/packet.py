"""Whole outer packets: IP + (UDP +) encapsulation header + inner frame, and the reverse.

Egress builds the complete outer IP packet because the data path sends through an IP_HDRINCL
raw socket: that is what lets every flow pick its own UDP source port (RFC 7348 sec. 5) while
one UDP socket per (address, port) receives. Ingress starts from what the receiving socket
returns: the UDP payload for "vxlan"/"gre-udp", and for "gre" the IPv4 header + GRE (IPv4 raw
sockets include the IP header) or GRE alone (IPv6 raw sockets do not).
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import WireError
from .flowhash import flow_hash, source_port
from .gre import GRE_HLEN, decode_gre, encode_gre, nvgre_key
from .ip import (IPPROTO_GRE, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, UDP_HLEN, decode_ipv4,
                 encode_ipv4, encode_ipv6, encode_udp, udp6_checksum)
from .vxlan import VXLAN_HLEN, decode_vxlan, encode_vxlan

__all__ = ["ENCAPS", "encap_overhead", "encapsulate", "Decapsulated", "decapsulate"]

ENCAPS = ("vxlan", "gre", "gre-udp")

_ENCAP_LEN = {"vxlan": UDP_HLEN + VXLAN_HLEN, "gre": GRE_HLEN, "gre-udp": UDP_HLEN + GRE_HLEN}


def encap_overhead(encap: str, ipv6: bool) -> int:
    """Bytes added in front of the inner frame (docs/ARCHITECTURE.md, wire rules: outer IP + encapsulation)."""
    return (IPV6_HLEN if ipv6 else IPV4_HLEN) + _ENCAP_LEN[encap]


def encapsulate(encap: str, src: bytes, dst: bytes, vni: int, frame: bytes, *,
                dport: int = 0, sport_range: tuple[int, int] = (49152, 65535),
                nvgre: bool = False, ident: int = 0, fhash: int | None = None) -> bytes:
    """The outer packet carrying `frame` from underlay `src` to `dst` (4 or 16 packed bytes)."""
    ipv6 = len(src) == 16
    if fhash is None and (encap != "gre" or nvgre):
        fhash = flow_hash(frame)
    fh = fhash or 0  # computed just above wherever it is read: NVGRE's FlowID, the UDP source port
    if encap == "vxlan":
        inner = encode_vxlan(vni) + frame
    else:
        key = nvgre_key(vni, fh & 0xFF) if nvgre else vni
        inner = encode_gre(key) + frame
    if encap == "gre":
        proto, l4 = IPPROTO_GRE, inner
    else:
        proto = IPPROTO_UDP
        udp = encode_udp(source_port(fh, *sport_range), dport, len(inner))
        if ipv6:
            udp = udp[:6] + udp6_checksum(src, dst, udp, inner).to_bytes(2, "big")
        l4 = udp + inner
    if ipv6:
        return encode_ipv6(src, dst, proto, len(l4)) + l4
    return encode_ipv4(src, dst, proto, len(l4), ident=ident) + l4


class Decapsulated(NamedTuple):
    key: int      # VNI (vxlan), GRE key (gre, gre-udp)
    offset: int   # where the inner frame starts in the buffer


def decapsulate(kind: str, buf: bytes, *, ipv4_header: bool = False) -> Decapsulated:
    """Validate the encapsulation at the start of a received payload; raises WireError."""
    if kind == "vxlan":
        return Decapsulated(decode_vxlan(buf).vni, VXLAN_HLEN)
    off = 0
    if ipv4_header:
        ip = decode_ipv4(buf)
        if ip.proto != IPPROTO_GRE:
            raise WireError("malformed", f"IP protocol {ip.proto} on the GRE socket")
        off = ip.header_len
        buf = buf[off:]
    gre = decode_gre(buf)
    return Decapsulated(gre.key, off + gre.header_len)
