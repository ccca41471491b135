"""VXLAN header (RFC 7348 sec. 5): 8 bytes, flags 0x08 (I), 24-bit VNI in bits 8..31 of word 2.

    |R|R|R|R|I|R|R|R|            Reserved                           |
    |                VXLAN Network Identifier (VNI) |   Reserved    |

Reserved bits are sent as zero and ignored on receipt unless `strict` (RFC 7348 sec. 5);
a header without the I flag carries no valid VNI and is dropped.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import WireError

__all__ = ["VXLAN_HLEN", "VXLAN_FLAG_I", "VXLAN_PORT", "VNI_MAX", "VxlanHeader",
           "encode_vxlan", "decode_vxlan"]

VXLAN_HLEN = 8
VXLAN_FLAG_I = 0x08
VXLAN_PORT = 4789  # IANA (RFC 7348 sec. 5); Linux's historical default and flannel use 8472
VNI_MAX = (1 << 24) - 1

_HDR = struct.Struct("!II")


class VxlanHeader(NamedTuple):
    flags: int
    vni: int


def encode_vxlan(vni: int) -> bytes:
    return _HDR.pack(VXLAN_FLAG_I << 24, (vni & VNI_MAX) << 8)


def decode_vxlan(buf: bytes, strict: bool = False) -> VxlanHeader:
    if len(buf) < VXLAN_HLEN:
        raise WireError("malformed", f"{len(buf)} bytes is shorter than a VXLAN header")
    w0, w1 = _HDR.unpack_from(buf)
    flags = w0 >> 24
    if not flags & VXLAN_FLAG_I:
        raise WireError("bad_flags", f"VXLAN flags 0x{flags:02x} lack the I bit")
    if strict and (w0 != VXLAN_FLAG_I << 24 or w1 & 0xFF):
        raise WireError("bad_flags", "VXLAN reserved bits set (strict)")
    return VxlanHeader(flags, w1 >> 8)
