"""GRE header (RFC 2784, key and sequence from RFC 2890), as Linux gretap sends it.

    |C| |K|S| Reserved0       | Ver |         Protocol Type         |
    |      Checksum (optional)      |       Reserved1 (Optional)    |
    |                         Key (optional)                        |
    |                 Sequence Number (Optional)                    |

We send K set, key = VNI (as `ip link add type gretap key N`), protocol 0x6558 (Transparent
Ethernet Bridging). On receipt C and S are accepted (the checksum is verified, RFC 2784 sec. 2.5);
version other than 0, protocol other than 0x6558, routing (R, deprecated by RFC 2784) or a missing
key are dropped. NVGRE (RFC 7637 sec. 3.2): key = VSID << 8 | FlowID, FlowID from the flow hash.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import WireError
from .ethernet import ETH_P_TEB
from .ip import internet_checksum

__all__ = ["GRE_HLEN", "GRE_UDP_PORT", "GRE_FLAG_C", "GRE_FLAG_K", "GRE_FLAG_S",
           "GreHeader", "encode_gre", "decode_gre", "nvgre_key"]

GRE_HLEN = 8  # base 4 + key 4: what we send
GRE_UDP_PORT = 4754  # RFC 8086 sec. 3.1: IANA port for GRE-in-UDP
GRE_FLAG_C = 0x8000
GRE_FLAG_R = 0x4000
GRE_FLAG_K = 0x2000
GRE_FLAG_S = 0x1000
_VERSION_MASK = 0x0007


class GreHeader(NamedTuple):
    flags: int
    protocol: int
    key: int
    seq: int | None
    header_len: int


def nvgre_key(vsid: int, flow_id: int) -> int:
    return ((vsid & 0xFFFFFF) << 8) | (flow_id & 0xFF)


def encode_gre(key: int) -> bytes:
    return struct.pack("!HHI", GRE_FLAG_K, ETH_P_TEB, key & 0xFFFFFFFF)


def decode_gre(buf: bytes) -> GreHeader:
    """Decode and validate a GRE header at the start of `buf` (header + payload, for C)."""
    if len(buf) < 4:
        raise WireError("malformed", "shorter than a GRE header")
    flags, proto = struct.unpack_from("!HH", buf)
    if flags & _VERSION_MASK:
        raise WireError("bad_version", f"GRE version {flags & _VERSION_MASK}")
    if flags & GRE_FLAG_R:
        raise WireError("bad_flags", "GRE routing present (deprecated, RFC 2784)")
    if not flags & GRE_FLAG_K:
        raise WireError("bad_flags", "GRE without a key: no VNI")
    if proto != ETH_P_TEB:
        raise WireError("bad_protocol", f"GRE protocol 0x{proto:04x} is not 0x6558")
    off = 4
    if flags & GRE_FLAG_C:
        off += 4
    key_off = off
    off += 4
    seq = None
    if flags & GRE_FLAG_S:
        off += 4
    if len(buf) < off:
        raise WireError("malformed", "GRE header truncated")
    key = struct.unpack_from("!I", buf, key_off)[0]
    if flags & GRE_FLAG_S:
        seq = struct.unpack_from("!I", buf, off - 4)[0]
    if flags & GRE_FLAG_C and internet_checksum(bytes(buf)) != 0:
        raise WireError("bad_checksum", "GRE checksum does not verify")
    return GreHeader(flags, proto, key, seq, off)
