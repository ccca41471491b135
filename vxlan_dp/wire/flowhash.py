"""Flow hash of an inner frame, for the outer UDP source port (RFC 7348 sec. 5, RFC 8086 sec. 3).

The hash must be identical in the C fast path (csrc/flowhash.c): FNV-1a 32 over
  dst MAC, src MAC, ethertype,
  IPv4: protocol, src, dst, and for TCP/UDP/SCTP first fragments the two ports,
  IPv6: next header, src, dst, and for TCP/UDP/SCTP the two ports,
then folded (h ^ h >> 16). Frames too short for a layer are hashed up to the previous one.
One flow -> one source port, so the underlay keeps its packets in order while ECMP spreads flows.
"""

from __future__ import annotations

__all__ = ["flow_hash", "source_port", "SPORT_MIN", "SPORT_MAX"]

SPORT_MIN = 49152  # RFC 7348 sec. 5: the dynamic/private range is recommended
SPORT_MAX = 65535

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_L4_PORTS = (6, 17, 132)


def _fnv(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def flow_hash(frame: bytes) -> int:
    h = _fnv(_FNV_OFFSET, frame[:14])
    if len(frame) >= 14:
        ethertype = (frame[12] << 8) | frame[13]
        if ethertype == 0x0800 and len(frame) >= 34:
            ihl = (frame[14] & 0x0F) * 4
            proto = frame[23]
            h = _fnv(h, frame[23:24] + frame[26:34])
            first_fragment = ((frame[20] & 0x1F) | frame[21]) == 0
            l4 = 14 + ihl
            if proto in _L4_PORTS and first_fragment and ihl >= 20 and len(frame) >= l4 + 4:
                h = _fnv(h, frame[l4:l4 + 4])
        elif ethertype == 0x86DD and len(frame) >= 54:
            nh = frame[20]
            h = _fnv(h, frame[20:21] + frame[22:54])
            if nh in _L4_PORTS and len(frame) >= 58:
                h = _fnv(h, frame[54:58])
    return (h ^ (h >> 16)) & 0xFFFFFFFF


def source_port(h: int, lo: int = SPORT_MIN, hi: int = SPORT_MAX) -> int:
    return lo + h % (hi - lo + 1)
