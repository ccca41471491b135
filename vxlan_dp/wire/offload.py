"""Segmentation and receive offloads over inner frames: the reference for csrc/offload.c.

A TAP opened with IFF_VNET_HDR puts a `struct virtio_net_hdr` (include/uapi/linux/
virtio_net.h, 10 bytes, host byte order: the tun driver's legacy default, which we never
change) in front of every frame it hands us and expects one in front of every frame we
write. Two pure functions work on them:

`split(hdr, frame)`: what a NIC does with a TSO/USO super-frame (the kernel's
tcp_gso_segment / __udp_gso_segment): one wire-ready frame per `gso_size` bytes of payload,
each with its own lengths, IPv4 Identification (+1 per segment) and header checksum, TCP
sequence number, and a complete TCP/UDP checksum. FIN and PSH ride only on the last TCP
segment, CWR only on the first. A frame without GSO but with NEEDS_CSUM (CHECKSUM_PARTIAL:
the stack left the L4 checksum to the "device") gets its checksum filled in. Nothing leaves
with a checksum left undone: the Kubernetes VXLAN checksum-offload bug cost 63 s per
connection exactly because one path trusted an offload that nobody performed.

`coalesce(frames)`: what the kernel's GRO does (tcp_gro_receive, udp_gro_receive): runs of
consecutive in-order segments of one flow become one super-frame written with a GSO header,
which the kernel delivers as one skb. A segment joins only if its checksums verify (a
coalesced frame goes up as CHECKSUM_PARTIAL, which the receiving stack trusts), its headers
match the run's first segment in everything but lengths, checksums, sequence number and PSH,
it is contiguous (TCP sequence, and IPv4 Identification +1 per segment, so that splitting the
run again gives back exactly the segments), and it is no larger than the first. PSH or a shorter segment ends a
run; SYN, FIN, RST, URG, CWR, IPv4 options or fragments, IPv6 extension headers and VLAN tags
never coalesce (they pass through untouched). Any other frame of the same flow ends the
flow's open run, so no flow is ever reordered. Output order: each item at the position of its
first segment; a run never exceeds `COALESCE_MAX_SEGS` segments or `COALESCE_MAX_FRAME` bytes.

Both are pure: bytes in, bytes out, `WireError("malformed")` for what cannot be split.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from .errors import WireError

__all__ = [
    "VNET_HDR_LEN", "F_NEEDS_CSUM", "F_DATA_VALID", "GSO_NONE", "GSO_TCPV4", "GSO_UDP",
    "GSO_TCPV6", "GSO_UDP_L4", "GSO_ECN", "COALESCE_MAX_SEGS", "COALESCE_MAX_FRAME",
    "VnetHdr", "encode_vnet_hdr", "decode_vnet_hdr", "split", "coalesce", "coalesce_runs",
    "l4_checksum_ok",
    "fill_partial_checksum",
]

VNET_HDR_LEN = 10               # sizeof(struct virtio_net_hdr); TUNSETVNETHDRSZ default
F_NEEDS_CSUM = 0x01             # VIRTIO_NET_HDR_F_NEEDS_CSUM: csum_start/offset are set
F_DATA_VALID = 0x02             # VIRTIO_NET_HDR_F_DATA_VALID
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3                     # UFO (fragmentation): never enabled, refused
GSO_TCPV6 = 4
GSO_UDP_L4 = 5                  # USO (Linux 6.2+: TUN_F_USO4 | TUN_F_USO6)
GSO_ECN = 0x80

COALESCE_MAX_SEGS = 64          # the kernel's GRO stops at 64 segments too (MAX_GRO_SKBS)
COALESCE_MAX_FRAME = 65535      # whole Ethernet frame; keeps IPv4 total / IPv6 payload length

_HDR = struct.Struct("=BBHHHH")   # host order: tun's default (TUNSETVNETLE/BE unset)
_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_PSH, _TCP_ACK, _TCP_URG, _TCP_ECE, _TCP_CWR = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17


class VnetHdr(NamedTuple):
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0


def encode_vnet_hdr(h: VnetHdr) -> bytes:
    return _HDR.pack(*h)


def decode_vnet_hdr(buf: bytes) -> VnetHdr:
    if len(buf) < VNET_HDR_LEN:
        raise WireError("malformed", f"{len(buf)} bytes is shorter than a virtio-net header")
    return VnetHdr(*_HDR.unpack_from(buf))


# --- checksums (RFC 1071) ---------------------------------------------------------------

def _fold(data: bytes) -> int:
    """The one's-complement sum of `data` as 16-bit big-endian words, folded (not inverted).

    2**16 = 1 (mod 0xFFFF), so the sum of the words is the whole buffer read as one integer,
    mod 0xFFFF; a non-zero buffer whose sum is a multiple of 0xFFFF folds to 0xFFFF, as the
    end-around carry does (csrc/wire.c vxdp_csum_fold)."""
    if len(data) % 2:
        data += b"\x00"
    r = int.from_bytes(data, "big") % 0xFFFF
    if r == 0 and data.strip(b"\x00"):
        return 0xFFFF
    return r


def _add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def _pseudo(version: int, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if version == 4:                            # RFC 793 sec. 3.1 / RFC 768
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)   # RFC 8200 sec. 8.1


def _l4_csum(version: int, src: bytes, dst: bytes, proto: int, l4: bytes) -> int:
    """The checksum to store in a TCP/UDP header whose checksum field in `l4` is zero."""
    c = ~_add(_fold(_pseudo(version, src, dst, proto, len(l4))), _fold(l4)) & 0xFFFF
    if proto == _IPPROTO_UDP and c == 0:
        c = 0xFFFF                              # RFC 768: 0 means "no checksum"
    return c


def _ip4_csum(hdr: bytes) -> int:
    return ~_fold(hdr) & 0xFFFF


def _be16(b: bytes, off: int) -> int:
    return b[off] << 8 | b[off + 1]


def _put16(b: bytearray, off: int, v: int) -> None:
    b[off] = (v >> 8) & 0xFF
    b[off + 1] = v & 0xFF


# --- header parsing ---------------------------------------------------------------------

@dataclass
class _L4:
    l3: int             # offset of the IP header
    l4: int             # offset of the TCP/UDP header
    version: int
    proto: int
    src: bytes
    dst: bytes
    thl: int = 0        # TCP/UDP header length


def _parse(frame: bytes, *, vlan: bool) -> _L4 | None:
    """IP version, L3/L4 offsets and addresses of an Ethernet frame, or None if not IP.

    IPv6 extension headers are not walked: the next header must be the transport."""
    if len(frame) < 14:
        return None
    l3, et = 14, _be16(frame, 12)
    if et == 0x8100 and vlan:
        if len(frame) < 18:
            return None
        l3, et = 18, _be16(frame, 16)
    if et == 0x0800:
        if len(frame) < l3 + 20 or frame[l3] >> 4 != 4:
            return None
        ihl = (frame[l3] & 0x0F) * 4
        if ihl < 20 or len(frame) < l3 + ihl:
            return None
        return _L4(l3, l3 + ihl, 4, frame[l3 + 9], frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20])
    if et == 0x86DD:
        if len(frame) < l3 + 40 or frame[l3] >> 4 != 6:
            return None
        return _L4(l3, l3 + 40, 6, frame[l3 + 6], frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40])
    return None


def l4_checksum_ok(frame: bytes) -> bool:
    """True if `frame` is IPv4/IPv6 TCP or UDP (no VLAN, no IPv6 extension headers) whose
    IPv4 header checksum and L4 checksum verify; UDP over IPv4 with checksum 0 does not."""
    p = _parse(frame, vlan=False)
    if p is None or p.proto not in (_IPPROTO_TCP, _IPPROTO_UDP):
        return False
    if p.version == 4 and _fold(frame[p.l3:p.l4]) != 0xFFFF:
        return False
    l4 = frame[p.l4:]
    if p.proto == _IPPROTO_UDP and (len(l4) < 8 or _be16(l4, 6) == 0):
        return False
    if p.proto == _IPPROTO_TCP and len(l4) < 20:
        return False
    return _add(_fold(_pseudo(p.version, p.src, p.dst, p.proto, len(l4))), _fold(l4)) == 0xFFFF


def fill_partial_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Complete a CHECKSUM_PARTIAL frame: the field holds the pseudo-header sum; the device
    sums from csum_start to the end and stores the complement there (skb_checksum_help).
    A result of 0 is stored as 0xFFFF in a UDP header only (RFC 768: 0 there means "no
    checksum"); TCP keeps 0x0000, the value RFC 1624 sec. 3 says a correct sender puts there
    (tshark, rightly, calls 0xFFFF in a TCP header bad)."""
    at = csum_start + csum_offset
    if csum_start >= len(frame) or at + 2 > len(frame):
        raise WireError("malformed", f"checksum at {csum_start}+{csum_offset} beyond a "
                                     f"{len(frame)}-byte frame")
    c = ~_fold(frame[csum_start:]) & 0xFFFF
    if c == 0 and csum_offset == 6:
        p = _parse(frame, vlan=True)
        if p is not None and p.proto == _IPPROTO_UDP and p.l4 == csum_start:
            c = 0xFFFF
    out = bytearray(frame)
    _put16(out, at, c)
    return bytes(out)


