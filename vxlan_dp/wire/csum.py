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

from .offload import _add, _be16, _fold, _pseudo, _put16

__all__ = ["complete_partial"]

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
