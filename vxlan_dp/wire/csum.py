"""Inner L4 checksums a kernel peer left partial: recognise and complete (csrc/csum.c in C).

A Linux sender builds TCP and UDP packets as CHECKSUM_PARTIAL: the checksum field holds the
folded pseudo-header sum (__tcp_v4_send_check, udp4_hwcsum, __tcp_v6_send_check) and the
device is to finish it. Through the kernel's vxlan device and a virtual link with TX checksum
offload (veth, virtio-net, many virtual switches) nobody does, and the receiving kernel trusts
such skbs: our UDP socket hands us the inner frame as it was built. Written to a TAP as it is,
its stack drops every TCP segment as corrupt and TCP from that peer hangs (flannel #1279,
Calico #3145: the "ethtool -K ... tx off" workaround).

`complete_partial(frame)` returns the completed frame, or None when the frame is left alone.
It completes exactly the frames that are
- Ethernet (up to two 802.1Q / 802.1ad tags), then IPv4 (options allowed; not a fragment, the
  total length within the frame) or IPv6 (payload length non-zero and within the frame, after
  any hop-by-hop, destination-options and routing headers; a routing header with segments
  left puts the pseudo-header's destination elsewhere, RFC 8200 sec. 8.1: left alone);
- TCP (at least 20 bytes), or UDP (at least 8, its length field equal to the IP payload's,
  checksum not 0: RFC 768's "no checksum");
- whose checksum field equals the folded pseudo-header sum over the IP-given L4 length,
  while the full checksum does not verify.
The field then becomes the complement of the sum from the L4 header to the IP payload's end
(skb_checksum_help; bytes past it, Ethernet padding, are not summed); a UDP result of 0 is
stored as 0xFFFF. Anything else, a checksum wrong in any other way included, is left exactly
as it came: the receiving stack judges it. Pure: bytes in, bytes (or None) out.
"""

from __future__ import annotations

from .offload import F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6, VnetHdr, _add, _be16, _fold, _pseudo, _put16

__all__ = ["complete_partial", "super_frame", "super_partial"]

_TCP, _UDP = 6, 17
_VLAN_TYPES = (0x8100, 0x88A8)
_IPV6_SKIP = (0, 43, 60)        # hop-by-hop, routing, destination options


def complete_partial(frame: bytes) -> bytes | None:
    n = len(frame)
    if n < 14:
        return None
    l3, et = 14, _be16(frame, 12)
    for _ in range(2):
        if et not in _VLAN_TYPES:
            break
        if n < l3 + 4:
            return None
        et = _be16(frame, l3 + 2)
        l3 += 4
    if et == 0x0800:
        if n < l3 + 20 or frame[l3] >> 4 != 4:
            return None
        ihl, total = (frame[l3] & 0x0F) * 4, _be16(frame, l3 + 2)
        if ihl < 20 or total < ihl or n < l3 + total or _be16(frame, l3 + 6) & 0x3FFF:
            return None
        version, proto, l4, end = 4, frame[l3 + 9], l3 + ihl, l3 + total
        src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
    elif et == 0x86DD:
        if n < l3 + 40 or frame[l3] >> 4 != 6:
            return None
        plen = _be16(frame, l3 + 4)
        if plen == 0 or n < l3 + 40 + plen:
            return None
        version, proto, l4, end = 6, frame[l3 + 6], l3 + 40, l3 + 40 + plen
        src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
        while proto in _IPV6_SKIP:
            if end < l4 + 8 or (proto == 43 and frame[l4 + 3]):
                return None
            proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
            if l4 > end:
                return None
    else:
        return None
    l4len = end - l4
    if proto == _TCP and l4len >= 20:
        at = l4 + 16
    elif proto == _UDP and l4len >= 8 and _be16(frame, l4 + 4) == l4len:
        at = l4 + 6
        if _be16(frame, at) == 0:
            return None
    else:
        return None
    part = _fold(_pseudo(version, src, dst, proto, l4len))
    if _be16(frame, at) != part:
        return None
    d = _fold(frame[l4:end])
    if _add(part, d) == 0xFFFF:
        return None             # a full checksum that happens to equal the partial value
    c = ~d & 0xFFFF
    if proto == _UDP and c == 0:
        c = 0xFFFF
    out = bytearray(frame)
    _put16(out, at, c)
    return bytes(out)


# --- super-frames: a peer's TSO packet, not segmented on a virtual link ---------------------

def super_frame(frame: bytes, mtu: int) -> tuple[VnetHdr, int] | None:
    """The TSO header (as a TSO TAP read would carry it) and segment count of a TCP
    super-frame too big for `mtu`, or None; csrc/csum.c vxdp_super_frame has the rules.

    The same virtual links pass whole TSO super-frames: a kernel vxlan device on a veth or
    virtio-net with TSO sends one UDP datagram holding a 64 KiB inner TCP segment, and a UDP
    socket takes it as it is. They are written to a TSO TAP as one GSO frame, or split as a
    NIC would at mss = mtu - IP header - TCP header. TCP only: a UDP super-frame's datagram
    boundaries are not in it, so it stays too big."""
    n = len(frame)
    if n < 14:
        return None
    l3, et = 14, _be16(frame, 12)
    if et == 0x8100:
        if n < 18:
            return None
        l3, et = 18, _be16(frame, 16)
    if et == 0x0800:
        if n < l3 + 20 or frame[l3] >> 4 != 4:
            return None
        ihl = (frame[l3] & 0x0F) * 4
        if ihl < 20 or _be16(frame, l3 + 2) != n - l3 or _be16(frame, l3 + 6) & 0x3FFF \
                or frame[l3 + 9] != _TCP:
            return None
        l4, gso = l3 + ihl, GSO_TCPV4
    elif et == 0x86DD:
        if n < l3 + 40 or frame[l3] >> 4 != 6 or _be16(frame, l3 + 4) != n - l3 - 40 \
                or frame[l3 + 6] != _TCP:
            return None
        l4, gso = l3 + 40, GSO_TCPV6
    else:
        return None
    if n < l4 + 20:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    if thl < 20 or n < l4 + thl:
        return None
    mss = mtu - (l4 - l3) - thl
    plen = n - l4 - thl
    if mss < 1 or plen <= mss:
        return None
    if frame[l4 + 13] & 0x80:               # CWR: tcp_ecn_send marks SKB_GSO_TCP_ECN
        gso |= GSO_ECN
    return VnetHdr(F_NEEDS_CSUM, gso, l4 + thl, mss, l4, 16), -(-plen // mss)


def super_partial(frame: bytes, hdr: VnetHdr) -> bytes:
    """`frame` with its TCP checksum set to the folded pseudo-header sum over the whole
    segment: what a GSO write to a TAP (CHECKSUM_PARTIAL) wants there."""
    l3 = 18 if frame[12:14] == b"\x81\x00" else 14
    l4 = hdr.csum_start
    v6 = hdr.gso_type & ~GSO_ECN == GSO_TCPV6
    src, dst = (frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]) if v6 else \
        (frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20])
    out = bytearray(frame)
    _put16(out, l4 + hdr.csum_offset, _fold(_pseudo(6 if v6 else 4, src, dst, _TCP, len(frame) - l4)))
    return bytes(out)