# --- split (TSO / USO on the way out) ---------------------------------------------------

def split(hdr: VnetHdr, frame: bytes) -> list[bytes]:
    """The wire frames a NIC would send for one frame read from a vnet-header TAP."""
    gso = hdr.gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if hdr.flags & F_NEEDS_CSUM:
            return [fill_partial_checksum(frame, hdr.csum_start, hdr.csum_offset)]
        return [frame]
    if gso not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4):
        raise WireError("malformed", f"GSO type {hdr.gso_type:#x} is not TCP or UDP_L4")
    if hdr.gso_size == 0:
        raise WireError("malformed", "GSO frame with gso_size 0")
    p = _parse(frame, vlan=True)
    if p is None:
        raise WireError("malformed", "GSO frame is not IPv4/IPv6")
    want = {GSO_TCPV4: (4,), GSO_TCPV6: (6,), GSO_UDP_L4: (4, 6)}[gso]
    proto = _IPPROTO_UDP if gso == GSO_UDP_L4 else _IPPROTO_TCP
    if p.version not in want or p.proto != proto:
        raise WireError("malformed", f"GSO type {gso} on IPv{p.version} protocol {p.proto}")
    if p.version == 4 and _be16(frame, p.l3 + 6) & 0x3FFF:
        raise WireError("malformed", "GSO frame is an IPv4 fragment")
    if proto == _IPPROTO_TCP:
        if len(frame) < p.l4 + 20:
            raise WireError("malformed", "GSO frame shorter than its TCP header")
        thl = (frame[p.l4 + 12] >> 4) * 4
        if thl < 20 or len(frame) < p.l4 + thl:
            raise WireError("malformed", "bad TCP data offset in a GSO frame")
    else:
        thl = 8
        if len(frame) < p.l4 + 8:
            raise WireError("malformed", "GSO frame shorter than its UDP header")
    hlen = p.l4 + thl
    payload = frame[hlen:]
    g = hdr.gso_size
    nseg = max(1, -(-len(payload) // g))
    ident = _be16(frame, p.l3 + 4) if p.version == 4 else 0
    seq = int.from_bytes(frame[p.l4 + 4:p.l4 + 8], "big") if proto == _IPPROTO_TCP else 0
    out = []
    for i in range(nseg):
        chunk = payload[i * g:(i + 1) * g]
        h = bytearray(frame[:hlen])
        l4len = thl + len(chunk)
        if p.version == 4:
            _put16(h, p.l3 + 2, p.l4 - p.l3 + l4len)
            _put16(h, p.l3 + 4, (ident + i) & 0xFFFF)
            _put16(h, p.l3 + 10, 0)
            _put16(h, p.l3 + 10, _ip4_csum(bytes(h[p.l3:p.l4])))
        else:
            _put16(h, p.l3 + 4, l4len)
        if proto == _IPPROTO_TCP:
            h[p.l4 + 4:p.l4 + 8] = ((seq + i * g) & 0xFFFFFFFF).to_bytes(4, "big")
            if i < nseg - 1:
                h[p.l4 + 13] &= ~(_TCP_FIN | _TCP_PSH) & 0xFF
            if i > 0:
                h[p.l4 + 13] &= ~_TCP_CWR & 0xFF
            at = p.l4 + 16
        else:
            _put16(h, p.l4 + 4, l4len)
            at = p.l4 + 6
        _put16(h, at, 0)
        _put16(h, at, _l4_csum(p.version, p.src, p.dst, proto, bytes(h[p.l4:]) + chunk))
        out.append(bytes(h) + chunk)
    return out


# --- coalesce (GRO on the way in) -------------------------------------------------------

class _Cand(NamedTuple):
    flow: tuple[object, ...]    # version, proto, addresses, ports: which run it may end
    key: bytes                  # everything that must equal the run's first segment
    l3: int
    l4: int
    thl: int
    version: int
    proto: int
    ident: int
    seq: int
    psh: bool
    plen: int                   # payload bytes


def _flow_of(frame: bytes) -> tuple[object, ...] | None:
    p = _parse(frame, vlan=False)
    if p is None or p.proto not in (_IPPROTO_TCP, _IPPROTO_UDP) or len(frame) < p.l4 + 4:
        return None
    if p.version == 4 and _be16(frame, p.l3 + 6) & 0x1FFF:
        return None             # a later fragment carries no ports
    return (p.version, p.proto, p.src, p.dst, frame[p.l4:p.l4 + 4])


def _candidate(frame: bytes, tcp4: bool, tcp6: bool, udp: bool) -> _Cand | None:
    p = _parse(frame, vlan=False)
    if p is None:
        return None
    f = frame
    if p.version == 4:
        if p.l4 - p.l3 != 20 or _be16(f, p.l3 + 2) != len(f) - p.l3 or _be16(f, p.l3 + 6) & 0x3FFF:
            return None         # options, Ethernet padding or trailing bytes, a fragment
        if _fold(f[p.l3:p.l4]) != 0xFFFF:
            return None
        iphdr_key = bytes((f[p.l3 + 1], f[p.l3 + 6] & 0xE0, f[p.l3 + 8]))    # TOS, flags, TTL
        ident = _be16(f, p.l3 + 4)
    else:
        if _be16(f, p.l3 + 4) != len(f) - p.l4:
            return None
        iphdr_key = f[p.l3:p.l3 + 4] + f[p.l3 + 7:p.l3 + 8]   # class, flow label; hop limit
        ident = 0
    if p.proto == _IPPROTO_TCP and (tcp4 if p.version == 4 else tcp6):
        if len(f) < p.l4 + 20:
            return None
        thl = (f[p.l4 + 12] >> 4) * 4
        flags = f[p.l4 + 13]
        if thl < 20 or len(f) <= p.l4 + thl:
            return None         # no payload: pure ACKs and window updates pass through
        if not flags & _TCP_ACK or flags & (_TCP_SYN | _TCP_FIN | _TCP_RST | _TCP_URG | _TCP_CWR):
            return None
        l4key = (f[p.l4:p.l4 + 4] + f[p.l4 + 8:p.l4 + 13] + bytes((flags & ~_TCP_PSH,))
                 + f[p.l4 + 14:p.l4 + 16] + f[p.l4 + 20:p.l4 + thl])   # ports, ack, hl, window, options
        seq, psh = int.from_bytes(f[p.l4 + 4:p.l4 + 8], "big"), bool(flags & _TCP_PSH)
    elif p.proto == _IPPROTO_UDP and udp:
        thl = 8
        if len(f) <= p.l4 + 8 or _be16(f, p.l4 + 4) != len(f) - p.l4 or _be16(f, p.l4 + 6) == 0:
            return None
        l4key, seq, psh = f[p.l4:p.l4 + 4], 0, False
    else:
        return None
    if not l4_checksum_ok(f):
        return None
    key = f[:14] + bytes((p.version, p.proto)) + iphdr_key + p.src + p.dst + l4key
    return _Cand((p.version, p.proto, p.src, p.dst, f[p.l4:p.l4 + 4]), key, p.l3, p.l4, thl,
                 p.version, p.proto, ident, seq, psh, len(f) - p.l4 - thl)


@dataclass
class _Run:
    first: _Cand | None                 # None: a frame passed through as it is
    frames: list[bytes] = field(default_factory=list)
    total: int = 0                      # payload bytes
    closed: bool = False
    idx: list[int] = field(default_factory=list)

    def accepts(self, c: _Cand, frame: bytes) -> bool:
        f0 = self.first
        assert f0 is not None
        n = len(self.frames)
        return (not self.closed and c.key == f0.key and c.plen <= f0.plen
                and n < COALESCE_MAX_SEGS and len(self.frames[0]) + self.total - f0.plen + c.plen
                <= COALESCE_MAX_FRAME
                and (f0.proto != _IPPROTO_TCP or c.seq == (f0.seq + self.total) & 0xFFFFFFFF)
                and (c.version == 6 or c.ident == (f0.ident + n) & 0xFFFF))


def coalesce(frames: Sequence[bytes], *, tcp4: bool = True, tcp6: bool = True,
             udp: bool = False) -> list[tuple[VnetHdr, bytes]]:
    """GRO over one batch of inner frames bound for one TAP: (virtio-net header, frame) pairs."""
    return [(h, f) for h, f, _ in coalesce_runs(frames, tcp4=tcp4, tcp6=tcp6, udp=udp)]


def coalesce_runs(frames: Sequence[bytes], *, tcp4: bool = True, tcp6: bool = True,
                  udp: bool = False) -> list[tuple[VnetHdr, bytes, list[int]]]:
    """`coalesce`, each item with the indexes of the input frames it holds, in order."""
    runs: list[_Run] = []
    open_runs: dict[tuple[object, ...], _Run] = {}
    for i, f in enumerate(frames):
        c = _candidate(f, tcp4, tcp6, udp)
        if c is None:
            flow = _flow_of(f)
            if flow is not None:
                r = open_runs.pop(flow, None)
                if r is not None:
                    r.closed = True
            runs.append(_Run(None, [f], idx=[i]))
            continue
        r = open_runs.get(c.flow)
        if r is not None and r.accepts(c, f):
            assert r.first is not None  # accepts() holds only for a run with a first segment
            r.frames.append(f)
            r.idx.append(i)
            r.total += c.plen
            if c.psh or c.plen < r.first.plen:
                r.closed = True
                del open_runs[c.flow]
            continue
        if r is not None:
            r.closed = True
        r = _Run(c, [f], c.plen, idx=[i])
        runs.append(r)
        if c.psh:
            r.closed = True
            open_runs.pop(c.flow, None)
        else:
            open_runs[c.flow] = r
    return [(*_emit(r), r.idx) for r in runs]


def _emit(r: _Run) -> tuple[VnetHdr, bytes]:
    c = r.first
    if c is None or len(r.frames) == 1:
        return VnetHdr(), r.frames[0]
    hlen = c.l4 + c.thl
    h = bytearray(r.frames[0][:hlen])
    l4len = c.thl + r.total
    if c.version == 4:
        _put16(h, c.l3 + 2, 20 + l4len)
        _put16(h, c.l3 + 10, 0)
        _put16(h, c.l3 + 10, _ip4_csum(bytes(h[c.l3:c.l4])))
    else:
        _put16(h, c.l3 + 4, l4len)
    if c.proto == _IPPROTO_TCP:
        if any(f[c.l4 + 13] & _TCP_PSH for f in r.frames):
            h[c.l4 + 13] |= _TCP_PSH
        at, gso_type = c.l4 + 16, GSO_TCPV4 if c.version == 4 else GSO_TCPV6
    else:
        _put16(h, c.l4 + 4, l4len)
        at, gso_type = c.l4 + 6, GSO_UDP_L4
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not inverted
    # (include/linux/skbuff.h, "CHECKSUM_PARTIAL"); the kernel finishes it if it must
    src, dst = (h[c.l3 + 12:c.l3 + 16], h[c.l3 + 16:c.l3 + 20]) if c.version == 4 else \
        (h[c.l3 + 8:c.l3 + 24], h[c.l3 + 24:c.l3 + 40])
    _put16(h, at, _fold(_pseudo(c.version, bytes(src), bytes(dst), c.proto, l4len)))
    body = b"".join([bytes(h), r.frames[0][hlen:]] + [f[hlen:] for f in r.frames[1:]])
    return VnetHdr(F_NEEDS_CSUM, gso_type, hlen, c.plen, c.l4, at - c.l4), body
